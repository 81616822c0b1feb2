"""Credentials of a DICOMweb server: from an environment variable or a file, never from the command line.

One format for both: `basic USER:PASSWORD` (HTTP basic) or `bearer TOKEN` (an OAuth/JWT bearer token), on
the first line of `--auth-file FILE` or in the variable RADRETRIEVE_DICOMWEB_AUTH. The secret is kept out
of every repr, log line and error message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from radretrieve.foundation.errors import RadRetrieveError

AUTH_ENV = "RADRETRIEVE_DICOMWEB_AUTH"
FORMAT_HINT = "expected 'basic USER:PASSWORD' or 'bearer TOKEN'"


@dataclass(frozen=True)
class Auth:
    """HTTP credentials. `repr` shows the scheme and where they came from, never the secret."""

    scheme: str  # "basic" or "bearer"
    origin: str  # where they were read: the variable's name or "--auth-file"
    user: str = field(default="", repr=False)  # basic only
    secret: str = field(default="", repr=False)  # the password (basic) or the token (bearer)

    def apply(self, session: object) -> None:
        """Make every request of a `requests.Session` carry the credentials."""
        if self.scheme == "basic":
            session.auth = (self.user, self.secret)  # type: ignore[attr-defined]
        else:
            session.auth = _Bearer(self.secret)  # type: ignore[attr-defined]


class _Bearer:
    """`requests` auth hook adding `Authorization: Bearer ...` (kept out of the per-request headers that
    dicomweb-client writes to its debug log)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: object) -> object:
        request.headers["Authorization"] = f"Bearer {self._token}"  # type: ignore[attr-defined]
        return request

    def __repr__(self) -> str:
        return "_Bearer(***)"


def parse_auth(text: str, origin: str) -> Auth:
    """Credentials from `basic USER:PASSWORD` or `bearer TOKEN` (surrounding whitespace ignored)."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    scheme, _, value = line.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return Auth("bearer", origin, secret=value)
    if scheme == "basic" and ":" in value and value.split(":", 1)[0]:
        user, password = value.split(":", 1)
        return Auth("basic", origin, user=user, secret=password)
    raise RadRetrieveError(f"{origin}: unreadable credentials ({FORMAT_HINT})")


def resolve_auth(auth_file: Path | None) -> Auth | None:
    """The credentials of `--auth-file`, else of RADRETRIEVE_DICOMWEB_AUTH, else None (no authentication)."""
    if auth_file is not None:
        try:
            text = Path(auth_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise RadRetrieveError(f"--auth-file {auth_file}: cannot read it ({exc.strerror or exc})") from None
        return parse_auth(text, f"--auth-file {auth_file}")
    value = os.environ.get(AUTH_ENV, "")
    return parse_auth(value, AUTH_ENV) if value.strip() else None
