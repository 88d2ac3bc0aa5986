"""The generated tables of docs/results/README.md, computed from the CSV and JSON files they name.

    python3 examples/study_tables.py docs/results --write    # rewrite every block from its files
    python3 examples/study_tables.py docs/results            # check: exit 1 and name each stale block

A block is the text between `<!-- generated: NAME from FILES -->` and `<!-- end: NAME -->`; FILES are
paths under the docs directory (`FILE?`: used when it exists, e.g. a later step's). Where a block's
files do not exist yet (a study still running), the block says so and names the command that makes
them. Needs only Python's standard library and fmae/stats.py.

Every comparison follows the page's one rule: Welch's t on the final test loss (or on the metric named),
the 95% interval of the difference, "shown" when that interval excludes 0.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fmae import stats  # noqa: E402  (pure Python: math only)

HIDDEN = (64, 128, 256, 512)
LRS = (0.1, 0.01, 0.001)
BEST_LR = {"sgd": 0.1, "adam": 0.001}  # each optimizer's best rate in the report's grid
TRAIN_SAMPLES, TEST_SAMPLES = 60_000, 10_000
TRAIN_FLOPS_PER_H, TEST_FLOPS_PER_H = 9_400, 3_136  # per sample: see the halving section of the README
COMMAND = "examples/study.sh runs/study"
BLOCK = re.compile(r"<!-- generated: (?P<name>[\w-]+) from (?P<files>[^>]*?) -->\n(?P<body>.*?)<!-- end: (?P=name) -->",
                   re.S)
CELL = re.compile(r"(?P<optim>sgd|adam)-lr(?P<lr>[\d.e-]+)-h(?P<hidden>\d+)-s(?P<seed>\d+)")


def rows(path: Path) -> list[dict[str, Any]]:
    """A results CSV with its numbers parsed (empty fields stay '')."""
    def value(key: str, text: str) -> Any:
        if key in ("hidden", "seed", "epochs_run", "best_epoch", "n", "n_used", "rank", "epoch"):
            return int(text) if text else None
        if key in ("lr", "final_train_loss", "final_test_loss", "best_test_loss", "seconds", "train_loss", "test_loss",
                   "mean_final_test_loss", "std_final_test_loss", "ci95_final_test_loss"):
            return float(text) if text else None
        return text
    with open(path, newline="") as f:
        return [{k: value(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def f6(v: float) -> str:
    return f"{v:.6f}"


def p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def usable(cells: Sequence[dict[str, Any]], optim: str, lr: float, hidden: int) -> list[dict[str, Any]]:
    """One group's usable cells (a finite final loss, a rankable status), in seed order."""
    return sorted((r for r in cells if r["optim"] == optim and r["lr"] == lr and r["hidden"] == hidden
                   and r["status"] in stats.RANKABLE and r["final_test_loss"] is not None),
                  key=lambda r: r["seed"])


def losses(cells: Sequence[dict[str, Any]], optim: str, lr: float, hidden: int) -> list[float]:
    return [r["final_test_loss"] for r in usable(cells, optim, lr, hidden)]


def _pending(d: Path, files: Sequence[str]) -> list[str] | None:
    missing = [f for f in files if not (d / f).exists()]
    if not missing:
        return None
    return [f"**Pending**: the study is not finished; `{COMMAND}` makes {', '.join(f'`{m}`' for m in missing)} "
            "and this table."]


def _cells(d: Path, *files: str) -> list[dict[str, Any]]:
    return [r for f in files for r in rows(d / f)]


FIVE = ("grid/cells.csv", "seeds34/adam-cells.csv", "seeds34/sgd-cells.csv")  # 5 seeds: the grid's 0-2, then 3, 4


