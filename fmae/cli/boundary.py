"""The error boundary: every failure translated to one `error:` line and an exit code, once, in
FmaeGroup.main (docs/exit-codes.md). The signals a command receives are fmae.interrupts'.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from fmae.errors import BrokenPipe, ConfigError, FmaeError, Interrupted, StatusFailed, StdoutError
from fmae.interrupts import Signals, interrupted
from fmae.status import Status


class FmaeGroup(TyperGroup):
    """Translates every failure into one `error: ...` line and the documented exit code.

    Signals (see Signals): SIGTERM is raised as Terminated (a KeyboardInterrupt) wherever it
    lands, and both are turned into Interrupted inside `invoke`, before typer's click would make
    a silent Exit(130) of them: so every command exits 130 (SIGINT) or 143 (SIGTERM) with one line.
    """

    signals: Signals | None = None
    args: list[str] = []  # this invocation's arguments: --json asked for, the command to run again

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        args = sys.argv[1:] if args is None else list(args)
        if not args and "_FMAE_COMPLETE" not in os.environ:  # bare `fmae`: the help, as help (stdout, exit 0)
            args = ["--help"]
        main_thread = threading.current_thread() is threading.main_thread()
        self.args = args
        self.signals = Signals()
        previous = self.signals.install() if main_thread else {}
        try:
            code = self._run(args, prog_name, complete_var, **extra)
        finally:
            if self.signals.first is None:  # after a signal, the handler stays: the exit ignores repeats
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        if standalone_mode:
            sys.exit(code)
        return code

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as exc:  # while parsing: click would make a silent Exit(130) of it
            raise interrupted(exc, "fmae", "nothing was written", "run the same command again") from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise interrupted(exc, f"fmae {ctx.invoked_subcommand or ''}".strip(),
                              "files written so far are complete, none is left half-written",
                              "run the same command again") from None
        except BrokenPipeError:
            raise BrokenPipe("stdout closed by its reader") from None
        except ConfigError as exc:
            if exc.hint is None and ctx.invoked_subcommand:  # every usage error says where to look
                exc.hint = f"see `fmae {ctx.invoked_subcommand} --help`"
            raise

    def _run(self, args: Any, prog_name: Any, complete_var: Any, **extra: Any) -> int:
        try:
            rv = super().main(args=args, prog_name=prog_name or "fmae", complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except BrokenPipe as exc:
            _quiet_stdout()
            code = exc.exit_code
        except FmaeError as exc:
            if isinstance(exc, Interrupted) and self.signals is not None and self.signals.first == signal.SIGTERM:
                exc.sigterm = True
            code = self._fail(str(exc), exc.exit_code, exc)
        except typer.TyperException as exc:  # typer's own click: usage errors (exit 2) and the like
            ctx = getattr(exc, "ctx", None)
            sub = ctx.info_name if ctx is not None and ctx.parent is not None else None
            hint = f"see `fmae {sub} --help`" if sub else "see `fmae --help`"
            message = _usage_message(exc.format_message())
            code = self._fail(message + (f" (hint: {hint})" if exc.exit_code == 2 else ""), exc.exit_code,
                              FmaeError(message, hint if exc.exit_code == 2 else None))
        except typer.Abort:
            code = self._fail(str(Status.INTERRUPTED), 130)
        except KeyboardInterrupt as exc:  # landed outside a command (while parsing, say)
            err = interrupted(exc, "fmae", "nothing was written", "run the same command again",
                              sigterm=self.signals is not None and self.signals.terminated(exc))
            code = self._fail(str(err), err.exit_code, err)
        except OSError as exc:  # typer's own output (--help) to a full or closed stdout
            code = _stdout_failed(exc) if _on_stdout(exc) else self._fail(*_unexpected(exc))
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
            code = self._fail(*_unexpected(exc))
        return _flushed(code)

    def _fail(self, message: str, code: int, exc: FmaeError | None = None) -> int:
        """The one error line on stderr; with --json, the one document on stdout too (error_document),
        unless stdout is what failed or the results went there already (--fail-on's exit 3)."""
        if _wants_json(self.args) and not isinstance(exc, (StdoutError, StatusFailed)):
            try:
                from fmae.cli.ui import print_json

                print_json(error_document(code, message, exc, self.args))
            except FmaeError:  # stdout closed or full: the error line below is all that is left
                _quiet_stdout()
        return _fail(message, code)

    def get_help_option(self, ctx: Any) -> Any:
        return _false_by_default(super().get_help_option(ctx))

    def get_params(self, ctx: Any) -> list[Any]:
        for param in self.params:
            if param.name in ("install_completion", "show_completion"):
                param.hidden = True  # completions/ ships the scripts; the README says how to install them
            _false_by_default(param)
        return super().get_params(ctx)


def _false_by_default(option: Any) -> Any:
    """Typer coerces an absent flag's None through pydantic: 0.1-0.15 s of imports before any
    `fmae <command> --help`. With a False default the flag takes typer's fast path for booleans."""
    if option is not None and getattr(option, "is_flag", False) and option.default is None:
        option.default = False
    return option


def _quiet_stdout() -> None:
    """After a failed write: point stdout at /dev/null, so the flush at exit cannot fail again."""
    _quiet(sys.stdout)


def _quiet(stream: Any) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass


def _on_stdout(exc: OSError) -> bool:
    """Whether `exc` is a failed write to stdout: click's `echo` (--help, its messages) raised it,
    or what is still buffered there fails the same way."""
    if isinstance(exc, BrokenPipeError):
        return True
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "echo" and frame.f_globals.get("__name__", "").endswith("click.utils") \
                and not frame.f_locals.get("err"):
            return True
        tb = tb.tb_next
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        return True
    return False


def _stdout_failed(exc: BaseException | None) -> int:
    """A full, closed or unread stdout: its one error line (none for a reader gone away), and
    stdout pointed at /dev/null, so that the interpreter's flush at exit cannot fail again."""
    from fmae.errors import stdout_error

    _quiet_stdout()
    err = stdout_error(exc)
    return err.exit_code if isinstance(err, BrokenPipe) else _fail(str(err), err.exit_code)


def _flushed(code: int) -> int:
    """Flush stdout inside the error boundary, on every path (typer's --help and --version too):
    block-buffered output (a file, a pipe) would otherwise fail at exit, past any handler, as
    Python's "Exception ignored" and exit code 120."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError) as exc:
        failed = _stdout_failed(exc) if code == 0 else (_quiet_stdout(), code)[1]  # one error line, not two
        return failed if code == 0 else code
    return code


_NOT_ONE_OF = re.compile(r"Invalid value for '(?P<option>[^']+)': Value error, (?P<value>'.*') is not one of "
                        r"(?P<choices>.+?)\.?$", re.S)


def _usage_message(message: str) -> str:
    """typer's check of a choice ("Value error, 'SGD' is not one of 'adam', 'sgd'.") said plainly."""
    found = _NOT_ONE_OF.match(message)
    if not found:
        return message
    choices = ", ".join(c.strip().strip("'") for c in found["choices"].split(","))
    return f"invalid value for {found['option']}: {found['value']} (choose from {choices})"


def _unexpected(exc: BaseException) -> tuple[str, int, FmaeError]:
    message, hint = f"unexpected {type(exc).__name__}: {exc}", "rerun with FMAE_DEBUG=1 and report it"
    return f"{message} (hint: {hint})", 1, FmaeError(message, hint)


def _wants_json(args: list[str]) -> bool:
    """--json among a command's arguments (before a `--`)."""
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def error_document(code: int, message: str, exc: FmaeError | None, args: list[str]) -> dict[str, Any]:
    """What --json prints when a command fails (docs/json.md): the exit code, the message and the
    hint; for an interrupt also the signal, what was saved, the command that resumes (or reruns)
    it and the results so far (`partial`, null when there are none)."""
    import shlex

    from fmae.runs import SCHEMA_VERSION

    error = {"exit_code": code, "message": exc.message if exc is not None else message,
             "hint": exc.hint if exc is not None else None}
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "error": error}
    if isinstance(exc, Interrupted) or code == 130:
        resume = getattr(exc, "resume", None) or ["fmae", *args]
        doc["interrupt"] = {"signal": "SIGTERM" if code == 143 else "SIGINT", "saved": getattr(exc, "saved", None),
                              "resume": shlex.join(resume)}
        doc["partial"] = getattr(exc, "partial", None)
    return doc


def _fail(message: str, code: int) -> int:
    from fmae.cli.ui import print_error

    try:
        if os.environ.get("FMAE_DEBUG") == "1" and sys.exc_info()[0] is not None:
            traceback.print_exc()
        print_error(message)
    except (OSError, ValueError):  # stderr full or closed as well: the exit code is all that is left
        _quiet(sys.stderr)
    return code
