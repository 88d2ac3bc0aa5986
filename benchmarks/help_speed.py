"""Wall time of `fmae --help` (and friends) as a user's shell sees it: process start to exit.

    python benchmarks/help_speed.py [--runs 20]

The budget is 0.3 s on the 2-core development machine; `python -c pass` is printed as the floor.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def wall(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    fmae = shutil.which("fmae")
    if fmae is None:
        sys.exit("fmae is not installed: pip install -e .")
    cases = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "fmae --help": [fmae, "--help"],
        "fmae --version": [fmae, "--version"],
        "fmae sweep --help": [fmae, "sweep", "--help"],
    }
    print("command | median s | min s | max s")
    print("--- | --- | --- | ---")
    for name, cmd in cases.items():
        t = wall(cmd, args.runs)
        print(f"{name} | {statistics.median(t):.3f} | {min(t):.3f} | {max(t):.3f}")
    print("budget: fmae --help under 0.3 s")
    print(f"reproduce: python benchmarks/help_speed.py --runs {args.runs}")


if __name__ == "__main__":
    main()
