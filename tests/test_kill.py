"""SIGKILL at random moments, then the same command again: no corrupt file, no finished epoch
lost, and the final results equal an uninterrupted run (CPU, fp32). Also SIGINT and the lock."""

import csv
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fmae import runs
from fmae.locks import LOCK_NAME
from tests.conftest import installed_env, real_data_dir

pytestmark = pytest.mark.dataset

TRAIN = ["fmae", "train", "--epochs", "4", "--hidden", "32", "--seed", "1", "-q"]
SWEEP = ["fmae", "sweep", "--lr", "0.01", "0.001", "--hidden", "16", "--epochs", "3", "-q"]


def default_sigint() -> None:
    """In the child: Ctrl-C's default action, which a shell without job control (CI) sets to ignore."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def env(delay: float = 0.0) -> dict:
    e = installed_env(FMAE_DATA_DIR=str(real_data_dir()))
    if delay:
        e["FMAE_TEST_WRITE_DELAY"] = str(delay)
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
        runs.load_model(run / "model.pt")
    return epoch


def kill_at(cmd: list[str], cwd: Path, after: float) -> int | None:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(delay=0.15), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=after)  # finished before the kill
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None


def test_train_survives_sigkill_at_random_moments(tmp_path):
    subprocess.run([*TRAIN, "--run-dir", "ref"], cwd=tmp_path, env=env(), check=True)
    rng = random.Random(7)
    run, last = tmp_path / "r", 0
    for _ in range(5):
        code = kill_at([*TRAIN, "--run-dir", "r", "--resume"], tmp_path, rng.uniform(2.0, 6.0))
        epoch = check_run_files(run) if run.exists() else 0
        assert epoch >= last, "a finished epoch was lost"
        last = epoch
        if code == 0:
            break
    subprocess.run([*TRAIN, "--run-dir", "r", "--resume"], cwd=tmp_path, env=env(), check=True)
    assert losses(run / "metrics.csv") == losses(tmp_path / "ref" / "metrics.csv")
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert not list(run.glob(".*.tmp")) and not (run / LOCK_NAME).exists()


def test_sweep_survives_sigkill_at_random_moments(tmp_path):
    subprocess.run([*SWEEP, "--run-dir", "ref"], cwd=tmp_path, env=env(), check=True)
    rng = random.Random(11)
    for _ in range(5):
        if kill_at([*SWEEP, "--run-dir", "s"], tmp_path, rng.uniform(2.0, 7.0)) == 0:
            break
        for cell in (tmp_path / "s" / "cells").glob("*") if (tmp_path / "s" / "cells").exists() else []:
            check_run_files(cell)
    subprocess.run([*SWEEP, "--run-dir", "s"], cwd=tmp_path, env=env(), check=True)
    for cell in (tmp_path / "ref" / "cells").iterdir():
        assert losses(tmp_path / "s" / "cells" / cell.name / "metrics.csv") == losses(cell / "metrics.csv")
    strip = lambda p: [{k: v for k, v in r.items() if k not in ("seconds", "model")}  # noqa: E731
                       for r in json.loads(p.read_text())["cells"]]
    assert strip(tmp_path / "s" / "results.json") == strip(tmp_path / "ref" / "results.json")


def test_ctrl_c_exits_130_and_resumes(tmp_path):
    proc = subprocess.Popen([*TRAIN[:-1], "--epochs", "40", "--run-dir", "r"], cwd=tmp_path, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "r" / "last.pt").exists():
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "error: training interrupted" in err and "--resume" in err
    assert runs.RunDir(tmp_path / "r").load_last()["epoch"] >= 1


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path):
    first = subprocess.Popen([*SWEEP[:-1], "--epochs", "30", "--run-dir", "s"], cwd=tmp_path, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (tmp_path / "s" / LOCK_NAME).exists():
            time.sleep(0.05)
        second = subprocess.run([*SWEEP[:-1], "--epochs", "30", "--run-dir", "s"], cwd=tmp_path, env=env(),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"in use by fmae process {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed owner's lock is stale: the next run takes it over
    third = subprocess.run([*SWEEP, "--run-dir", "s", "--epochs", "31"], cwd=tmp_path, env=env(),
                           capture_output=True, text=True, timeout=60, check=False)
    assert third.returncode == 1 and "other shared settings (epochs 30 -> 31)" in third.stderr, third.stderr
