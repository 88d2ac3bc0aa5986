"""The CLI through Typer's CliRunner: exit codes, stdout JSON, stderr messages."""

import json

import pytest
import torch

from fmae import checkpoints, data, runs
from tests.helpers import cli, ctrl_c_at_save, metrics_losses, tiny

LOUD = tiny(quiet=False)  # the tiny run without -q: these tests read what it says on stderr

def test_version_and_help():
    assert cli("--version").stdout.strip().startswith("fmae ")
    result = cli("train", "--help")
    assert result.exit_code == 0 and "--run-dir" in result.stdout


def test_train_json_and_files(fake_dataset, tmp_path):
    result = cli("train", *LOUD, "--run-dir", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1 and doc["status"] == "completed" and doc["epochs_run"] == 2
    assert doc["config"]["model"]["hidden"] == 8 and doc["config"]["lr"] == 0.001
    for name in runs.RUN_FILES:
        assert (tmp_path / "r" / name).is_file()
    assert "epoch 1/2 train_loss=" in result.stderr and "epoch 2/2" in result.stderr
    assert "\x1b[" not in result.stderr  # no terminal: no control codes
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["final_test_loss"] == doc["final_test_loss"]
    model, ckpt = checkpoints.load_model(tmp_path / "r" / "model.pt")  # safe loading of what train wrote
    assert ckpt["environment"]["device"] == "cpu" and ckpt["metrics"]["test_loss"][-1] == doc["final_test_loss"]


def test_quiet_prints_nothing_on_stderr_and_a_table_on_stdout(fake_dataset, tmp_path):
    result = cli("train", *LOUD, "--run-dir", str(tmp_path / "r"), "-q")
    assert result.exit_code == 0 and result.stderr == ""
    assert "completed" in result.stdout and "test loss" in result.stdout


def test_default_run_dir_is_named_after_the_settings(fake_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("train", *LOUD, "--optim", "sgd", "-q").exit_code == 0
    assert (tmp_path / "runs" / "sgd-lr0.1-h8-s0" / "model.pt").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--hidden", "0"], "hidden must be"),
    (["--hidden", "-3"], "hidden must be"),
    (["--epochs", "0"], "epochs must be"),
    (["--batch-size", "-1"], "batch_size must be"),
    (["--lr", "0"], "lr must be > 0"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--dropout", "1"], "dropout must be in [0, 1)"),
    (["--epochs", "x"], "Invalid value for '--epochs'"),
    (["--optim", "rmsprop"], "invalid value for --optim: 'rmsprop' (choose from adam, sgd)"),
    (["--device", "tpu"], "invalid value for --device: 'tpu' (choose from auto, cpu, cuda, mps)"),
    (["--bogus"], "No such option"),
    (["--resume", "--overwrite"], "exclude each other"),
])
def test_bad_values_exit_2_with_one_line(fake_dataset, tmp_path, args, needle):
    result = cli("train", "--run-dir", str(tmp_path / "r"), *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_missing_dataset_exit_1_with_hint(tmp_path, monkeypatch):
    monkeypatch.delenv("FMAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "nowhere")
    result = cli("train", "--no-download", "--run-dir", str(tmp_path / "r"))
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert line.startswith("error: Fashion-MNIST not found") and "apt-get install dataset-fashion-mnist" in line
    assert str(tmp_path / "nowhere") in line and "\n" not in line


def test_cuda_asked_for(fake_dataset, tmp_path):
    result = cli("train", *LOUD, "--device", "cuda", "--run-dir", str(tmp_path / "r"), "--json")
    if torch.cuda.is_available():  # a GPU machine trains there
        assert result.exit_code == 0 and json.loads(result.stdout)["device"].startswith("cuda")
    else:  # everywhere else: one clear line, exit 1, nothing written
        assert result.exit_code == 1 and result.stderr.startswith("error: --device cuda: no CUDA device")
        assert not (tmp_path / "r").exists()


def test_existing_run_refused_then_resumed_then_overwritten(fake_dataset, tmp_path):
    r = str(tmp_path / "r")
    assert cli("train", *LOUD, "--run-dir", r, "-q").exit_code == 0
    before = (tmp_path / "r" / "model.pt").read_bytes()
    refused = cli("train", *LOUD, "--run-dir", r, "-q")
    assert refused.exit_code == 1 and "already holds a run" in refused.stderr and "--resume" in refused.stderr
    assert (tmp_path / "r" / "model.pt").read_bytes() == before
    other = cli("train", *LOUD, "--seed", "3", "--run-dir", r, "--resume")
    assert other.exit_code == 1 and "other settings" in other.stderr
    assert cli("train", *LOUD, "--seed", "3", "--run-dir", r, "--overwrite", "-q").exit_code == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["seed"] == 3


def test_resume_gives_the_uninterrupted_losses(fake_dataset, tmp_path):
    full = str(tmp_path / "full")
    part = str(tmp_path / "part")
    args = ["--hidden", "8", "--batch-size", "16"]
    assert cli("train", *args, "--epochs", "4", "--run-dir", full, "-q").exit_code == 0
    assert cli("train", *args, "--epochs", "2", "--run-dir", part, "-q").exit_code == 0
    resumed = cli("train", *args, "--epochs", "4", "--run-dir", part, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming after epoch 2" in resumed.stderr
    full_losses = metrics_losses(tmp_path / "full" / "metrics.csv")
    assert full_losses == metrics_losses(tmp_path / "part" / "metrics.csv") and len(full_losses) == 5


def test_ctrl_c_saves_last_and_exits_130_then_resumes(fake_dataset, tmp_path):
    """Ctrl-C lands in training after epoch 3 was handed to the writer, long before a checkpoint was
    due: the latest state is written on the way out."""
    r = tmp_path / "r"
    args = ["--hidden", "8", "--batch-size", "16", "--epochs", "4", "--run-dir", str(r)]
    with ctrl_c_at_save(3):
        result = cli("train", *args, "--checkpoint-every", "3600")
    assert result.exit_code == 130
    assert "interrupted" in result.stderr and "--resume" in result.stderr
    assert json.loads((r / "summary.json").read_text())["status"] == "interrupted"
    assert runs.RunDir(r).load_last()["epoch"] == 3 and len(runs.RunDir(r).read_metrics()) == 3
    assert cli("train", *args, "--resume", "-q").exit_code == 0
    assert cli("train", *args[:-1], str(tmp_path / "ref"), "-q").exit_code == 0
    assert (r / "metrics.csv").read_text().count("\n") == 5
    assert metrics_losses(r / "metrics.csv") == metrics_losses(tmp_path / "ref" / "metrics.csv")


def test_debug_shows_the_traceback(fake_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("FMAE_DEBUG", "1")
    result = cli("train", "--hidden", "0", "--run-dir", str(tmp_path / "r"))
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_a_kill_after_the_last_last_pt_is_repaired_on_resume(fake_dataset, tmp_path, monkeypatch):
    args = ["--hidden", "8", "--batch-size", "16", "--epochs", "2", "-q"]
    assert cli("train", *args, "--run-dir", str(tmp_path / "ref")).exit_code == 0
    original = runs.RunDir.write_metrics

    def die_at_the_end(self, history):
        if len(history) == 2:
            raise KeyboardInterrupt
        original(self, history)

    monkeypatch.setattr(runs.RunDir, "write_metrics", die_at_the_end)
    assert cli("train", *args, "--run-dir", str(tmp_path / "r")).exit_code == 130
    monkeypatch.setattr(runs.RunDir, "write_metrics", original)
    assert cli("train", *args, "--run-dir", str(tmp_path / "r"), "--resume").exit_code == 0
    assert metrics_losses(tmp_path / "r" / "metrics.csv") == metrics_losses(tmp_path / "ref" / "metrics.csv")


# ---------------------------------------------------------------- issue 19: messages and --fail-on


DIVERGES = ["--optim", "sgd", "--lr", "1e6", "--hidden", "4", "--activation", "identity", "--batch-size", "16",
            "--epochs", "2"]


def test_fail_on_exits_3_after_printing_the_results(fake_dataset, tmp_path):
    plain = cli("train", *DIVERGES, "--run-dir", str(tmp_path / "a"), "-q")
    assert plain.exit_code == 0 and "diverged" in plain.stdout  # no --fail-on: no change
    assert "(None)" not in plain.stdout and "None" not in plain.stdout  # the diverged table: "-", not "- (None)"
    gated = cli("train", *DIVERGES, "--run-dir", str(tmp_path / "b"), "--json", "--fail-on", "diverged,collapsed")
    assert gated.exit_code == 3, gated.stderr
    assert json.loads(gated.stdout)["status"] == "diverged"  # the document still comes first
    last = gated.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 1 runs ended in a status named by --fail-on (diverged 1)"), gated.stderr
    other = cli("train", *DIVERGES, "--run-dir", str(tmp_path / "c"), "-q", "--fail-on", "collapsed", "stopped_early")
    assert other.exit_code == 0, other.stderr  # diverged is not among those named


def test_sweep_fail_on_counts_the_cells(fake_dataset, tmp_path):
    args = ["sweep", "--optim", "sgd", "--lr", "1e6", "0.01", "--hidden", "4", "--activation", "identity",
            "--batch-size", "16", "--epochs", "2", "-q", "--json", "--run-dir", str(tmp_path / "s")]
    assert cli(*args).exit_code == 0
    gated = cli(*args, "--fail-on", "diverged")
    assert gated.exit_code == 3 and len(json.loads(gated.stdout)["cells"]) == 2, gated.stderr
    assert "1 of 2 cells ended in a status named by --fail-on (diverged 1)" in gated.stderr
    assert "--fail-on" in cli("sweep", "--help").stdout and "collapsed" in cli("sweep", "--help").stdout


@pytest.mark.parametrize("command,args,needle", [
    ("train", ["--optim", "SGD"], "invalid value for --optim: 'SGD' (choose from adam, sgd)"),
    ("sweep", ["--optim", "SGD"], "invalid value for --optim: 'SGD' (choose from adam, sgd)"),
    ("train", ["--fail-on", "failed"], "invalid value for --fail-on: 'failed' (choose from diverged, collapsed, "),
])
def test_a_bad_choice_is_named_plainly(command, args, needle):
    result = cli(command, *args)
    assert result.exit_code == 2 and needle in result.stderr and "Value error" not in result.stderr, result.stderr


def test_one_thread_is_singular_and_sweep_help_names_every_exit_0_status(fake_dataset, tmp_path):
    result = cli("sweep", "--lr", "0.01", "--hidden", "4", "--batch-size", "16", "--epochs", "1", "--threads", "1",
                 "--run-dir", str(tmp_path / "s"))
    assert result.exit_code == 0 and "(fp32, 1 thread)" in result.stderr, result.stderr
    text = " ".join(cli("sweep", "--help").stdout.split())
    assert "collapsed" in text and "pruned" in text and "3 when" in text


def test_a_busy_machine_gets_one_hint_on_stderr(fake_dataset, tmp_path, monkeypatch):
    from fmae import faults

    monkeypatch.setenv(faults.LOAD, "99")  # the one hook: the load the hint reads
    busy = cli("train", *LOUD, "--run-dir", str(tmp_path / "a"), "--json")
    assert busy.exit_code == 0, busy.stderr
    hints = [line for line in busy.stderr.splitlines() if "machine is busy" in line]
    assert len(hints) == 1 and "load 99.0" in hints[0] and "--threads 1" in hints[0], busy.stderr
    assert json.loads(busy.stdout)["status"] == "completed"  # stdout: the document alone
    assert cli("train", *LOUD, "--run-dir", str(tmp_path / "b"), "-q").stderr == ""  # --quiet: nothing
    assert "machine is busy" not in cli("train", *LOUD, "--run-dir", str(tmp_path / "c"), "--threads", "1").stderr
    sweep = cli("sweep", "--lr", "0.01", "--hidden", "4", "--batch-size", "16", "--epochs", "1",
                "--run-dir", str(tmp_path / "s"))
    assert sweep.exit_code == 0 and "--jobs 2" in sweep.stderr and "machine is busy" in sweep.stderr, sweep.stderr
    monkeypatch.setenv(faults.LOAD, "0.5")
    assert "machine is busy" not in cli("train", *LOUD, "--run-dir", str(tmp_path / "d")).stderr


def test_with_jobs_the_cells_bar_names_only_cells_in_training(fake_dataset, tmp_path, monkeypatch):
    """The overall bar once named the first pending cell while others trained (--jobs N trains the
    largest first): every text it shows names cells that started and have not finished."""
    from fmae.cli import ui

    events: list[tuple[str, str, str]] = []
    monkeypatch.setattr(ui.Feedback, "task", lambda self, key, *a, **k: events.append(("task", key, k.get("info", ""))))
    monkeypatch.setattr(ui.Feedback, "remove", lambda self, key: events.append(("remove", key, "")))
    monkeypatch.setattr(ui.Feedback, "info", lambda self, key, info: events.append(("info", key, info)), raising=False)
    monkeypatch.setattr(ui.Feedback, "advance",
                        lambda self, key, done, total, info, line, count=None: events.append(("info", key, info)))
    result = cli("sweep", "--optim", "sgd", "--lr", "0.01", "--hidden", "4", "16", "32", "--batch-size", "16",
                 "--epochs", "2", "--jobs", "2", "--threads", "1", "--run-dir", str(tmp_path / "s"), "-q")
    assert result.exit_code == 0, result.stderr
    training: set[str] = set()
    shown = []
    for kind, key, info in events:
        if kind == "task" and key != "cells":
            training.add(key)
        elif kind == "remove":
            training.discard(key)
        elif key == "cells" and info:
            named = set(info.removeprefix("training ").split(", "))
            assert named <= training, (info, training)
            shown.append(info)
    assert any("," in s for s in shown), shown  # two cells trained at once, and both were named
