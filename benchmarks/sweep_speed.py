"""The report's 12-cell SGD grid, three ways in one process, then whole `fmae sweep` processes.

    python benchmarks/sweep_speed.py [--epochs 2] [--recipe-epochs 1] [--optim sgd]
        [--part all|inprocess|executors|ceiling] [--repeat 1]

In one process:
1. fmae's sweep (in-process executor, files written per epoch);
2. the same cells one after another through fmae's single-model engine;
3. the plain torchvision DataLoader + ToTensor recipe, per cell.
Prints seconds per grid epoch for each, their ratios, the grid's FLOP limit (design.md) and the
fraction of it reached.
Whole processes (start-up, data check, worker start and Ray's start included), measured in the
same run: `fmae sweep` with --jobs 1, --jobs 2 and --executor ray (a private local instance), each
with its default threads; prints wall seconds and the speed-up over --jobs 1.
The ceiling of parallel cells (`--part ceiling`, not in `all`): for each hidden size, one training
epoch in one process with a thread per core, then one epoch in each of `cores` 1-thread processes
side by side (started together at a barrier, start-up excluded); the ratio of cell-epochs per
second is what any executor can gain on this machine, before start-up and scheduling.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    command_line,
    epoch_flops,
    matmul_rate,
    raw_copy_for_torchvision,
    torchvision_epoch_seconds,
)
from fmae import data, engine, executors, saving  # noqa: E402
from fmae.config import REPORT_HIDDEN, REPORT_LRS, SharedSettings, SweepConfig  # noqa: E402
from fmae.device import environment  # noqa: E402
from fmae.execution import CHECKPOINT_EVERY, ExecutorConfig  # noqa: E402
from fmae.sweeps import directory as sweep_dirs  # noqa: E402
from fmae.sweeps import run as sweep_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--recipe-epochs", type=int, default=1)
    parser.add_argument("--optim", default="sgd")
    parser.add_argument("--part", choices=("all", "inprocess", "executors", "ceiling"), default="all")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each whole-process way (median)")
    args = parser.parse_args()
    if args.part in ("all", "inprocess"):
        in_process(args)
    if args.part in ("all", "executors"):
        whole_processes(args)
    if args.part == "ceiling":
        ceiling()
    print(f"reproduce: {command_line()}")


def whole_processes(args: argparse.Namespace) -> None:
    """Whole `fmae sweep` processes, one after another, on this machine as it is (say if it is shared)."""
    grid = ["--optim", args.optim, "--lr", *map(str, REPORT_LRS), "--hidden", *map(str, REPORT_HIDDEN),
            "--epochs", str(args.epochs), "-q", "--json"]
    ways = [("--jobs 1", ["--jobs", "1"]), ("--jobs 2", ["--jobs", "2"]),
            ("--executor ray (local)", ["--executor", "ray"])]
    print(f"whole processes: fmae sweep {' '.join(grid)} ...  ({os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} before)")
    print("way | wall s | speed-up over --jobs 1")
    print("--- | --- | ---")
    walls: dict[str, list[float]] = {name: [] for name, _ in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):  # interleaved, so that a change in the machine's load hits every way
            for name, extra in ways:
                run_dir = Path(tmp) / f"{name.split()[1]}-{r}"
                cmd = [sys.executable, "-m", "fmae", "sweep", *grid, *extra, "--run-dir", str(run_dir)]
                t0 = time.perf_counter()
                done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if done.returncode != 0:
                    print(f"{name} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
                    continue
                walls[name].append(time.perf_counter() - t0)
    base = statistics.median(walls[ways[0][0]]) if walls[ways[0][0]] else None
    for name, extra in ways:
        if walls[name]:
            wall = statistics.median(walls[name])
            ratio = f"{base / wall:.2f}x" if base else "-"
            print(f"{name} | {wall:.1f} | {ratio}")
            print(f"    {shlex.join(['fmae', 'sweep', *grid, *extra])} --run-dir DIR")
    print(f"(median of {args.repeat}; load average {os.getloadavg()[0]:.1f} after)")


# One training epoch of one SGD cell, timed after every process of the round reached the barrier.
ONE_EPOCH = """
import sys, time
from pathlib import Path
import torch
from fmae import data, engine
from fmae.config import ModelConfig, TrainConfig
threads, hidden, barrier = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
name, count = sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
dataset = data.load(data.locate(None, download=False))
config = TrainConfig(optim="sgd", lr=0.1, model=ModelConfig(hidden=hidden), epochs=1)
(barrier / name).touch()
while len(list(barrier.iterdir())) < count:
    time.sleep(0.01)
