"""Successive halving (`fmae sweep --prune halving`): rungs, promotions, pruned cells that resume."""

import json

import pytest

from fmae import runs
from fmae.config import TrainConfig
from fmae.errors import ConfigError
from fmae.execution import PruneConfig
from fmae.sweeps import halving
from fmae.sweeps.directory import CellPlan
from tests.helpers import cli

GRID = ["--optim", "sgd", "--lr", "0.5", "0.1", "0.01", "--hidden", "4", "8", "--activation", "identity",
        "--batch-size", "16", "--epochs", "9", "-q", "--json"]


@pytest.mark.parametrize("epochs,eta,min_epochs,rungs", [
    (9, 3, None, (1, 3, 9)), (100, 3, None, (11, 33, 100)), (30, 3, None, (3, 10, 30)), (30, 3, 1, (1, 3, 10, 30)),
    (8, 2, None, (2, 4, 8)), (5, 3, None, (1, 5)), (1, 3, None, (1,)), (10, 3, 10, (10,)),
])
def test_rungs_end_at_the_epochs(epochs, eta, min_epochs, rungs):
    assert PruneConfig(eta=eta, min_epochs=min_epochs).rungs(epochs) == rungs


@pytest.mark.parametrize("kwargs,message", [({"eta": 1}, "eta must be >= 2"),
                                            ({"min_epochs": 0}, "min-epochs must be >= 1")])
def test_bad_prune_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PruneConfig(**kwargs)
    with pytest.raises(ConfigError, match="at most --epochs"):
        PruneConfig(min_epochs=5).rungs(4)


def _cells(doc):
    return {(c["lr"], c["hidden"]): c for c in doc["cells"]}


def test_halving_finds_the_full_grids_best_at_a_fraction_and_pruned_cells_resume(fake_dataset, tmp_path):
    full = cli("sweep", *GRID, "--run-dir", tmp_path / "full")
    pruned = cli("sweep", *GRID, "--prune", "halving", "--eta", "3", "--run-dir", tmp_path / "p")
    assert full.exit_code == 0 and pruned.exit_code == 0, pruned.stderr
    f, p = json.loads(full.stdout), json.loads(pruned.stdout)
    assert p["prune"] == {"method": "halving", "eta": 3, "rungs": [1, 3, 9]}
    assert (p["best"]["lr"], p["best"]["hidden"]) == (f["best"]["lr"], f["best"]["hidden"])
    assert p["best"]["final_test_loss"] == f["best"]["final_test_loss"]  # a promoted cell resumes exactly
    statuses = sorted(c["status"] for c in p["cells"])
    assert statuses == ["completed"] + ["pruned"] * 5
    assert all(c["rank"] is None for c in p["cells"] if c["status"] == "pruned")
    epochs = sorted(c["epochs_run"] for c in p["cells"])
    assert epochs == [1, 1, 1, 1, 3, 9] and p["cell_epochs"] == {"trained": 16, "full_grid": 54, "fraction": 0.2963}
    assert f["cell_epochs"]["trained"] == 54
    for c in p["cells"]:  # pruned cells keep what they trained
        cell = tmp_path / "p" / "cells" / f"sgd-lr{c['lr']!r}-h{c['hidden']}-s0"
        assert (cell / "last.pt").is_file() and len(runs.RunDir(cell).read_metrics()) == c["epochs_run"]
    again = json.loads(cli("sweep", *GRID, "--prune", "halving", "--run-dir", tmp_path / "p").stdout)
    assert again["cells"] == p["cells"]  # the same decisions from the logged losses, nothing trained again
    resumed = cli("sweep", *GRID, "--run-dir", tmp_path / "p")  # without --prune: the pruned cells train on
    r = json.loads(resumed.stdout)
    strip = lambda doc: {k: {f: v for f, v in c.items() if f not in ("seconds", "model")}  # noqa: E731
                         for k, c in _cells(doc).items()}
    assert strip(r) == strip(f)


@pytest.mark.parametrize("executor", [["--jobs", "2"], ["--executor", "ray"]], ids=["jobs2", "ray"])
def test_halving_makes_the_same_decisions_on_every_executor(fake_dataset, tmp_path, request, executor):
    if "ray" in executor:
        request.getfixturevalue("ray_cluster")
    grid = [*GRID, "--threads", "1", "--prune", "halving"]
    inline = cli("sweep", *grid, "--run-dir", tmp_path / "inline")
    other = cli("sweep", *grid, *executor, "--run-dir", tmp_path / "other")
    assert inline.exit_code == 0 and other.exit_code == 0, other.stderr
    strip = lambda doc: [{k: v for k, v in c.items() if k not in ("seconds", "model")}  # noqa: E731
                         for c in json.loads(doc.stdout)["cells"]]
    assert strip(other) == strip(inline) and {c["status"] for c in strip(inline)} == {"completed", "pruned"}
    assert json.loads(other.stdout)["cell_epochs"] == json.loads(inline.stdout)["cell_epochs"]


