"""`radretrieve embed`: embeddings of files and texts from the terminal, the vectors `index` would store.

Files are scanned and read as `radretrieve index` reads them (one item per image, DICOM series, NIfTI volume
or image stack; the model's preprocessing profile) and encoded with `Encoder.encode_mixed`; texts go through
the text tower as report rows do. Order: the items of each path in the order given (items of one folder in scan
order), then the texts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radretrieve.application.query_path import encode_items, nothing_readable, scan_path
from radretrieve.archive.records import ErrorRecord
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_path, atomic_write_text
from radretrieve.models.protocol import Encoder
from radretrieve.models.provenance import model_json

log = logging.getLogger(__name__)
FORMATS = ("json", "npy")


@dataclass(frozen=True)
class Embedding:
    """One embedded input."""

    input: str  # the path given (or the item's path under a folder given), or the text
    kind: str  # image | volume | text
    embedding: np.ndarray  # float32 [D], L2-normalised
    model: Mapping[str, Any] | None = None  # the model that made it: name, trained, kind (`encoder_json`)

    def to_json(self) -> dict:
        out = {"input": self.input, "kind": self.kind, "embedding": [float(x) for x in self.embedding]}
        return out | ({"model": dict(self.model)} if self.model is not None else {})


def encoder_json(model: Encoder) -> dict[str, Any]:
    """The `"model"` object of JSON output for a loaded model: name, trained, kind, origin, fingerprint."""
    return model_json(model.config.name, model.provenance, model.fingerprint)


@dataclass(frozen=True)
class EmbeddedPaths:
    """What `embed_paths` gave: the embeddings, and the files skipped because they could not be read."""

    embeddings: list[Embedding]  # in input order
    skipped: list[ErrorRecord]  # one per file or series that failed (scan or read), as `index` records them


def embed_paths(model: Encoder, paths: Sequence[Path]) -> EmbeddedPaths:
    """Every readable image/volume item under each path, encoded. A bad file (or a path with nothing readable)
    is skipped and reported (a warning and a record) as `index` does, so that one bad file among many costs only
    itself; when nothing at all could be read, one `RadRetrieveError` names the first path and its problem."""
    out: list[Embedding] = []
    skipped: list[ErrorRecord] = []
    first_failure: RadRetrieveError | None = None
    about = encoder_json(model) if paths else None
    for path in paths:
        result = scan_path(Path(path))
        encoded = encode_items(model, result)
        skipped.extend(encoded.skipped)
        if not encoded.items:
            failure = nothing_readable(path, encoded.skipped)
            first_failure = first_failure or failure
            if not encoded.skipped:  # e.g. a folder of text files: say so, as for a bad file
                log.warning("skipped %s", failure)
                skipped.append(ErrorRecord(str(path), "scan", "NothingReadable", str(failure)))
            continue
        single = len(result.items) == 1  # a file given by name keeps its name
        for it, vec in zip(encoded.items, encoded.vectors):
            name = str(path) if single else str(Path(path) / it.source)
            out.append(Embedding(name, it.kind, vec.astype(np.float32), about))
    if first_failure is not None and not out:
        raise first_failure
    return EmbeddedPaths(out, skipped)


def embed_texts(model: Encoder, texts: Sequence[str]) -> list[Embedding]:
    if not texts:
        return []
    vectors = model.encode_text(list(texts)).numpy().astype(np.float32)
    about = encoder_json(model)
    return [Embedding(t, "text", v, about) for t, v in zip(texts, vectors)]


def check_output(fmt: str, out: Path | None) -> None:
    """Refuse a format/out pair that `write_embeddings` cannot write (called before the model loads)."""
    if fmt not in FORMATS:
        raise RadRetrieveError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "npy" and out is None:
        raise RadRetrieveError("--format npy writes binary: give --out FILE.npy")


def write_embeddings(embeddings: Sequence[Embedding], fmt: str, out: Path | None) -> str | None:
    """JSON (a list of {"input", "kind", "embedding"}) or .npy (float32 [N, D], rows in input order).

    Returns the JSON text when `out` is None (for stdout); a .npy needs `out`."""
    check_output(fmt, out)
    if fmt == "npy":
        matrix = np.stack([e.embedding for e in embeddings]).astype(np.float32)
        with atomic_path(Path(out)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, matrix)
        return None
    text = json.dumps([e.to_json() for e in embeddings])
    if out is None:
        return text
    atomic_write_text(Path(out), text + "\n")
    return None
