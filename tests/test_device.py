"""Tests that train on the device named by `pytest --device` (cpu by default, so CI runs them;
benchmarks/gpu_check.sh runs them with --device cuda): lockstep equals solo, a sweep in
lockstep groups equals the same sweep through --jobs 2, file for file, and a cell in a stack
(the stacked engine) equals the cell trained alone: bit for bit on the CPU, within 1e-4 after
10 epochs on a GPU (batched and plain cuBLAS products may round differently)."""

import json

import pytest
import torch

from fmae import engine
from fmae.config import ModelConfig, TrainConfig
from tests.helpers import assert_same_sweep, cli

pytestmark = pytest.mark.device


def test_lockstep_losses_equal_solo_losses_on_the_device(tiny_data, device):
    data = tiny_data.to(device)
    configs = [TrainConfig(optim=o, model=ModelConfig(hidden=h), epochs=3, batch_size=16, seed=1)
               for o, h in (("sgd", 4), ("adam", 8))]
    together = engine.train_many(configs, data, device, engine="cells")
    for config, result in zip(configs, together):
        alone = engine.train(config, data, device, engine="cells")
        assert [(m.train_loss, m.test_loss) for m in alone.history] == \
            [(m.train_loss, m.test_loss) for m in result.history]
        weights = alone.model.state_dict()
        assert all(torch.equal(weights[k], v) for k, v in result.model.state_dict().items())


def test_a_sweep_on_the_device_equals_its_jobs_2_run(fake_dataset, tmp_path, device):
    grid = ["sweep", "--optim", "sgd", "adam", "--lr", "0.1", "--hidden", "4", "8", "--batch-size", "16",
            "--epochs", "3", "--threads", "1", "--device", device.type, "--engine", "cells", "-q", "--json"]
    one = cli(*grid, "--run-dir", str(tmp_path / "one"))
    assert one.exit_code == 0, one.stderr
    statuses = [c["status"] for c in json.loads(one.stdout)["cells"]]
    assert "completed" in statuses and set(statuses) <= {"completed", "collapsed"}  # Adam lr 0.1 may kill h=4
    two = cli(*grid, "--jobs", "2", "--run-dir", str(tmp_path / "two"))
    assert two.exit_code == 0, two.stderr
    assert_same_sweep(tmp_path / "one", tmp_path / "two")
    env = json.loads((tmp_path / "two" / "cells" / "adam-lr0.1-h8-s0" / "config.json").read_text())["environment"]
    assert env["device"].startswith(device.type)


def test_a_cell_in_a_stack_equals_the_cell_alone_on_the_device(tiny_data, device):
    """One stack of SGD (with momentum) and Adam rows of mixed seeds and learning rates vs each cell
    alone (per-cell engine), 10 epochs: equal on the CPU, within 1e-4 on a GPU."""
    data = tiny_data.to(device)
    configs = [TrainConfig(optim=optim, lr=lr, momentum=0.9 if optim == "sgd" else 0.0, model=ModelConfig(hidden=16),
                           epochs=10, batch_size=16, seed=seed)
               for optim, lrs in (("sgd", (0.1, 0.05, 0.02)), ("adam", (0.01, 0.003, 0.001)))
               for seed, lr in enumerate(lrs)]
    stacked = engine.train_many(configs, data, device, engine="stacked")
    rel = 0 if device.type == "cpu" else 1e-4
    for config, result in zip(configs, stacked):
        alone = engine.train(config, data, device, engine="cells")
        assert result.status == alone.status and len(result.history) == len(alone.history) == 10
        for s, a in zip(result.history, alone.history):
            assert s.test_loss == pytest.approx(a.test_loss, rel=rel, abs=0)
            assert s.train_loss == pytest.approx(a.train_loss, rel=rel, abs=0)
