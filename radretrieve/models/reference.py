"""Model references: which scheme a `--model` string names, decided by explicit rules, never by what happens
to exist in the working directory.

The rules (also in `radretrieve index --help` and docs/guide/models.md), first match wins:

1. an explicit prefix: ``registry:NAME``, ``open_clip:NAME``, ``hf-hub:ORG/REPO``, ``path:DIR``;
2. a string that looks like a path (contains ``/``, or starts with ``.`` or ``~``): a model directory;
3. a registry name (``radretrieve models``), even when a folder of that name is in the working directory
   (a warning says to write ``./NAME`` to load the folder);
4. an open_clip model name (``open_clip.list_models()``);
5. an existing folder given by its bare name;
6. otherwise an error that lists the rules.

`ModelSource` is how a loaded model remembers where it came from (an out dir stores it to load the same
model again); `weights` is a weights file or an open_clip pretrained tag loaded on top.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from radretrieve.foundation.errors import ConfigError

log = logging.getLogger(__name__)

Scheme = Literal["registry", "open_clip", "hf-hub", "path"]
SCHEMES: tuple[Scheme, ...] = ("registry", "open_clip", "hf-hub", "path")
RULES = (
    "a model is 'registry:NAME', 'open_clip:NAME', 'hf-hub:ORG/REPO' or 'path:DIR'; without a prefix, a string "
    "with '/' or starting with '.' or '~' is a model directory, then registry names win over open_clip names and "
    "over a folder of the same name (write ./NAME for the folder)"
)


@dataclass(frozen=True)
class ModelSource:
    """Where a model came from: enough to load it again."""

    scheme: Scheme  # how `ref` is resolved
    ref: str  # registry name, open_clip name, "hf-hub:ORG/REPO", or a model directory
    weights: str | None = None  # weights file or pretrained tag loaded on top; None for none
    preprocess: str | None = None  # preprocessing profile overriding the model's own (--preprocess); None: its own

    def __post_init__(self) -> None:
        from radretrieve.foundation.config import PROFILES

        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown model scheme {self.scheme!r} (choose from {', '.join(SCHEMES)})")
        if self.preprocess is not None and self.preprocess not in PROFILES:
            raise ConfigError(f"unknown preprocessing profile {self.preprocess!r} (choose from {', '.join(PROFILES)})")

    @property
    def spec(self) -> str:
        """The reference as a string that `parse_model_ref` reads back to this source (explicit prefix)."""
        return self.ref if self.scheme == "hf-hub" else f"{self.scheme}:{self.ref}"

    def to_json(self) -> dict[str, Any]:
        out = {"scheme": self.scheme, "ref": self.ref, "weights": self.weights}
        return out | ({"preprocess": self.preprocess} if self.preprocess is not None else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelSource:
        """From `to_json`; records without a scheme (older out dirs) are parsed by the rules."""
        ref, weights = str(data.get("ref") or ""), data.get("weights")
        if not ref:
            raise ConfigError("model reference without 'ref'")
        scheme, profile = data.get("scheme"), data.get("preprocess")
        if scheme is None:
            return parse_model_ref(ref, weights)
        return cls(scheme, ref, None if weights is None else str(weights), None if profile is None else str(profile))


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith((".", "~"))


def parse_model_ref(text: str, weights: str | None = None) -> ModelSource:
    """The `ModelSource` a `--model` string names (see the module docstring for the rules)."""
    from radretrieve.models.registry import list_models

    text = str(text).strip()
    if not text:
        raise ConfigError(f"empty model reference; {RULES}")
    prefix, _, rest = text.partition(":")
    if prefix == "hf-hub" and rest:
        return ModelSource("hf-hub", text, weights)
    if prefix in ("registry", "open_clip", "path") and rest:
        return ModelSource(prefix, str(Path(rest).expanduser()) if prefix == "path" else rest, weights)
    if _looks_like_path(text):
        return ModelSource("path", str(Path(text).expanduser()), weights)
    if text in list_models():
        if Path(text).is_dir():
            log.warning(
                "'%s' is a registry model; the folder ./%s is not used (write ./%s to load it)", text, text, text
            )
        return ModelSource("registry", text, weights)
    if _is_open_clip_name(text):
        return ModelSource("open_clip", text, weights)
    if Path(text).is_dir():
        return ModelSource("path", text, weights)
    raise ConfigError(f"unknown model '{text}' (registry models: {', '.join(list_models())}); {RULES}")


def _is_open_clip_name(name: str) -> bool:
    """Whether open_clip ships a config for `name`, read from its config folder: importing open_clip imports
    torch (seconds), and a reference is checked before any model loads."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(folder) / "model_configs" / f"{name}.json").is_file():
            return True
    return False
