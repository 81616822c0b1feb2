"""Login sessions, kept on the server: a fresh random id per login, an expiry, revocation.

    store = SessionStore(folder, lifetime_s=12 * 3600)
    sid = store.create()          # the cookie value: 32 random bytes, url-safe
    store.valid(sid)              # True until it expires or is revoked
    store.revoke(sid)             # logout

The browser holds only the random id; the server holds one file per live session in `folder`, named by the
SHA-256 of the id (so listing the folder gives no usable cookie) and holding its expiry. A file and not a dict
in memory because `--workers N` runs N processes that must all see a login and a logout; the folder is a
private temporary folder made by `serve` for this run and removed when it stops, so restarting the server
ends every session. Expired files are dropped when they are next looked at and at each login.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from radretrieve.foundation.fileio import atomic_write_text

SESSION_BYTES = 32
_SID = re.compile(r"[A-Za-z0-9_-]{43}")  # what secrets.token_urlsafe(32) gives; anything else is no session


class SessionStore:
    """The live sessions of one server run (shared by its worker processes through `folder`)."""

    def __init__(self, folder: Path, lifetime_s: float, clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self.lifetime_s = float(lifetime_s)
        self.clock = clock  # wall-clock seconds (shared by the workers through the files); a test sets its own

    def _file(self, sid: str) -> Path:
        return self.folder / hashlib.sha256(sid.encode("ascii")).hexdigest()

    def create(self) -> str:
        """A new session id, valid for `lifetime_s` from now."""
        self.prune()
        sid = secrets.token_urlsafe(SESSION_BYTES)
        atomic_write_text(self._file(sid), repr(self.clock() + self.lifetime_s))
        return sid

    def valid(self, sid: str) -> bool:
        """Whether `sid` is a live session: exactly an id this store gave out, not expired, not revoked."""
        if not _SID.fullmatch(sid):  # checked before any file is touched: wrong length, charset, padding
            return False
        path = self._file(sid)
        expiry = _expiry(path)
        if expiry is None:
            return False
        if expiry <= self.clock():
            path.unlink(missing_ok=True)
            return False
        return True

    def revoke(self, sid: str) -> None:
        if _SID.fullmatch(sid):
            self._file(sid).unlink(missing_ok=True)

    def prune(self) -> None:
        """Drop the files of expired sessions."""
        now = self.clock()
        for path in self.folder.glob("[0-9a-f]" * 64):
            expiry = _expiry(path)
            if expiry is not None and expiry <= now:
                path.unlink(missing_ok=True)


def _expiry(path: Path) -> float | None:
    try:
        return float(path.read_text(encoding="ascii"))
    except (OSError, ValueError):  # no such session (revoked, expired, never given), or a file being replaced
        return None
