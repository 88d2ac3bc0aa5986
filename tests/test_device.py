"""Tests that train on the device named by `pytest --device` (cpu by default, so CI runs them;
benchmarks/gpu_check.sh runs them with --device cuda): lockstep equals solo, and a sweep in
lockstep groups equals the same sweep through --jobs 2, file for file."""

import json

import pytest
import torch
from typer.testing import CliRunner

from fmae import engine
from fmae.cli import app
from fmae.config import ModelConfig, TrainConfig
from tests.helpers import assert_same_sweep

pytestmark = pytest.mark.device


def test_lockstep_losses_equal_solo_losses_on_the_device(tiny_data, device):
    data = tiny_data.to(device)
    configs = [TrainConfig(optim=o, model=ModelConfig(hidden=h), epochs=3, batch_size=16, seed=1)
               for o, h in (("sgd", 4), ("adam", 8))]
    together = engine.train_many(configs, data, device)
    for config, result in zip(configs, together):
        alone = engine.train(config, data, device)
        assert [(m.train_loss, m.test_loss) for m in alone.history] == \
            [(m.train_loss, m.test_loss) for m in result.history]
        weights = alone.model.state_dict()
        assert all(torch.equal(weights[k], v) for k, v in result.model.state_dict().items())


def test_a_sweep_on_the_device_equals_its_jobs_2_run(fake_dataset, tmp_path, device):
    grid = ["sweep", "--optim", "sgd", "adam", "--lr", "0.1", "--hidden", "4", "8", "--batch-size", "16",
            "--epochs", "3", "--threads", "1", "--device", device.type, "-q", "--json"]
    one = CliRunner().invoke(app, [*grid, "--run-dir", str(tmp_path / "one")])
    assert one.exit_code == 0, one.stderr
    statuses = [c["status"] for c in json.loads(one.stdout)["cells"]]
    assert "completed" in statuses and set(statuses) <= {"completed", "collapsed"}  # Adam lr 0.1 may kill h=4
    two = CliRunner().invoke(app, [*grid, "--jobs", "2", "--run-dir", str(tmp_path / "two")])
    assert two.exit_code == 0, two.stderr
    assert_same_sweep(tmp_path / "one", tmp_path / "two")
    env = json.loads((tmp_path / "two" / "cells" / "adam-lr0.1-h8-s0" / "config.json").read_text())["environment"]
    assert env["device"].startswith(device.type)
