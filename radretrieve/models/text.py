"""Tokenisation with truncation accounting: long reports are cut to the context length, counted, warned once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from radretrieve.foundation.errors import ModelLoadError

log = logging.getLogger(__name__)


class ClipTokenizer:
    """open_clip's bundled CLIP BPE (works offline), with a count of truncated texts."""

    def __init__(self, context_length: int) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self._bpe = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self.truncated = 0  # texts cut to the context length so far
        self._warned = False

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """Token ids long [N, context_length]: <sot> tokens <eot>, zero padded; too-long texts keep <eot> last."""
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        sot, eot = self._bpe.sot_token_id, self._bpe.eot_token_id
        for i, text in enumerate(texts):
            tokens = [sot] + self._bpe.encode(text) + [eot]
            if len(tokens) > self.context_length:
                self._note_truncation()
                tokens = tokens[: self.context_length - 1] + [eot]
            out[i, : len(tokens)] = torch.tensor(tokens)
        return out

    def _note_truncation(self) -> None:
        self.truncated += 1
        if not self._warned:
            self._warned = True
            log.warning("text longer than %d tokens truncated (counted in tokenizer.truncated)", self.context_length)


class WrappedTokenizer:
    """Any open_clip tokenizer (e.g. from an hf-hub model); truncation is done (and not counted) by it."""

    def __init__(self, fn: Callable[..., Any], context_length: int) -> None:
        self._fn = fn
        self.context_length = context_length
        self.truncated = 0

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self._fn(texts)


HF_TEXT = "hf-text"  # the tokenizer spec of a model whose Hugging Face tokenizer files are in its model directory


def make_tokenizer(
    spec: str, context_length: int, text_dir: Path | None = None, text_cfg: Mapping[str, Any] | None = None
) -> ClipTokenizer | WrappedTokenizer:
    """`clip-bpe` -> the bundled BPE; `hf-text` -> open_clip's `HFTokenizer` on the tokenizer files in
    `text_dir` (as open_clip builds it for the model's `hf_tokenizer_name`, with `text_cfg`'s tokenizer mode and
    arguments; nothing is downloaded); anything else is resolved by open_clip.get_tokenizer (may download)."""
    if spec == "clip-bpe":
        return ClipTokenizer(context_length)
    if spec == HF_TEXT:
        from open_clip.tokenizer import HFTokenizer

        if text_dir is None or not text_dir.is_dir():
            raise ModelLoadError(f"tokenizer {HF_TEXT}: no tokenizer files (a model directory keeps them in hf_text/)")
        cfg = dict(text_cfg or {})
        kwargs = dict(cfg.get("tokenizer_kwargs") or {})
        mode = cfg.get("tokenizer_mode")
        fn = HFTokenizer(str(text_dir), context_length=context_length, tokenizer_mode=mode, **kwargs)
        return WrappedTokenizer(fn, context_length)
    import open_clip

    return WrappedTokenizer(open_clip.get_tokenizer(spec, context_length=context_length), context_length)
