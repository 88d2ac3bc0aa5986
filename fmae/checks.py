"""Value checks: one wording for every bad value a config is given, as a ConfigError that names
the flag and shows an example of a good value."""

from __future__ import annotations

import math

from fmae.errors import ConfigError

EXAMPLES = {"lr": "0.001", "momentum": "0.9", "dropout": "0.1", "min_delta": "0.001", "sigma": "0.5"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def example(name: str) -> str:
    return f", e.g. {flag(name)} {EXAMPLES[name]}" if name in EXAMPLES else ""


def finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}",
                          f"{flag(name)} takes a plain decimal number" + example(name))
    return float(value)


def int_at_least(name: str, value: int, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}", f"{flag(name)} takes a whole number")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{name} must be {bound}, got {value}", f"{flag(name)} takes a whole number {bound}")


def int_at_most(name: str, value: int, high: int) -> None:
    """An upper bound checked apart from the lower one (whose message stays `>= low`)."""
    if value > high:
        raise ConfigError(f"{name} must be at most {high}, got {value}", f"{flag(name)} takes a whole number <= {high}")


def choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}",
                          f"e.g. {flag(name)} {choices[0]}")