def test_eta_without_prune_is_a_usage_error(fake_dataset, tmp_path):
    result = cli("sweep", "--eta", "3", "--run-dir", tmp_path / "x")
    assert result.exit_code == 2 and "need --prune halving" in result.stderr and not (tmp_path / "x").exists()


def test_ties_break_by_cell_name(tmp_path):
    plans = []
    for lr in (0.3, 0.2, 0.1):
        config = TrainConfig(optim="sgd", lr=lr, epochs=3)
        run = runs.RunDir(tmp_path / runs.cell_name(config))
        run.reset()
        plans.append(CellPlan(config, run))
    trained = []

    def train_to(subset, epoch):
        trained.append((epoch, [p.name for p in subset]))
        for p in subset:  # every cell has the very same losses
            run_metrics = [type("M", (), {"epoch": e, "train_loss": 1.0, "test_loss": 0.5, "seconds": 0.0})
                           for e in range(1, epoch + 1)]
            p.run.write_metrics(run_metrics)
            p.resume = {"history": [[e, 1.0, 0.5, 0.0] for e in range(1, epoch + 1)]}

    pruned = []
    halving.successive_halving(plans, (1, 3), 3, train_to, pruned.append)
    names = sorted(p.name for p in plans)
    assert trained == [(1, [p.name for p in plans]), (3, [names[0]])]
    assert sorted(p.name for p in pruned) == names[1:]


@pytest.mark.dataset
def test_the_issues_halving_example_on_real_data(monkeypatch, tmp_path, real_data_dir):
    monkeypatch.setenv("FMAE_DATA_DIR", str(real_data_dir))
    grid = ["--optim", "sgd", "--lr", "0.1", "0.01", "0.001", "--hidden", "16", "32", "--epochs", "9", "-q", "--json"]
    full = json.loads(cli("sweep", *grid, "--run-dir", tmp_path / "full").stdout)
    result = cli("sweep", *grid, "--prune", "halving", "--eta", "3", "--run-dir", tmp_path / "p")
    assert result.exit_code == 0, result.stderr
    p = json.loads(result.stdout)
    assert p["cell_epochs"]["trained"] <= 0.6 * p["cell_epochs"]["full_grid"]
    assert {c["status"] for c in p["cells"]} == {"completed", "pruned"}
    assert (p["best"]["lr"], p["best"]["hidden"], p["best"]["final_test_loss"]) == \
        (full["best"]["lr"], full["best"]["hidden"], full["best"]["final_test_loss"])


def test_a_halving_sweep_says_its_rungs_and_budget_and_where_best_pt_is(fake_dataset, tmp_path, monkeypatch):
    """Issue 19 (7): the rungs and the cell-epochs saved on the terminal and in results.json (`prune`),
    the last line naming the best cell and best.pt (unbroken at 80 columns), and a rerun of the
    finished sweep counting its pruned cells as finished."""
    from rich.console import Console

    from fmae.cli import ui

    args = [a for a in GRID if a not in ("-q", "--json")]
    monkeypatch.setattr(ui, "stdout_console", lambda: Console(width=80, force_terminal=True, color_system=None))
    first = cli("sweep", *args, "--prune", "halving", "--run-dir", str(tmp_path / "s"))
    assert first.exit_code == 0, first.stderr
    saved = json.loads((tmp_path / "s" / "results.json").read_text())
    assert saved["prune"] == {"method": "halving", "eta": 3, "rungs": [1, 3, 9]}
    trained, full = saved["cell_epochs"]["trained"], saved["cell_epochs"]["full_grid"]
    lines = first.stdout.strip().splitlines()
    assert lines[-3] == (f"successive halving (eta 3): rungs at epochs 1, 3, 9; trained {trained} of the full "
                         f"grid's {full} cell-epochs ({trained / full:.0%})")
    cell = saved["best"]["model"].split("/")[-2]
    assert lines[-2].startswith(f"best cell: {cell} (test loss ")
    assert lines[-1] == f"its model: {tmp_path / 's' / 'best.pt'}"  # a line of its own, the path whole
    assert all(len(line) <= 80 for line in lines[:-3])  # the tables fit 80 columns (the model column dropped)
    pruned = sum(c["status"] == "pruned" for c in saved["cells"])
    again = cli("sweep", *args, "--prune", "halving", "--run-dir", str(tmp_path / "s"))
    assert again.exit_code == 0, again.stderr
    assert f"6 cells, 6 already finished ({pruned} pruned)" in again.stderr, again.stderr
