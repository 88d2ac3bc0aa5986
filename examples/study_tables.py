"""The generated tables of docs/results/README.md, computed from the CSV and JSON files they name.

    python3 examples/study_tables.py docs/results --write    # rewrite every block from its files
    python3 examples/study_tables.py docs/results            # check: exit 1 and name each stale block

A block is the text between `<!-- generated: NAME from FILES -->` and `<!-- end: NAME -->`; FILES are
paths under the docs directory. Where a block's files do not exist yet (a study still running), the block
says so and names the command that makes them. Needs only Python's standard library and fmae/stats.py.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fmae import stats  # noqa: E402  (pure Python: math only)

HIDDEN = (64, 128, 256, 512)
TRAIN_SAMPLES, TEST_SAMPLES = 60_000, 10_000
TRAIN_FLOPS_PER_H, TEST_FLOPS_PER_H = 9_400, 3_136  # per sample: see the halving section of the README
COMMAND = "examples/study.sh runs/study"
BLOCK = re.compile(r"<!-- generated: (?P<name>[\w-]+) from (?P<files>[^>]*?) -->\n(?P<body>.*?)<!-- end: (?P=name) -->",
                   re.S)


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


def g4(v: float) -> str:
    return f"{v:.4g}"


def p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def losses(cells: Sequence[dict[str, Any]], lr: float, hidden: int) -> list[float]:
    """Final test losses of one group's usable cells, in seed order."""
    return [r["final_test_loss"] for r in sorted(cells, key=lambda r: r["seed"])
            if r["lr"] == lr and r["hidden"] == hidden and r["status"] in stats.RANKABLE]


# ---- the blocks -------------------------------------------------------------------------------------------

