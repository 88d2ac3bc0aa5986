"""Where each file of docs/results comes from: examples/study.sh's bookkeeping.

    python3 examples/provenance.py record RUN_DIR NAME COMMIT COMMAND...   # after the sweep RUN_DIR/NAME
    python3 examples/provenance.py command RUN_DIR NAME COMMIT COMMAND...  # after RUN_DIR/NAME.json (eval, denoise)
    python3 examples/provenance.py publish RUN_DIR DOCS_DIR                # copy into DOCS_DIR, with provenance.json

`record` reads the environment every cell of the sweep recorded in its config.json (fmae's version,
torch, the CPU, the numerics: fmae.numerics.machine) and refuses a sweep whose cells disagree (two
machines, two modes, two versions), then writes RUN_DIR/NAME.provenance.json with the command, the
commit of the code that ran it and when it ended. `publish` copies the study's CSVs, per-epoch
curves, JSON documents and figures into DOCS_DIR (paths under RUN_DIR written relative to it) and
writes DOCS_DIR/provenance.json: for every file, the record of what made it. A file published
before and not remade keeps its record. Needs only Python's standard library and fmae.numerics.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fmae.numerics import cpu_info  # noqa: E402  (torch-free)

SHARED = ("fmae", "torch", "cpu", "vendor", "numerics", "mkl_cbwr", "torch_cpu_capability", "threads", "device")
FIGURES = {"figures/linear/curves.png": "curves-linear.png", "figures/linear/compare.png": "compare-linear.png",
           "figures/edge/seeds.png": "edge.png"}


def now(seconds: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def environment_of(sweep: Path) -> dict[str, Any]:
    """The one environment the cells of a sweep share (SHARED keys), or SystemExit naming the difference."""
    seen: dict[str, set[str]] = {}
    cells = sorted((sweep / "cells").glob("*/config.json"))
    if not cells:
        raise SystemExit(f"error: {sweep}: no cell has a config.json")
    for path in cells:
        env = json.loads(path.read_text())["environment"]
        flat = {**env, **(env.get("machine") or {})}
        for key in SHARED:
            seen.setdefault(key, set()).add(json.dumps(flat.get(key)))
    mixed = {k: sorted(v) for k, v in seen.items() if len(v) > 1}
    if mixed:
        raise SystemExit(f"error: {sweep}: its cells were made in different environments: {mixed}")
    return {k: json.loads(next(iter(v))) for k, v in seen.items()} | {"cells": len(cells)}


def record(run_dir: Path, name: str, commit: str, command: Sequence[str]) -> None:
    results = run_dir / name / "results.json"  # written when the sweep ends: its time, not the record's
    finished = now(results.stat().st_mtime if results.exists() else None)
    doc = {"command": " ".join(command), "commit": commit, **environment_of(run_dir / name), "finished": finished}
    (run_dir / f"{name}.provenance.json").write_text(json.dumps(doc, indent=2) + "\n")


def command_record(run_dir: Path, name: str, commit: str, command: Sequence[str]) -> None:
    """A command that trains nothing (eval, denoise): this machine, the code, when."""
    import platform

    from fmae import __version__

    cpu = cpu_info()
    doc = {"command": " ".join(command), "commit": commit, "fmae": __version__, "cpu": cpu["model"],
           "vendor": cpu["vendor"], "arch": platform.machine(), "finished": now()}
    (run_dir / f"{name}.provenance.json").write_text(json.dumps(doc, indent=2) + "\n")


def _relative(text: str, run_dir: Path) -> str:
    return text.replace(f"{run_dir.resolve()}/", "").replace(f"{run_dir}/", "")


def _copy_text(src: Path, dst: Path, run_dir: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(_relative(src.read_text(), run_dir))


def _curves(sweep: Path, dst: Path) -> None:
    """Every cell's metrics.csv in one long CSV: cell, epoch, train_loss, test_loss (seconds left out)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", newline="") as out:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["cell", "epoch", "train_loss", "test_loss"])
        for metrics in sorted((sweep / "cells").glob("*/metrics.csv")):
            with open(metrics, newline="") as f:
                for row in csv.DictReader(f):
                    w.writerow([metrics.parent.name, row["epoch"], row["train_loss"], row["test_loss"]])


def publish(run_dir: Path, docs: Path) -> None:
    index_path = docs / "provenance.json"
    index = json.loads(index_path.read_text())["files"] if index_path.exists() else {}
    made: dict[str, str] = {}  # DOCS_DIR path -> the RUN_DIR record that made it

    def put(src: Path, dst: str, prov: str, *, curves: bool = False) -> None:
        if not (run_dir / f"{prov}.provenance.json").exists() or not src.exists():
            return  # not made (yet): a sweep without a record, groups of a one-seed grid
        if curves:
            _curves(src, docs / dst)
        elif src.suffix in (".csv", ".json"):
            _copy_text(src, docs / dst, run_dir)
        else:
            (docs / dst).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, docs / dst)
        made[dst] = prov

    g = run_dir / "grid"
    put(g / "results.csv", "grid/cells.csv", "grid")
    put(g / "results_groups.csv", "grid/groups.csv", "grid")
    put(g, "grid/curves.csv", "grid", curves=True)
    for optim in ("sgd", "adam"):
        put(run_dir / f"seeds-{optim}" / "results.csv", f"seeds34/{optim}-cells.csv", f"seeds-{optim}")
        put(run_dir / f"seeds-{optim}", f"seeds34/{optim}-curves.csv", f"seeds-{optim}", curves=True)
        put(run_dir / f"{optim}-sh" / "results.csv", f"halving/{optim}-cells.csv", f"{optim}-sh")
        put(run_dir / f"edge-{optim}" / "results.csv", f"edge/{optim}-cells.csv", f"edge-{optim}")
        put(run_dir / f"edge-{optim}" / "results_groups.csv", f"edge/{optim}-groups.csv", f"edge-{optim}")
        put(run_dir / f"edge-{optim}", f"edge/{optim}-curves.csv", f"edge-{optim}", curves=True)
    for name in ("eval", "denoise", "denoise-seeds"):
        put(run_dir / f"{name}.json", f"{name}.json", name)
    figures = run_dir / "figures"
    if figures.is_dir():
        for png in sorted(figures.rglob("*.png")):
            rel = str(png.relative_to(run_dir))
            dst = "figures/" + FIGURES.get(rel, png.name if png.parent == figures else "")
            if dst != "figures/":
                put(png, dst, "denoise" if png.name.startswith("denoise") else "figures-edge" if "edge" in rel
                    else "figures")
    for dst, prov in made.items():
        index[dst] = json.loads((run_dir / f"{prov}.provenance.json").read_text())
    index_path.write_text(json.dumps({"note": "what made each file here: examples/provenance.py publish",
                                      "files": dict(sorted(index.items()))}, indent=2) + "\n")
    print(f"{docs}: {len(made)} file(s) published, provenance.json lists {len(index)}")


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 5 and argv[0] in ("record", "command"):
        (record if argv[0] == "record" else command_record)(Path(argv[1]), argv[2], argv[3], argv[4:])
        return 0
    if len(argv) == 3 and argv[0] == "publish":
        publish(Path(argv[1]), Path(argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
