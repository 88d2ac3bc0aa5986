"""SIGKILL at random moments, then the same command again: no corrupt file, no finished epoch
lost (with --checkpoint-every 0; with a long interval, at most the epochs since the last checkpoint),
and the final results equal an uninterrupted run (CPU, fp32). Also SIGINT, whose printed resume
command resumes, and --jobs/ray sweeps whose workers die with their driver; both signals write the
latest state first. Each kill is proven to land mid-run: the process was still running (its return
code says which signal ended it) and the run it leaves is unfinished."""

import csv
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fmae import checkpoints, faults, runs
from fmae.locks import LOCK_NAME
from tests.helpers import default_sigint, installed_env, state_dict

pytestmark = pytest.mark.dataset

# 1 thread: the runs compared bit for bit must split their sums alike, whatever else loads the machine
TRAIN = ["fmae", "train", "--epochs", "4", "--hidden", "32", "--seed", "1", "--checkpoint-every", "0", "--threads", "1",
         "-q"]
SWEEP = ["fmae", "sweep", "--lr", "0.01", "0.001", "--hidden", "16", "--epochs", "3", "--checkpoint-every", "0", "-q"]
LONG = ["--checkpoint-every", "3600"]  # after the option above: the later value wins


def env(data_dir: Path, delay: float = 0.0) -> dict:
    e = installed_env(FMAE_DATA_DIR=str(data_dir))
    if delay:
        e[faults.WRITE_DELAY] = str(delay)
    return e


def losses(metrics: Path) -> list[tuple[str, str, str]]:
    with open(metrics, newline="") as fh:
        return [(r["epoch"], r["train_loss"], r["test_loss"]) for r in csv.DictReader(fh)]


def check_run_files(run: Path) -> int:
    """Every file present parses; returns the epoch last.pt holds (0 without one)."""
    if (run / "config.json").exists():
        json.loads((run / "config.json").read_text())
    if (run / "summary.json").exists():
        json.loads((run / "summary.json").read_text())
    rows = losses(run / "metrics.csv") if (run / "metrics.csv").exists() else []
    epoch = runs.RunDir(run).load_last()["epoch"] if (run / "last.pt").exists() else 0
    assert len(rows) <= epoch, "metrics.csv ran ahead of last.pt"
    if (run / "model.pt").exists():
        checkpoints.load_model(run / "model.pt")
    return epoch


