"""fmae.optim: the same parameters, bit for bit, as torch.optim.SGD/Adam, and no torch._dynamo import."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmae import optim

ROOT = Path(__file__).resolve().parent.parent
CASES = [("sgd", {"lr": 0.1}), ("sgd", {"lr": 0.05, "momentum": 0.9}), ("adam", {"lr": 0.001}), ("adam", {"lr": 0.1})]


def pair(name: str, kwargs: dict, seed: int = 0):
    torch.manual_seed(seed)
    ours_model = torch.nn.Sequential(torch.nn.Linear(20, 7), torch.nn.ReLU(), torch.nn.Linear(7, 20))
    stock_model = torch.nn.Sequential(torch.nn.Linear(20, 7), torch.nn.ReLU(), torch.nn.Linear(7, 20))
    stock_model.load_state_dict(ours_model.state_dict())
    ours = (optim.SGD if name == "sgd" else optim.Adam)(ours_model.parameters(), **kwargs)
    stock = (torch.optim.SGD if name == "sgd" else torch.optim.Adam)(stock_model.parameters(), **kwargs)
    return ours_model, ours, stock_model, stock


def train_steps(model, opt, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.rand(32, 20, generator=g)
        opt.zero_grad(set_to_none=True)
        ((model(x) - x) ** 2).mean().backward()
        opt.step()


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), f"{name} differs by {float((p - q).abs().max().detach())}"


def assert_same_state(ours: dict, stock: dict) -> None:
    assert ours["state"].keys() == stock["state"].keys()
    for i, state in stock["state"].items():
        assert ours["state"][i].keys() == state.keys()
        for key, value in state.items():
            assert torch.equal(ours["state"][i][key], value), (i, key)
            assert ours["state"][i][key].dtype == value.dtype and ours["state"][i][key].device == value.device
    (mine,), (theirs,) = ours["param_groups"], stock["param_groups"]
    assert mine["params"] == theirs["params"]
    for key in mine.keys() & theirs.keys():
        assert mine[key] == theirs[key], key


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_steps_equal_the_stock_optimizer_bit_for_bit(name, kwargs):
    ours_model, ours, stock_model, stock = pair(name, kwargs)
    train_steps(ours_model, ours, 25, seed=1)
    train_steps(stock_model, stock, 25, seed=1)
    assert_same_params(ours_model, stock_model)
    assert_same_state(ours.state_dict(), stock.state_dict())
    assert any(not torch.equal(p, q) for p, q in zip(ours_model.parameters(), pair(name, kwargs)[0].parameters()))


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_state_dicts_load_across_both_ways(name, kwargs):
    """A resume file written by torch.optim (older fmae) loads into fmae.optim, and back."""
    ours_model, ours, stock_model, stock = pair(name, kwargs)
    train_steps(stock_model, stock, 5, seed=2)
    ours_model.load_state_dict(stock_model.state_dict())
    ours.load_state_dict(stock.state_dict())  # stock -> ours
    train_steps(ours_model, ours, 5, seed=3)
    train_steps(stock_model, stock, 5, seed=3)
    assert_same_params(ours_model, stock_model)

    fresh_model, _, other_model, other = pair(name, kwargs, seed=9)
    other_model.load_state_dict(ours_model.state_dict())
    other.load_state_dict(copy.deepcopy(ours.state_dict()))  # ours -> stock (as from a file: no shared tensors)
    train_steps(other_model, other, 5, seed=4)
    train_steps(ours_model, ours, 5, seed=4)
    assert_same_params(ours_model, other_model)


def test_a_state_for_other_parameters_is_refused():
    _, ours, _, _ = pair("adam", {"lr": 0.001})
    state = ours.state_dict()
    state["param_groups"][0]["params"] = [0, 1]
    with pytest.raises(ValueError, match="different number of parameters"):
        ours.load_state_dict(state)


DYNAMO_PROBE = """
import sys, torch
from fmae import engine
from fmae.training import cells
from fmae.config import ModelConfig, TrainConfig
from fmae.data import FashionMNIST
g = torch.Generator().manual_seed(0)
x, y = torch.randint(0, 256, (300, 784), dtype=torch.uint8, generator=g), torch.randint(0, 10, (300,), generator=g)
data = FashionMNIST(x, y, x[:100], y[:100], "synthetic", {})
for optim in ("sgd", "adam"):
    config = TrainConfig(model=ModelConfig(hidden=8), optim=optim, epochs=2, batch_size=100, momentum=0.0)
    result = engine.train(config, data, torch.device("cpu"))
    result_state = cells.new_cell(config, torch.device("cpu")).optimizer.state_dict()
