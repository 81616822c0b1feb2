"""Typed errors. The CLI turns every `RadRetrieveError` into one line and exit code 1."""

from __future__ import annotations

from radretrieve.foundation.names import shown


class RadRetrieveError(Exception):
    """Base class for errors the user can act on (bad input, missing file, offline download...)."""


class ConfigError(RadRetrieveError):
    """A model/preprocessing config is invalid or unknown."""


class ModelLoadError(RadRetrieveError):
    """Weights or a model directory could not be loaded."""


class FingerprintMismatch(RadRetrieveError):
    """Two artefacts were produced by different models (or preprocessing)."""


class InputShapeError(RadRetrieveError, ValueError):
    """A tensor handed to an encoder has the wrong shape (the message names it)."""


class ReadError(RadRetrieveError):
    """A source file could not be read. `path` and `reason` are kept for error records."""

    def __init__(self, path: str, reason: str, stage: str = "read") -> None:
        path, reason = shown(path), shown(reason)  # a file name that is not UTF-8 (radretrieve.foundation.names)
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.stage = stage


class WriteFailed(RadRetrieveError):
    """A file could not be written (a full disk, a read-only folder); the message names the file."""
