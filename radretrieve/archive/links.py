"""Links out of the archive: a symbolic link inside an archive may point anywhere the indexing user can read
(another patient's folder, a home directory), so by default the scan follows no link whose real target leaves
the archive's allowed root, and records each one it skips (error type `ExternalLink`, stage `scan`) without
naming the target. `--follow-external-links` (`ScanPolicy.follow_links`) follows them.

The allowed root of a root-relative path is the archive root (for a manifest: the manifest's folder). A
manifest row may name a place outside its folder on purpose (an absolute path, or one with `..`): that row's
allowed root is the folder it names (the folder holding a file row, or a folder row itself), so a link there
may not lead out of it either. Links are resolved with `os.path.realpath`, which stops at a loop instead of
hanging; a looping link is then an unreadable file.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from radretrieve.archive.records import ArchiveError

EXTERNAL_LINK = "ExternalLink"  # error type of a skipped link
REASON = "a link that leads outside the archive root: not followed (--follow-external-links indexes it)"


def is_inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or below it (both already made real)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def outside_root(rel: str) -> bool:
    """Whether a manifest path names a place outside the manifest's folder (absolute, or leading `..`)."""
    norm = os.path.normpath(rel)
    return os.path.isabs(norm) or norm == os.pardir or norm.startswith(os.pardir + os.sep)


def allowed_root(root: Path, rel: str, base: Path | str | None = None) -> str:
    """The real folder that `root/rel` must stay in once its links are resolved (see the module docstring);
    `base` overrides it (the folder row a file was found under)."""
    if base is not None:
        return os.path.realpath(base)
    if outside_root(rel):
        return os.path.realpath(os.path.dirname(os.path.join(root, os.path.normpath(rel))))
    return _real_root(str(root))


@functools.lru_cache(maxsize=64)
def _real_root(root: str) -> str:
    """The real archive root, resolved once per process: a root re-pointed since then only makes more files
    look outside it (refused), never fewer."""
    return os.path.realpath(root)


def leaves_root(root: Path, rel: str, base: Path | str | None = None) -> bool:
    """Whether `root/rel`, with every link on its way resolved, lies outside its allowed root."""
    return not is_inside(os.path.realpath(os.path.join(root, rel)), allowed_root(root, rel, base))


def link_error(rel: str) -> ArchiveError:
    """The record of a skipped link: its own path, never its target's."""
    return ArchiveError(rel, REASON, EXTERNAL_LINK, "scan")
