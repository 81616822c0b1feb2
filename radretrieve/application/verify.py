"""`radretrieve verify OUT`: hash every file of an out dir against what was committed.

Searches and nightly adds check what they read and only cheap facts (size, Parquet magics, footers,
modification times) of the rest, so a flipped byte in a shard or a re-rank store segment that nothing has
read since can go unseen. `verify` reads everything: every shard against the manifest's SHA-256
(radretrieve.outdir.verify), every index file and stored truth against index.json's checks
(indexers.checks), the re-rank stores' lengths, and the zero-shot predictions file. It reports one line
per damaged file, naming it and the command that repairs it, and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indexers.checks import REBUILD_HINT, problem
from indexers.errors import StaleIndex
from indexers.meta import IndexInfo, index_dir, read_index_json
from indexers.store import VectorStore
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.outdir.manifest import read_manifest
from radretrieve.outdir.predictions import damaged_predictions_line, predictions_problem
from radretrieve.outdir.verify import REPAIR_HINT, damaged_shards

TRUTH_HINT = "run `radretrieve build-index {out}` (it recomputes the stored truth)"


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_out_dir` checked and what it found."""

    shards: int  # shard files hashed
    index_files: int  # index files (and stored truths) hashed
    damaged: tuple[str, ...]  # one line per damaged file: "PATH: what is wrong; how to repair"

    @property
    def ok(self) -> bool:
        return not self.damaged


def verify_out_dir(out_dir: Path) -> VerifyReport:
    """Hash every shard and index file of `out_dir`; a `RadRetrieveError` if it is not an out dir."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise RadRetrieveError(f"{out_dir}: out dir not found")
    manifest = read_manifest(out_dir)
    lines = [
        f"{out_dir / file}: damaged shard: {found}; {REPAIR_HINT}"
        for file, found in damaged_shards(out_dir, manifest, full=True).items()
    ]
    found = predictions_problem(out_dir, full=True)
    if found is not None:
        lines.append(damaged_predictions_line(out_dir, found))
    try:
        infos = read_index_json(out_dir, required=False)
    except RadRetrieveError as exc:
        infos = {}
        lines.append(f"{exc}")
    files = 0
    for info in infos.values():
        files += len(info.all_files)
        lines.extend(_index_lines(out_dir, info))
    text, text_lines = _fulltext_lines(out_dir)
    return VerifyReport(len(manifest.shards), files + text, tuple(lines + text_lines))


def _fulltext_lines(out_dir: Path) -> tuple[int, list[str]]:
    """(files checked, one line if the full-text index is damaged) (indexers/fulltext.py)."""
    from indexers.fulltext import damaged_line, read_fulltext_json
    from indexers.fulltext import problem as fulltext_problem

    try:
        info = read_fulltext_json(out_dir)
    except RadRetrieveError as exc:
        return 0, [str(exc)]
    if info is None:
        return 0, []
    found = fulltext_problem(out_dir, info, full=True)
    return len(info.checks), [] if found is None else [damaged_line(out_dir, found)]


def _index_lines(out_dir: Path, info: IndexInfo) -> list[str]:
    """One line per damaged file of one index (its store also opened: segment lengths against index.json)."""
    folder = index_dir(out_dir)
    lines = []
    for name in info.all_files:
        found = problem(folder / name, info.checks.get(name), full=True)
        if found is not None:
            hint = TRUTH_HINT if name == info.truth else REBUILD_HINT
            kind = "stored truth" if name == info.truth else "index file"
            lines.append(f"{folder / name}: damaged {kind}: {found}; {hint.format(out=out_dir)}")
    if info.store is not None and not lines:
        try:
            VectorStore(folder, info.store)
        except StaleIndex as exc:
            lines.append(str(exc))
    return lines
