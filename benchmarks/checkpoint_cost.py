"""What checkpoints cost a sweep: last.pt every epoch (--checkpoint-every 0) against the default.

    python benchmarks/checkpoint_cost.py [--optim adam] [--hidden 64 512] [--epochs 3] [--repeat 2]

1. One last.pt (RunDir.save_last: torch.save, fsync, rename) of a trained-shape resume state per
   hidden size, median of 5, against one training epoch of that cell on this machine.
2. Whole `fmae sweep` processes, --checkpoint-every 0 and the default, interleaved `--repeat`
   times so that a change in the machine's load hits both: wall seconds (median) and the
   overhead of per-epoch checkpoints over the default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import command_line  # noqa: E402
from fmae import data, engine, runs  # noqa: E402
from fmae.config import ModelConfig, TrainConfig  # noqa: E402
from fmae.execution import CHECKPOINT_EVERY  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optim", default="adam")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} before")
    one_checkpoint(args)
    whole_sweeps(args)
    print(f"(load average {os.getloadavg()[0]:.1f} after)\nreproduce: {command_line()}")


def one_checkpoint(args: argparse.Namespace) -> None:
    dataset = data.load(data.locate(None, download=False), torch.device("cpu"))
    print("hidden | last.pt MB | s per last.pt (median of 5) | s per training epoch | last.pt / epoch")
    print("--- | --- | --- | --- | ---")
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in args.hidden:
            config = TrainConfig(optim=args.optim, epochs=1, model=ModelConfig(hidden=hidden))
            states = []
            t0 = time.perf_counter()
            engine.train(config, dataset, torch.device("cpu"),
                         on_epoch=lambda cell, m, rng, states=states: states.append(cell.resume_state(rng)))
            epoch_s = time.perf_counter() - t0
            run = runs.RunDir(Path(tmp) / str(hidden))
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                run.save_last(config, states[-1])
                times.append(time.perf_counter() - t0)
            size = run.file("last.pt").stat().st_size / 1e6
            save_s = statistics.median(times)
            print(f"{hidden} | {size:.1f} | {save_s:.3f} | {epoch_s:.2f} | {100 * save_s / epoch_s:.1f}%")


def whole_sweeps(args: argparse.Namespace) -> None:
    grid = ["--optim", args.optim, "--lr", "0.01", "--hidden", *map(str, args.hidden), "--epochs", str(args.epochs),
            "-q", "--json"]
    ways = [(f"--checkpoint-every {CHECKPOINT_EVERY:g} (default)", []),
            ("--checkpoint-every 0", ["--checkpoint-every", "0"])]
    print(f"\nwhole processes: fmae sweep {' '.join(grid)} ...")
    print("way | wall s (median) | runs")
    print("--- | --- | ---")
    walls: dict[str, list[float]] = {name: [] for name, _ in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for name, extra in ways:
                cmd = [sys.executable, "-m", "fmae", "sweep", *grid, *extra,
                       "--run-dir", str(Path(tmp) / f"{r}{len(extra)}")]
                t0 = time.perf_counter()
                done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if done.returncode != 0:
                    sys.exit(f"{name} failed: {done.stderr.strip().splitlines()[-1:]}")
                walls[name].append(time.perf_counter() - t0)
    for name, _ in ways:
        print(f"{name} | {statistics.median(walls[name]):.2f} | {' '.join(f'{w:.2f}' for w in walls[name])}")
    base, every = (statistics.median(walls[name]) for name, _ in ways)
    print(f"per-epoch checkpoints cost {100 * (every - base) / base:+.1f}% of the sweep's wall time")


if __name__ == "__main__":
    main()