t0 = time.perf_counter()
engine.train(config, dataset, torch.device("cpu"))
print(time.perf_counter() - t0)
"""


def _epochs_side_by_side(processes: int, threads: int, hidden: int) -> list[float]:
    with tempfile.TemporaryDirectory() as barrier:
        procs = [subprocess.Popen([sys.executable, "-c", ONE_EPOCH, str(threads), str(hidden), barrier, str(i),
                                   str(processes)], stdout=subprocess.PIPE, text=True) for i in range(processes)]
        return [float(p.communicate()[0]) for p in procs]


def ceiling() -> None:
    """What training cells side by side gains over one cell at a time with every core, per hidden size."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    print(f"ceiling of parallel cells: SGD, 1 epoch; {cores} cores, load average {os.getloadavg()[0]:.1f} before")
    print(f"hidden | 1 process x {cores} threads: s per epoch | {cores} processes x 1 thread: s per epoch (each) "
          "| cell-epochs per second, side by side / one at a time")
    print("--- | --- | --- | ---")
    one_total = side_total = 0.0
    for hidden in REPORT_HIDDEN:
        (one,) = _epochs_side_by_side(1, cores, hidden)
        side = _epochs_side_by_side(cores, 1, hidden)
        per_cell = statistics.mean(side) / cores
        one_total, side_total = one_total + one, side_total + per_cell
        print(f"{hidden} | {one:.2f} | {' '.join(f'{s:.2f}' for s in side)} | {one / per_cell:.2f}x")
    print(f"the report's grid (each hidden size equally often) | {one_total:.2f} | - | {one_total / side_total:.2f}x")
    print(f"(load average {os.getloadavg()[0]:.1f} after)")


def in_process(args: argparse.Namespace) -> None:
    device = torch.device("cpu")
    dataset = data.load(data.locate(None, download=False), device)
    grid = SweepConfig(optims=(args.optim,), lrs=REPORT_LRS, hiddens=REPORT_HIDDEN,
                       base=SharedSettings(epochs=args.epochs))
    cells = [c for c in grid.cells()]
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"grid: {len(cells)} cells ({args.optim}), {args.epochs} epochs")

    with tempfile.TemporaryDirectory() as tmp:
        where = sweep_dirs.SweepDir(Path(tmp) / "sweep")
        where.reset(False)
        plans = where.plan(grid)
        env = environment(str(device), dataset.source, dataset.sha256)
        t0 = time.perf_counter()
        options = ExecutorConfig()
        with saving.Saver(CHECKPOINT_EVERY) as saver, \
                executors.Session(executors.plan_for(options), dataset, device) as session:
            quiet = SimpleNamespace(cell_started=lambda *a: None, cell_epoch=lambda *a: None,
                                    cell_ended=lambda *a: None)
            sweep_run.run(plans, session, saver, env, device=device, progress=quiet)
        sweep_s = (time.perf_counter() - t0) / args.epochs

    t0 = time.perf_counter()
    for config in cells:
        engine.train(config, dataset, device)
    alone_s = (time.perf_counter() - t0) / args.epochs

    root = raw_copy_for_torchvision()
    recipe_s = sum(torchvision_epoch_seconds(root, c.model.hidden, c.optim, c.lr, args.recipe_epochs)
                   for c in cells)

    rates = {h: matmul_rate(h) for h in REPORT_HIDDEN}
    limit_s = sum(epoch_flops(c.model.hidden) / rates[c.model.hidden] for c in cells)
    flops = sum(epoch_flops(c.model.hidden) for c in cells)
    print("way | s per grid epoch | vs fmae sweep | fraction of FLOP limit")
    print("--- | --- | --- | ---")
    for name, secs in (("fmae sweep", sweep_s), ("fmae engine, cells one by one", alone_s),
                       ("torchvision recipe, per cell", recipe_s)):
        print(f"{name} | {secs:.2f} | {secs / sweep_s:.2f}x | {limit_s / secs:.2f}")
    print(f"FLOP limit: {flops:.3g} FLOPs per grid epoch / matmul rates "
          + ", ".join(f"h={h}: {r / 1e9:.0f}" for h, r in rates.items()) + f" GFLOP/s = {limit_s:.2f} s")
    print(f"sweep speed-up: {alone_s / sweep_s:.2f}x over one by one, {recipe_s / sweep_s:.1f}x over the recipe")


if __name__ == "__main__":
    main()
