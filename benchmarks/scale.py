"""Sweeps of many tiny cells: each process's peak memory, the time per cell, and what follows a sweep.

    python benchmarks/scale.py [N ...] [--jobs 1 2] [--steps sweep rerun plot tensorboard mlflow] [--keep DIR]

For each N (default 100 1000 10000) and each --jobs, one `fmae sweep --optim sgd --lr <rates>
--hidden 1 --seed 0 1 2 3 --epochs 1 --threads 1 --jobs J` of N cells (N/4 rates, a geometric
series from 0.001 to 1, times 4 seeds; N rates and seed 0 when 4 does not divide N), then the same
command again (the rerun of a finished sweep), `fmae plot`, `fmae export tensorboard` and `fmae
export mlflow` (an sqlite store) of it, each a process of its own, one after another.

Memory: the peak RSS (VmHWM) of every process of a command, the driver's and its descendants'
(the fork server and the pool's workers with --jobs N), read from /proc every 0.2 s while it runs
(a peak in the last 0.2 s of a process can be missed). Time: the sweep's own wall time (its JSON's
wall_seconds: from the start of its work to its results, without Python's start-up), split into
training (the seconds in the cells' metrics.csv, summed) and the rest, which with --jobs 1 is the
driver's own work (loading the data, planning, saving every cell's files, the results); with
--jobs N the cells train N at a time, and the rest is wall - training / N. With --jobs 1 the sweep
runs with clocks around its tasks and its executor (see TIMED), which split the rest three ways:
in the engine but not in metrics.csv's seconds (building the models, gathering and converting
the minibatches, the collapse check), the driver's work for each cell (its files: config.json,
metrics.csv, last.pt, model.pt, summary.json) and its work once per sweep (data, plan, results). Disk: the sweep
directory's files, the largest number in one directory, and the bytes its blocks take.
Linux only (/proc). Every sweep is written under a temporary directory, removed at the end
(--keep DIR: there instead, and kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import command_line  # noqa: E402

STEPS = ("sweep", "rerun", "plot", "tensorboard", "mlflow")
SAMPLE_S = 0.2
# The timed sweep: `fmae` itself, with clocks around the driver loop (every cell's tasks and
# files) and the inline backend's tasks (the engine), written as JSON to $FMAE_SCALE_TIMES at exit.
TIMED = """
import atexit, json, os, sys, time
from fmae.cli import main
from fmae.executors import driver, local
seconds = {"drive": 0.0, "tasks": 0.0}
def clocked(f, key):
    def call(*a, **k):
        t0 = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            seconds[key] += time.perf_counter() - t0
    return call
