"""Statistics over a sweep's cells: groups of seeds with mean, spread and a 95% interval.

Pure functions over result rows (plain dicts); no torch, no files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

RANKABLE = ("completed", "stopped_early")  # the statuses a cell is ranked with
WITH_MODEL = (*RANKABLE, "collapsed")  # the statuses whose run directory holds a model.pt
GROUP_FIELDS = ("rank", "optim", "lr", "hidden", "n", "n_used", "mean_final_test_loss", "std_final_test_loss",
                "ci95_final_test_loss", "statuses")


def _t_central(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer `df` (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: 2/pi * (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        total, term = 0.0, 1.0
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        series = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
        return 2 / math.pi * (theta + series)
    total, term = 0.0, 1.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided critical value t with P(|T| < t) = level, for integer df >= 1 (to 1e-10)."""
    if df < 1:
        raise ValueError("df must be at least 1")
    low, high = 0.0, 1.0
    while _t_central(high, df) < level:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_central(mid, df) < level else (low, mid)
        if high - low < 1e-12:
            break
    return (low + high) / 2


def spread(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, sample standard deviation, half-width of the 95% t interval); None where undefined."""
    n = len(values)
    if n == 0:
        return None, None, None
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, std, t_quantile(n - 1) * std / math.sqrt(n)


def has_seeds(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether the grid holds several seeds, so that its cells form groups worth reporting."""
    return len({row["seed"] for row in rows}) > 1


def groups(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (optim, lr, hidden) over its seeds, ranked by mean final test loss.

    The statistics use the group's usable cells (completed or stopped early with a finite loss);
    a group is ranked only when every one of its cells is usable, so that a set-up that diverged,
    collapsed or failed for one seed is never ranked on its lucky seeds.
    """
    by_key: dict[tuple[str, float, int], list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault((row["optim"], row["lr"], row["hidden"]), []).append(row)
    out = []
    for (optim, lr, hidden), members in by_key.items():
        used = [r["final_test_loss"] for r in members
                if r["status"] in RANKABLE and isinstance(r["final_test_loss"], (int, float))
                and math.isfinite(r["final_test_loss"])]
        mean, std, ci95 = spread(used)
        statuses: dict[str, int] = {}
        for r in members:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        out.append({"rank": None, "optim": optim, "lr": lr, "hidden": hidden, "n": len(members),
                    "n_used": len(used), "mean_final_test_loss": mean, "std_final_test_loss": std,
                    "ci95_final_test_loss": ci95, "statuses": dict(sorted(statuses.items()))})
    ranked = sorted((g for g in out if g["n_used"] == g["n"] and g["mean_final_test_loss"] is not None),
                    key=lambda g: (g["mean_final_test_loss"], g["optim"], g["lr"], g["hidden"]))
    for i, group in enumerate(ranked, 1):
        group["rank"] = i
    return sorted(out, key=lambda g: (g["rank"] is None, g["rank"] or 0, g["optim"], -g["lr"], g["hidden"]))