if STOCK:
    torch.optim.Adam(result.model.parameters())
print("DYNAMO" if "torch._dynamo" in sys.modules else "NO-DYNAMO")
"""


@pytest.mark.parametrize("stock", [False, True])
def test_training_never_imports_torch_dynamo(stock):
    """The 1.4-1.7 s import fmae.optim exists to avoid; the stock optimizer shows the probe sees it."""
    out = subprocess.run([sys.executable, "-c", f"STOCK = {stock}\n" + DYNAMO_PROBE], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("DYNAMO" if stock else "NO-DYNAMO"), out.stderr


# ---------------------------------------------------------------- one spec per optimizer (issue 32)


def test_every_optimizer_the_configs_accept_has_one_spec():
    from fmae.config import DEFAULT_LR, OPTIMIZERS

    assert set(optim.SPECS) == set(OPTIMIZERS) == set(DEFAULT_LR)
    assert all(optim.spec(name).name == name for name in OPTIMIZERS)


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_a_spec_owns_its_per_cell_optimizer_and_its_param_group(name, kwargs):
    """The per-cell optimizer's param group is the spec's (its settings, then torch's other keys), and
    after steps each parameter holds exactly the spec's state keys; the settings are torch.optim's own."""
    spec, lr, momentum = optim.spec(name), kwargs["lr"], kwargs.get("momentum", 0.0)
    model, ours, _, stock = pair(name, kwargs)
    assert type(spec.per_cell(model.parameters(), lr, momentum)) is type(ours)
    group = {k: v for k, v in ours.param_groups[0].items() if k != "params"}
    assert list(group.items()) == list(spec.param_group(lr, momentum).items())
    assert spec.settings(lr, momentum).items() <= stock.param_groups[0].items()
    train_steps(model, ours, 2, seed=1)
    assert all(tuple(state) == spec.state_keys(momentum) for state in ours.state_dict()["state"].values())
    assert spec.steps_taken(ours.state_dict()["state"]) == (2 if "step" in spec.state_keys(momentum) else 0)


def test_the_stacked_engine_builds_no_per_cell_optimizer(tiny_data, monkeypatch):
    """It steps rows with each spec's stacked rule: fresh and resumed (from the per-cell engine's state),
    SGD and Adam in one stack, it never makes a per-cell optimizer, and its losses are the per-cell
    engine's (bit for bit on real data: tests/test_stacked.py)."""
    from fmae import engine
    from fmae.config import ModelConfig, TrainConfig
    from tests.helpers import assert_same_histories

    configs = [TrainConfig(model=ModelConfig(hidden=8), optim="sgd", lr=0.05, momentum=0.9, epochs=2, batch_size=64),
               TrainConfig(model=ModelConfig(hidden=8), optim="adam", epochs=2, batch_size=64)]
    cpu = torch.device("cpu")
    halfway = []
    engine.train_many(configs, tiny_data, cpu, engine="cells", max_epochs=1,
                      on_epoch=lambda i, cell, m, rng: halfway.append(copy.deepcopy(cell.resume_state(rng))))
    alone = engine.train_many(configs, tiny_data, cpu, engine="cells")

    def refuse(*args, **kwargs):
        raise AssertionError("a per-cell optimizer was built")

    monkeypatch.setattr(optim.Optimizer, "__init__", refuse)
    for resume in (None, halfway):
        stacked = engine.train_many(configs, tiny_data, cpu, engine="stacked", resume=resume)
        for a, b in zip(alone, stacked):
            assert_same_histories(b, a)
            for p, q in zip(a.model.parameters(), b.model.parameters()):
                torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6)
