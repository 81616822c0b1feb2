"""Open the indexes of an out dir, checking them against index.json and an expected fingerprint."""

from __future__ import annotations

from pathlib import Path

from indexers.ann import AnnIndex, VectorFetch
from indexers.checks import REBUILD_HINT, verify
from indexers.errors import FingerprintMismatch, IndexMissing, StaleIndex
from indexers.meta import IndexInfo, index_dir, read_index_json
from indexers.store import VectorStore
from radretrieve.outdir.verify import DamagedFile


def check_fingerprint(infos: dict[str, IndexInfo], expected: str | None) -> None:
    """Raise `FingerprintMismatch` if any index was built from another model's shards."""
    if expected is None:
        return
    for info in infos.values():
        if info.fingerprint != expected:
            raise FingerprintMismatch(
                f"index {info.name!r} was built with model fingerprint {info.fingerprint}, "
                f"the model given has {expected}; use the index's model or re-embed"
            )


def open_store(out_dir: Path, info: IndexInfo) -> VectorStore | None:
    """The index's memory-mapped re-rank store, or None if it has none (not IVF-PQ, or built before)."""
    return VectorStore(index_dir(out_dir), info.store) if info.store is not None else None


def open_index(
    out_dir: Path,
    info: IndexInfo,
    device: str,
    fetch: VectorFetch | None,
    torch_device: str | None = None,
    torch_store: bool = True,
) -> AnnIndex:
    """Read one .faiss file (plain `faiss.read_index`) and wrap it; `device` is already resolved.

    `fetch` is the slow fallback for IVF-PQ re-ranking when the index has no re-rank store; `torch_device`
    runs flat search, and re-ranking if `torch_store`, in torch there (indexers/device.py `place`).
    """
    import faiss

    path = index_dir(out_dir) / info.file
    if not path.is_file():
        raise IndexMissing(f"{path}: missing (run `radretrieve build-index {out_dir}`)")
    verify(path.parent, info.checks, info.files, Path(out_dir), full=False)
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:  # an index without recorded checks (older build) that faiss cannot parse
        first = " ".join(str(exc).split())[:160]
        raise DamagedFile(f"{path}: unreadable index file ({first}); {REBUILD_HINT.format(out=out_dir)}") from exc
    if index.ntotal != info.count or index.d != info.plan.dim:
        raise StaleIndex(
            f"{path}: holds {index.ntotal} vectors of dim {index.d}, index.json says {info.count} of dim "
            f"{info.plan.dim} (interrupted build?); run `radretrieve build-index {out_dir} --rebuild`"
        )
    store = open_store(out_dir, info)
    fetch = fetch if store is None else None
    return AnnIndex(index, info.plan, info.params, device, fetch, store, torch_device, torch_store)


def read_infos(out_dir: Path, fingerprint: str | None = None) -> dict[str, IndexInfo]:
    """index.json entries of an out dir, after the missing-dir and fingerprint checks."""
    if not Path(out_dir).is_dir():
        raise IndexMissing(f"{out_dir}: no such directory")
    infos = read_index_json(out_dir, required=True)
    check_fingerprint(infos, fingerprint)
    return infos
