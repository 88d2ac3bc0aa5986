"""Multi-value options: `--lr 0.1 0.01 0.001`, rewritten to the repeated form before click parses."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand


class MultiValueCommand(TyperCommand):
    """Lets list options take several values after one flag: `--lr 0.1 0.01 0.001`.

    Also accepted: the flag repeated (`--lr 0.1 --lr 0.01`) and comma lists (`--lr 0.1,0.01`).
    The arguments are rewritten to the repeated form before click parses them, so click's own
    validation, help and completion keep working. A decimal comma is never read as a list
    (refuse_decimal_commas).
    """

    multi_value_options: tuple[str, ...] = ()

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        strict = not ctx.resilient_parsing  # shell completion parses half-typed lines
        if strict:
            decimals = {o for p in self.params if _takes_decimals(p) for o in p.opts}
            refuse_decimal_commas(args, decimals, self.multi_value_options)
            config = _config_file(args) if any(p.name == "config" for p in self.params) else None
            if config is not None:  # the file's settings are the defaults: the command line overrides them
                from fmae.cli import configfile

                ctx.default_map = {**(ctx.default_map or {}), **configfile.read(config, self.params)}
        return super().parse_args(ctx, expand_multi_values(args, self.multi_value_options, strict=strict))

    def invoke(self, ctx: Any) -> Any:
        """--print-config: the resolved settings as TOML on stdout, and nothing run. Otherwise the
        same TOML (without --overwrite and --resume) goes to the command in ctx.meta[RESOLVED], for
        its run directory."""
        if "print_config" in ctx.params:
            from fmae.cli import configfile

            if ctx.params["print_config"]:
                from fmae.cli.ui import write_stdout

                write_stdout(configfile.to_toml(ctx.info_name, self.params, ctx.params))
                return None
            ctx.meta[RESOLVED] = configfile.to_toml(ctx.info_name, self.params, ctx.params,
                                                    drop=("overwrite", "resume"))
        return super().invoke(ctx)

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


RESOLVED = "fmae.resolved_config"  # ctx.meta's key for the resolved settings' TOML


def _config_file(args: list[str]) -> str | None:
    """The value of --config among `args` (the last one given), before any `--`."""
    found = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith("--config="):
            found = arg.partition("=")[2]
    return found


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


def refuse_decimal_commas(args: list[str], decimals: set[str], lists: tuple[str, ...]) -> None:
    """The rule that keeps `--lr 1,5` from being two rates (docs/options.md#numbers-and-commas): a
    value of a decimal option (`decimals`) holding a comma is refused unless the option takes a
    list (`lists`) and every item is written with a decimal point or an exponent (`0.1,0.01`,
    `1e-3,1e-4`), which no decimal comma can be. The message gives both readings' spelling."""
    current: str | None = None  # the decimal option whose values are being read

    def check(flag: str, value: str) -> None:
        items = value.split(",")
        if len(items) == 1 or (flag in lists and all(_decimal(i) for i in items)):
            return
        from fmae.errors import ConfigError

        one = ".".join(items) if len(items) == 2 and _number(".".join(items)) else None
        readings = [f"{flag} {one} for one number" if one else None,
                    f"{flag} {' '.join(items)} for {len(items)} values" if flag in lists else None]
        raise ConfigError(f"{flag} {value}: a comma is not a decimal point"
                          + (", and a comma list of numbers written without points is ambiguous"
                             if flag in lists else ""), "write " + ", or ".join(r for r in readings if r))

    for arg in args:
        if arg == "--":
            return
        flag, eq, value = arg.partition("=")
        if arg.startswith("--") and not (current and not _looks_like_flag(arg)):
            current = flag if flag in decimals and not eq else None
            if eq and flag in decimals:
                check(flag, value)
        elif current is not None and not _looks_like_flag(arg):
            check(current, arg)
            current = current if current in lists else None
        else:
            current = None


def _takes_decimals(param: Any) -> bool:
    """A float option (float, float | None, list[float]): typer 0.29 builds its click type lazily,
    from the annotation it keeps; older ones have the click type."""
    from typing import get_args

    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return float in (descriptor.annotation, *get_args(descriptor.annotation))
    return getattr(getattr(param, "type", None), "name", "") == "float"


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _decimal(item: str) -> bool:
    """A number written so that no comma can be its decimal point: with a point or an exponent."""
    return _number(item) and ("." in item or "e" in item.lower())


def _looks_like_flag(arg: str) -> bool:
    if not arg.startswith("-") or arg == "-":
        return False
    try:
        float(arg.split(",")[0])  # a negative number is a value (and will be refused as such)
        return False
    except ValueError:
        return True


def multi_value(*options: str) -> type[MultiValueCommand]:
    return type("MultiValue", (MultiValueCommand,), {"multi_value_options": options})
