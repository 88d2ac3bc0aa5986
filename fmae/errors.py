"""The one exception hierarchy of fmae, translated to exit codes once, in cli.py."""

from __future__ import annotations


class FmaeError(Exception):
    """A failure the user can act on: one line of message, one hint, an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class ConfigError(FmaeError):
    """An invalid value or combination of options (a usage error)."""

    exit_code = 2


class DataError(FmaeError):
    """The dataset is missing, truncated, corrupted or could not be downloaded."""


class CheckpointError(FmaeError):
    """A checkpoint is missing, foreign, truncated or unsafe."""


class RunDirError(FmaeError):
    """A run directory holds another run, is locked, or cannot be written."""


class DeviceError(FmaeError):
    """The requested device is not available on this machine."""


class Interrupted(FmaeError):
    """Training was interrupted by a signal after saving what can be resumed."""

    exit_code = 130
