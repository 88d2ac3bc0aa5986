"""What --reproducible (the portable numerics, fmae.numerics) costs on this machine.

    python benchmarks/reproducible_cost.py [--hidden 64 512] [--epochs 4] [--rounds 2]

For each hidden size: `fmae train --threads 1` without and with --reproducible, as subprocesses
(the mode is set before torch loads, so each measurement is a process of its own), taken by turns
over --rounds rounds; seconds per epoch is the median of each run's epochs after the first (from
its metrics.csv). Also the sgemm rate of one training step's matmuls with MKL's own choice of
kernels and with MKL_CBWR=AVX2. Run it alone on the machine: nothing else beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import command_line  # noqa: E402
from fmae.numerics import PORTABLE_ENV, cpu_info  # noqa: E402

RATE = ("import sys; sys.path.insert(0, %r); import torch; torch.set_num_threads(1); "
        "from benchmarks.common import matmul_rate; print(matmul_rate(%d) / 1e9)")


def epoch_seconds(hidden: int, epochs: int, reproducible: bool, where: Path) -> float:
    run = where / f"h{hidden}-{'portable' if reproducible else 'default'}"
    cmd = [sys.executable, "-m", "fmae", "train", "--optim", "adam", "--hidden", str(hidden), "--epochs", str(epochs),
           "--threads", "1", "--run-dir", str(run), "--overwrite", "--quiet"]
    subprocess.run([*cmd, *(["--reproducible"] if reproducible else [])], check=True, stdout=subprocess.DEVNULL,
                   env={k: v for k, v in os.environ.items() if k not in PORTABLE_ENV})
    with open(run / "metrics.csv", newline="") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    return statistics.median(seconds[1:] or seconds)


def sgemm_rate(hidden: int, portable: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    out = subprocess.run([sys.executable, "-c", RATE % (str(ROOT), hidden)], check=True, capture_output=True,
                         text=True, env={**env, **(PORTABLE_ENV if portable else {})})
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"# {command_line()}\n# cpu: {cpu_info()['model']} ({cpu_info()['vendor']})")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in args.hidden:
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for portable in (False, True):
                    times[portable].append(epoch_seconds(hidden, args.epochs, portable, Path(tmp)))
            default, portable = min(times[False]), min(times[True])
            rows.append({"hidden": hidden, "default_s_per_epoch": round(default, 3),
                         "portable_s_per_epoch": round(portable, 3), "cost": f"{portable / default - 1:+.1%}",
                         "sgemm_gflops_default": round(sgemm_rate(hidden, False), 1),
                         "sgemm_gflops_portable": round(sgemm_rate(hidden, True), 1)})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
