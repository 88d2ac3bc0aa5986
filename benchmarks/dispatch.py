"""What a sweep asks of a GPU, counted on the CPU: aten operations and host syncs per cell-epoch.

    python benchmarks/dispatch.py [--engine stacked cells] [--hidden 8 16 24 32] [--optim sgd adam]
        [--lr 0.1 0.01 0.001] [--json]

On a GPU a small model's epoch costs what the host spends dispatching operations and waiting on
the device, not FLOPs: every aten operation is a launch (or at least a trip through the
dispatcher), and every host sync (`.item()`, `float(t)`, `.tolist()`, a device<->host copy) stalls
the queue. Both are properties of the code, not of the device, so they are counted here, on the
CPU, by running an in-process `fmae sweep` under a `TorchDispatchMode`:

- ops: every aten operation dispatched (views included); "kernels": those that are not views,
  allocations or scalar reads, i.e. the ones that launch work on a GPU;
- syncs: `aten._local_scalar_dense` (`.item()`, `float(t)`, `int(t)`), `Tensor.tolist`,
  `Tensor.numpy`, and every `Tensor.to`/`.cpu()` naming a device (an upper bound: on the CPU a
  move to the CPU is free, on a GPU it is a transfer).

Per cell-epoch is the marginal cost: (a 3-epoch sweep - a 2-epoch sweep) / cells, so the data
loading and once-per-cell work (directories, the first and the last checkpoint, results) cancel,
and the epoch counted is a middle one, as most of a 100-epoch sweep's are: no checkpoint falls due
in it (--checkpoint-every 3600 here; a checkpoint costs one copy of the cell's state to the host,
every 30 s by default). Only the driver's training thread is counted: the writer thread, which
saves, is off the training path. The hidden sizes do not change the counts (the shapes change, not
the operations), so small ones keep it fast; the grid's shape (optimizers x rates x hidden sizes)
is the report's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

NOT_KERNELS = {"empty", "empty_strided", "empty_like", "_local_scalar_dense", "lift_fresh", "set_"}


class Count(TorchDispatchMode):
    """Counts aten operations by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        if not (func.is_view or name in NOT_KERNELS):
            self.kernels += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def host_syncs(counter: Counter[str]):
    """Counts the Python-level host syncs (the dispatcher sees `.item()` as _local_scalar_dense)."""
    saved = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy", "cpu", "to")}
    counting = threading.current_thread()

    def counted(name):  # noqa: ANN001, ANN202
        original = saved[name]

        def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN202
            names_device = name in ("tolist", "numpy", "cpu") or "device" in kwargs or any(
                isinstance(a, (str, torch.device)) for a in args)
            if names_device and threading.current_thread() is counting:
                counter[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in saved:
        setattr(torch.Tensor, name, counted(name))
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


def sweep_counts(args: argparse.Namespace, engine: str, epochs: int) -> tuple[Count, Counter[str], int]:
    from typer.testing import CliRunner

    from fmae.cli import app, main  # noqa: F401 - main registers the commands

    cells = len(args.optim) * len(args.lr) * len(args.hidden)
    argv = ["sweep", "--optim", *args.optim, "--lr", *map(str, args.lr), "--hidden", *map(str, args.hidden),
            "--epochs", str(epochs), "--engine", engine, "--threads", "1", "--checkpoint-every", "3600", "--run-dir",
            tempfile.mkdtemp(prefix="fmae-dispatch-"), "--json", "--quiet"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    count, syncs = Count(), Counter()
    with host_syncs(syncs), count:
        done = CliRunner().invoke(app, argv)
    if done.exit_code != 0:
        raise SystemExit(f"dispatch: fmae {' '.join(argv)} exited {done.exit_code}: {done.output[-2000:]}")
    syncs["_local_scalar_dense"] = count.ops["_local_scalar_dense"]
    return count, syncs, cells


def per_cell_epoch(args: argparse.Namespace, engine: str) -> dict[str, object]:
    one, syncs1, cells = sweep_counts(args, engine, 2)
    two, syncs2, _ = sweep_counts(args, engine, 3)
    marginal = two.ops.copy()
    marginal.subtract(one.ops)
    sync = syncs2.copy()
    sync.subtract(syncs1)
    top = [(name, round(n / cells, 1)) for name, n in marginal.most_common(12) if n > 0]
    return {"engine": engine, "cells": cells,
            "ops": round((sum(two.ops.values()) - sum(one.ops.values())) / cells, 1),
            "kernels": round((two.kernels - one.kernels) / cells, 1),
            "syncs": round(sum(sync.values()) / cells, 2),
            "syncs_by_kind": {k: round(v / cells, 2) for k, v in sync.items() if v},
            "top_ops": top}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", nargs="+", default=["stacked", "cells"], choices=("stacked", "cells"))
    parser.add_argument("--optim", nargs="+", default=["sgd", "adam"])
    parser.add_argument("--lr", nargs="+", type=float, default=[0.1, 0.01, 0.001])
    parser.add_argument("--hidden", nargs="+", type=int, default=[8, 16, 24, 32])
    parser.add_argument("--data-dir", default=None, help="the Fashion-MNIST folder (default: fmae's search)")
    parser.add_argument("--batch-size", type=int, default=None, help="the minibatch (default: fmae's, 1000)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    rows = [per_cell_epoch(args, engine) for engine in args.engine]
    if args.json:
        print(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))
        return
    print(f"per cell-epoch, {rows[0]['cells']}-cell grid ({' '.join(args.optim)} x lr {len(args.lr)} x h "
          f"{len(args.hidden)}), torch {torch.__version__}")
    print("engine | aten ops | kernels | host syncs")
    print("--- | --- | --- | ---")
    for r in rows:
        print(f"{r['engine']} | {r['ops']} | {r['kernels']} | {r['syncs']} {r['syncs_by_kind']}")
    for r in rows:
        print(f"\n{r['engine']}, most frequent ops per cell-epoch: " + ", ".join(f"{n} {c}" for n, c in r["top_ops"]))


if __name__ == "__main__":
    main()
