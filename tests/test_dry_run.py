"""`--dry-run` of sweep and train (docs/sweeps.md#dry-run): it counts the cells (new, finished, to
resume, pruned), says where and how they would train and estimates the time from a calibration
cached in the user's cache directory; it creates nothing and changes nothing in the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli, ctrl_c_at_save, tiny

GRID = ["--optim", "sgd", "--lr", "0.1", "0.01", "--hidden", "4", "8", *tiny(2, hidden=None)]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_dry_run_creates_nothing_and_counts_the_cells(fake_dataset, tmp_path):
    result = cli("sweep", *GRID, "--run-dir", tmp_path / "s", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "s").exists()
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is True and doc["cells"] == {"total": 4, "new": 4, "finished": 0, "resume": 0, "pruned": 0}
    assert doc["how"]["device"] == "cpu" and doc["how"]["engine"] == "cells" and doc["how"]["jobs"] == 1
    assert doc["estimate"]["cell_epochs_left"] == 8 and doc["estimate"]["seconds"] > 0
    assert doc["estimate"]["calibrated_now"] == 2  # hidden 4 and 8 at batch 16, measured once each
    cache = tmp_path / "cache" / "fmae" / "calibration.json"
    assert doc["estimate"]["calibration"] == str(cache) and len(json.loads(cache.read_text())["step_seconds"]) == 2
    again = json.loads(cli("sweep", *GRID, "--run-dir", tmp_path / "s", "--dry-run", "--json").stdout)
    assert again["estimate"]["calibrated_now"] == 0 and again["estimate"]["seconds"] == doc["estimate"]["seconds"]
    by_hidden = {r["hidden"]: r["seconds"] for r in doc["plan"]}
    assert sum(r["seconds"] for r in doc["plan"]) == pytest.approx(2 * (by_hidden[4] + by_hidden[8]))


def test_a_dry_run_of_a_sweep_under_way_reads_it_and_changes_nothing(fake_dataset, tmp_path):
    assert cli("sweep", *GRID[:4], "--hidden", "4", *tiny(2, hidden=None), "--run-dir", tmp_path / "s").exit_code == 0
    with ctrl_c_at_save(2, saved=False):  # the second cell: one epoch saved
        cut = cli("sweep", *GRID[:5], "--hidden", "4", *tiny(2, hidden=None), "--checkpoint-every", "0",
                  "--run-dir", tmp_path / "s")
    assert cut.exit_code == 130, cut.stderr
    before = snapshot(tmp_path / "s")
    result = cli("sweep", *GRID, "--run-dir", tmp_path / "s", "--dry-run", "--jobs", "2")
    assert result.exit_code == 0, result.stderr
    assert snapshot(tmp_path / "s") == before
    assert "4 cells: 2 new, 1 finished, 1 resume; would train on cpu (fp32, cells engine, 1 thread, 2 jobs)" \
        in result.stdout
    assert "nothing was trained or written (--dry-run)" in result.stdout
    doc = json.loads(cli("sweep", *GRID, "--epochs", "3", "--run-dir", tmp_path / "s", "--dry-run", "--json").stdout)
    states = {(r["lr"], r["hidden"]): (r["state"], r["epochs_done"], r["epochs_left"]) for r in doc["plan"]}
    assert states == {(0.1, 4): ("resume", 2, 1), (0.01, 4): ("resume", 1, 2), (0.1, 8): ("new", 0, 3),
                      (0.01, 8): ("new", 0, 3)}
    assert snapshot(tmp_path / "s") == before


def test_pruned_cells_are_counted(fake_dataset, tmp_path):
    args = ["--optim", "sgd", "--lr", "0.1", "0.01", "0.001", "--hidden", "4", *tiny(4, hidden=None), "--prune",
            "halving", "--eta", "2", "--run-dir", tmp_path / "s"]
    assert cli("sweep", *args).exit_code == 0
    doc = json.loads(cli("sweep", *args, "--dry-run", "--json").stdout)
    assert doc["cells"]["pruned"] >= 1 and doc["cells"]["pruned"] + doc["cells"]["finished"] == 3
    assert doc["how"]["prune"]["rungs"] == [1, 2, 4] and doc["estimate"]["cell_epochs_left"] == 0


def test_train_dry_run(fake_dataset, tmp_path):
    result = cli("train", *tiny(3), "--run-dir", tmp_path / "r", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "r").exists()
    doc = json.loads(result.stdout)
    assert doc["command"] == "train" and doc["cells"]["new"] == 1 and doc["plan"][0]["epochs_left"] == 3
    assert cli("train", *tiny(3), "--run-dir", tmp_path / "r").exit_code == 0
    before = snapshot(tmp_path / "r")
    doc = json.loads(cli("train", *tiny(3), "--run-dir", tmp_path / "r", "--dry-run", "--json").stdout)
    assert doc["cells"]["finished"] == 1 and "already holds a run" in doc["plan"][0]["note"]
    resumed = json.loads(cli("train", *tiny(5), "--run-dir", tmp_path / "r", "--resume", "--dry-run", "--json").stdout)
    assert resumed["plan"][0]["state"] == "resume" and resumed["plan"][0]["epochs_left"] == 2
    assert snapshot(tmp_path / "r") == before


def test_a_dry_run_names_the_portable_mode(fake_dataset, tmp_path):
    result = cli("sweep", *GRID, "--run-dir", tmp_path / "s", "--dry-run", "--reproducible", "--jobs", "2")
    assert result.exit_code == 0, result.stderr
    assert "would train on cpu (portable numerics, fp32, cells engine, 1 thread, 2 jobs)" in result.stdout
    doc = json.loads(cli("train", "--hidden", "4", "--run-dir", tmp_path / "r", "--dry-run", "--reproducible",
                         "--json").stdout)
    assert doc["how"]["numerics"] == "portable" and doc["how"]["threads"] == 1 and doc["how"]["device"] == "cpu"
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()


def test_the_portable_mode_is_calibrated_in_its_own_arithmetic(tmp_path):
    """A dry run of `--reproducible` enters the mode before torch loads (a new process, as a user
    runs it), so its calibration is measured with the mode's kernels and kept under a key that
    names them: never mixed with the default numerics' (which run other kernels on any x86-64 CPU:
    MKL's own choice against AVX2)."""
    import subprocess
    import sys

    from fmae import numerics
    from tests.helpers import installed_env

    env = installed_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    for key in numerics.PORTABLE_ENV:
        env.pop(key, None)
    cache = tmp_path / "cache" / "fmae" / "calibration.json"
    keys, seen = [], set()
    for extra in ([], ["--reproducible"]):
        run = subprocess.run([sys.executable, "-m", "fmae", "train", "--hidden", "4", "--batch-size", "16",
                              "--threads", "1", "--run-dir", str(tmp_path / "r"), "--dry-run", "--json", *extra],
                             env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["estimate"]["calibrated_now"] == 1  # the other mode's entry is not reused
        now = set(json.loads(cache.read_text())["step_seconds"])
        keys.append(now - seen)
        seen = now
    (default,), (portable,) = keys
    assert "mkl auto" in default and "AVX2 mkl AVX2" in portable, keys
    assert not (tmp_path / "r").exists()
