"""The report's 24-cell grid (sgd and adam x lr 0.1 0.01 0.001 x h 64 128 256 512) through whole
`fmae sweep` processes with each engine: --engine cells (the CPU's default) and --engine stacked.

    python benchmarks/engine_speed.py [--epochs 1] [--device cpu] [--engines cells stacked] [--repeat 1]

Prints per engine: wall seconds (start-up included), ms per cell-epoch of the wall time, and ms per
cell-epoch inside the training loop (the cells' recorded epoch seconds: training and evaluation,
a stack's training time shared among its cells). Say whether the machine was shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import command_line  # noqa: E402
from fmae.config import REPORT_HIDDEN, REPORT_LRS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engines", nargs="+", default=["cells", "stacked"])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each engine, interleaved (median)")
    args = parser.parse_args()
    grid = ["--optim", "sgd", "adam", "--lr", *map(str, REPORT_LRS), "--hidden", *map(str, REPORT_HIDDEN),
            "--epochs", str(args.epochs), "--device", args.device, "--no-download", "-q", "--json"]
    cell_epochs = 2 * len(REPORT_LRS) * len(REPORT_HIDDEN) * args.epochs
    print(f"fmae sweep {' '.join(grid)} --engine E  ({cell_epochs} cell-epochs; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} before)")
    print("engine | wall s | ms per cell-epoch (wall) | ms per cell-epoch (in the loop)")
    print("--- | --- | --- | ---")
    walls: dict[str, list[float]] = {e: [] for e in args.engines}
    loops: dict[str, list[float]] = {e: [] for e in args.engines}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for name in args.engines:
                cmd = [sys.executable, "-m", "fmae", "sweep", *grid, "--engine", name,
                       "--run-dir", str(Path(tmp) / f"{name}-{r}")]
                t0 = time.perf_counter()
                done = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if done.returncode != 0:
                    print(f"{name} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
                    continue
                walls[name].append(wall)
                loops[name].append(sum(c["seconds"] or 0.0 for c in json.loads(done.stdout)["cells"]))
    for name in args.engines:
        if walls[name]:
            wall, loop = statistics.median(walls[name]), statistics.median(loops[name])
            print(f"{name} | {wall:.1f} | {1000 * wall / cell_epochs:.0f} | {1000 * loop / cell_epochs:.0f}")
    print(f"(median of {args.repeat}; load average {os.getloadavg()[0]:.1f} after)")
    print(f"reproduce: {command_line()}")


if __name__ == "__main__":
    main()
