"""Training texts: reports, or RadCLIP-style templates ("REGION MODALITY, LABEL") rendered from labels.

Choices that look random (which text of an item, which slice of a volume) are hashes of (seed, epoch,
key), not draws from an RNG: the same on every run, and a resumed run needs no RNG state to repeat them.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping, Sequence

from radretrieve.foundation.errors import ConfigError
from radretrieve.training.config import TextConfig

_SPACES = re.compile(r"\s+")
_LOOSE_COMMAS = re.compile(r"\s*,(\s*,)*\s*")


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of the parts' string forms, the same on every machine and Python run (unlike `hash`)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def template_labels(labels: Mapping[str, str], modality: str = "", body_part: str = "") -> dict[str, str]:
    """The names templates may use: the item's labels, with `region`/`body_part` and `modality` filled in
    from the scan (DICOM headers) where the labels lack them."""
    out = {k: v for k, v in labels.items() if _known(v)}
    region = out.get("region") or out.get("body_part") or out.get("organ") or body_part
    if _known(region):
        out.setdefault("region", region)
        out.setdefault("body_part", region)
    if _known(modality):
        out.setdefault("modality", modality)
    return out


def _known(value: str) -> bool:
    """Empty and "unknown" (e.g. VQA-RAD's modality for most images) say nothing and render as missing."""
    return bool(value) and value.strip().lower() != "unknown"


def render(template: str, labels: Mapping[str, str]) -> str:
    """Fill `template` from `labels`; a missing name renders empty, then spaces and commas are tidied."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise ConfigError(f"bad text template {template!r}: {exc}") from exc
    text = template.format_map({name: labels.get(name, "") for name in names})
    text = _LOOSE_COMMAS.sub(", ", _SPACES.sub(" ", text)).strip(" ,")
    return text


def candidate_texts(cfg: TextConfig, report: str, labels: Mapping[str, str]) -> tuple[str, ...]:
    """The texts an item may be paired with (first = the one used for validation); empty = unusable item."""
    report = " ".join(report.split())
    templated = tuple(dict.fromkeys(t for t in (render(tpl, labels) for tpl in cfg.templates) if t))
    if cfg.source == "report":
        return (report,) if report else templated[:1]
    if cfg.source == "template":
        return templated
    return tuple(dict.fromkeys(((report,) if report else ()) + templated))


def slice_texts(cfg: TextConfig, volume_texts: Sequence[str], labels: Mapping[str, str]) -> tuple[str, ...]:
    """Texts for single slices of a volume used as 2D pairs: `cfg.slice_templates`, else the volume's texts."""
    templated = tuple(dict.fromkeys(t for t in (render(tpl, labels) for tpl in cfg.slice_templates) if t))
    return templated or tuple(volume_texts)


def pick(options: Sequence[str], seed: int, epoch: int, key: str) -> str:
    """One of `options`, fixed by (seed, epoch, key)."""
    return options[stable_hash(seed, epoch, key) % len(options)]


def label_prompts(cfg: TextConfig, labels: Mapping[str, str]) -> tuple[str, ...]:
    """The prompt-ensemble texts of the item's `cfg.prompt_tasks` labels (the built-in templates of
    radretrieve.evaluation.prompts), e.g. "a CT of the chest" for organ=chest; unknown labels give none."""
    if not cfg.prompt_tasks:
        return ()
    from radretrieve.evaluation.prompts import prompts_for

    out: dict[str, None] = {}
    for task in cfg.prompt_tasks:
        value = labels.get(task, "")
        if _known(value):
            out.update(dict.fromkeys(prompts_for(task, value)))
    return tuple(out)


def choose(cfg: TextConfig, texts: Sequence[str], prompts: Sequence[str], seed: int, epoch: int, key: str) -> str:
    """The training text of (item, epoch): a prompt for a `prompt_share` of the draws when the item has
    prompts, else one of its texts; all fixed by (seed, epoch, key)."""
    if prompts and (not texts or stable_hash("prompt", seed, epoch, key) / 2.0**64 < cfg.prompt_share):
        return pick(prompts, seed, epoch, key)
    return pick(texts, seed, epoch, key)