def kill_at(cmd: list[str], cwd: Path, after: float, data_dir: Path) -> int:
    """Run `cmd`, SIGKILL it `after` seconds in unless it ended first; its return code (-9: killed)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(data_dir, delay=0.15), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode in (0, -signal.SIGKILL), proc.returncode
    return proc.returncode


def test_train_survives_sigkill_at_random_moments(tmp_path, real_data_dir):
    subprocess.run([*TRAIN, "--run-dir", "ref"], cwd=tmp_path, env=env(real_data_dir), check=True)
    rng = random.Random(7)
    run, last, landed = tmp_path / "r", 0, 0
    for _ in range(5):
        resume = ["--resume"] if (run / "config.json").exists() else []  # --resume needs a run to resume
        code = kill_at([*TRAIN, "--run-dir", "r", *resume], tmp_path, rng.uniform(2.0, 6.0), real_data_dir)
        epoch = check_run_files(run) if run.exists() else 0
        assert epoch >= last, "a finished epoch was lost"
        last = epoch
        if code == 0 or (run / "summary.json").exists():  # finished (perhaps killed on its way out)
            break
        landed += 1  # killed mid-run: no summary yet (the kill may land after the last epoch's last.pt)
    assert landed >= 1, "every run finished before its kill: nothing was resumed"
    resume = ["--resume"] if (run / "config.json").exists() else []
    subprocess.run([*TRAIN, "--run-dir", "r", *resume], cwd=tmp_path, env=env(real_data_dir), check=True)
    assert losses(run / "metrics.csv") == losses(tmp_path / "ref" / "metrics.csv")
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert not list(run.glob(".*.tmp")) and not (run / LOCK_NAME).exists()


def test_a_kill_with_a_long_interval_loses_only_the_epochs_since_the_last_checkpoint(tmp_path, real_data_dir):
    """--checkpoint-every 3600: metrics.csv runs ahead of last.pt (none is due yet); a kill -9 loses
    those epochs, no more: the rerun starts from last.pt (here none: from scratch) and ends equal."""
    subprocess.run([*TRAIN, "--run-dir", "ref"], cwd=tmp_path, env=env(real_data_dir), check=True)
    run = tmp_path / "r"
    proc = subprocess.Popen([*TRAIN, *LONG, "--run-dir", "r"], cwd=tmp_path, env=env(real_data_dir),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not ((run / "metrics.csv").exists() and len(losses(run / "metrics.csv")) >= 2):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (run / "summary.json").exists()
    trained = len(losses(run / "metrics.csv"))
    assert 2 <= trained < 4 and not (run / "last.pt").exists()  # two epochs or more finished, none checkpointed
    resumed = subprocess.run([*TRAIN, *LONG, "--run-dir", "r", "--resume"], cwd=tmp_path, env=env(real_data_dir),
                             capture_output=True, text=True, check=True)
    assert "resuming after" not in resumed.stderr  # what the kill lost: every epoch since the last checkpoint
    assert losses(run / "metrics.csv") == losses(tmp_path / "ref" / "metrics.csv")
    a, b = state_dict(tmp_path / "ref" / "model.pt"), state_dict(run / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sweep_survives_sigkill_at_random_moments(tmp_path, real_data_dir):
    subprocess.run([*SWEEP, "--run-dir", "ref"], cwd=tmp_path, env=env(real_data_dir), check=True)
    rng = random.Random(11)
    landed = 0
    for _ in range(5):
        code = kill_at([*SWEEP, "--run-dir", "s"], tmp_path, rng.uniform(2.0, 7.0), real_data_dir)
        for cell in (tmp_path / "s" / "cells").glob("*") if (tmp_path / "s" / "cells").exists() else []:
            check_run_files(cell)
        if code == 0 or (tmp_path / "s" / "results.json").exists():  # finished (perhaps killed on its way out)
            break
        landed += 1  # killed mid-sweep: no results yet
    assert landed >= 1, "every sweep finished before its kill: nothing was resumed"
    subprocess.run([*SWEEP, "--run-dir", "s"], cwd=tmp_path, env=env(real_data_dir), check=True)
    for cell in (tmp_path / "ref" / "cells").iterdir():
        assert losses(tmp_path / "s" / "cells" / cell.name / "metrics.csv") == losses(cell / "metrics.csv")
    strip = lambda p: [{k: v for k, v in r.items() if k not in ("seconds", "model")}  # noqa: E731
                       for r in json.loads(p.read_text())["cells"]]
    assert strip(tmp_path / "s" / "results.json") == strip(tmp_path / "ref" / "results.json")


def test_ctrl_c_exits_130_and_the_printed_command_resumes(tmp_path, real_data_dir):
    """The one error line of an interrupted `fmae train` names the command that resumes it: run as
    printed, it goes on from the saved epoch and ends equal to a run never interrupted."""
    subprocess.run([*TRAIN, "--run-dir", "ref"], cwd=tmp_path, env=env(real_data_dir), check=True)
    proc = subprocess.Popen([*TRAIN[:-1], *LONG, "--run-dir", "r"], cwd=tmp_path, env=env(real_data_dir, delay=0.15),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "r" / "metrics.csv").exists():
        time.sleep(0.1)
    assert not (tmp_path / "r" / "last.pt").exists()  # none due yet: Ctrl-C must write it
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # still training when Ctrl-C came
    assert "error: training interrupted" in err and "--resume" in err
    saved = runs.RunDir(tmp_path / "r").load_last()["epoch"]
    assert 1 <= saved < 4  # fewer epochs than asked: the resume has work to do
    assert saved == len(losses(tmp_path / "r" / "metrics.csv"))  # the latest state: no finished epoch lost
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "interrupted"

    printed = re.search(r"\(hint: resume with: (.+)\)$", err.strip().splitlines()[-1])
    assert printed, err
    argv = shlex.split(printed[1])
    assert argv[0] == "fmae" and argv[-1] == "--resume", argv
    resumed = subprocess.run(argv, cwd=tmp_path, env=env(real_data_dir), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {saved}" in resumed.stderr, resumed.stderr
    assert losses(tmp_path / "r" / "metrics.csv") == losses(tmp_path / "ref" / "metrics.csv")
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "completed"
    a, b = state_dict(tmp_path / "ref" / "model.pt"), state_dict(tmp_path / "r" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- --jobs N: workers die with the driver

JOBS = [sys.executable, "-m", "fmae", "sweep", "--optim", "sgd", "--lr", "0.1", "0.01", "--hidden", "8",
        "--epochs", "3", "--threads", "1", "--checkpoint-every", "0", "-q"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waits for a parent that may never reap it: it trains no more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_jobs(tmp_path: Path, data_dir: Path, *extra: str, wait_for: str = "last.pt") -> tuple[subprocess.Popen, Path]:
    pids = tmp_path / "pids"
    pids.mkdir(exist_ok=True)
    proc = subprocess.Popen([*JOBS, "--jobs", "2", *extra, "--run-dir", "s"], cwd=tmp_path,
                            env={**env(data_dir), faults.WORKER_PIDS: str(pids)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (len(list(pids.iterdir())) == 2
                                          and list((tmp_path / "s").glob(f"cells/*/{wait_for}"))):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    return proc, pids


def assert_no_worker_left(pids: Path) -> None:
    workers = [int(p.name) for p in pids.iterdir()]
    assert len(workers) >= 2
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if alive(p)], "a worker went on after its driver"


def saved_epochs(sweep: Path) -> list[int]:
    """The epoch each started cell's last.pt holds (0 without one)."""
    return [runs.RunDir(c).load_last()["epoch"] if (c / "last.pt").exists() else 0 for c in (sweep / "cells").iterdir()]


