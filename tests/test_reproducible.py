"""--reproducible, the portable numerics (fmae.numerics): what it allows (1 thread, the CPU), that it
must be chosen before torch loads, that a run resumes only in its own mode, that the resume lines
carry it, and, through real `fmae` processes (the mode is set before torch loads, so never in this
one), that a run records the portable machine and that a --jobs sweep's pool workers train in the
mode: the same bits as `fmae train --reproducible` of the same cell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmae import numerics
from fmae.config import SweepConfig, TrainConfig, changed_args
from fmae.errors import ConfigError
from fmae.execution import ExecutorConfig
from fmae.settings import SweepSettings, TrainSettings
from tests.helpers import installed_env, metrics_losses, one_error_line, state_dict

BASE = ["train", "--optim", "adam", "--lr", "0.001", "--hidden", "64", "--quiet"]
TRAIN = [*BASE, "--epochs", "2", "--reproducible"]


def fmae(*args: object, cwd: Path, data_dir: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m fmae ...` in a new process, in an environment without the portable mode's variables
    (the command must set them itself)."""
    env = installed_env(**({"FMAE_DATA_DIR": str(data_dir)} if data_dir is not None else {}))
    for key in numerics.PORTABLE_ENV:
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "fmae", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def environment(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["environment"]


def metrics_losses_of(raw: bytes) -> list[str]:
    """helpers.metrics_losses of a metrics.csv as it was."""
    return [line.rsplit(",", 1)[0] for line in raw.decode().splitlines()]


# fmae.numerics, in this process


@pytest.mark.parametrize("threads", [None, 1])
def test_check_gives_one_thread_in_the_mode(threads):
    assert numerics.check(True, threads, "auto") == 1
    assert numerics.check(True, threads, "cpu") == 1


def test_check_refuses_more_threads_naming_the_flag():
    with pytest.raises(ConfigError, match="--threads 2"):
        numerics.check(True, 2, "auto")


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_check_refuses_a_gpu(device):
    with pytest.raises(ConfigError, match=f"--device {device}"):
        numerics.check(True, None, device)


@pytest.mark.parametrize("threads", [None, 1, 2, 8])
def test_check_passes_everything_through_outside_the_mode(threads):
    assert numerics.check(False, threads, "cuda") == threads


def test_enter_refuses_when_torch_is_loaded_with_other_settings(monkeypatch):
    assert "torch" in sys.modules
    monkeypatch.delenv("MKL_CBWR", raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    with pytest.raises(ConfigError, match="before torch loads"):
        numerics.enter(numerics.PORTABLE)
    assert "MKL_CBWR" not in os.environ  # refused: nothing set
    numerics.enter(numerics.DEFAULT)  # the default mode asks nothing


def test_enter_accepts_a_process_started_in_the_mode(monkeypatch):
    for key, value in numerics.PORTABLE_ENV.items():
        monkeypatch.setenv(key, value)
    numerics.enter(numerics.PORTABLE)


def test_verify_refuses_a_process_whose_torch_started_without_the_settings(monkeypatch):
    monkeypatch.delenv("MKL_CBWR", raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    with pytest.raises(ConfigError, match="without the portable settings"):
        numerics.verify(numerics.PORTABLE)
    assert "MKL_CBWR" not in os.environ  # verify sets nothing: that is enter's, before torch loads
    numerics.verify(numerics.DEFAULT)  # the default mode asks nothing


@pytest.mark.parametrize("saved, mode, flag", [
    ({"machine": {"numerics": "portable"}}, numerics.DEFAULT, "add --reproducible"),
    ({"machine": {"numerics": "default"}}, numerics.PORTABLE, "leave out --reproducible"),
    ({}, numerics.PORTABLE, "leave out --reproducible"),  # a run from before the mode: default
    (None, numerics.PORTABLE, "leave out --reproducible"),
])
def test_resumable_refuses_the_other_mode(saved, mode, flag):
    with pytest.raises(ConfigError) as caught:
        numerics.resumable(saved, mode, "the run in r")
    assert "the run in r was trained" in str(caught.value) and flag in caught.value.hint


@pytest.mark.parametrize("saved, mode", [
    ({"machine": {"numerics": "portable"}}, numerics.PORTABLE),
    ({"machine": {"numerics": "default"}}, numerics.DEFAULT),
    ({}, numerics.DEFAULT),
    (None, numerics.DEFAULT),
])
def test_resumable_accepts_the_same_mode(saved, mode):
    numerics.resumable(saved, mode, "the run in r")


def test_changed_args_writes_a_switch_as_its_flag_alone():
    assert changed_args(("--reproducible", True, False)) == ["--reproducible"]
    assert changed_args(("--reproducible", False, False)) == []


def test_the_train_resume_line_carries_the_mode_and_no_threads():
    config = TrainConfig(optim="adam")
    line = TrainSettings(config, reproducible=True, threads=1).to_args(config, Path("r"))
    assert "--reproducible" in line and "--threads" not in line
    assert TrainSettings(config, reproducible=True).threads == 1
    assert "--reproducible" not in TrainSettings(config).to_args(config, Path("r"))


def test_the_sweep_resume_line_carries_the_mode_and_no_threads():
    executor = ExecutorConfig(jobs=2, reproducible=True)
    assert executor.threads == 1
    assert executor.to_args() == ["--jobs", "2", "--reproducible"]
    line = SweepSettings(SweepConfig(hiddens=(16,)), executor=executor).to_args()
    assert "--reproducible" in line and "--threads" not in line
    assert "--reproducible" not in SweepSettings(SweepConfig(hiddens=(16,)), executor=ExecutorConfig(jobs=2)).to_args()


def test_settings_refuse_threads_and_gpus_in_the_mode():
    with pytest.raises(ConfigError, match="--threads"):
        ExecutorConfig(threads=2, reproducible=True)
    with pytest.raises(ConfigError, match="--gpus-per-cell"):
        ExecutorConfig(executor="ray", gpus_per_cell=1.0, reproducible=True)
    with pytest.raises(ConfigError, match="--device cuda"):
        SweepSettings(SweepConfig(hiddens=(16,)), executor=ExecutorConfig(reproducible=True), device="cuda")
    with pytest.raises(ConfigError, match="--device cuda"):
        TrainSettings(TrainConfig(), device="cuda", reproducible=True)


# the command, in new processes


@pytest.mark.parametrize("extra, needle", [(["--threads", "2"], "--threads"), (["--device", "cuda"], "--device cuda")])
def test_the_command_refuses_threads_and_a_gpu(tmp_path, extra, needle):
    done = fmae(*TRAIN, *extra, "--run-dir", "r", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    one_error_line(done.stderr, needle, done.stdout)
    assert not (tmp_path / "r").exists()


@pytest.mark.dataset
def test_a_run_records_the_portable_machine_and_resumes_only_in_its_mode(tmp_path, real_data_dir):
    done = fmae(*TRAIN, "--run-dir", "r", "--json", cwd=tmp_path, data_dir=real_data_dir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    run = tmp_path / "r"
    env = environment(run)
    assert env["threads"] == 1 and env["device"] == "cpu"
    machine = env["machine"]
    assert machine["numerics"] == "portable", machine
    assert machine["mkl_cbwr"] == "AVX2" and machine["torch_cpu_capability"] == "AVX2", machine
    assert machine["vendor"] == numerics.cpu_info()["vendor"]
    before = {name: (run / name).read_bytes() for name in ("metrics.csv", "model.pt", "last.pt", "config.json")}
    assert len(metrics_losses(run / "metrics.csv")) == 3  # the header and 2 epochs

    refused = fmae(*BASE, "--epochs", "3", "--run-dir", "r", "--resume", cwd=tmp_path, data_dir=real_data_dir)
    assert refused.returncode == 2, refused.stderr
    one_error_line(refused.stderr, "was trained with --reproducible", refused.stdout)
    assert {name: (run / name).read_bytes() for name in before} == before  # the run untouched

    resumed = fmae(*BASE, "--epochs", "3", "--reproducible", "--run-dir", "r", "--resume", cwd=tmp_path,
                   data_dir=real_data_dir)
    assert resumed.returncode == 0, resumed.stderr
    lines = metrics_losses(run / "metrics.csv")
    assert len(lines) == 4 and lines[:3] == metrics_losses_of(before["metrics.csv"])
    assert environment(run)["machine"]["numerics"] == "portable"



SWEEP = ["sweep", "--optim", "adam", "--lr", "0.001", "0.01", "--hidden", "16", "--jobs", "2", "--run-dir", "s",
         "--quiet"]
CELLS = ("adam-lr0.001-h16-s0", "adam-lr0.01-h16-s0")


@pytest.fixture(scope="module")
def portable_sweep(tmp_path_factory, real_data_dir) -> Path:
    """A --jobs 2 sweep of 2 epochs in the mode (s/), and `fmae train --reproducible` of its first cell (t/)."""
    root = tmp_path_factory.mktemp("portable")
    sweep = fmae(*SWEEP, "--epochs", "2", "--reproducible", cwd=root, data_dir=real_data_dir)
    assert sweep.returncode == 0, sweep.stderr
    train = fmae("train", "--optim", "adam", "--lr", "0.001", "--hidden", "16", "--epochs", "2", "--reproducible",
                 "--run-dir", "t", "--quiet", cwd=root, data_dir=real_data_dir)
    assert train.returncode == 0, train.stderr
    return root


def refused_resume(portable_sweep: Path, tmp_path: Path, real_data_dir: Path) -> tuple[dict, Path]:
    """A copy of the sweep, its files, and the sweep resumed to 3 epochs without --reproducible (refused)."""
    shutil.copytree(portable_sweep / "s", tmp_path / "s")
    sweep = tmp_path / "s"
    before = {p: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file() and ".fmae" not in p.name}
    done = fmae(*SWEEP, "--epochs", "3", cwd=tmp_path, data_dir=real_data_dir)
    assert done.returncode == 2, done.stderr
    one_error_line(done.stderr, "the sweep in s was trained with --reproducible", done.stdout)
    return before, sweep


@pytest.mark.dataset
def test_a_jobs_sweep_trains_its_cells_in_the_mode(portable_sweep, real_data_dir):
    """The pool workers compute as `fmae train --reproducible` does: the same losses and weights, bit
    for bit (on an Intel CPU with AVX-512 the default mode gives other bits for this cell)."""
    cell = portable_sweep / "s" / "cells" / CELLS[0]
    assert metrics_losses(cell / "metrics.csv") == metrics_losses(portable_sweep / "t" / "metrics.csv")
    a, b = state_dict(cell / "model.pt"), state_dict(portable_sweep / "t" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in CELLS:
        env = environment(portable_sweep / "s" / "cells" / name)
        assert env["threads"] == 1 and env["machine"]["numerics"] == "portable", env


@pytest.mark.dataset
def test_a_portable_sweep_refuses_to_resume_without_the_mode(portable_sweep, tmp_path, real_data_dir):
    before, sweep = refused_resume(portable_sweep, tmp_path, real_data_dir)
    cells = {p: raw for p, raw in before.items() if "cells" in p.parts}
    assert {p: p.read_bytes() for p in cells} == cells  # no cell trained on


@pytest.mark.dataset
def test_a_refused_sweep_resume_leaves_the_sweeps_record(portable_sweep, tmp_path, real_data_dir):
    before, sweep = refused_resume(portable_sweep, tmp_path, real_data_dir)
    for name in ("sweep.json", "config.toml"):
        assert (sweep / name).read_bytes() == before[sweep / name], name
