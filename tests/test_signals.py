"""SIGINT -> 130 and SIGTERM -> 143 with one line on stderr, wherever the signal lands; a reader
that goes away (`| head`) -> a quiet exit. Each signal is proven to land mid-run: the child is
stopped while it holds a dataset file open, then signalled."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fmae import runs
from fmae.config import ModelConfig, TrainConfig
from tests.helpers import cli, ctrl_c_at_save, default_sigint, installed_env, reap, tiny


def reading_dataset(pid: int, data_dir: Path) -> bool:
    """Whether the process has one of the dataset's files open right now."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(data_dir)):
                return True
        except OSError:
            pass
    return False


def signal_while_loading_data(cmd: list[str], cwd: Path, sig: int, data_dir: Path) -> subprocess.CompletedProcess:
    data_dir = data_dir.resolve()
    proc = subprocess.Popen(cmd, cwd=cwd, env=installed_env(FMAE_DATA_DIR=str(data_dir)), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if reading_dataset(proc.pid, data_dir):
                proc.send_signal(signal.SIGSTOP)
                time.sleep(0.05)  # let the stop take effect
                if reading_dataset(proc.pid, data_dir):  # stopped in the middle of loading the data
                    break
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.002)
        else:
            pytest.fail("the command never held a dataset file open: the signal could not land mid-run")
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        reap(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture
def checkpoint(tmp_path):
    from fmae.model import build

    config = TrainConfig(model=ModelConfig(hidden=8))
    run = runs.RunDir(tmp_path / "m")
    run.reset()
    run.save_model(config, build(config.model).state_dict(), [], "completed", {})
    return run.file("model.pt")


@pytest.mark.dataset
@pytest.mark.parametrize("command,sig,code", [
    ("train", signal.SIGTERM, 143),
    ("train", signal.SIGINT, 130),
    ("eval", signal.SIGINT, 130),
    ("denoise", signal.SIGTERM, 143),
    ("sweep", signal.SIGINT, 130),
])
def test_a_signal_while_the_data_loads_exits_with_its_code_and_one_line(tmp_path, checkpoint, command, sig, code,
                                                                       real_data_dir):
    args = {"train": ["--hidden", "8", "--epochs", "1", "--run-dir", "r"],
            "sweep": ["--lr", "0.01", "--hidden", "8", "--epochs", "1", "--run-dir", "r"],
            "eval": ["--ckpt", str(checkpoint)], "denoise": ["--ckpt", str(checkpoint)]}[command]
    done = signal_while_loading_data(["fmae", command, *args], tmp_path, sig, real_data_dir)
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
    assert len(lines) == 1 and lines[0].startswith(f"error: fmae {command} interrupted by {name}; "), done.stderr
    assert "files written so far are complete" in lines[0] and done.stdout == ""
    assert not (tmp_path / "r").exists()  # nothing had begun: no run directory is left behind


def test_a_reader_that_goes_away_is_a_quiet_exit(fake_dataset, tmp_path):
    assert cli("train", "--hidden", "4", "--batch-size", "16", "--epochs", "2", "-q",
               "--run-dir", str(tmp_path / "r")).exit_code == 0
    proc = subprocess.Popen(["fmae", "plot", "r", "--kind", "curves", "--out", "figs", "--json"], cwd=tmp_path,
                            env=installed_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `| head -0`: nobody reads the results
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert (tmp_path / "figs" / "curves.png").is_file()  # it ran to the end, then found no reader
    assert "error" not in err and "Exception" not in err and "Traceback" not in err, err


# ---------------------------------------------------------------- the printed resume commands


def printed_command(stderr: str) -> list[str]:
    import re
    import shlex

    lines = stderr.strip().splitlines()
    found = re.search(r"\(hint: resume with: (.+)\)$", lines[-1])
    assert found, stderr
    argv = shlex.split(found[1])
    assert argv[0] == "fmae", argv
    return argv[1:]


def losses_of(directory: Path) -> list[tuple[float, float]]:
    return [(m["train_loss"], m["test_loss"]) for m in runs.RunDir(directory).read_metrics()]


TRAIN_SETTINGS = ["--optim", "sgd", "--lr", "0.05", "--momentum", "0.5", "--hidden", "6", "--batch-size", "16",
                  "--epochs", "6", "--dropout", "0.2", "--seed", "3", "--patience", "1", "--min-delta", "0.3",
                  "--threads", "1"]


def test_the_printed_train_command_resumes_to_the_uninterrupted_run(fake_dataset, tmp_path):
    """Run as printed, the resume line gives the run never interrupted: early stopping included
    (the line once left out --patience and --min-delta, so the resumed run trained on)."""
    ref = cli("train", *TRAIN_SETTINGS, "--run-dir", str(tmp_path / "ref"), "--json")
    assert ref.exit_code == 0, ref.stderr
    assert json.loads(ref.stdout)["status"] == "stopped_early"  # what the resumed run must do too
    with ctrl_c_at_save(2, saved=False):  # epoch 1 saved, then Ctrl-C
        cut = cli("train", *TRAIN_SETTINGS, "--run-dir", str(tmp_path / "r name"), "-q")
    assert cut.exit_code == 130 and "finished epochs are saved" in cut.stderr, cut.stderr
    argv = printed_command(cut.stderr)
    for flag in ("--patience", "--min-delta", "--momentum", "--dropout", "--threads", "--batch-size"):
        assert flag in argv, argv
    resumed = cli(*argv)
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stderr
    assert losses_of(tmp_path / "r name") == losses_of(tmp_path / "ref")
    assert json.loads((tmp_path / "r name" / "summary.json").read_text())["status"] == "stopped_early"


def test_interrupted_before_any_epoch_does_not_claim_saved_epochs(fake_dataset, tmp_path):
    for command in (["train", "--run-dir", str(tmp_path / "r")],
                    ["sweep", "--lr", "0.1", "--run-dir", str(tmp_path / "s")]):
        with ctrl_c_at_save(1, saved=False):
            cut = cli(*command, *tiny(hidden=4))
        assert cut.exit_code == 130, cut.stderr
        assert "before any epoch finished" in cut.stderr and "finished epochs are saved" not in cut.stderr, cut.stderr


SWEEP_SETTINGS = ["--optim", "sgd", "--lr", "0.1", "0.02", "--hidden", "4", "8", "--seed", "0", "1",
                  "--momentum", "0.5", "--batch-size", "16", "--epochs", "4", "--dropout", "0.2", "--patience", "2",
                  "--min-delta", "0.01", "--prune", "halving", "--eta", "2", "--threads", "1"]


def test_the_printed_sweep_command_resumes_to_the_uninterrupted_sweep(fake_dataset, tmp_path):
    """The sweep's Ctrl-C line is the whole command (it said "the same fmae sweep command"): run as
    printed, it ends with the results of a sweep never interrupted."""
    ref = cli("sweep", *SWEEP_SETTINGS, "--run-dir", str(tmp_path / "ref"), "-q")
    assert ref.exit_code == 0, ref.stderr
    with ctrl_c_at_save(6, saved=False):  # 5 cell-epochs saved, then Ctrl-C
        cut = cli("sweep", *SWEEP_SETTINGS, "--run-dir", str(tmp_path / "s"), "-q")
    assert cut.exit_code == 130 and "finished epochs are saved" in cut.stderr, cut.stderr
    argv = printed_command(cut.stderr)
    assert argv[0] == "sweep" and "the same fmae sweep command" not in cut.stderr
    for flag in SWEEP_SETTINGS[::1]:
        if flag.startswith("--"):
            assert flag in argv, (flag, argv)
    assert argv[argv.index("--lr") + 1:argv.index("--lr") + 3] == ["0.1", "0.02"]
    resumed = cli(*argv, "-q")
    assert resumed.exit_code == 0, resumed.stderr
    for cell in (tmp_path / "ref" / "cells").iterdir():
        assert losses_of(tmp_path / "s" / "cells" / cell.name) == losses_of(cell), cell.name
    strip = lambda p: [{k: v for k, v in r.items() if k not in ("seconds", "model")}  # noqa: E731
                       for r in json.loads((p / "results.json").read_text())["cells"]]
    assert strip(tmp_path / "s") == strip(tmp_path / "ref")
