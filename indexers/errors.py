"""Errors of the index layer; all are `RadRetrieveError`s, so the CLI prints one line and exits 1."""

from __future__ import annotations

from radretrieve.foundation.errors import FingerprintMismatch, RadRetrieveError

__all__ = ["FingerprintMismatch", "IndexMissing", "SearchArgError", "StaleIndex", "StudyNotFound"]


class IndexMissing(RadRetrieveError):
    """The out dir has no (complete) `index/` folder."""


class StaleIndex(RadRetrieveError):
    """index.json and the .faiss file disagree (an interrupted build); rebuild."""


class SearchArgError(RadRetrieveError, ValueError):
    """k or a search parameter is out of range (for the device in use)."""


class StudyNotFound(RadRetrieveError):
    """A query study (item id or study key) is not in the catalog."""
