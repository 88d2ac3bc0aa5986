"""What the trackers cost the driver: milliseconds per cell-epoch with --tensorboard and --mlflow.

    python benchmarks/tracker_cost.py [--cells 8] [--epochs 30] [--train-ms 10] [--repeat 2] [--mlflow URI]

In one process, the driver's writer (fmae.saving.Saver) is handed the epochs of `--cells` runs,
`--epochs` each, exactly as a sweep's driver hands them over, with `--train-ms` of simulated
training before each cell-epoch (a sleep: about what a stacked cell takes per epoch on a GPU, where
a tracker's cost shows; on a CPU an epoch takes seconds). Real trackers: TensorBoard event files
and an MLflow sqlite store in a temporary directory (MLflow's own start-up is left out: the store
is opened before the clock starts; `--mlflow URI`: that store instead, e.g. a tracking server's
http://host:port). Prints, per way (no tracker, --tensorboard, --mlflow, both):
the driver's time inside `Saver.epoch` per cell-epoch (what training waits for), the wall time per
cell-epoch until every write is done, minus the simulated training, and the tracker calls made.
Medians over `--repeat`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import command_line  # noqa: E402
from fmae import runs, saving  # noqa: E402
from fmae.config import ModelConfig, TrainConfig  # noqa: E402
from fmae.device import environment  # noqa: E402
from fmae.execution import TrackerConfig  # noqa: E402
from fmae.trackers import open_trackers  # noqa: E402
from fmae.training import cells  # noqa: E402


class Counted:
    """The trackers, counting the calls that log epochs."""

    def __init__(self, trackers: object) -> None:
        self.trackers, self.calls = trackers, 0

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log(self, *args: object, **kwargs: object) -> None:
        self.calls += 1
        self.trackers.log(*args, **kwargs)


def one_way(where: Path, tracker: TrackerConfig, args: argparse.Namespace) -> tuple[float, float, int]:
    """(driver ms per cell-epoch in Saver.epoch, wall ms per cell-epoch beyond the training, tracker calls)."""
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "tracker-cost"
    configs = [TrainConfig(optim="adam", lr=0.001 * (i + 1), epochs=args.epochs, model=ModelConfig(hidden=8))
               for i in range(args.cells)]
    base = cells.new_cell(configs[0], torch.device("cpu")).resume_state(torch.Generator())
    env = environment("cpu")
    run_dirs = []
    for config in configs:
        run = runs.RunDir(where / runs.cell_name(config))
        run.reset()
        run.write_config(config, env)
        run_dirs.append(run)
    with open_trackers(tracker, print) as opened:
        trackers = Counted(opened)
        in_epoch = 0.0
        t0 = time.perf_counter()
        with saving.Saver(3600, trackers=trackers if tracker else None) as saver:
            for epoch in range(1, args.epochs + 1):
                state = {**base, "epoch": epoch, "history": [[e, 1.0 / e, 2.0 / e, 0.01] for e in range(1, epoch + 1)]}
                for run, config in zip(run_dirs, configs):
                    time.sleep(args.train_ms / 1000)  # the cell's epoch
                    t1 = time.perf_counter()
                    saver.epoch(run, config, state)
                    in_epoch += time.perf_counter() - t1
            saver.flush()
        wall = time.perf_counter() - t0
    n = args.cells * args.epochs
    return 1000 * in_epoch / n, 1000 * wall / n - args.train_ms, trackers.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-ms", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--mlflow", default=None, help="an MLflow tracking URI (default: a new sqlite store)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} before; "
          f"{args.cells} cells x {args.epochs} epochs, {args.train_ms:g} ms of simulated training per cell-epoch")
    store = (lambda d: args.mlflow) if args.mlflow else (lambda d: f"sqlite:///{d / 'mlflow.db'}")
    ways = {"no tracker": lambda d: TrackerConfig(),
            "--tensorboard": lambda d: TrackerConfig(tensorboard=d / "tb"),
            f"--mlflow {'URI' if args.mlflow else 'sqlite'}": lambda d: TrackerConfig(mlflow=store(d)),
            "both": lambda d: TrackerConfig(tensorboard=d / "tb", mlflow=store(d))}
    found: dict[str, list[tuple[float, float, int]]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for name, tracker in ways.items():
                where = Path(tmp) / f"{r}-{len(found[name])}-{name.strip('-').split()[0]}"
                where.mkdir()
                found[name].append(one_way(where, tracker(where), args))
    print("way | ms per cell-epoch in the driver | ms per cell-epoch beyond training, all written | tracker calls")
    print("--- | --- | --- | ---")
    for name, rows in found.items():
        driver, wall, calls = (statistics.median(col) for col in zip(*rows))
        print(f"{name} | {driver:.2f} | {wall:.2f} | {calls:.0f}")
    print(f"(load average {os.getloadavg()[0]:.1f} after)\nreproduce: {command_line()}")


if __name__ == "__main__":
    main()
