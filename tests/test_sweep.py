"""`fmae sweep` through CliRunner on the tiny synthetic dataset."""

import json

import pytest

from fmae import checkpoints, engine, runs
from fmae.cli.parsing import expand_multi_values
from fmae.errors import ConfigError
from tests.helpers import cli, ctrl_c_at_save, metrics_losses

SHARED = ["--batch-size", "16", "--epochs", "2", "-q"]


def sweep(tmp_path, *args, name="s"):
    return cli("sweep", *args, *SHARED, "--run-dir", str(tmp_path / name))


@pytest.mark.parametrize("args", [
    ["--lr", "0.1", "0.01", "--hidden", "4", "8"],
    ["--lr", "0.1", "--lr", "0.01", "--hidden", "4", "--hidden", "8"],
    ["--lr", "0.1,0.01", "--hidden", "4,8"],
    ["--lr=0.1,0.01", "--hidden", "4", "8"],
])
def test_three_ways_of_passing_several_values(fake_dataset, tmp_path, args):
    result = sweep(tmp_path, "--optim", "sgd", *args)
    assert result.exit_code == 0, result.stderr
    grid = json.loads((tmp_path / "s" / "sweep.json").read_text())["grid"]
    assert grid == {"optim": ["sgd"], "lr": [0.1, 0.01], "hidden": [4, 8], "seed": [0]}
    names = sorted(p.name for p in (tmp_path / "s" / "cells").iterdir())
    assert names == ["sgd-lr0.01-h4-s0", "sgd-lr0.01-h8-s0", "sgd-lr0.1-h4-s0", "sgd-lr0.1-h8-s0"]
    for name in names:
        for f in runs.RUN_FILES:
            assert (tmp_path / "s" / "cells" / name / f).is_file()


def test_expand_multi_values_keeps_other_arguments():
    opts = ("--lr", "--hidden")
    assert expand_multi_values(["--lr", "1", "2", "--epochs", "3", "--hidden", "4"], opts) == [
        "--lr", "1", "--lr", "2", "--epochs", "3", "--hidden", "4"]
    assert expand_multi_values(["--lr", "-1"], opts) == ["--lr", "-1"]  # a value, refused later as such
    with pytest.raises(ConfigError, match="--lr needs at least one value"):
        expand_multi_values(["--lr", "--epochs", "3"], opts)


