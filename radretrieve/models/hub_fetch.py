"""One file of a hub repo into the huggingface cache, under names radretrieve checked itself.

`huggingface_hub.hf_hub_download` asks the hub for a file's metadata with its own request and names the cache's
files after the ETag and commit of that answer. A hostile hub (or mirror, `HF_ENDPOINT`) can answer radretrieve's
check honestly and the library's request with an ETag that is a path, and the library then writes the download
there, or treats an existing file there as the cached copy (which a failed check would then delete). So online
downloads go through here: one metadata request, its ETag and commit checked to be hex ids, the body streamed
into `blobs/<etag>.incomplete` (resumed with a Range request, as the library does), at most `max_bytes` and
within `deadline_s`, hashed as it arrives and checked against the ETag (an LFS file's is its sha256, a small
file's its git blob id) before it becomes `blobs/<etag>`. The cache layout is the library's own (blobs,
snapshots/<commit>/<file> linking to the blob, refs/<revision>), so its offline mode and `scan-cache` read it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from radretrieve.foundation.errors import ModelLoadError

log = logging.getLogger(__name__)

SHA256 = re.compile(r"^[0-9a-f]{64}$")
HEX_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # an ETag the hub sends: git blob sha1 or LFS sha256
COMMIT = re.compile(r"^[0-9a-f]{40}$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a branch or tag name safe as a file name
CHUNK = 1 << 20
RETRIES = 5  # dropped connections in a row without a byte of progress before a download gives up
DEADLINE_S = 6 * 3600.0  # a whole download (ViT-L is 1.7 GB: hours on a slow line, never forever)


@dataclass(frozen=True)
class Declared:
    """What the hub declares for a file, checked: hex ETag and commit, size within bounds."""

    url: str  # where the body is fetched (the resolve URL; redirects are followed by the session)
    etag: str  # sha256 (LFS) or git blob sha1: the blob's file name
    commit: str  # the snapshot's folder name
    size: int | None


def declared(repo: str, filename: str, revision: str | None, max_bytes: int) -> Declared:
    """The hub's metadata for `repo/filename`, refused in one line when it is not what the cache may be named by
    or declares more than `max_bytes`."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo, filename, revision=revision)
    meta = get_hf_file_metadata(url)
    if meta.size is not None and meta.size > max_bytes:
        too_big = f"the hub declares {meta.size} bytes, more than the {max_bytes} expected"
        raise ModelLoadError(f"{repo}/{filename}: {too_big}; refused")
    etag, commit = meta.etag or "", meta.commit_hash or ""
    if not HEX_ID.match(etag) or not COMMIT.match(commit):
        shown = f"ETag {etag[:80]!r}, commit {commit[:80]!r}"
        raise ModelLoadError(f"{repo}/{filename}: the hub's answer is not a digest and a commit id ({shown}); refused")
    return Declared(url, etag, commit, meta.size)


def fetch_into_cache(
    repo: str, filename: str, revision: str | None, max_bytes: int, deadline_s: float = DEADLINE_S
) -> Path:
    """Download `repo/filename` (or find it already cached under its checked ETag) and return its snapshot path
    in the huggingface cache, as `hf_hub_download` would."""
    from filelock import FileLock
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    _check_filename(repo, filename)
    meta = declared(repo, filename, revision, max_bytes)
    folder = repo_folder_name(repo_id=repo, repo_type="model")
    storage = Path(constants.HF_HUB_CACHE) / folder
    blob = storage / "blobs" / meta.etag  # a checked hex id: cannot name a file outside blobs/
    lock = Path(constants.HF_HUB_CACHE) / ".locks" / folder / f"{meta.etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        if not blob.is_file():
            _download(meta, blob, repo, filename, max_bytes, deadline_s)
        pointer = _link(storage, meta, filename)
        _write_ref(storage, revision or "main", meta.commit)
    return pointer


def _check_filename(repo: str, filename: str) -> None:
    parts = filename.split("/")
    if filename.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in filename:
        raise ModelLoadError(f"{repo}: {filename[:80]!r} is not a file name inside a repo; refused")


