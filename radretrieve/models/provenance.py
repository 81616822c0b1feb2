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

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from radretrieve.foundation.errors import ModelLoadError

if TYPE_CHECKING:
    from radretrieve.models.reference import ModelSource

log = logging.getLogger(__name__)
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


MAX_RECORD_BYTES = 64 << 10  # provenance.json is read by `radretrieve models` for every model directory
UNTRAINED = Provenance("untrained")
UNKNOWN = Provenance("unknown")
# What a model reports whose weights were changed in memory after its record was attached (trained by code other
# than `radretrieve train`): no longer what the record says, and not known to be anything else.
CHANGED = Provenance("unknown", details={"note": "weights changed in memory after loading"})


def read_provenance(model_dir: Path) -> Provenance:
    """The provenance recorded in a model directory; `UNKNOWN` when it has none (made before records)."""
    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        return UNKNOWN
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_RECORD_BYTES + 1)
        if len(raw) > MAX_RECORD_BYTES:  # a record is a few hundred bytes: a huge one is not ours
            raise ValueError(f"larger than {MAX_RECORD_BYTES} bytes")
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
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


def untrained_banner(name: str) -> str:
    """The sentence the web page shows above the results of an out dir built with an untrained model."""
    return (
        f"This index was built with an untrained model ({name}): results are random. "
        f"Get published weights with `{PULL_HINT}` and index again."
    )


# -- where a source's weights come from (the loaders and old out-dir records share this) ----------------------
def file_digest(path: Path) -> str:
    """The "sha256:HEX" digest of a file, read in 1 MiB blocks (weights files are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def provenance_of_source(source: ModelSource, digest: bool = True) -> Provenance | None:
    """What a `ModelSource` says about its weights, or None when only its model directory knows (a path without
    weights on top: `read_provenance`). `digest`: hash a weights file (False for a record read back, where the
    file may be gone or huge)."""
    weights = source.weights
    if weights is not None and (source.scheme in ("registry", "path") or _is_file_name(weights)):
        path = Path(weights)
        sha = file_digest(path) if digest and path.is_file() else None
        return Provenance("imported", origin=path.name, digest=sha)  # the name only: never a folder of this machine
    if source.scheme == "hf-hub":
        return Provenance("published", origin=source.ref)
    if source.scheme == "open_clip":
        if weights:  # a pretrained tag
            return Provenance("published", origin=f"open_clip:{source.ref}/{weights}")
        return Provenance("untrained", origin=f"open_clip:{source.ref}")
    if source.scheme == "registry":
        return Provenance("untrained", origin=f"registry:{source.ref}")
    return None


def _is_file_name(weights: str) -> bool:
    """Whether open_clip's `weights` names a file (imported) rather than a pretrained tag (published)."""
    path = Path(weights)
    return path.is_file() or "/" in weights or "\\" in weights or path.suffix in WEIGHT_SUFFIXES


WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


# -- the one warning line ---------------------------------------------------------------------------------------
_warned: set[str] = set()  # model names warned about in this process (see `warn_if_untrained`)
_warned_lock = threading.Lock()


def warn_if_untrained(name: str, provenance: Provenance) -> bool:
    """Log `untrained_warning(name)` once per model name and process (a command loads its model and reads its out
    dir's record: one line, not two); True when it logged. The CLI forgets the names at the start of each command
    (`reset_warnings`), so every command run says it once."""
    if provenance.trained:
        return False
    with _warned_lock:
        if name in _warned:
            return False
        _warned.add(name)
    log.warning("%s", untrained_warning(name))  # the name as an argument: escaped on one line by the CLI's logging
    return True


def reset_warnings() -> None:
    """Forget which models were warned about (the start of a command run)."""
    with _warned_lock:
        _warned.clear()


def model_json(name: str, provenance: Provenance, fingerprint: str | None = None) -> dict[str, Any]:
    """The `"model"` object of JSON output and API answers: name, trained, kind (+ origin, digest, licence,
    fingerprint where known). Details (training data, epochs) stay in provenance.json and the manifest."""
    out: dict[str, Any] = {"name": name, "trained": provenance.trained, "kind": provenance.kind}
    for key in ("origin", "digest", "licence"):
        if getattr(provenance, key) is not None:
            out[key] = getattr(provenance, key)
    return out | ({"fingerprint": fingerprint} if fingerprint else {})