driver.drive = clocked(driver.drive, "drive")
local.InlineBackend.submit = clocked(local.InlineBackend.submit, "tasks")
atexit.register(lambda: open(os.environ["FMAE_SCALE_TIMES"], "w").write(json.dumps(seconds)))
sys.argv[0] = "fmae"
main()
"""


def rates(n: int) -> tuple[list[str], list[str]]:
    """The sweep's --lr and --seed values for n cells."""
    seeds = ["0", "1", "2", "3"] if n % 4 == 0 else ["0"]
    k = n // len(seeds)
    values = [f"{10 ** (-3 + 3 * i / max(1, k - 1)):.6g}" for i in range(k)]
    assert len(set(values)) == k, "rates that print alike"
    return values, seeds


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, peak RSS in kB) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            parent = int(fh.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/status") as fh:
            peak = next((int(line.split()[1]) for line in fh if line.startswith("VmHWM:")), 0)
        return parent, peak
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Peaks:
    """The peak RSS of a process and of each of its descendants, sampled until `stop`."""

    def __init__(self, root: int) -> None:
        self.root, self.peak_kb, self.parent, self.role = root, {}, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def sample(self) -> None:
        found = {}
        for name in os.listdir("/proc"):
            if name.isdigit() and (st := _stat(int(name))) is not None:
                found[int(name)] = st
        family, grew = {self.root}, True
        while grew:
            new = {pid for pid, (parent, _) in found.items() if parent in family} - family
            family |= new
            grew = bool(new)
        for pid in family & found.keys():
            parent, peak = found[pid]
            self.peak_kb[pid] = max(peak, self.peak_kb.get(pid, 0))
            if pid not in self.role:
                self.parent[pid] = parent
                self.role[pid] = self._role_of(pid, parent)

    def _role_of(self, pid: int, parent: int) -> str:
        if pid == self.root:
            return "driver"
        line = _cmdline(pid)  # a worker is forked by the fork server, whose command line it keeps
        if "forkserver" in line:
            return "fork server" if parent == self.root else "worker"
        return "resource tracker" if "resource_tracker" in line else "other"

    def stop(self) -> dict[str, list[int]]:
        """Peak RSS in MB by role (driver, worker, fork server, ...), one entry per process."""
        self._stop.set()
        self._thread.join()
        out: dict[str, list[int]] = {}
        for pid, kb in self.peak_kb.items():
            out.setdefault(self.role[pid], []).append(kb >> 10)
        return out


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict[str, list[int]], str]:
    """Run a command to its end: (wall seconds, peak RSS in MB by role, stdout); exits on a failure."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peaks = Peaks(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    found = peaks.stop()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}): {err.strip()[-800:]}")
    return wall, found, out


def disk(path: Path) -> tuple[int, int, int]:
    """(files and directories, the most entries in one directory, bytes of their blocks)."""
    count = most = used = 0
    for directory, dirs, files in os.walk(path):
        entries = len(dirs) + len(files)
        count, most = count + entries, max(most, entries)
        used += sum(os.lstat(os.path.join(directory, n)).st_blocks * 512 for n in [*dirs, *files])
    return count, most, used


def png_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """Width and height of each PNG in `folder` (from its header)."""
    out = {}
    for png in sorted(folder.glob("*.png")):
        head = png.read_bytes()[16:24]
        out[png.name] = (int.from_bytes(head[:4], "big"), int.from_bytes(head[4:], "big"))
    return out


def measure(n: int, jobs: int, where: Path, steps: list[str], env: dict[str, str]) -> dict[str, object]:
    fmae = [sys.executable, "-m", "fmae"]
    lrs, seeds = rates(n)
    sweep_dir = where / f"sweep-{n}-j{jobs}"
    sweep = [*fmae, "sweep", "--optim", "sgd", "--lr", *lrs, "--hidden", "1", "--seed", *seeds, "--epochs", "1",
             "--threads", "1", "--jobs", str(jobs), "--run-dir", str(sweep_dir), "-q", "--json"]
    row: dict[str, object] = {"n": n, "jobs": jobs}
    if "sweep" in steps or not sweep_dir.exists():
        times = where / f"times-{n}-j{jobs}.json"
        wall, peaks, out = run([sys.executable, "-c", TIMED, *sweep[3:]], {**env, "FMAE_SCALE_TIMES": str(times)})
        doc = json.loads(out)
        assert len(doc["cells"]) == n, len(doc["cells"])
        training = sum(r["seconds"] or 0.0 for r in doc["cells"])
        row.update(process_s=wall, sweep_s=doc["wall_seconds"], training_s=training, peaks=peaks,
                   **{f"{k}_s": v for k, v in json.loads(times.read_text()).items()})
        row["files"], row["most_in_a_directory"], row["disk_bytes"] = disk(sweep_dir)
    for step in steps[1:] if steps[0] == "sweep" else steps:
        cmd = {"rerun": sweep,
               "plot": [*fmae, "plot", str(sweep_dir), "--out", str(where / f"figures-{n}-j{jobs}"), "-q", "--json"],
               "tensorboard": [*fmae, "export", "tensorboard", str(sweep_dir), "--to", str(where / f"tb-{n}-j{jobs}"),
                               "-q"],
               "mlflow": [*fmae, "export", "mlflow", str(sweep_dir), "--to",
                          f"sqlite:///{where / f'mlflow-{n}-j{jobs}.db'}", "-q"]}[step]
        wall, peaks, _ = run(cmd, env)
        row[step] = (wall, max(peaks.get("driver", [0])))
        if step == "plot":
            row["pngs"] = png_sizes(where / f"figures-{n}-j{jobs}")
    return row


def report(rows: list[dict[str, object]]) -> None:
    mb = lambda peaks, role: max(peaks.get(role, [0])) if peaks.get(role) else "-"  # noqa: E731
    ms = lambda seconds, n: f"{1000 * seconds / n:.1f}"  # noqa: E731
    print("\ncells | jobs | driver peak MB | largest worker peak MB (workers) | fork server MB | sweep s "
          "(process s) | ms per cell | training (metrics.csv) | the rest | of which: in the engine, untimed "
          "| the driver, per cell's files | the driver, once (data, plan, results)")
    print(" | ".join(["---"] * 12))
    for r in rows:
        if "peaks" not in r:
            continue
        n, jobs, peaks = r["n"], r["jobs"], r["peaks"]
        rest = r["sweep_s"] - r["training_s"] / jobs
        workers = f"{mb(peaks, 'worker')} ({len(peaks.get('worker', []))})" if jobs > 1 else "-"
        split = (f"{ms(r['tasks_s'] - r['training_s'], n)} | {ms(r['drive_s'] - r['tasks_s'], n)} | "
                 f"{ms(r['sweep_s'] - r['drive_s'], n)}") if jobs == 1 else "- | - | -"
        print(f"{n} | {jobs} | {mb(peaks, 'driver')} | {workers} | {mb(peaks, 'fork server')} | "
              f"{r['sweep_s']:.1f} ({r['process_s']:.1f}) | {ms(r['sweep_s'], n)} | {ms(r['training_s'], n)} | "
              f"{ms(rest, n)} | {split}")
    print("\ncells | jobs | files | most in one directory | disk MB | kB per cell | " +
          " | ".join(f"{s}: s (peak MB)" for s in STEPS[1:]))
    print(" | ".join(["---"] * 10))
    for r in rows:
        files = (f"{r['files']} | {r['most_in_a_directory']} | {r['disk_bytes'] / 2**20:.1f} | "
                 f"{r['disk_bytes'] / 1024 / r['n']:.1f}") if "files" in r else "- | - | - | -"
        done = " | ".join(f"{r[s][0]:.1f} ({r[s][1]})" if s in r else "-" for s in STEPS[1:])
        print(f"{r['n']} | {r['jobs']} | {files} | {done}")
    for r in rows:
        if "pngs" in r:
            print(f"figures of {r['n']} cells: " + ", ".join(f"{k} {w}x{h}" for k, (w, h) in r["pngs"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", nargs="*", type=int, default=[100, 1000, 10000])
    parser.add_argument("--jobs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--keep", type=Path, default=None, help="write the sweeps here, and keep them")
    args = parser.parse_args()
    steps = [s for s in STEPS if s in args.steps]
    env = {**os.environ, "MLFLOW_EXPERIMENT_NAME": "scale"}
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} before", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fmae-scale-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        for n in args.cells:
            for jobs in args.jobs:
                rows.append(measure(n, jobs, where, steps, env))
                print(json.dumps(rows[-1]), flush=True)
    report(rows)
    print(f"(load average {os.getloadavg()[0]:.1f} after)\nreproduce: {command_line()}")


if __name__ == "__main__":
    main()