def _download(meta: Declared, blob: Path, repo: str, filename: str, max_bytes: int, deadline_s: float) -> None:
    """Stream the body into `<blob>.incomplete` (resuming what is there, and again after a dropped connection
    while bytes keep coming), check it, then rename it to `blob`."""
    import httpx2  # huggingface_hub's HTTP client: its session raises these

    partial = blob.with_name(blob.name + ".incomplete")
    blob.parent.mkdir(parents=True, exist_ok=True)
    stop_at, stalled = time.monotonic() + deadline_s, 0
    while True:
        before = _size(partial)
        try:
            _stream(meta, partial, f"{repo}/{filename}", max_bytes, (stop_at, deadline_s))
            break
        except httpx2.TransportError as exc:  # a dropped or timed-out connection
            stalled = 0 if _size(partial) > before else stalled + 1
            if stalled >= RETRIES:
                raise
            log.warning("%s/%s: %s; resuming the download", repo, filename, type(exc).__name__)
            time.sleep(1)
    actual = _digest(partial, meta.etag)
    if actual != meta.etag:
        partial.unlink(missing_ok=True)
        kind = "sha256" if SHA256.match(meta.etag) else "git blob id"
        raise ModelLoadError(
            f"{repo}/{filename}: downloaded {kind} {actual} does not match the hub's {meta.etag}; "
            "the bad copy was deleted (pull again)"
        )
    from radretrieve.foundation.fileio import commit

    commit(partial, blob)  # renamed and the folder synced: a blob is whole or absent


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _stream(meta: Declared, partial: Path, shown: str, max_bytes: int, deadline: tuple[float, float]) -> None:
    """One GET of the rest of the body, appended to `partial` (a 200 answer to a Range request: from the start)."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    have = _size(partial)
    headers = build_hf_headers() | ({"Range": f"bytes={have}-"} if have else {})
    stop_at, deadline_s = deadline
    limit = min(max_bytes, meta.size) if meta.size is not None else max_bytes  # never more than declared
    with get_session().stream("GET", meta.url, headers=headers, follow_redirects=True) as response:
        hf_raise_for_status(response)
        mode = "ab" if have and response.status_code == 206 else "wb"
        with partial.open(mode) as out:
            written = out.tell()
            for chunk in response.iter_bytes(CHUNK):
                written += len(chunk)
                if written > limit:
                    partial.unlink(missing_ok=True)
                    raise ModelLoadError(f"{shown}: the hub sent more than the {limit} bytes declared; refused")
                out.write(chunk)
                if time.monotonic() > stop_at:  # what came is kept: the next pull resumes from it
                    raise ModelLoadError(f"{shown}: not downloaded within {deadline_s:.0f} s; pull again to resume")


def _digest(path: Path, etag: str) -> str:
    """The file's id in the form the ETag has: sha256 (LFS) or git's blob sha1."""
    h = hashlib.sha256() if SHA256.match(etag) else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _link(storage: Path, meta: Declared, filename: str) -> Path:
    """snapshots/<commit>/<filename> -> the blob (relative, as the library links; a copy where links fail)."""
    pointer = storage / "snapshots" / meta.commit / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    blob = storage / "blobs" / meta.etag
    if pointer.is_symlink() or pointer.is_file():
        if os.path.realpath(pointer) == os.path.realpath(blob):
            return pointer
        pointer.unlink()
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), tmp)
    except OSError:  # a file system without symlinks: the library copies too
        import shutil

        shutil.copyfile(blob, tmp)
    os.replace(tmp, pointer)
    return pointer


def _write_ref(storage: Path, revision: str, commit: str) -> None:
    """refs/<revision> = commit, so that offline mode finds the snapshot; only for a plain branch or tag name."""
    if revision == commit or not REVISION.match(revision) or ".." in revision:
        return
    from radretrieve.foundation.fileio import atomic_write_text

    ref = storage / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ref, commit)
