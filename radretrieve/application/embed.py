"""`radretrieve embed`: embeddings of files and texts from the terminal, the vectors `index` would store.

Files are scanned and read as `radretrieve index` reads them (one item per image, DICOM series, NIfTI volume
or image stack; the model's preprocessing profile) and encoded with `Encoder.encode_mixed`; texts go through
the text tower as report rows do. Order: the items of each path in the order given (items of one folder in scan
order), then the texts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radretrieve.application.query_path import ITEMS_PER_BATCH, scan_path
from radretrieve.archive import read_item
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_path, atomic_write_text
from radretrieve.models.protocol import Encoder

FORMATS = ("json", "npy")


@dataclass(frozen=True)
class Embedding:
    """One embedded input."""

    input: str  # the path given (or the item's path under a folder given), or the text
    kind: str  # image | volume | text
    embedding: np.ndarray  # float32 [D], L2-normalised

    def to_json(self) -> dict:
        return {"input": self.input, "kind": self.kind, "embedding": [float(x) for x in self.embedding]}


def embed_paths(model: Encoder, paths: Sequence[Path]) -> list[Embedding]:
    """Every image/volume item under each path, encoded; unreadable input is one `RadRetrieveError` naming it."""
    import torch

    out: list[Embedding] = []
    for path in paths:
        result = scan_path(Path(path))
        if not result.items:
            why = f" ({result.errors[0].message})" if result.errors else ""
            raise RadRetrieveError(f"{path}: no readable DICOM, NIfTI or image found{why}")
        items = result.items
        for start in range(0, len(items), ITEMS_PER_BATCH):
            batch = items[start : start + ITEMS_PER_BATCH]
            arrays = [torch.from_numpy(read_item(it, result.root, model.config.preprocess).pixels) for it in batch]
            vectors = model.encode_mixed(arrays, [it.kind == "volume" for it in batch]).numpy()
            for it, vec in zip(batch, vectors):
                name = str(path) if len(items) == 1 else str(Path(path) / it.source)
                out.append(Embedding(name, it.kind, vec.astype(np.float32)))
    return out


def embed_texts(model: Encoder, texts: Sequence[str]) -> list[Embedding]:
    if not texts:
        return []
    vectors = model.encode_text(list(texts)).numpy().astype(np.float32)
    return [Embedding(t, "text", v) for t, v in zip(texts, vectors)]


def write_embeddings(embeddings: Sequence[Embedding], fmt: str, out: Path | None) -> str | None:
    """JSON (a list of {"input", "kind", "embedding"}) or .npy (float32 [N, D], rows in input order).

    Returns the JSON text when `out` is None (for stdout); a .npy needs `out`."""
    if fmt not in FORMATS:
        raise RadRetrieveError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "npy":
        if out is None:
            raise RadRetrieveError("--format npy writes binary: give --out FILE.npy")
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
