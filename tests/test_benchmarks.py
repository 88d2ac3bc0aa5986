"""benchmarks/gpu_check.sh rehearsed on the CPU (DEVICE=cpu, one epoch, h 8) on the tiny synthetic
dataset: every row of its one table is measured, none fails. Its numbers are not checked (speed is
measured in benchmarks/, never asserted in tests). benchmarks/dispatch.py rehearsed too, and its
counts of the stacked engine held to issue 28's bound (operation counts, not time)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_dataset

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_rehearses_on_the_cpu(tmp_path):
    sums = write_dataset(tmp_path / "tiny", n_train=200, n_test=50)
    # every Python the script starts takes the tiny dataset's checksums (fmae accepts no other data)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(f"import fmae.data\nfmae.data.CHECKSUMS = {sums!r}\n")
    env = {**os.environ, "PYTHON": sys.executable, "FMAE_DATA_DIR": str(tmp_path / "tiny"),
           "OUT": str(tmp_path / "out"),
           "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "DEVICE": "cpu", "EPOCHS": "2", "CELL_EPOCHS": "1", "HIDDEN": "8", "TRAIN_HIDDEN": "8", "REF_EPOCHS": "2",
           "DEVICE_TESTS": "0"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    table = [line.split(" | ") for line in done.stdout.splitlines() if line.count(" | ") == 4]
    assert table[0] == ["what", "wall s", "ms per cell-epoch", "in-loop ms per cell-epoch", "result"]
    rows = {cells[0]: cells[1:] for cells in table[2:]}
    assert len(rows) == 5, done.stdout
    for what, (wall, per_cell, in_loop, result) in rows.items():
        assert "FAILED" not in result, (what, result, done.stdout)
        assert float(wall) > 0 and float(in_loop) > 0, (what, done.stdout)
        assert per_cell == "-" or float(per_cell) > 0
    assert [w.split()[1] for w in rows][:4] == ["sweep", "sweep", "sweep", "train"]
    assert "--seed 1 2 3" in list(rows)[2] and "2 timed cell-epochs" in list(rows.values())[4][3]
    cells = lambda name: len(list((tmp_path / "out" / name / "cells").iterdir()))  # noqa: E731
    assert (cells("grid-stacked"), cells("grid-cells"), cells("grid-seeds")) == (6, 6, 18)


def test_tracker_cost_runs_every_way_with_real_trackers(tmp_path):
    """benchmarks/tracker_cost.py, tiny: a row per way, the trackers' calls made (a run's calls may merge)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tracker_cost.py"), "--cells", "2", "--epochs",
                           "2", "--train-ms", "0", "--repeat", "1"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    rows = {cells[0]: cells[1:] for cells in (line.split(" | ") for line in done.stdout.splitlines())
            if len(cells) == 4 and cells[0] != "---"}
    assert list(rows) == ["way", "no tracker", "--tensorboard", "--mlflow sqlite", "both"], done.stdout
    assert rows["no tracker"][2] == "0" and all(1 <= int(rows[w][2]) <= 4 for w in list(rows)[2:]), done.stdout


def test_scale_rehearses_with_five_cells(tmp_path):
    """benchmarks/scale.py at N=5 on the tiny dataset, with --jobs 1 and 2: a row per way in both
    tables, every step measured, the figures' sizes read (its numbers are not checked)."""
    sums = write_dataset(tmp_path / "tiny", n_train=200, n_test=50)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(f"import fmae.data\nfmae.data.CHECKSUMS = {sums!r}\n")
    env = {**os.environ, "FMAE_DATA_DIR": str(tmp_path / "tiny"),
           "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "5", "--jobs", "1", "2", "--keep",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("5 | ")]
    assert [r[1] for r in rows] == ["1", "2", "1", "2"], done.stdout
    (memory_1, memory_2), (disk_1, _) = rows[:2], rows[2:]
    assert len(memory_1) == 12 and float(memory_1[2]) > 0 and memory_1[9] != "-" and memory_2[9] == "-"
    assert float(memory_2[4]) > 0  # the fork server's peak, read from /proc
    assert len(disk_1) == 10 and int(disk_1[2]) > 5 * 5 and "-" not in disk_1, done.stdout  # every step ran
    assert "heatmap.png" in done.stdout and (tmp_path / "out" / "sweep-5-j2" / "results.csv").exists()


def _dispatch(argv):
    sys.path.insert(0, str(ROOT))
    from benchmarks import dispatch

    args = dispatch.parse(argv)
    return {engine: dispatch.per_cell_epoch(args, engine) for engine in args.engine}


def test_dispatch_counts_both_engines_on_tiny_data(fake_dataset):
    """benchmarks/dispatch.py rehearsed: both engines counted, the stacked one dispatching less."""
    rows = _dispatch(["--hidden", "4", "8", "--lr", "0.1", "0.01", "--batch-size", "50"])
    assert rows["stacked"]["cells"] == rows["cells"]["cells"] == 8
    assert 0 < rows["stacked"]["ops"] < rows["cells"]["ops"]
    assert rows["stacked"]["kernels"] <= rows["stacked"]["ops"]
    assert rows["stacked"]["syncs"] < rows["cells"]["syncs"]


@pytest.mark.dataset
def test_the_stacked_engine_stays_lean_on_the_report_grid(real_data_dir):
    """Issue 28's bound, counted as benchmarks/dispatch.py counts it (the report-shaped grid, small
    hidden sizes: they change shapes, not operations): at most 850 aten operations and 1 host sync
    per cell-epoch. Counts, not time: the same on any machine."""
    rows = _dispatch(["--engine", "stacked", "--hidden", "4", "8", "12", "16", "--data-dir", str(real_data_dir)])
    assert rows["stacked"]["cells"] == 24
    assert rows["stacked"]["ops"] <= 850, rows
    assert rows["stacked"]["syncs"] <= 1, rows
