"""SIGINT -> 130 and SIGTERM -> 143 with one line on stderr, wherever the signal lands; a reader
that goes away (`| head`) -> a quiet exit. Each signal is proven to land mid-run: the child is
stopped while it holds a dataset file open, then signalled."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmae import runs
from fmae.cli import app
from fmae.config import ModelConfig, TrainConfig
from tests.helpers import default_sigint, installed_env


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
        if proc.poll() is None:
            proc.kill()
            proc.wait()
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
    assert CliRunner().invoke(app, ["train", "--hidden", "4", "--batch-size", "16", "--epochs", "2", "-q",
                                    "--run-dir", str(tmp_path / "r")]).exit_code == 0
    proc = subprocess.Popen(["fmae", "plot", "r", "--kind", "curves", "--out", "figs", "--json"], cwd=tmp_path,
                            env=installed_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `| head -0`: nobody reads the results
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert (tmp_path / "figs" / "curves.png").is_file()  # it ran to the end, then found no reader
    assert "error" not in err and "Exception" not in err and "Traceback" not in err, err
