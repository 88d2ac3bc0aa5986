"""The Typer app: the group, the error boundary, multi-value options; commands live in fmae.commands.

No torch, torchvision or matplotlib import at module level: --help, --version and shell
completion must stay fast. Errors are translated to one `error:` line and an exit code once,
in FmaeGroup.main.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import traceback
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from fmae import __version__
from fmae.errors import BrokenPipe, ConfigError, FmaeError, Interrupted, Terminated
from fmae.status import Status


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


class FmaeGroup(TyperGroup):
    """Translates every failure into one `error: ...` line and the documented exit code.

    Signals (see Signals): SIGTERM is raised as Terminated (a KeyboardInterrupt) wherever it
    lands, and both are turned into Interrupted inside `invoke`, before typer's click would make
    a silent Exit(130) of them: so every command exits 130 (SIGINT) or 143 (SIGTERM) with one line.
    """

    signals: Signals | None = None

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        args = sys.argv[1:] if args is None else list(args)
        if not args and "_FMAE_COMPLETE" not in os.environ:  # bare `fmae`: the help, as help (stdout, exit 0)
            args = ["--help"]
        main_thread = threading.current_thread() is threading.main_thread()
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
            code = _fail(str(exc), exc.exit_code)
        except typer.TyperException as exc:  # typer's own click: usage errors (exit 2) and the like
            ctx = getattr(exc, "ctx", None)
            sub = ctx.info_name if ctx is not None and ctx.parent is not None else None
            hint = f" (hint: see `fmae {sub} --help`)" if sub else " (hint: see `fmae --help`)"
            code = _fail(_usage_message(exc.format_message()) + (hint if exc.exit_code == 2 else ""), exc.exit_code)
        except typer.Abort:
            code = _fail(str(Status.INTERRUPTED), 130)
        except KeyboardInterrupt as exc:  # landed outside a command (while parsing, say)
            err = interrupted(exc, "fmae", "nothing was written", "run the same command again",
                              sigterm=self.signals is not None and self.signals.terminated(exc))
            code = _fail(str(err), err.exit_code)
        except OSError as exc:  # typer's own output (--help) to a full or closed stdout
            code = _stdout_failed(exc) if _on_stdout(exc) else _unexpected(exc)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
            code = _unexpected(exc)
        return _flushed(code)

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


def interrupted(exc: BaseException, what: str, saved: str, hint: str, *, sigterm: bool | None = None) -> Interrupted:
    """The one error line of an interrupt: what was interrupted, by which signal, what was saved.
    Without `sigterm`, the exception's type tells; FmaeGroup settles it from the signal that came first."""
    return Interrupted(what, saved, hint, sigterm=isinstance(exc, Terminated) if sigterm is None else sigterm)


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


def _unexpected(exc: BaseException) -> int:
    return _fail(f"unexpected {type(exc).__name__}: {exc} (hint: rerun with FMAE_DEBUG=1 and report it)", 1)


def _fail(message: str, code: int) -> int:
    from fmae.ui import print_error

    try:
        if os.environ.get("FMAE_DEBUG") == "1" and sys.exc_info()[0] is not None:
            traceback.print_exc()
        print_error(message)
    except (OSError, ValueError):  # stderr full or closed as well: the exit code is all that is left
        _quiet(sys.stderr)
    return code


class MultiValueCommand(TyperCommand):
    """Lets list options take several values after one flag: `--lr 0.1 0.01 0.001`.

    Also accepted: the flag repeated (`--lr 0.1 --lr 0.01`) and comma lists (`--lr 0.1,0.01`).
    The arguments are rewritten to the repeated form before click parses them, so click's own
    validation, help and completion keep working.
    """

    multi_value_options: tuple[str, ...] = ()

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        strict = not ctx.resilient_parsing  # shell completion parses half-typed lines
        return super().parse_args(ctx, expand_multi_values(args, self.multi_value_options, strict=strict))

    # Typer names a list argument by its Python type (`{sources}...`, `sources... <list[Path]>`);
    # an argument with a metavar (`PATH...`) is shown as exactly that, in the usage line and the help.

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            named = param.param_type_name == "argument" and param.metavar
            pieces.extend([param.metavar] if named else param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"argument": [], "option": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and param.param_type_name in sections:
                named = param.param_type_name == "argument" and param.metavar
                sections[param.param_type_name].append((param.metavar, record[1]) if named else record)
        for title, kind in (("Arguments", "argument"), ("Options", "option")):
            if sections[kind]:
                with formatter.section(title):
                    formatter.write_dl(sections[kind])


def expand_multi_values(args: list[str], options: tuple[str, ...], *, strict: bool = True) -> list[str]:
    out: list[str] = []
    current: str | None = None  # the list option whose values are being read
    got = 0

    def close() -> None:
        if current is not None and got == 0 and not strict:
            out.append(current)
        elif current is not None and got == 0:
            from fmae.errors import ConfigError

            raise ConfigError(f"{current} needs at least one value", f"e.g. {current} 1 2 3")

    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in options:
            close()
            current, got = flag, 0
            if eq:
                out += [x for v in value.split(",") for x in (flag, v)]
                got = 1
            continue
        if current is not None and arg != "--" and not _looks_like_flag(arg):
            out += [x for v in arg.split(",") for x in (current, v)]
            got += 1
            continue
        close()
        current = None
        out.append(arg)
    close()
    return out


def _looks_like_flag(arg: str) -> bool:
    if not arg.startswith("-") or arg == "-":
        return False
    try:
        float(arg.split(",")[0])  # a negative number is a value (and will be refused as such)
        return False
    except ValueError:
        return True


def _multi(*options: str) -> type[MultiValueCommand]:
    return type("MultiValue", (MultiValueCommand,), {"multi_value_options": options})


app = typer.Typer(
    cls=FmaeGroup,
    name="fmae",
    help="Train, sweep, evaluate and apply feed-forward autoencoders on Fashion-MNIST.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rendering help with rich costs ~0.25 s of imports
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from fmae.errors import stdout_error

        if sys.stdout is None:
            raise stdout_error(None)
        try:
            typer.echo(f"fmae {__version__}")
        except OSError as exc:
            raise stdout_error(exc) from None
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Train, sweep, evaluate and apply feed-forward autoencoders on Fashion-MNIST."""


# Options shared by the commands that train; defaults come from the configs.


def _register() -> None:
    """The commands, in the order --help lists them."""
    from fmae.commands import inspection, training
    from fmae.options import SWEEP_LISTS

    app.command(cls=_multi("--fail-on"))(training.train)
    app.command(cls=_multi(*SWEEP_LISTS))(training.sweep)
    app.command("eval", cls=_multi("--ckpt"))(inspection.eval_)
    app.command(cls=_multi("--ckpt", "--sigma", "--index"))(inspection.denoise)
    app.command(cls=_multi("--kind"))(inspection.plot)


_register()


def main() -> None:
    app(prog_name="fmae")
