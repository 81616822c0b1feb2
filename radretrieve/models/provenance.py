"""Where a model's weights came from, so that every command can say whether its results mean anything.

A registry config with no weights on top is *untrained* (random init from a fixed seed): searches with it are
random. A model directory records its provenance in `provenance.json` beside `config.json`: pulled from a hub
repository (which file, which revision, its sha256), imported from a file copied by hand, trained here (on
what, for how long), or published weights loaded through open_clip (a pretrained tag or an `hf-hub:` id).

This module is the shared contract: loaders attach a `Provenance` to each model (`model.provenance`),
`models pull` / `models import` / `train` write it into model directories, out dirs copy it into their
manifest's model record, and the commands read `trained` to warn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from radretrieve.foundation.errors import ModelLoadError

PROVENANCE_FILE = "provenance.json"

Kind = Literal["untrained", "trained", "pulled", "imported", "published", "unknown"]
KINDS: tuple[Kind, ...] = ("untrained", "trained", "pulled", "imported", "published", "unknown")
# The one command a user runs to get real weights; every "untrained" warning names it.
PULL_HINT = "radretrieve models pull radclip"


@dataclass(frozen=True)
class Provenance:
    """Where a model's weights came from."""

    kind: Kind  # untrained: random init; trained: trained here; pulled: from a hub; imported: from a file;
    # published: open_clip pretrained tag or hf-hub id loaded directly; unknown: a directory without a record
    origin: str | None = None  # "hf:ORG/REPO@REVISION/FILE", a file name, "open_clip:NAME/TAG", or training data
    digest: str | None = None  # "sha256:HEX" of the weights file as obtained; None when not known
    licence: str | None = None  # licence of the weights where known ("check the terms" where none is published)
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. epochs, seconds, size_bytes, notes

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelLoadError(f"unknown model provenance {self.kind!r} (one of {', '.join(KINDS)})")

    @property
    def trained(self) -> bool:
        """Whether the weights came from training (anywhere); `unknown` counts as trained (no warning)."""
        return self.kind != "untrained"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "trained": self.trained}
        for key in ("origin", "digest", "licence"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out | ({"details": dict(self.details)} if self.details else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Provenance:
        kind = data.get("kind", "unknown")
        details = data.get("details") or {}
        if not isinstance(details, Mapping):
            raise ModelLoadError(f"model provenance 'details' must be an object, got {type(details).__name__}")

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(str(kind), text("origin"), text("digest"), text("licence"), dict(details))  # type: ignore[arg-type]


UNTRAINED = Provenance("untrained")
UNKNOWN = Provenance("unknown")


def read_provenance(model_dir: Path) -> Provenance:
    """The provenance recorded in a model directory; `UNKNOWN` when it has none (made before records)."""
    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        return UNKNOWN
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable provenance record ({type(exc).__name__})") from exc
    if not isinstance(data, Mapping):
        raise ModelLoadError(f"{path}: provenance record must be a JSON object")
    return Provenance.from_json(data)


def write_provenance(model_dir: Path, provenance: Provenance) -> Path:
    """Write `provenance.json` into a model directory (atomically)."""
    from radretrieve.foundation.fileio import atomic_write_bytes

    path = Path(model_dir) / PROVENANCE_FILE
    atomic_write_bytes(path, json.dumps(provenance.to_json(), indent=1).encode())
    return path


def untrained_warning(name: str) -> str:
    """The one warning line every command prints for an untrained model."""
    return (
        f"model {name} is untrained (random weights): its results are meaningless; "
        f"get published weights with `{PULL_HINT}`"
    )
