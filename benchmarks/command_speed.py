"""Whole-process time of one-shot commands against `python -c "import torch"` in the same run.

    python benchmarks/command_speed.py [--runs 5] [--hidden 512] [--without-extras]

A user pays for start-up on every command, so the ratio to a bare `import torch` (the floor of
any command that computes) is what is kept small. The commands run round-robin, so a burst of
load on the machine hits all of them alike; each figure is the median of --runs.
Targets: eval <= 2.0x, denoise <= 2.5x, train (h = 8, one epoch) <= 2.2x, `fmae sweep --help` <= 0.3 s.
--without-extras runs every command as if the optional trackers (mlflow, tensorboard) were not
installed: a stand-in package of each name, first on PYTHONPATH, fails to import, so a command
that imported one (it must not, unless asked with --tensorboard or --mlflow) would fail here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXTRAS = ("mlflow", "tensorboard")  # the optional trackers (pip install 'fmae-cli[mlflow]', ...)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=512, help="hidden size of the checkpoint eval/denoise read")
    parser.add_argument("--without-extras", action="store_true", help="as if mlflow and tensorboard were not installed")
    args = parser.parse_args()
    fmae = shutil.which("fmae") or str(Path(sys.executable).parent / "fmae")
    if not Path(fmae).exists():
        sys.exit("fmae is not installed: pip install -e .")
    env = {**os.environ, "NO_COLOR": "1"}
    work = Path(tempfile.mkdtemp(prefix="fmae-speed-"))
    if args.without_extras:
        for name in EXTRAS:
            (work / "blocked" / name).mkdir(parents=True)
            (work / "blocked" / name / "__init__.py").write_text(
                f"raise ImportError('{name} is not installed (command_speed.py --without-extras)')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(work / "blocked"), *filter(None, [env.get("PYTHONPATH")])])
    try:
        ckpt = work / "ckpt"
        subprocess.run([fmae, "train", "--hidden", str(args.hidden), "--epochs", "1", "--run-dir", str(ckpt), "-q"],
                       check=True, stdout=subprocess.DEVNULL, env=env)
        model = str(ckpt / "model.pt")
        cases = {  # name: (command, target ratio to import torch, target seconds)
            'python -c "import torch"': ([sys.executable, "-c", "import torch"], None, None),
            "fmae eval --ckpt model.pt": ([fmae, "eval", "--ckpt", model], 2.0, None),
            "fmae denoise --ckpt model.pt --sigma 0.5": ([fmae, "denoise", "--ckpt", model, "--sigma", "0.5"], 2.5,
                                                          None),
            "fmae train --hidden 8 --epochs 1": ([fmae, "train", "--hidden", "8", "--epochs", "1", "--run-dir",
                                                  str(work / "t"), "--overwrite", "-q"], 2.2, None),
            "fmae sweep --help": ([fmae, "sweep", "--help"], None, 0.3),
            "fmae --help": ([fmae, "--help"], None, 0.3),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for cmd, _, _ in cases.values():  # warm the page cache and .pyc files
            timed(cmd, env)
        for _ in range(args.runs):
            for name, (cmd, _, _) in cases.items():
                times[name].append(timed(cmd, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times['python -c "import torch"'])
    print(f"command | median s | min s | ratio to import torch | target | met (median of {args.runs})")
    print("--- | --- | --- | --- | --- | ---")
    failed = 0
    for name, (_, ratio_target, seconds_target) in cases.items():
        med, ratio = statistics.median(times[name]), statistics.median(times[name]) / base
        if ratio_target is not None:
            target, met = f"<= {ratio_target:.1f}x", ratio <= ratio_target
        elif seconds_target is not None:
            target, met = f"<= {seconds_target:.1f} s", med <= seconds_target
        else:
            target, met = "baseline", True
        failed += not met
        print(f"{name} | {med:.2f} | {min(times[name]):.2f} | {ratio:.2f}x | {target} | {'yes' if met else 'NO'}")
    print(f"checkpoint: h = {args.hidden}, one epoch; eval and denoise read all 10,000 test images")
    print(f"reproduce: python benchmarks/command_speed.py --runs {args.runs} --hidden {args.hidden}"
          + (" --without-extras" if args.without_extras else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