def _groups_table(cells: Sequence[dict[str, Any]], keys: Sequence[tuple[str, float, int]]) -> list[str]:
    out = ["| optimizer | lr | h | n | statuses | mean ± std | 95% CI of the mean | per seed (0, 1, ...) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for optim, lr, h in keys:
        members = sorted((r for r in cells if r["optim"] == optim and r["lr"] == lr and r["hidden"] == h),
                         key=lambda r: r["seed"])
        statuses: dict[str, int] = {}
        for r in members:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        per_seed = ", ".join(f6(r["final_test_loss"]) if r["final_test_loss"] is not None else r["status"]
                             for r in members)
        status_text = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        mean, std, ci = stats.spread(losses(cells, optim, lr, h))
        if std is None or len(losses(cells, optim, lr, h)) != len(members):
            out.append(f"| {optim} | {lr:g} | {h} | {len(members)} | {status_text} | - | - | {per_seed} |")
            continue
        out.append(f"| {optim} | {lr:g} | {h} | {len(members)} | {status_text} | {f6(mean)} ± {f6(std)} | "
                   f"[{f6(mean - ci)}, {f6(mean + ci)}] | {per_seed} |")
    return out


TESTS_HEAD = ["| comparison (a - b) | n (a, b) | mean a - mean b | 95% CI of the difference | Welch t | df | p "
              "| shown |",
              "| --- " * 8 + "|"]


def _test_row(label: str, a: Sequence[float], b: Sequence[float], fmt: str = "{:.6f}") -> str:
    try:
        w = stats.welch(a, b)
    except ValueError as e:  # fewer than 2 usable seeds (diverged, collapsed), or no spread at all
        return f"| {label} | {len(a)}, {len(b)} | {e} |" + " - |" * 5
    shown = "yes" if w["high"] < 0 or w["low"] > 0 else "no"
    return (f"| {label} | {len(a)}, {len(b)} | {fmt.format(w['diff'])} | [{fmt.format(w['low'])}, "
            f"{fmt.format(w['high'])}] | {w['t']:.2f} | {w['df']:.2f} | {p_text(w['p'])} | {shown} |")


# ---- the blocks -------------------------------------------------------------------------------------------


def provenance(d: Path) -> list[str]:
    """Each group of files made by one command: the command, the code, the machine, the mode, when."""
    pending = _pending(d, ["provenance.json"])
    if pending:
        return pending
    files = json.loads((d / "provenance.json").read_text())["files"]
    by_record: dict[str, list[str]] = {}
    for name, rec in files.items():
        by_record.setdefault(json.dumps(rec, sort_keys=True), []).append(name)
    out = ["| files | made by | commit | fmae, torch | CPU | numerics, threads | finished (UTC) |",
           "| --- " * 7 + "|"]
    for key, names in sorted(by_record.items(), key=lambda kv: json.loads(kv[0]).get("finished", "")):
        rec = json.loads(key)
        how = f"{rec['numerics']}, {rec['threads']}" if "numerics" in rec else "(trains nothing)"
        out.append(f"| {', '.join(f'`{n}`' for n in sorted(names))} | `{rec['command']}` | {rec['commit']} | "
                   f"{rec['fmae']}, {rec.get('torch', '-')} | {rec['cpu']} ({rec['vendor']}) | {how} | "
                   f"{rec['finished'].replace('T', ' ').rstrip('Z')} |")
    return out


def compute(d: Path) -> list[str]:
    out = ["| file | cells | cell-epochs | training time, sum of the cells' `seconds` (min) |", "| --- " * 4 + "|"]
    for name in ("grid/cells.csv", "seeds34/adam-cells.csv", "seeds34/sgd-cells.csv", "halving/sgd-cells.csv",
                 "halving/adam-cells.csv", "edge/sgd-cells.csv", "edge/adam-cells.csv"):
        if not (d / name).exists():
            out.append(f"| `{name}` | pending: `{COMMAND}` makes it | | |")
            continue
        cells = rows(d / name)
        out.append(f"| `{name}` | {len(cells)} | {sum(r['epochs_run'] or 0 for r in cells):,} | "
                   f"{sum(r['seconds'] or 0 for r in cells) / 60:,.1f} |")
    return out


def grid(d: Path) -> list[str]:
    """The report's 24 cells over their seeds."""
    pending = _pending(d, ["grid/cells.csv"])
    if pending:
        return pending
    return _groups_table(rows(d / "grid/cells.csv"), [(o, lr, h) for o in ("sgd", "adam") for lr in LRS
                                                       for h in HIDDEN])


def grid_tests(d: Path) -> list[str]:
    """Within the grid, one rule for both optimizers: each one's best rate against its next best at every h,
    each step of h at the best rate, and Adam - SGD at every rate (h 512) and best against best."""
    pending = _pending(d, ["grid/cells.csv"])
    if pending:
        return pending
    cells = rows(d / "grid/cells.csv")
    out = list(TESTS_HEAD)
    for optim, best, other in (("sgd", 0.1, 0.01), ("adam", 0.001, 0.01)):
        for h in HIDDEN:
            out.append(_test_row(f"{optim}, h {h}: lr {best:g} - lr {other:g}", losses(cells, optim, best, h),
                                 losses(cells, optim, other, h)))
    for optim, lr in BEST_LR.items():
        for lo, hi in zip(HIDDEN, HIDDEN[1:]):
            out.append(_test_row(f"{optim}, lr {lr:g}: h {hi} - h {lo}", losses(cells, optim, lr, hi),
                                 losses(cells, optim, lr, lo)))
    for lr in LRS:
        out.append(_test_row(f"h 512, lr {lr:g}: adam - sgd", losses(cells, "adam", lr, 512),
                             losses(cells, "sgd", lr, 512)))
    out.append(_test_row("best against best, h 512: adam lr 0.001 - sgd lr 0.1", losses(cells, "adam", 0.001, 512),
                         losses(cells, "sgd", 0.1, 512)))
    return out


def best(d: Path) -> list[str]:
    """The two seed-0 models the report compares, with both PSNRs and PCA's MSE at k = h."""
    pending = _pending(d, ["eval.json"])
    if pending:
        return pending
    doc = json.loads((d / "eval.json").read_text())
    out = ["| model (seed 0) | test MSE | PSNR (dB): mean of per-image | PSNR (dB) of the mean MSE | SSIM | "
           "PCA MSE, k = h | autoencoder MSE / PCA MSE |", "| --- " * 7 + "|"]
    for c in doc["checkpoints"]:
        out.append(f"| {c['optim']} lr {c['lr']:g} h {c['hidden']} | {c['mse']:.6f} | {c['psnr']:.2f} | "
                   f"{10 * math.log10(1 / c['mse']):.2f} | {c['ssim']:.4f} | {c['pca_mse']:.6f} | "
                   f"{c['mse'] / c['pca_mse']:.1f} |")
    return out


def denoise(d: Path) -> list[str]:
    pending = _pending(d, ["denoise.json", "eval.json"])
    if pending:
        return pending
    doc = json.loads((d / "denoise.json").read_text())
    by_sigma: dict[float, dict[str, Any]] = {}
    for r in doc["results"]:
        by_sigma.setdefault(r["sigma"], {})[CELL.search(r["checkpoint"])["optim"]] = r
    out = [f"{doc['noise']} noise, {doc['images']} test images, noise seed {doc['seed']}; PSNR in dB:", "",
           "| sigma | noisy PSNR | sgd PSNR | adam PSNR | higher PSNR | noisy SSIM | sgd SSIM | adam SSIM "
           "| higher SSIM |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for sigma, m in sorted(by_sigma.items()):
        s, a = m["sgd"], m["adam"]
        out.append(f"| {sigma:g} | {s['noisy']['psnr']:.2f} | {s['output']['psnr']:.2f} | {a['output']['psnr']:.2f} | "
                   f"{'adam' if a['output']['psnr'] > s['output']['psnr'] else 'sgd'} | {s['noisy']['ssim']:.4f} | "
                   f"{s['output']['ssim']:.4f} | {a['output']['ssim']:.4f} | "
                   f"{'adam' if a['output']['ssim'] > s['output']['ssim'] else 'sgd'} |")
    return out


def seeds5(d: Path) -> list[str]:
    pending = _pending(d, list(FIVE))
    if pending:
        return pending
    cells = _cells(d, *FIVE)
    out = _groups_table(cells, [(o, lr, h) for o, lr in BEST_LR.items() for h in (256, 512)])
    out += ["", *TESTS_HEAD]
    for optim, lr in BEST_LR.items():
        out.append(_test_row(f"{optim}, lr {lr:g}: h 512 - h 256", losses(cells, optim, lr, 512),
                             losses(cells, optim, lr, 256)))
    out.append(_test_row("h 512: adam lr 0.001 - sgd lr 0.1", losses(cells, "adam", 0.001, 512),
                         losses(cells, "sgd", 0.1, 512)))
    return out


def _curves(d: Path, *files: str) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for f in files:
        for r in rows(d / f):
            by.setdefault(r["cell"], []).append(r)
    return {k: sorted(v, key=lambda r: r["epoch"]) for k, v in by.items()}


def curve(d: Path) -> list[str]:
    """Each seed of each optimizer's best cell: the loss at epochs 1, 30, 50, 100; how much of it goes after
    epoch 30 (the report's "from epoch 30 on stays relatively constant"); when it enters and stays within 5%."""
    files = ["grid/curves.csv", "seeds34/adam-curves.csv", "seeds34/sgd-curves.csv"]
    pending = _pending(d, files[:1])
    if pending:
        return pending
    curves = _curves(d, *[f for f in files if (d / f).exists()])
    out = ["| cell | epoch 1 | epoch 30 | epoch 50 | epoch 100 | fall after epoch 30, % of epoch 30's loss | "
           "share of the whole fall after epoch 30 | first within 5% of the final | within 5% from epoch ... on |",
           "| --- " * 9 + "|"]
    for optim, lr in (("adam", 0.001), ("sgd", 0.1)):
        names = sorted((n for n in curves if n.startswith(f"{optim}-lr{lr:g}-h512-")),
                       key=lambda n: int(n[n.rindex("s") + 1:]))
        for name in names:
            test = [r["test_loss"] for r in curves[name]]
            if len(test) < 100:
                continue
            e1, e30, e100 = test[0], test[29], test[99]
            after = 100 * (e30 - e100) / e30
            share = 100 * (e30 - e100) / (e1 - e100)
            out.append(f"| {name} | {e1:.6f} | {e30:.6f} | {test[49]:.6f} | {e100:.6f} | {after:.1f}% | {share:.1f}% | "
                       f"{stats.within(test, stays=False)} | {stats.within(test)} |")
    return out


SGD_RUNS = ("grid/cells.csv", "seeds34/sgd-cells.csv", "edge/sgd-cells.csv")  # every SGD run of the study
ADAM_CURVES = ("grid/curves.csv", "seeds34/adam-curves.csv")  # Adam lr 0.001, h 512: seeds 0-2, then 3, 4


def _first_epochs(d: Path) -> dict[str, Any]:
    """Adam's (lr 0.001, h 512) first epochs against the final loss of every published SGD run: the files
    read, the SGD cells, the lowest of them, each Adam seed's curve, its epoch-1 losses (sorted), how many SGD
    cells end below the highest of them, and the first epoch from which every Adam seed is below the lowest."""
    sgd_files = [f for f in SGD_RUNS if (d / f).exists()]
    curve_files = [f for f in ADAM_CURVES if (d / f).exists()]
    sgd = [r for r in _cells(d, *sgd_files) if r["optim"] == "sgd" and r["final_test_loss"] is not None]
    low = min(sgd, key=lambda r: r["final_test_loss"])
    adam = {n: [r["test_loss"] for r in c] for n, c in _curves(d, *curve_files).items()
            if n.startswith("adam-lr0.001-h512-")}
    epoch1 = sorted(t[0] for t in adam.values())
    beat = max(next((i for i, v in enumerate(t, 1) if v < low["final_test_loss"]), 10**9) for t in adam.values())
    return {"sgd_files": sgd_files, "curve_files": curve_files, "sgd": sgd, "low": low, "adam": adam,
            "epoch1": epoch1, "below": sum(1 for r in sgd if r["final_test_loss"] < epoch1[-1]), "beat": beat}


def _cite(files: Sequence[str]) -> str:
    return ", ".join(f"`{f}`" for f in files)


def adam_vs_sgd(d: Path) -> list[str]:
    """Adam's early epochs against every SGD run's final loss (the grid's, seeds 3 and 4, and beyond its edge)."""
    pending = _pending(d, ["grid/curves.csv", "grid/cells.csv"])
    if pending:
        return pending
    f = _first_epochs(d)
    low, epoch1 = f["low"], f["epoch1"]
    return ["| SGD cells (files) | lowest SGD final loss (cell) | Adam lr 0.001, h 512: epoch-1 loss (lowest, highest "
            "seed; files) | SGD cells ending below Adam's highest epoch-1 loss | first epoch at which every Adam seed "
            "is below the lowest SGD final |", "| --- " * 5 + "|",
            f"| {len(f['sgd'])} ({_cite(f['sgd_files'])}) | {low['final_test_loss']:.6f} "
            f"(lr {low['lr']:g}, h {low['hidden']}, seed {low['seed']}) | {epoch1[0]:.6f}, {epoch1[-1]:.6f} "
            f"({len(epoch1)} seeds; {_cite(f['curve_files'])}) | {f['below']} | "
            f"{f['beat'] if f['beat'] < 10**9 else 'never'} |"]


def denoise_seeds(d: Path) -> list[str]:
    """PSNR and SSIM of each optimizer's best model over its seeds, per sigma, Adam - SGD by Welch's t."""
    path = "denoise-seeds.json"
    pending = _pending(d, [path])
    if pending:
        return pending
    doc = json.loads((d / path).read_text())
    by: dict[tuple[float, str], list[dict[str, Any]]] = {}
    noisy: dict[float, dict[str, float]] = {}
    for r in doc["results"]:
        m = CELL.search(r["checkpoint"])
        if m is None:
            raise SystemExit(f"error: {path}: cannot tell the optimizer of {r['checkpoint']!r}")
        by.setdefault((r["sigma"], m["optim"]), []).append(r["output"])
        noisy[r["sigma"]] = r["noisy"]
    out = [f"{doc['noise']} noise, {doc['images']} test images, noise seed {doc['seed']}; each model's mean over the "
           "images, then mean ± std over the models' seeds; Adam - SGD by the rule above:", "",
           "| sigma, metric | noisy | sgd (n) | adam (n) | adam - sgd | 95% CI of the difference | Welch p | shown |",
           "| --- " * 8 + "|"]
    for sigma in sorted(noisy):
        for metric, fmt in (("psnr", "{:.2f}"), ("ssim", "{:.4f}")):
            s = [o[metric] for o in by[(sigma, "sgd")]]
            a = [o[metric] for o in by[(sigma, "adam")]]
            w = stats.welch(a, s)
            shown = "yes" if w["high"] < 0 or w["low"] > 0 else "no"
            out.append(f"| {sigma:g}, {metric.upper()} | {fmt.format(noisy[sigma][metric])} | {_spread(s, fmt)} | "
                       f"{_spread(a, fmt)} | {fmt.format(w['diff'])} | "
                       f"[{fmt.format(w['low'])}, {fmt.format(w['high'])}] | "
                       f"{p_text(w['p'])} | {shown} |")
    return out


def _spread(values: list[float], fmt: str) -> str:
    mean, std, _ = stats.spread(values)
    return f"{fmt.format(mean)} ± {fmt.format(std)} ({len(values)})"


def edge(d: Path) -> list[str]:
    files = ["edge/sgd-cells.csv", "edge/adam-cells.csv", *FIVE]
    pending = _pending(d, files)
    if pending:
        return pending
    cells = _cells(d, "edge/sgd-cells.csv", "edge/adam-cells.csv")
    five = _cells(d, *FIVE)
    out = _groups_table(cells, [("sgd", lr, 512) for lr in (1.0, 0.5, 0.2)]
                        + [("adam", lr, 512) for lr in (0.0003, 0.0001)])
    out += ["", "Each rate beyond the edge against the grid's best rate at h = 512 (its 5 seeds, above):", "",
            *TESTS_HEAD]
    for optim, lrs in (("sgd", (0.2, 0.5, 1.0)), ("adam", (0.0003, 0.0001))):
        ref = losses(five, optim, BEST_LR[optim], 512)
        for lr in lrs:
            out.append(_test_row(f"{optim}, h 512: lr {lr:g} - lr {BEST_LR[optim]:g}",
                                 losses(cells, optim, lr, 512), ref))
    out += ["", "The rates beyond the edge against each other (which of them is best):", "", *TESTS_HEAD]
    for optim, a, b in (("sgd", 1.0, 0.5), ("sgd", 0.5, 0.2), ("adam", 0.0003, 0.0001)):
        out.append(_test_row(f"{optim}, h 512: lr {a:g} - lr {b:g}", losses(cells, optim, a, 512),
                             losses(cells, optim, b, 512)))
    return out


def halving(d: Path) -> list[str]:
    files = ["halving/sgd-cells.csv", "halving/adam-cells.csv", "grid/cells.csv"]
    pending = _pending(d, files)
    if pending:
        return pending
    per_cell_epoch_per_h = TRAIN_SAMPLES * TRAIN_FLOPS_PER_H + TEST_SAMPLES * TEST_FLOPS_PER_H
    rungs = sorted({r["epochs_run"] for r in rows(d / "halving/sgd-cells.csv")})
    out = [f"Rungs at {', '.join(map(str, rungs))} epochs (eta 3). FLOPs: one training sample costs about "
           f"{TRAIN_FLOPS_PER_H:,}·h (forward 2·2·784·h for the two matrix products, backward twice that) and one "
           f"test sample {TEST_FLOPS_PER_H:,}·h, so a cell-epoch is "
           f"h · ({TRAIN_SAMPLES:,} · {TRAIN_FLOPS_PER_H:,} + "
           f"{TEST_SAMPLES:,} · {TEST_FLOPS_PER_H:,}) FLOPs and a grid's large cells dominate.", "",
           "| run (seed 0) | cell-epochs | FLOPs (x 10^12) | sum of the cells' seconds | best cell: final test MSE |",
           "| --- " * 5 + "|"]
    grid_cells = [r for r in rows(d / "grid/cells.csv") if r["seed"] == 0]
    for optim in ("sgd", "adam"):
        full = [r for r in grid_cells if r["optim"] == optim]
        pruned = rows(d / f"halving/{optim}-cells.csv")
        numbers = []
        for name, cells in (("full grid", full), ("halving", pruned)):
            epochs = sum(r["epochs_run"] for r in cells)
            flops = sum(r["epochs_run"] * r["hidden"] for r in cells) * per_cell_epoch_per_h
            seconds = sum(r["seconds"] for r in cells)
            b = min((r for r in cells if r["final_test_loss"] is not None and r["epochs_run"] == max(
                c["epochs_run"] for c in cells)), key=lambda r: r["final_test_loss"])
            numbers.append((epochs, flops, seconds))
            out.append(f"| {optim} {name} | {epochs:,} | {flops / 1e12:,.1f} | {seconds:,.0f} | "
                       f"lr {b['lr']:g}, h {b['hidden']}: {b['final_test_loss']!r} |")
        (e0, f0, s0), (e1, f1, s1) = numbers
        out.append(f"| {optim} halving / full grid | {100 * e1 / e0:.1f}% | {100 * f1 / f0:.1f}% | "
                   f"{100 * s1 / s0:.1f}% | |")
    return out


# ---- the claims of the report (docs/study.md), each with its verdict by the one rule -----------------------


def _w(a: Sequence[float], b: Sequence[float]) -> dict[str, Any] | None:
    try:
        w = stats.welch(a, b)
    except ValueError:
        return None
    return {**w, "n": (len(a), len(b)), "shown": w["high"] < 0 or w["low"] > 0}


def _wt(w: dict[str, Any] | None, fmt: str = "{:.6f}") -> str:
    if w is None:
        return "no test (fewer than 2 usable seeds)"
    return (f"{fmt.format(w['diff'])}, 95% CI [{fmt.format(w['low'])}, {fmt.format(w['high'])}], "
            f"p = {p_text(w['p'])}, n = {w['n'][0]}, {w['n'][1]}")


def _at_epoch(curves: dict[str, list[dict[str, Any]]], optim: str, lr: float, hidden: int, epoch: int) -> list[float]:
    return [c[epoch - 1]["test_loss"] for n, c in sorted(curves.items())
            if n.startswith(f"{optim}-lr{lr:g}-h{hidden}-s") and len(c) >= epoch]


def _lr_claim(d: Path, cells: list[dict[str, Any]], optim: str) -> tuple[str, str]:
    best, other = BEST_LR[optim], 0.01
    tests = {h: _w(losses(cells, optim, best, h), losses(cells, optim, other, h)) for h in HIDDEN}
    shown = [h for h, w in tests.items() if w and w["shown"] and w["diff"] < 0]
    rest = [h for h in HIDDEN if h not in shown]
    within = ("holds within the grid" if not rest else "not shown within the grid" if not shown else
              f"holds within the grid at h {', '.join(map(str, shown))}; not shown at h {', '.join(map(str, rest))}")
    evidence = (f"Grid (`grid/cells.csv`), lr {best:g} - lr {other:g} at h 512: {_wt(tests[512])}; shown at "
                f"{len(shown)} of {len(HIDDEN)} sizes (table grid-tests).")
    if optim == "adam":
        evidence += " Adam at lr 0.1 ends `collapsed` (a constant output) at every h and seed."
    edge_file = f"edge/{optim}-cells.csv"
    if not all((d / f).exists() for f in (edge_file, *FIVE)):
        return within + "; beyond the grid: pending", evidence + f" Beyond the grid's edge: pending (`{COMMAND}`)."
    edge_cells, ref = rows(d / edge_file), losses(_cells(d, *FIVE), optim, best, 512)
    lower, higher, neither, parts = [], [], [], []
    for lr in sorted({r["lr"] for r in edge_cells}):
        w = _w(losses(edge_cells, optim, lr, 512), ref)
        (neither if not w or not w["shown"] else lower if w["diff"] < 0 else higher).append(f"{lr:g}")
        parts.append(f"lr {lr:g}: {_wt(w)}")
    if lower:
        beyond = f"beyond it: lower at lr {', '.join(lower)}"
    elif neither:
        beyond = f"beyond it: not shown either way at lr {', '.join(neither)}"
    else:
        beyond = "beyond it: every rate tried is higher"
    return (within + "; " + beyond,
            evidence + f" Beyond the edge, at h 512, each rate - lr {best:g} (its {len(ref)} seeds): "
            + "; ".join(parts) + f" (`{edge_file}`; table edge).")


def _size_claim(d: Path, optim: str) -> tuple[str, str]:
    lr = BEST_LR[optim]
    five = _cells(d, *FIVE) if all((d / f).exists() for f in FIVE) else rows(d / "grid/cells.csv")
    w = _w(losses(five, optim, lr, 512), losses(five, optim, lr, 256))
    n = len(losses(five, optim, lr, 512))
    verdict = (f"holds ({n} seeds at 100 epochs)" if w and w["shown"] and w["diff"] < 0
               else f"not shown ({n} seeds at 100 epochs)")
    src = "`grid/cells.csv`, `seeds34/" + optim + "-cells.csv`" if n > 3 else "`grid/cells.csv`"
    evidence = f"lr {lr:g}, h 512 - h 256 at 100 epochs: {_wt(w)} ({src})."
    if optim == "adam":
        files = [f for f in ("grid/curves.csv", f"seeds34/{optim}-curves.csv") if (d / f).exists()]
        curves = _curves(d, *files)
        w30 = _w(_at_epoch(curves, optim, lr, 512, 30), _at_epoch(curves, optim, lr, 256, 30))
        evidence += f" At epoch 30 of the same runs: {_wt(w30)} ({', '.join(f'`{f}`' for f in files)})."
    return verdict, evidence


def claims(d: Path) -> list[str]:
    pending = _pending(d, ["grid/cells.csv", "grid/curves.csv"])
    if pending:
        return pending
    cells = rows(d / "grid/cells.csv")
    out = ["| # | the report's claim (section) | verdict | evidence |", "| --- | --- | --- | --- |"]

    def row(n: int, claim: str, verdict: str, evidence: str) -> None:
        out.append(f"| {n} | {claim} | {verdict} | {evidence} |")

    row(1, 'With SGD, "the best lr obtained was η = 0.1" (§2.1, Figure 2a).', *_lr_claim(d, cells, "sgd"))
    row(2, "With SGD, the model with the lowest loss has 512 neurons (§2.1, Figure 2b).", *_size_claim(d, "sgd"))
    row(3, "SGD's best model: \"although the model represents the input relatively well, it has problems, since the "
        "predictions are slightly noisy and in some cases very smoothed\" (Figure 2b caption).", "holds (by eye)",
        "`figures/recon.png`: SGD's reconstructions are blurred and speckled with dark pixels.")
    row(4, 'With Adam, "the best results were obtained for η = 0.001" (§2.2, Figure 3a).',
        *_lr_claim(d, cells, "adam"))
    row(5, "Adam's model with the lowest loss has 512 neurons and \"represents the input adequately\" (Figure 3b "
        "caption).", *_size_claim(d, "adam"))
    # 6 and 12: Adam's first epochs against SGD's final losses
    first = _first_epochs(d)
    sgd, low, adam, epoch1, below, beat = (first[k] for k in ("sgd", "low", "adam", "epoch1", "below", "beat"))
    edge_in = "edge/sgd-cells.csv" in first["sgd_files"]
    where, adam_where = _cite(first["sgd_files"]), _cite(first["curve_files"])
    scope = "(" + ", ".join({"grid/cells.csv": "the grid", "seeds34/sgd-cells.csv": "seeds 3 and 4",
                             "edge/sgd-cells.csv": "beyond the grid's edge"}[f] for f in first["sgd_files"]) + ")"
    within = "" if edge_in else " within the grid; beyond its edge: pending"
    row(6, "Adam \"gave better results quickly, since in the first epoch it obtains results similar to SGD for "
        "certain configurations of hyperparameters\" (§2.2).",
        ("holds, more strongly than stated" if below == 0 else "holds" if 2 * below < len(sgd) else "not supported")
        + within,
        f"Adam lr 0.001, h 512 after one epoch: at most {epoch1[-1]:.6f} over its {len(adam)} seeds ({adam_where}); "
        f"{below} of the {len(sgd)} SGD cells {scope} end below that after 100 epochs ({where}; table adam-vs-sgd).")
    # 7: after epoch 30
    fall, share = [], []
    for t in adam.values():
        if len(t) >= 100:
            fall.append(100 * (t[29] - t[99]) / t[29])
            share.append(100 * (t[29] - t[99]) / (t[0] - t[99]))
    claim7 = ("With Adam \"the loss from epoch 30 on stays relatively constant\", so \"it is not necessary to train "
              "the model for 100 epochs to obtain similar results\" and \"the real improvement against compute time "
              "is slight\" (§2.2 and §3, \"by simple visual inspection\" of Figure 3a).")
    if not fall:
        row(7, claim7, "pending", "needs the 100-epoch curves of `grid/curves.csv`.")
    else:
        verdict7 = "holds" if max(fall) < 5 else "partly holds" if max(share) < 20 else "not supported"
        row(7, claim7, verdict7,
            f"Adam lr 0.001, h 512, {len(fall)} seeds: from epoch 30 to 100 the loss still falls by {min(fall):.1f}% "
            f"to {max(fall):.1f}% of its epoch-30 value, which is {min(share):.1f}% to {max(share):.1f}% of its whole "
            f"fall since epoch 1 (table curve, {adam_where}; `figures/curves-linear.png`). Rule: \"holds\" below a "
            "5% fall, \"partly holds\" when under a fifth of the whole fall comes after epoch 30, else \"not "
            "supported\"; whether the rest is worth 70 more epochs is a judgement.")
    row(8, "The autoencoder's output is robust to errors, which \"can be explained\" by the bottleneck and by dropout "
        "(§2.3).", "not testable here", "No run varies the bottleneck or removes dropout for denoising; fmae can "
        "(`--dropout 0`, `--hidden`), the study does not.")
    # 9, 13: denoising
    if (d / "denoise-seeds.json").exists():
        doc = json.loads((d / "denoise-seeds.json").read_text())
        by: dict[tuple[float, str], list[float]] = {}
        for r in doc["results"]:
            by.setdefault((r["sigma"], CELL.search(r["checkpoint"])["optim"]), []).append(r["output"]["psnr"])
        sigmas = sorted({s for s, _ in by})
        tests = {s: _w(by[(s, "adam")], by[(s, "sgd")]) for s in sigmas}
        higher = [s for s, w in tests.items() if w and w["shown"] and w["diff"] > 0]
        lower = [s for s, w in tests.items() if w and w["shown"] and w["diff"] < 0]
        tie = [s for s in sigmas if s not in higher and s not in lower]
        verdict9 = "holds" if len(higher) == len(sigmas) else (
            "holds at sigma " + ", ".join(f"{s:g}" for s in higher) + "; not shown either way at " +
            ", ".join(f"{s:g}" for s in tie) + ("; reversed at " + ", ".join(f"{s:g}" for s in lower) if lower else ""))
        row(9, "The model trained with Adam \"was better at filtering the noise\" (§2.3, Figure 4).", verdict9,
            "PSNR, Adam - SGD over each optimizer's h 512 models, one per seed (`denoise-seeds.json`, "
            "table denoise-seeds): " + "; ".join(
                f"sigma {s:g}: {_wt(tests[s], '{:.2f}')}" for s in sigmas) + ". The report's constant is unknown.")
    else:
        row(9, "The model trained with Adam \"was better at filtering the noise\" (§2.3, Figure 4).", "pending",
            f"`{COMMAND}` makes `denoise-seeds.json`.")
    row(10, "Figure 4's rows: Adam better, SGD better, both failing, and \"the model with SGD fails to capture the "
        "well-known *pipeta*\" (most likely the Nike swoosh on a shoe) \"while the model with Adam captures it\"; "
        "the images \"taken arbitrarily\" to show \"the virtues and failings of both\".",
        "holds (the report itself shows SGD winning a row)",
        "`figures/denoise.png` (sigma 1, PSNR in each title): per-image wins are mixed for both optimizers; the mean "
        "is claim 9.")
    sgd5_files = [f for f in ("grid/cells.csv", "seeds34/sgd-cells.csv") if (d / f).exists()]
    sgd5 = [r for r in _cells(d, *sgd5_files) if r["optim"] == "sgd" and r["lr"] == 0.1 and r["hidden"] == 512]
    last = sum(1 for r in sgd5 if r["best_epoch"] == r["epochs_run"] == 100)
    row(11, "With SGD, \"adding more epochs would probably produce an improvement, but would hardly beat Adam, because "
        "of its construction\" (§3).", "first half holds; second half not testable",
        f"SGD lr 0.1, h 512 is still improving at epoch 100: its best epoch is its last in {last} of its {len(sgd5)} "
        f"seeds ({_cite(sgd5_files)}, `best_epoch`). No run goes beyond 100 epochs; \"because of its construction\" is "
        "not measurable.")
    row(12, "Adam \"is more efficient than SGD, since it gives better results in fewer epochs, which means less time "
        "and computational cost\" (§4).", ("holds" if beat < 100 else "not supported") + within,
        f"Every seed of Adam lr 0.001, h 512 is below the lowest final loss of the {len(sgd)} SGD cells {scope}, "
        f"{low['final_test_loss']:.6f} (lr {low['lr']:g}, h {low['hidden']}, seed {low['seed']}), from epoch {beat} on "
        f"({adam_where}; {where}; table adam-vs-sgd); an epoch costs both optimizers the same matrix products.")
    if (d / "denoise.json").exists():
        doc = json.loads((d / "denoise.json").read_text())
        gains: dict[str, list[tuple[float, float]]] = {}
        for r in doc["results"]:
            gains.setdefault(CELL.search(r["checkpoint"])["optim"], []).append((r["sigma"], r["gain"]["psnr"]))
        up = {o: [s for s, g in sorted(v) if g > 0] for o, v in gains.items()}
        verdict13 = "; ".join(f"{o}'s model: " + ("raises the PSNR at every sigma" if len(up[o]) == len(gains[o]) else
                                                   "at no sigma" if not up[o] else
                                                   "only at sigma " + ", ".join(f"{s:g}" for s in up[o]))
                              for o in sorted(gains))
        row(13, "\"The use of the autoencoder as a noise filter was verified\" (§4).", verdict13,
            "PSNR gain over the noisy input, seed 0 (`denoise.json`): " + "; ".join(
                f"{o}: " + ", ".join(f"{g:+.2f} dB at sigma {s:g}" for s, g in sorted(v))
                for o, v in sorted(gains.items())) + ".")
    else:
        row(13, "\"The use of the autoencoder as a noise filter was verified\" (§4).", "pending",
            f"`{COMMAND}` makes `denoise.json`.")
    row(14, "It \"would be good to observe how the model responds to other types of noise\" (§3).",
        "not measured (a suggestion)", "fmae has `gaussian`, `salt-pepper` and `speckle` noise (`fmae denoise "
        "--noise ...`); the study uses only the report's.")
    return out


BLOCKS: dict[str, Callable[[Path], list[str]]] = {
    "provenance": provenance, "compute": compute, "grid": grid, "grid-tests": grid_tests, "best": best,
    "denoise": denoise, "seeds5": seeds5, "denoise-seeds": denoise_seeds, "curve": curve, "adam-vs-sgd": adam_vs_sgd,
    "edge": edge, "halving": halving, "claims": claims,
}
PAGES = ("README.md", "../study.md")  # under the docs directory: the pages whose blocks are generated


def render(text: str, docs: Path) -> tuple[str, list[str]]:
    """The text with every generated block recomputed from its files, and the names of the blocks that changed."""
    changed: list[str] = []

    def one(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in BLOCKS:
            raise SystemExit(f"error: unknown generated block {name!r}")
        body = "\n".join(BLOCKS[name](docs)) + "\n"
        if body != m["body"]:
            changed.append(name)
        return f"<!-- generated: {name} from {m['files']} -->\n{body}<!-- end: {name} -->"

    return BLOCK.sub(one, text), changed


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    docs = Path(argv[0])
    stale = 0
    for page in (docs / p for p in PAGES):
        if not page.exists():
            continue
        new, changed = render(page.read_text(), docs)
        if "--write" in argv[1:]:
            page.write_text(new)
            print(f"{page}: {len(changed)} block(s) rewritten" + (f" ({', '.join(changed)})" if changed else ""))
            continue
        for name in changed:
            print(f"{page}: block {name} does not match its files", file=sys.stderr)
        stale += len(changed)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
