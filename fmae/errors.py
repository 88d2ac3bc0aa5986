"""The one exception hierarchy of fmae, translated to exit codes once, in cli.py."""

from __future__ import annotations

from typing import Any


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its first), or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def out_of_memory(exc: BaseException, config: Any) -> FmaeError | None:
    """An allocation failure while training `config`, as an error naming the settings to change."""
    text = str(exc).lower()
    if not (isinstance(exc, MemoryError)
            or (isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text))):
        return None
    return FmaeError(f"not enough memory to train --hidden {config.model.hidden} with --batch-size "
                     f"{config.batch_size}", "use a smaller --hidden or --batch-size")


class Interrupted(FmaeError):
    """A command was interrupted by a signal, after saving what can be resumed: `what` was
    interrupted, `saved` says what was kept. The signal (SIGTERM: exit 143, else SIGINT: 130) may
    be settled later by the error boundary, which knows which signal arrived first (Ray turns
    fmae's Terminated into a plain KeyboardInterrupt on its way up)."""

    def __init__(self, what: str, saved: str, hint: str | None = None, *, sigterm: bool = False,
                 resume: list[str] | None = None, partial: dict[str, Any] | None = None) -> None:
        super().__init__(what, hint)
        self.what, self.saved, self.sigterm = what, saved, sigterm
        self.resume = resume  # the command that resumes it (argv), when the library knows one
        self.partial = partial  # the results so far (the document --json would have printed), if any

    @property
    def message(self) -> str:
        return f"{self.what} interrupted by {'SIGTERM' if self.sigterm else 'SIGINT'}; {self.saved}"

    @message.setter
    def message(self, value: str) -> None:  # FmaeError.__init__ sets it: the text is built from the parts
        pass

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return 143 if self.sigterm else 130


class StatusFailed(FmaeError):
    """`--fail-on`: a run or cell ended in a status the user named (the results were printed first)."""

    exit_code = 3


def check_fail_on(statuses: list[str], fail_on: list[str] | None, what: str) -> None:
    """Raise StatusFailed when any of `statuses` (one per run or cell) is named in `fail_on`."""
    hits = [s for s in statuses if s in (fail_on or ())]
    if hits:
        counts = ", ".join(f"{s} {hits.count(s)}" for s in dict.fromkeys(hits))
        raise StatusFailed(f"{len(hits)} of {len(statuses)} {what} ended in a status named by --fail-on ({counts})",
                           "see the results above; drop --fail-on to exit 0 on these")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where it lands so that it unwinds like Ctrl-C (then exits 143, not 130)."""


class BrokenPipe(FmaeError):
    """stdout's reader went away (`fmae ... | head`): exit quietly, as a tool killed by SIGPIPE would."""

    exit_code = 141


class StdoutError(FmaeError):
    """The results could not be written to stdout (closed, full): nothing more goes there."""


def stdout_error(exc: BaseException | None) -> FmaeError:
    """A failed write of the results to stdout, as the user should hear of it (None: stdout is closed)."""
    if exc is None:
        return StdoutError("stdout is closed: the results have nowhere to go",
                         "redirect it to a file, or to /dev/null to discard them")
    if isinstance(exc, BrokenPipeError):
        return BrokenPipe("stdout closed by its reader")
    reason = getattr(exc, "strerror", None) or str(exc)
    return StdoutError(f"cannot write the results to stdout: {reason}",
                     "check where stdout goes (a full disk?), or redirect it elsewhere")