def grid100(d: Path) -> list[str]:
    out = ["| optimizer | lr | h = 64 | 128 | 256 | 512 | status in the file |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for optim in ("sgd", "adam"):
        cells = rows(d / f"{optim}-results.csv")
        for lr in sorted({r["lr"] for r in cells}, reverse=True):
            by_h = {r["hidden"]: r for r in cells if r["lr"] == lr}
            row = []
            for h in HIDDEN:
                r = by_h[h]
                text = r["status"] if r["final_test_loss"] is None else f"{r['final_test_loss']:.5f}"
                row.append(f"**{text}**" if r["rank"] == 1 else text)
            statuses = sorted({r["status"] for r in by_h.values()})
            out.append(f"| {optim} | {lr:g} | " + " | ".join(row) + f" | {', '.join(statuses)} |")
    return out


def best(d: Path) -> list[str]:
    doc = json.loads((d / "eval.json").read_text())
    out = ["| model | test MSE | PSNR (dB) | SSIM | PCA MSE, k = h |", "| --- | --- | --- | --- | --- |"]
    for c in doc["checkpoints"]:
        out.append(f"| {c['optim']} lr {c['lr']:g} h {c['hidden']} | {c['mse']:.6f} | {c['psnr']:.2f} | "
                   f"{c['ssim']:.4f} | {c['pca_mse']:.6f} |")
    return out


def denoise(d: Path) -> list[str]:
    doc = json.loads((d / "denoise.json").read_text())
    optim = {c["checkpoint"]: c["optim"] for c in json.loads((d / "eval.json").read_text())["checkpoints"]}
    by_sigma: dict[float, dict[str, Any]] = {}
    for r in doc["results"]:
        by_sigma.setdefault(r["sigma"], {})[optim[r["checkpoint"]]] = r
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


def _groups_table(d: Path, sub: str, keys: Sequence[tuple[str, float, int]]) -> list[str]:
    out = ["| optimizer | lr | h | n | statuses | mean ± std | 95% CI of the mean | per seed (0, 1, ...) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for optim, lr, h in keys:
        groups = {(g["lr"], g["hidden"]): g for g in rows(d / sub / f"{optim}-groups.csv")}
        g = groups[(lr, h)]
        per_seed = ", ".join(f6(r["final_test_loss"]) if r["final_test_loss"] is not None else r["status"]
                             for r in sorted(rows(d / sub / f"{optim}-cells.csv"), key=lambda r: r["seed"])
                             if r["lr"] == lr and r["hidden"] == h)
        statuses = ", ".join(f"{k} {v}" for k, v in json.loads(g["statuses"]).items())
        if g["mean_final_test_loss"] is None:
            out.append(f"| {optim} | {lr:g} | {h} | {g['n']} | {statuses} | - | - | {per_seed} |")
            continue
        m, s, ci = g["mean_final_test_loss"], g["std_final_test_loss"], g["ci95_final_test_loss"]
        out.append(f"| {optim} | {lr:g} | {h} | {g['n']} | {statuses} | {f6(m)} ± {f6(s)} | "
                   f"[{f6(m - ci)}, {f6(m + ci)}] | {per_seed} |")
    return out


def _tests_table(d: Path, sub: str, pairs: Sequence[tuple[str, tuple[str, float, int], tuple[str, float, int]]],
                 paired: bool) -> list[str]:
    head = "| comparison (a - b) | mean a - mean b | 95% CI of the difference | Welch t | df | p | CI excludes 0 |"
    out = [head + (" paired t (df, p): not used |" if paired else ""),
           "| --- " * (7 + paired) + "|"]
    cells = {o: rows(d / sub / f"{o}-cells.csv") for o in ("adam", "sgd")}
    for label, (oa, la, ha), (ob, lb, hb) in pairs:
        a, b = losses(cells[oa], la, ha), losses(cells[ob], lb, hb)
        try:
            w = stats.welch(a, b)
        except ValueError as e:  # fewer than 2 usable seeds (diverged, collapsed), or no spread at all
            out.append(f"| {label} | {e} |" + " - |" * (5 + paired))
            continue
        line = (f"| {label} | {w['diff']:.6f} | [{w['low']:.6f}, {w['high']:.6f}] | {w['t']:.2f} | {w['df']:.2f} | "
                f"{p_text(w['p'])} | {'yes' if w['high'] < 0 or w['low'] > 0 else 'no'} |")
        if paired:
            pt = stats.paired_t(a, b)
            line += f" {pt['t']:.2f} ({pt['df']}, {p_text(pt['p'])}) |"
        out.append(line)
    return out


def seeds30(d: Path) -> list[str]:
    return _groups_table(d, "seeds", [(o, lr, h) for o, lr in (("adam", 0.001), ("sgd", 0.1)) for h in HIDDEN])


def seeds30_tests(d: Path) -> list[str]:
    pairs = [(f"{o} lr {lr:g}: h {hi} - h {lo}", (o, lr, hi), (o, lr, lo))
             for o, lr in (("adam", 0.001), ("sgd", 0.1)) for lo, hi in zip(HIDDEN, HIDDEN[1:])]
    pairs.append(("adam h 64 - sgd h 512 (Adam's worst, SGD's best)", ("adam", 0.001, 64), ("sgd", 0.1, 512)))
    return _tests_table(d, "seeds", pairs, paired=True)


def _pending(d: Path, files: Sequence[str]) -> list[str] | None:
    missing = [f for f in files if not (d / f).exists()]
    if not missing:
        return None
    return [f"**Pending**: the run is not finished; `{COMMAND}` makes {', '.join(f'`{m}`' for m in missing)} "
            "and this table."]


def seeds100(d: Path) -> list[str]:
    files = ["seeds100/adam-groups.csv", "seeds100/sgd-groups.csv", "seeds100/adam-cells.csv", "seeds100/sgd-cells.csv"]
    return _pending(d, files) or _groups_table(
        d, "seeds100", [(o, lr, h) for o, lr in (("adam", 0.001), ("sgd", 0.1)) for h in (256, 512)])


def seeds100_tests(d: Path) -> list[str]:
    files = ["seeds100/adam-cells.csv", "seeds100/sgd-cells.csv"]
    pairs = [("adam lr 0.001: h 512 - h 256", ("adam", 0.001, 512), ("adam", 0.001, 256)),
             ("sgd lr 0.1: h 512 - h 256", ("sgd", 0.1, 512), ("sgd", 0.1, 256)),
             ("adam h 512 - sgd h 512", ("adam", 0.001, 512), ("sgd", 0.1, 512))]
    return _pending(d, files) or _tests_table(d, "seeds100", pairs, paired=False)


def edge(d: Path) -> list[str]:
    files = ["edge/sgd-groups.csv", "edge/adam-groups.csv", "edge/sgd-cells.csv", "edge/adam-cells.csv",
             "seeds100/sgd-cells.csv", "seeds100/adam-cells.csv"]
    pending = _pending(d, files)
    if pending:
        return pending
    edge = [("sgd", lr, 512) for lr in (1.0, 0.5, 0.2)] + [("adam", lr, 512) for lr in (0.0003, 0.0001)]
    out = _groups_table(d, "edge", edge)
    out += ["", "Each learning rate beyond the edge against the grid's best one at h = 512 (100-epoch seeds above):",
            ""]
    tests = ["| comparison (a - b) | mean a - mean b | 95% CI of the difference | Welch t | df | p | CI excludes 0 |",
             "| --- " * 7 + "|"]
    for optim, best_lr, lrs in (("sgd", 0.1, (0.2, 0.5, 1.0)), ("adam", 0.001, (0.0003, 0.0001))):
        ref = losses(rows(d / "seeds100" / f"{optim}-cells.csv"), best_lr, 512)
        cells = rows(d / "edge" / f"{optim}-cells.csv")
        for lr in lrs:
            try:
                w = stats.welch(losses(cells, lr, 512), ref)
            except ValueError as e:  # fewer than 2 usable seeds (diverged, collapsed), or no spread at all
                tests.append(f"| {optim} lr {lr:g} - lr {best_lr:g} | {e} |" + " - |" * 5)
                continue
            tests.append(f"| {optim} lr {lr:g} - lr {best_lr:g} | {w['diff']:.6f} | "
                         f"[{w['low']:.6f}, {w['high']:.6f}] | "
                         f"{w['t']:.2f} | {w['df']:.2f} | {p_text(w['p'])} | "
                         f"{'yes' if w['high'] < 0 or w['low'] > 0 else 'no'} |")
    return out + tests


def curve(d: Path) -> list[str]:
    adam, sgd = "seeds100/curves/adam-lr0.001-h512-s0.csv", "seeds100/curves/sgd-lr0.1-h512-s0.csv"
    out = ["| cell (seed 0, 100 epochs) | epoch 1 | epoch 30 | epoch 50 | epoch 100 | "
           "first epoch within 5% of the final | "
           "within 5% from epoch ... on |", "| --- " * 7 + "|"]
    for path in (adam, sgd):
        if not (d / path).exists():
            out.append(f"| `{path}` | pending: `{COMMAND}` makes it | | | | | |")
            continue
        test = [r["test_loss"] for r in rows(d / path)]
        first = stats.within(test, stays=False)
        at = [f"{test[e - 1]:.6f}" if e <= len(test) else "-" for e in (1, 30, 50, 100)]
        out.append(f"| `{path}` | " + " | ".join(at) + f" | {first} | {stats.within(test)} |")
    return out


def _spread(values: list[float], fmt: str) -> str:
    mean, std, _ = stats.spread(values)
    return f"{fmt.format(mean)} ± {fmt.format(std)} ({len(values)})"


def denoise100(d: Path) -> list[str]:
    """PSNR and SSIM of each optimizer's best model over its 5 seeds, per sigma, Adam - SGD by Welch's t."""
    path = "seeds100/denoise.json"
    pending = _pending(d, [path])
    if pending:
        return pending
    doc = json.loads((d / path).read_text())
    cell = re.compile(r"(?P<optim>sgd|adam)-lr[^/]*-s(?P<seed>\d+)/model\.pt$")
    by: dict[tuple[float, str], list[dict[str, Any]]] = {}
    noisy: dict[float, dict[str, float]] = {}
    for r in doc["results"]:
        m = cell.search(r["checkpoint"])
        if m is None:
            raise SystemExit(f"error: {path}: cannot tell the optimizer of {r['checkpoint']!r}")
        by.setdefault((r["sigma"], m["optim"]), []).append(r["output"])
        noisy[r["sigma"]] = r["noisy"]
    out = [f"{doc['noise']} noise, {doc['images']} test images, noise seed {doc['seed']}; each model's mean over the "
           "images, then mean ± std over the models' seeds; Adam - SGD by the rule above:", "",
           "| sigma | metric | noisy | sgd (n) | adam (n) | adam - sgd | 95% CI of the difference | Welch p |",
           "| --- " * 8 + "|"]
    for sigma in sorted(noisy):
        for metric, fmt in (("psnr", "{:.2f}"), ("ssim", "{:.4f}")):
            s = [o[metric] for o in by[(sigma, "sgd")]]
            a = [o[metric] for o in by[(sigma, "adam")]]
            w = stats.welch(a, s)
            low, high = fmt.format(w["low"]), fmt.format(w["high"])
            out.append(f"| {sigma:g} | {metric.upper()} | {fmt.format(noisy[sigma][metric])} | {_spread(s, fmt)} | "
                       f"{_spread(a, fmt)} | {fmt.format(w['diff'])} | [{low}, {high}] | {p_text(w['p'])} |")
    return out


def halving(d: Path) -> list[str]:
    per_cell_epoch_per_h = TRAIN_SAMPLES * TRAIN_FLOPS_PER_H + TEST_SAMPLES * TEST_FLOPS_PER_H
    out = ["| optimizer | run | cell-epochs | FLOPs (x 10^12) | sum of the cells' seconds | threads "
           "| best cell: final test MSE |",
           "| --- " * 7 + "|"]
    for optim in ("sgd", "adam"):
        full, pruned = rows(d / f"{optim}-results.csv"), rows(d / "seeds" / f"halving-{optim}-cells.csv")
        numbers = []
        for name, cells, threads in (("full grid", full, 2), ("halving", pruned, 1)):
            epochs = sum(r["epochs_run"] for r in cells)
            flops = sum(r["epochs_run"] * r["hidden"] for r in cells) * per_cell_epoch_per_h
            seconds = sum(r["seconds"] for r in cells)
            b = next(r for r in cells if r["rank"] == 1)
            numbers.append((epochs, flops, seconds))
            out.append(f"| {optim} | {name} | {epochs:,} | {flops / 1e12:,.1f} | {seconds:,.0f} | {threads} | "
                       f"lr {b['lr']:g}, h {b['hidden']}: {b['final_test_loss']:.9f} |")
        (e0, f0, s0), (e1, f1, s1) = numbers
        out.append(f"| {optim} | halving / full grid | {100 * e1 / e0:.1f}% | {100 * f1 / f0:.1f}% | "
                   f"{s1 / s0:.2f}x | | |")
    return out


def compute(d: Path) -> list[str]:
    out = ["| file | cells | cell-epochs | training time, sum of the cells' `seconds` (min) |", "| --- " * 4 + "|"]
    for name in ("sgd-results.csv", "adam-results.csv", "seeds/adam-cells.csv", "seeds/sgd-cells.csv",
                 "seeds/halving-sgd-cells.csv", "seeds/halving-adam-cells.csv", "seeds100/adam-cells.csv",
                 "seeds100/sgd-cells.csv", "edge/sgd-cells.csv", "edge/adam-cells.csv"):
        if not (d / name).exists():
            out.append(f"| `{name}` | pending: `{COMMAND}` makes it | | |")
            continue
        cells = rows(d / name)
        out.append(f"| `{name}` | {len(cells)} | {sum(r['epochs_run'] or 0 for r in cells):,} | "
                   f"{sum(r['seconds'] or 0 for r in cells) / 60:,.1f} |")
    return out


BLOCKS: dict[str, Callable[[Path], list[str]]] = {
    "grid100": grid100, "best": best, "denoise": denoise, "seeds30": seeds30, "seeds30-tests": seeds30_tests,
    "halving": halving, "curve100": curve, "seeds100": seeds100, "seeds100-tests": seeds100_tests, "edge": edge,
    "denoise100": denoise100,
    "compute": compute,
}


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
    readme = docs / "README.md"
    text = readme.read_text()
    new, changed = render(text, docs)
    if "--write" in argv[1:]:
        readme.write_text(new)
        print(f"{readme}: {len(changed)} block(s) rewritten" + (f" ({', '.join(changed)})" if changed else ""))
        return 0
    for name in changed:
        print(f"{readme}: block {name} does not match its files", file=sys.stderr)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
