"""Interrupts below the CLI: the signals a command receives, and the one error of an interrupt.

The error boundary (fmae.cli.boundary) installs Signals once per command; the library raises
`interrupted(...)` where it knows what was saved and how to resume.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from fmae.errors import Interrupted, Terminated


class Signals:
    """The signals a command receives, kept on its FmaeGroup (the error boundary).

    The first SIGINT or SIGTERM raises where it lands (KeyboardInterrupt, or Terminated for
    SIGTERM) and is remembered: Ray's signal check turns any KeyboardInterrupt into a plain one,
    so the exit code is decided from `first`, not from the exception's type. A later one is
    ignored: the process is already on its way out, and a second Ctrl-C must not break the
    cleanup (workers stopped, the pool's threads joined, multiprocessing's temporary folder
    removed) into tracebacks, leftovers, or a death by SIGINT; only after GRACE seconds of
    cleanup does one end the process at once, with the same exit code.
    """

    GRACE = 5.0  # seconds of cleanup after which a repeated signal ends the process at once

    def __init__(self) -> None:
        self.first: int | None = None
        self.at = 0.0

    def handle(self, signum: int, frame: Any) -> None:
        if self.first is None:
            self.first, self.at = signum, time.monotonic()
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        if time.monotonic() - self.at > self.GRACE:  # the cleanup hangs: the user insists, fmae obeys
            os._exit(143 if self.first == signal.SIGTERM else 130)

    def install(self) -> dict[int, Any]:
        """Take SIGTERM, and SIGINT unless it is ignored (a background job); returns what to restore."""
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self.handle)}
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, self.handle)
        return previous

    def terminated(self, exc: BaseException) -> bool:
        return isinstance(exc, Terminated) or self.first == signal.SIGTERM


def interrupted(exc: BaseException, what: str, saved: str, hint: str | None = None, *, sigterm: bool | None = None,
                resume: list[str] | None = None, partial: dict[str, Any] | None = None) -> Interrupted:
    """The one error line of an interrupt: what was interrupted, by which signal, what was saved;
    with `resume` (an argv), the hint names that command and --json's document carries it, with
    the `partial` results. Without `sigterm`, the exception's type tells; FmaeGroup settles it from
    the signal that came first."""
    import shlex

    if hint is None and resume is not None:
        hint = f"resume with: {shlex.join(resume)}"
    return Interrupted(what, saved, hint, sigterm=isinstance(exc, Terminated) if sigterm is None else sigterm,
                       resume=resume, partial=partial)