def test_kill_9_of_the_driver_leaves_no_worker_and_the_rerun_ends_equal(tmp_path, real_data_dir):
    subprocess.run([*JOBS, "--run-dir", "ref"], cwd=tmp_path, env=env(real_data_dir), check=True, timeout=600)
    proc, pids = start_jobs(tmp_path, real_data_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # still running when killed
    assert not (tmp_path / "s" / "results.json").exists() and min(saved_epochs(tmp_path / "s")) < 3
    assert_no_worker_left(pids)
    subprocess.run([*JOBS, "--jobs", "2", "--run-dir", "s"], cwd=tmp_path, env=env(real_data_dir), check=True,
                   timeout=600)
    for cell in (tmp_path / "ref" / "cells").iterdir():
        assert losses(tmp_path / "s" / "cells" / cell.name / "metrics.csv") == losses(cell / "metrics.csv")
        a = checkpoints.load_checkpoint(cell / "model.pt")["state_dict"]
        b = checkpoints.load_checkpoint(tmp_path / "s" / "cells" / cell.name / "model.pt")["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_stops_the_workers_and_exits_143(tmp_path, real_data_dir):
    """With no checkpoint due (a long interval), SIGTERM writes every cell's latest state first."""
    proc, pids = start_jobs(tmp_path, real_data_dir, "--epochs", "30", *LONG, wait_for="metrics.csv")
    assert not list((tmp_path / "s").glob("cells/*/last.pt"))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "error: sweep interrupted by SIGTERM; finished epochs are saved" in err
    assert_no_worker_left(pids)
    assert max(saved_epochs(tmp_path / "s")) >= 1 and min(saved_epochs(tmp_path / "s")) < 30
    for cell in (tmp_path / "s" / "cells").iterdir():  # no finished epoch lost
        trained = len(losses(cell / "metrics.csv")) if (cell / "metrics.csv").exists() else 0
        assert (runs.RunDir(cell).load_last()["epoch"] if (cell / "last.pt").exists() else 0) == trained


def descendants(pid: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_sigterm_of_a_ray_sweep_exits_143_and_takes_its_private_ray_down(tmp_path, real_data_dir):
    proc = subprocess.Popen([*JOBS[:-1], "--epochs", "30", "--executor", "ray", "--run-dir", "s"], cwd=tmp_path,
                            env=env(real_data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "s").glob("cells/*/last.pt")):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be stopped"
    ray_processes = descendants(proc.pid)
    assert len(ray_processes) >= 3  # at least Ray's GCS, raylet and a worker
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "error: sweep interrupted by SIGTERM; finished epochs are saved" in err
    assert min(saved_epochs(tmp_path / "s")) < 30  # stopped mid-sweep
    deadline = time.time() + 20
    while time.time() < deadline and any(alive(p) for p in ray_processes):
        time.sleep(0.2)
    assert not [p for p in ray_processes if alive(p)], "Ray went on after its driver"
