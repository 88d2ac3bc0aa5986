"""`--config FILE` and `--print-config` of `fmae train` and `fmae sweep` (docs/options.md#config-files).

A config file is TOML whose keys are the command's long option names (`batch-size` or
`batch_size`), a list option's values an array. Its values become the command's defaults (click's
default_map), so a flag on the command line overrides the file. Every key and value is checked
here, before click sees them: an unknown key or a wrong type is one error naming the file and the
key. `--print-config` writes the resolved settings back as TOML, which --config reads as they are.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from fmae.errors import ConfigError

NOT_SETTINGS = ("config", "print_config", "dry_run")  # options about this invocation, never in a file or its TOML


def key_of(param: Any) -> str:
    """A parameter's key: its long option name without the dashes (`json_out` -> `json`)."""
    return next((o for o in param.opts if o.startswith("--")), param.opts[0]).lstrip("-")


def _annotation(param: Any) -> Any:
    descriptor = getattr(param, "type_descriptor", None)
    return descriptor.annotation if descriptor is not None else None


def _kind(annotation: Any) -> tuple[bool, Any]:
    """(a list option, the type of one value) of an annotation: list[float] -> (True, float)."""
    if get_origin(annotation) is list:
        return True, get_args(annotation)[0]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if args and get_origin(annotation) is not Literal:
        return False, args[0]
    return False, annotation


def _choices(kind: Any) -> tuple[str, ...] | None:
    if get_origin(kind) is Literal:
        return tuple(get_args(kind))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return tuple(m.value for m in kind)
    return None


def _check(path: Path, key: str, value: Any, kind: Any) -> Any:
    """One value checked against its option's type; returned as click takes it."""
    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{path}: key {key!r}: expected {expected}, got {value!r}")  # the hint: --help

    if kind is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("a whole number")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    choices = _choices(kind)
    if not isinstance(value, str):
        raise wrong("one of " + ", ".join(choices) if choices else "a string")
    if choices is not None and value not in choices:
        raise wrong("one of " + ", ".join(choices))
    return value


def read(path: Path, params: list[Any]) -> dict[str, Any]:
    """The file's settings as click's default_map ({parameter name: value}), every key and type
    checked against `params` (the command's)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the backport, a dependency on Python 3.10 only (pyproject.toml)
        import tomli as tomllib

    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror or exc}", "check the path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a TOML file ({exc})", "keys are option names: lr = [0.1, 0.01]") from None
    by_key = {key_of(p): p for p in params if p.name not in NOT_SETTINGS and p.opts}
    out: dict[str, Any] = {}
    for raw, value in doc.items():
        param = by_key.get(raw.replace("_", "-"))
        if param is None:
            known = ", ".join(sorted(by_key))
            raise ConfigError(f"{path}: unknown key {raw!r}", f"the keys are the long option names: {known}")
        if param.name in out:
            raise ConfigError(f"{path}: key {raw!r} is given twice (as - and _)", "give it once")
        many, kind = _kind(_annotation(param))
        if many:
            values = value if isinstance(value, list) else [value]
            out[param.name] = [_check(path, raw, v, kind) for v in values]
        elif isinstance(value, list):
            raise ConfigError(f"{path}: key {raw!r}: expected one value, got a list {value!r}",
                              f"{raw} takes one value")
        else:
            out[param.name] = _check(path, raw, value, kind)
    return out


def _toml_value(value: Any) -> str:
    import json
    import math

    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string is a JSON string


def to_toml(command: str, params: list[Any], values: dict[str, Any], *, drop: tuple[str, ...] = ()) -> str:
    """The resolved settings of `fmae <command>` as TOML, in the order of its options; None (an
    option left to its own default, such as --lr's per optimizer) and `drop` are left out."""
    lines = [f"# fmae {command}: the resolved settings; run them with `fmae {command} --config FILE`"]
    for param in params:
        name = param.name
        if not param.opts or name in NOT_SETTINGS or name in drop or values.get(name) is None:
            continue
        lines.append(f"{key_of(param)} = {_toml_value(values[name])}")
    return "\n".join(lines) + "\n"
