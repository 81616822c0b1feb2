"""The receiving node's spool: instances on disk before they are acknowledged, grouped into studies, handed to
the indexer once a study has settled.

Layout (OUT/receive, mode 0700: the files are whole DICOM instances, patient headers included):

    incoming/study-<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   received, not settled yet
    batch/study-<StudyInstanceUID>/...                                           settled, being indexed

(`study-`: a folder named exactly like its study's key reads to the scan's anonymisation as a study keyed by
its folder, whose key is then hashed; prefixed, the study key stays the UID, as for any folder of files.)

Every name is a UID checked by `radretrieve.archive.dicomweb.uids` (digits and dots, 64 characters at most),
never other text from the sender, so the same instance pushed twice lands on the same name and adds nothing.
An instance is written as `radretrieve.foundation.fileio` writes every file (a temp file in the same folder,
fsync, rename, folder fsync: `fileio.commit`); only then is the C-STORE answered. Its temp file is named
`.NAME.PID-RANDOM.part`, not fileio's `.tmp`, because a batch's `open_out_dir`-style temp sweep of the out dir
must not remove a store in flight; the node removes `.part` files itself when it starts (it holds the lock).

A study moves from `incoming/` to `batch/` in one rename, only while no store into it is in flight; a kill at
any moment leaves every acknowledged instance in one of the two folders. `batch/` is emptied only after the
indexer committed its shards; a restart indexes what is left there at once, and lets `incoming/` settle again. A
symbolic link found in `incoming/` or `batch/` at start stops the node, naming it (the node never makes one).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import commit, fsync_dir
from radretrieve.outdir.layout import RECEIVE_DIR

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
STUDY_PREFIX = "study-"
FOLDER_MODE = 0o700  # received instances carry every patient header: the owner alone reads them


@dataclass(frozen=True)
class InstanceUids:
    """The three UIDs that name an instance's spool file, each checked as a DICOM UID."""

    study: str
    series: str
    sop: str


@dataclass
class _Study:
    """A study in `incoming/`: when it last grew, and what may still be sending to it."""

    last: float  # time.monotonic() of its last stored instance (or of the node's start, after a restart)
    writing: int = 0  # stores in flight: the study is not moved while one is
    senders: set[int] = field(default_factory=set)  # open associations that delivered to it
    released: bool = False  # an association that delivered to it was released after its last instance


@dataclass(frozen=True)
class Taken:
    """What one `take_ready` moved into `batch/`."""

    studies: int
    series: int
    instances: int