def test_layout_results_json_and_best(fake_dataset, tmp_path):
    result = cli("sweep", "--optim", "sgd", "adam", "--lr", "0.1", "0.01", "--hidden", "4", "8",
                 "--seed", "0", "1", *SHARED, "--json", "--run-dir", str(tmp_path / "s"))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1 and len(doc["cells"]) == 16
    ranked = [c for c in doc["cells"] if c["rank"] is not None]
    assert [c["rank"] for c in ranked] == list(range(1, len(ranked) + 1)) and len(ranked) >= 8
    assert doc["cells"][:len(ranked)] == ranked  # ranked cells first, best first
    # on these 16 blob images Adam kills every hidden unit of some cells: collapsed, never ranked
    assert {c["status"] for c in doc["cells"][len(ranked):]} <= {"collapsed"}
    finals = [c["final_test_loss"] for c in ranked]
    assert finals == sorted(finals) and doc["best"]["final_test_loss"] == min(finals)
    assert set(doc["best_per_optim"]) == {"sgd", "adam"}
    csv_lines = (tmp_path / "s" / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("rank,optim,lr,hidden,seed,status,epochs_run") and len(csv_lines) == 17
    assert json.loads((tmp_path / "s" / "results.json").read_text())["best"] == doc["best"]
    model, ckpt = checkpoints.load_model(tmp_path / "s" / "best.pt")
    assert ckpt["metrics"]["test_loss"][-1] == doc["best"]["final_test_loss"]
    assert (tmp_path / "s" / "best.pt").read_bytes() == open(doc["best"]["model"], "rb").read()


def test_cell_equals_fmae_train(fake_dataset, tmp_path):
    assert sweep(tmp_path, "--optim", "sgd", "--lr", "0.1", "0.01", "--hidden", "4", "8").exit_code == 0
    result = cli("train", "--optim", "sgd", "--lr", "0.01", "--hidden", "8", *SHARED,
                 "--run-dir", str(tmp_path / "alone"))
    assert result.exit_code == 0
    assert metrics_losses(tmp_path / "s" / "cells" / "sgd-lr0.01-h8-s0" / "metrics.csv") == metrics_losses(
        tmp_path / "alone" / "metrics.csv")


def test_rerun_skips_and_added_values_add_only_new_cells(fake_dataset, tmp_path):
    assert sweep(tmp_path, "--lr", "0.01", "--hidden", "4").exit_code == 0
    first = tmp_path / "s" / "cells" / "adam-lr0.01-h4-s0" / "model.pt"
    stamp = first.stat().st_mtime_ns
    again = sweep(tmp_path, "--lr", "0.01", "--hidden", "4", "8")
    assert again.exit_code == 0
    assert first.stat().st_mtime_ns == stamp
    doc = json.loads((tmp_path / "s" / "results.json").read_text())
    assert len(doc["cells"]) == 2
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["grid"]["hidden"] == [4, 8]


def test_conflicting_setting_refused_unless_overwrite(fake_dataset, tmp_path):
    assert sweep(tmp_path, "--lr", "0.01", "--hidden", "4").exit_code == 0
    result = cli("sweep", "--lr", "0.01", "--hidden", "4", "--batch-size", "16", "--epochs", "1",
                 "--run-dir", str(tmp_path / "s"))
    assert result.exit_code == 1
    assert "other shared settings (epochs 2 -> 1)" in result.stderr and "--epochs may only grow" in result.stderr
    result = cli("sweep", "--lr", "0.01", "--hidden", "4", "--batch-size", "8", "--epochs", "2",
                 "--run-dir", str(tmp_path / "s"))
    assert result.exit_code == 1 and "(batch_size 16 -> 8)" in result.stderr and "--overwrite" in result.stderr
    result = cli("sweep", "--lr", "0.01", "--hidden", "4", "--batch-size", "16", "--epochs", "1",
                 "--run-dir", str(tmp_path / "s"), "--overwrite", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["cells"][0]["epochs_run"] == 1


def test_more_epochs_continue_every_cell_exactly(fake_dataset, tmp_path):
    grid = ["--optim", "sgd", "--lr", "0.1", "--hidden", "4", "8", "--batch-size", "16", "-q", "--json"]
    assert cli("sweep", *grid, "--epochs", "2", "--run-dir", str(tmp_path / "grow")).exit_code == 0
    grown = cli("sweep", *grid, "--epochs", "4", "--run-dir", str(tmp_path / "grow"))
    at_once = cli("sweep", *grid, "--epochs", "4", "--run-dir", str(tmp_path / "once"))
    assert grown.exit_code == 0 and at_once.exit_code == 0, grown.stderr
    strip = lambda doc: [{k: v for k, v in c.items() if k not in ("seconds", "model")}  # noqa: E731
                         for c in json.loads(doc.stdout)["cells"]]
    assert strip(grown) == strip(at_once) and all(c["epochs_run"] == 4 for c in strip(grown))
    for cell in ("sgd-lr0.1-h4-s0", "sgd-lr0.1-h8-s0"):
        assert metrics_losses(tmp_path / "grow" / "cells" / cell / "metrics.csv") == \
            metrics_losses(tmp_path / "once" / "cells" / cell / "metrics.csv")
    assert json.loads((tmp_path / "grow" / "sweep.json").read_text())["shared"]["epochs"] == 4


def test_diverged_cell_is_recorded_and_the_sweep_goes_on(fake_dataset, tmp_path):
    result = cli("sweep", "--optim", "sgd", "--lr", "1e6", "0.01", "--hidden", "4",
                 "--activation", "identity", *SHARED, "--json", "--run-dir", str(tmp_path / "s"))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    by_lr = {c["lr"]: c for c in doc["cells"]}
    assert by_lr[1e6]["status"] == "diverged" and by_lr[1e6]["rank"] is None and by_lr[1e6]["model"] is None
    assert by_lr[0.01]["status"] == "completed" and doc["best"]["lr"] == 0.01


def test_interrupted_sweep_resumes_to_the_same_results(fake_dataset, tmp_path):
    args = ["--lr", "0.01", "0.001", "--hidden", "4", "8", "--seed", "0", "1", "--epochs", "3"]
    assert sweep(tmp_path, *args, name="ref").exit_code == 0
    with ctrl_c_at_save(7, saved=False):  # the seventh cell-epoch: the third cell's first epoch
        assert sweep(tmp_path, *args).exit_code == 130
    assert sweep(tmp_path, *args).exit_code == 0
    for cell in (tmp_path / "ref" / "cells").iterdir():
        resumed = tmp_path / "s" / "cells" / cell.name
        assert metrics_losses(cell / "metrics.csv") == metrics_losses(resumed / "metrics.csv")


def test_a_failed_cell_exits_1_and_fail_fast_stops(fake_dataset, tmp_path, monkeypatch):
    from fmae.errors import RunDirError

    original = engine.train_many

    def failing(configs, *a, **k):
        if configs[0].seed == 0:
            raise RunDirError("disk full")
        return original(configs, *a, **k)

    monkeypatch.setattr(engine, "train_many", failing)
    result = cli("sweep", "--optim", "sgd", "--lr", "0.1", "--hidden", "4", "--seed", "0", "1",
                 *SHARED, "--json", "--run-dir", str(tmp_path / "s"))
    assert result.exit_code == 1
    status = {c["seed"]: c["status"] for c in json.loads(result.stdout)["cells"]}
    assert status == {0: "failed", 1: "completed"}
    result = cli("sweep", "--lr", "0.01", "--hidden", "4", "--seed", "0", "1", *SHARED,
                 "--fail-fast", "--run-dir", str(tmp_path / "f"))
    assert result.exit_code == 1 and "disk full" in result.stderr
    assert not (tmp_path / "f" / "cells" / "adam-lr0.01-h4-s1" / "model.pt").exists()


@pytest.mark.parametrize("args,needle", [
    (["--lr", "0.1", "0.1"], "--lr lists 0.1 more than once"),
    (["--hidden", "0"], "hidden must be"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--optim", "sgd", "rmsprop"], "invalid value for --optim: 'rmsprop' (choose from adam, sgd)"),
    (["--lr"], "--lr needs at least one value"),
])
def test_bad_grids_exit_2(fake_dataset, tmp_path, args, needle):
    result = sweep(tmp_path, *args)
    assert result.exit_code == 2 and needle in result.stderr, result.stderr
    assert not (tmp_path / "s").exists()


def test_grouping_lockstep_by_seed_and_epoch_or_one_by_one(tmp_path):
    from fmae.config import SharedSettings, SweepConfig
    from fmae.sweeps.directory import CellPlan
    from fmae.sweeps.run import groups

    grid = SweepConfig(optims=("sgd", "adam"), lrs=(0.1, 0.01), hiddens=(4,), seeds=(0, 1),
                       base=SharedSettings())
    plans = [CellPlan(c, runs.RunDir(tmp_path / str(i))) for i, c in enumerate(grid.cells())]
    plans[0].resume = {"epoch": 3}
    plans[1].done = True
    together = groups(plans, lockstep=True)
    assert sorted(len(g) for g in together) == [1, 3, 3]  # seed 0 at epoch 0, seed 1, and the resumed cell
    assert all(len({p.config.seed for p in g}) == 1 for g in together)
    assert [len(g) for g in groups(plans, lockstep=False)] == [1] * 7


def test_a_kill_between_last_pt_and_metrics_csv_is_repaired(fake_dataset, tmp_path, monkeypatch):
    args = ["--lr", "0.01", "--hidden", "4"]
    assert sweep(tmp_path, *args, name="ref").exit_code == 0
    original = runs.RunDir.write_metrics
    calls = {"n": 0}

    def die_on_the_last_epoch(self, history):
        calls["n"] += 1
        if len(history) == 2:  # last.pt of epoch 2 is saved, metrics.csv is not
            raise KeyboardInterrupt
        original(self, history)

    monkeypatch.setattr(runs.RunDir, "write_metrics", die_on_the_last_epoch)
    assert sweep(tmp_path, *args).exit_code == 130
    monkeypatch.setattr(runs.RunDir, "write_metrics", original)
    cell = "adam-lr0.01-h4-s0"
    assert len(metrics_losses(tmp_path / "s" / "cells" / cell / "metrics.csv")) == 2  # header + epoch 1
    assert sweep(tmp_path, *args).exit_code == 0
    assert metrics_losses(tmp_path / "s" / "cells" / cell / "metrics.csv") == metrics_losses(
        tmp_path / "ref" / "cells" / cell / "metrics.csv")
