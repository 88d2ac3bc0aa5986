"""Statistics over a sweep's cells: groups of seeds with mean, spread and a 95% interval.

Pure functions over result rows (plain dicts); no torch, no files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fmae.status import RANKABLE

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


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f


def t_p_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with real `df` > 0 (Welch's df is not an integer)."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile_real(df: float, level: float = 0.95) -> float:
    """The two-sided critical value for real `df` > 0 (bisection on `t_p_two_sided`, to 1e-12)."""
    low, high = 0.0, 1.0
    while t_p_two_sided(high, df) > 1 - level:
        high *= 2
    while high - low > 1e-12:
        mid = (low + high) / 2
        low, high = (mid, high) if t_p_two_sided(mid, df) > 1 - level else (low, mid)
    return (low + high) / 2


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Welch's t-test of mean(a) - mean(b): the difference, its `level` interval, t, df and two-sided p.

    Unpaired and without assuming equal variances: the one test this project uses to compare two
    groups of seeds. Needs at least two values in each group and a spread in at least one.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs at least two values per group")
    (ma, sa, _), (mb, sb, _) = spread(a), spread(b)
    va, vb = sa ** 2 / len(a), sb ** 2 / len(b)
    if va + vb == 0:
        raise ValueError("Welch's test needs some spread in the values")
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    diff = ma - mb
    half = t_quantile_real(df, level) * se
    return {"diff": diff, "low": diff - half, "high": diff + half, "t": diff / se, "df": df,
            "p": t_p_two_sided(diff / se, df)}


def paired_t(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """The paired t-test of a[i] - b[i]: mean difference, t, df = n - 1 and two-sided p.

    Only where the pairs share something that moves both values together; see docs/results.
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("a paired test needs two sequences of the same length, at least 2")
    mean, std, _ = spread([x - y for x, y in zip(a, b)])
    if not std:
        raise ValueError("a paired test needs some spread in the differences")
    t = mean / (std / math.sqrt(len(a)))
    return {"diff": mean, "t": t, "df": len(a) - 1, "p": t_p_two_sided(t, len(a) - 1)}


def sign_test_min_p(n: int) -> float:
    """The smallest two-sided p a sign test on n pairs can reach: every pair the same way, 2 / 2^n."""
    return min(1.0, 2.0 / 2 ** n)


def within(losses: Sequence[float], fraction: float = 0.05, *, stays: bool = True) -> int | None:
    """The epoch (1-based) from which every loss to the end is within `fraction` of the final loss.

    With `stays=False`, the first epoch whose loss is within the band, though it may leave it again
    (a noisy curve enters the band long before it stays in). The band is |loss - final| <= fraction * |final|.
    """
    if not losses:
        return None
    final = losses[-1]
    inside = [abs(v - final) <= fraction * abs(final) for v in losses]
    if not stays:
        return inside.index(True) + 1
    epoch = len(losses)
    while epoch > 1 and inside[epoch - 2]:
        epoch -= 1
    return epoch