class Spool:
    """The spool of one out dir; `store` is called from the association threads, the rest from the node."""

    def __init__(self, out_dir: Path) -> None:
        self.root = Path(out_dir) / RECEIVE_DIR
        self.incoming, self.batch = self.root / "incoming", self.root / "batch"
        for folder in (self.root, self.incoming, self.batch):
            folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        os.chmod(self.root, FOLDER_MODE)  # also when it was made by an older run under another umask
        fsync_dir(self.root.parent)
        self._lock = threading.Lock()
        self._studies: dict[str, _Study] = {}
        self._sender_studies: dict[int, set[str]] = {}

    def recover(self) -> int:
        """At start (writer lock held): remove the temp files of stores a kill interrupted (never acknowledged)
        and let every study found in `incoming/` settle again from now. Returns the studies found."""
        self._refuse_links()
        for part in sorted(self.root.rglob(f".*{PART_SUFFIX}")):
            part.unlink(missing_ok=True)
        now = time.monotonic()
        with self._lock:
            for folder in sorted(p for p in self.incoming.iterdir() if p.is_dir()):
                self._studies.setdefault(folder.name.removeprefix(STUDY_PREFIX), _Study(last=now))
            return len(self._studies)

    def _refuse_links(self) -> None:
        """The node makes only folders and files in `incoming/` and `batch/`; through a symbolic link found there
        (planted, or restored from a copy) stores would be written, files indexed and `clear_batch` would remove
        folders outside the spool. (`receive/` itself may be a link, e.g. to a larger disk.)"""
        for folder in (self.incoming, self.batch):
            links = [folder] if folder.is_symlink() else []
            for top, dirs, files in os.walk(folder):  # not into linked folders
                links += [Path(top, name) for name in dirs + files if os.path.islink(os.path.join(top, name))]
            if links:
                raise RadRetrieveError(
                    f"{links[0]}: a symbolic link in the receiving node's spool (it makes only folders and files); "
                    "remove it"
                )

    def store(self, data: bytes, uids: InstanceUids, sender: int) -> bool:
        """Put one instance (a DICOM file's bytes) on disk, durably; True when its name was new to `incoming/`."""
        with self._lock:
            study = self._studies.setdefault(uids.study, _Study(last=time.monotonic()))
            study.writing += 1
            study.senders.add(sender)
            self._sender_studies.setdefault(sender, set()).add(uids.study)
        try:
            folder = self._folder(uids)
            path = folder / f"{uids.sop}.dcm"
            new = not path.exists()
            tmp = folder / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PART_SUFFIX}"
            try:
                with open(tmp, "xb") as fh:
                    fh.write(data)
                commit(tmp, path)  # fsync, mode, rename, folder fsync
            finally:
                tmp.unlink(missing_ok=True)
            return new
        finally:
            with self._lock:
                study.writing -= 1
                study.last, study.released = time.monotonic(), False

    def _folder(self, uids: InstanceUids) -> Path:
        """incoming/<study>/<series>, made durable (the new folder entries fsynced) when new."""
        study = self.incoming / f"{STUDY_PREFIX}{uids.study}"
        series = study / uids.series
        if not series.is_dir():
            new_study = not study.is_dir()
            series.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            fsync_dir(study)
            if new_study:
                fsync_dir(self.incoming)
        return series

    def ended(self, sender: int, released: bool) -> None:
        """An association ended: released (its studies are complete once nothing else sends to them) or
        aborted, its connection lost (they wait for the quiet period)."""
        with self._lock:
            for key in self._sender_studies.pop(sender, set()):
                study = self._studies.get(key)
                if study is not None:
                    study.senders.discard(sender)
                    study.released = study.released or released

    def _ready(self, settle: float) -> list[str]:
        """The settled studies, oldest first (call with the lock held)."""
        now = time.monotonic()
        return [
            key
            for key, s in sorted(self._studies.items(), key=lambda kv: kv[1].last)
            if s.writing == 0 and (now - s.last >= settle or (s.released and not s.senders))
        ]

    def has_ready(self, settle: float) -> bool:
        """Whether `take_ready` would take a study now."""
        with self._lock:
            return bool(self._ready(settle))

    def take_ready(self, settle: float, limit: int) -> Taken | None:
        """Move up to `limit` settled studies into the empty `batch/` folder: those quiet for `settle` seconds,
        or whose sender released its association (and no other is sending to them). None when there are none."""
        with self._lock:
            ready = self._ready(settle)[:limit]
            names = [f"{STUDY_PREFIX}{key}" for key in ready]
            for key, name in zip(ready, names, strict=True):
                del self._studies[key]
                study = self.incoming / name
                if not study.is_dir():  # its only store failed before making the folder
                    continue
                if not _instances(study):  # only failed stores' folders (a full disk): nothing was acknowledged;
                    shutil.rmtree(study)  # a batch without a file fails to index for ever and blocks the node
                    continue
                os.replace(study, self.batch / name)
            ready = [name for name in names if (self.batch / name).is_dir()]
        if not ready:
            return None
        fsync_dir(self.incoming)
        fsync_dir(self.batch)
        series = [p for key in ready for p in (self.batch / key).iterdir() if p.is_dir()]
        return Taken(len(ready), len(series), sum(_instances(study) for study in (self.batch / k for k in ready)))

    def batch_pending(self) -> Taken | None:
        """What a killed or failed run left in `batch/` (indexed first, at once), or None."""
        studies = [p for p in self.batch.iterdir() if p.is_dir()]
        if not studies:
            return None
        series = [p for s in studies for p in s.iterdir() if p.is_dir()]
        return Taken(len(studies), len(series), sum(1 for s in series for f in s.iterdir() if f.suffix == ".dcm"))

    def clear_batch(self) -> None:
        """Remove the indexed studies (call only once their rows are in committed shards)."""
        for folder in sorted(self.batch.iterdir()):
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
        fsync_dir(self.batch)

    def waiting(self) -> tuple[int, int]:
        """(studies in `incoming/`, of which stores are in flight or senders still open)."""
        with self._lock:
            busy = sum(1 for s in self._studies.values() if s.writing or s.senders)
            return len(self._studies), busy


def _instances(study: Path) -> int:
    """Instance files in a study folder (study/series/SOP.dcm)."""
    return sum(1 for series in study.iterdir() if series.is_dir() for f in series.iterdir() if f.suffix == ".dcm")
