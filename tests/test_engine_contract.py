"""The training contract (fmae/training/contract.py): one suite that both engines must pass, the
per-cell loop (engine "cells") and the stacked engine (engine "stacked"), each checked against the
contract as written, on the tiny synthetic dataset (CPU): the resume state's keys, shapes and
meaning, the history, the statuses and the stop rule, the derived seeds, exact resume (with the
engine that wrote the state, and within tolerance with the other), and the files a run writes.
What only the stacked engine promises (its numbers against the per-cell loop's, cells leaving a
stack, its dropout masks) is tests/test_stacked.py's."""

import copy
import csv
import dataclasses
import json
import math

import pytest
import torch

from fmae import engine, evaluation, runs
from fmae.config import ModelConfig, NoiseConfig
from fmae.model import SeededDropout
from fmae.noise import add_noise
from fmae.seeds import derive_seed
from fmae.training.contract import RESUME_KEYS, RNG_STREAMS, STATUSES, EpochMetrics, stop_reason
from tests.helpers import assert_same_histories, cli, layout, states_at, tiny, tiny_config

CPU = torch.device("cpu")
ENGINES = ("cells", "stacked")
OPTIMIZERS = {"sgd": dict(optim="sgd", lr=0.05), "sgd-momentum": dict(optim="sgd", lr=0.05, momentum=0.9),
              "adam": dict(optim="adam", lr=0.001)}
# every random stream in use: dropout masks and training noise as well as the data order
STREAMS = dict(model=ModelConfig(hidden=8, dropout=0.2), noise=NoiseConfig("gaussian", 0.3))
STEPS = 4  # minibatches of an epoch: the tiny dataset's 64 training images in batches of 16


@pytest.fixture(params=ENGINES)
def engine_name(request) -> str:
    return request.param


def losses(result) -> list[tuple[float, float]]:
    return [(m.train_loss, m.test_loss) for m in result.history]


def weights_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def train_alone(config, data, engine_name: str, **kw):
    return engine.train_many([config], data, CPU, engine=engine_name, **kw)[0]


# ---------------------------------------------------------------- the resume state


@pytest.mark.parametrize("optim", sorted(OPTIMIZERS))
def test_the_resume_state_has_the_contracts_keys_shapes_and_meaning(tiny_data, engine_name, optim):
    config = tiny_config(**OPTIMIZERS[optim], **STREAMS, epochs=3, seed=3)
    (state,) = states_at([config], tiny_data, 1, engine_name)
    assert tuple(state) == RESUME_KEYS and tuple(state["rng"]) == RNG_STREAMS
    assert state["epoch"] == 1 == len(state["history"]) and state["status"] == "running"  # 2 epochs to go
    cpu32 = lambda *shape: (shape, torch.float32, "cpu")  # noqa: E731
    params = {"encoder.weight": cpu32(8, 784), "encoder.bias": cpu32(8), "decoder.weight": cpu32(784, 8),
              "decoder.bias": cpu32(784)}
    assert layout(state["model"]) == params  # one cell's single Autoencoder, on the CPU
    opt = state["optimizer"]
    assert len(opt["param_groups"]) == 1 and opt["param_groups"][0]["params"] == [0, 1, 2, 3]
    assert opt["param_groups"][0]["lr"] == config.lr
    shapes = [shape for shape, _, _ in params.values()]
    if optim == "sgd":  # SGD without momentum keeps nothing
        assert opt["state"] == {}
    elif optim == "sgd-momentum":
        assert [layout(s) for s in opt["state"].values()] == [{"momentum_buffer": cpu32(*s)} for s in shapes]
    else:
        assert [layout(s) for s in opt["state"].values()] == \
            [{"step": cpu32(), "exp_avg": cpu32(*s), "exp_avg_sq": cpu32(*s)} for s in shapes]
        assert [s["step"].item() for s in opt["state"].values()] == [float(STEPS)] * 4
    # each generator has made exactly this cell's own draws of one epoch, from its derived seed
    data_rng = torch.Generator().manual_seed(derive_seed(3, "data"))
    torch.randperm(64, generator=data_rng)
    dropout = SeededDropout(0.2, torch.Generator().manual_seed(derive_seed(3, "dropout")))
    noise_rng = torch.Generator().manual_seed(derive_seed(3, "train-noise"))
    for _ in range(STEPS):
        dropout(torch.ones(16, 8))
        add_noise(torch.zeros(16, 784), "gaussian", 0.3, noise_rng)
    assert torch.equal(state["rng"]["data"], data_rng.get_state())
    assert torch.equal(state["rng"]["dropout"], dropout.generator.get_state())
    assert torch.equal(state["rng"]["noise"], noise_rng.get_state())
    (row,) = state["history"]
    assert row[0] == 1 and all(math.isfinite(v) for v in row) and row[3] > 0  # epoch, train, test, seconds


def test_both_engines_leave_the_same_resume_state(tiny_data):
    """Layout, optimizer settings and generator states alike: a state resumes with either engine."""
    for optim in OPTIMIZERS.values():
        configs = [tiny_config(**optim, **STREAMS, epochs=3), tiny_config(**optim, **STREAMS, epochs=3, seed=5)]
        stacked = states_at(configs, tiny_data, 2, "stacked")[0]  # in a stack of two
        cells = states_at(configs[:1], tiny_data, 2, "cells")[0]
        assert layout(stacked) == layout(cells)
        assert stacked["optimizer"]["param_groups"] == cells["optimizer"]["param_groups"]
        assert all(torch.equal(stacked["rng"][k], cells["rng"][k]) for k in RNG_STREAMS)  # the same draws
        assert [row[0] for row in stacked["history"]] == [row[0] for row in cells["history"]] == [1, 2]


# ---------------------------------------------------------------- history, statuses, stop rule


def test_the_history_is_one_row_per_epoch_and_the_test_loss_is_evaluate(tiny_data, engine_name):
    result = train_alone(tiny_config(**STREAMS, epochs=3), tiny_data, engine_name)
    assert result.status == "completed" and result.epochs_run == 3
    assert [m.epoch for m in result.history] == [1, 2, 3]
    assert all(math.isfinite(m.train_loss) and math.isfinite(m.test_loss) and m.seconds > 0 for m in result.history)
    # the test loss: fmae.evaluation.evaluate in eval mode (no dropout), of the model handed back
    assert result.history[-1].test_loss == evaluation.evaluate(result.model, tiny_data.test_images)


def test_every_status_an_engine_sets(tiny_data, engine_name):
    linear = ModelConfig(hidden=8, activation="identity")
    cases = {
        "completed": tiny_config(lr=0.001),
        "stopped_early": tiny_config(optim="sgd", lr=0.05, model=linear, epochs=5, patience=1, min_delta=0.9),
        "diverged": tiny_config(optim="sgd", lr=1e6, model=linear, epochs=5),
        "collapsed": tiny_config(lr=0.5, model=ModelConfig(hidden=2)),  # Adam kills both hidden units
    }
    assert set(cases) | {"running"} == set(STATUSES)
    for status, config in cases.items():
        result = train_alone(config, tiny_data, engine_name)
        assert result.status == status, (status, result.status, losses(result))
        if status == "diverged":  # a non-finite loss ends the run, no crash
            last = result.history[-1]
            assert not (math.isfinite(last.train_loss) and math.isfinite(last.test_loss))
            assert len(result.history) < 5
        elif status in ("completed", "stopped_early", "collapsed"):  # collapsed: a constant output
            assert evaluation.is_collapsed(result.model, tiny_data.test_images) == (status == "collapsed")
    paused = train_alone(tiny_config(epochs=3), tiny_data, engine_name, max_epochs=1)
    assert paused.status == "running" and paused.epochs_run == 1  # resumable, not completed


def test_the_stop_rule_fires_at_the_first_epoch_it_holds(tiny_data, engine_name):
    config = tiny_config(epochs=50, patience=2, min_delta=0.2)
    result = train_alone(config, tiny_data, engine_name)
    h = list(result.history)
    assert result.status == "stopped_early" and len(h) < 50
    assert (h[-3].test_loss - h[-1].test_loss) / h[-3].test_loss < 0.2
    assert all(stop_reason(config, h[:i]) is None for i in range(1, len(h)))
    assert stop_reason(config, h) == "stopped_early"


def test_the_stop_rules_order_diverged_then_stopped_early_then_completed():
    config = tiny_config(epochs=3, patience=1, min_delta=0.5)
    rows = lambda *tests: [EpochMetrics(i + 1, 0.1, t, 1.0) for i, t in enumerate(tests)]  # noqa: E731
    assert stop_reason(config, rows(0.2, 0.19, math.nan)) == "diverged"  # not completed
    assert stop_reason(config, rows(0.2, 0.19, 0.18)) == "stopped_early"  # not completed
    assert stop_reason(config, rows(0.2, 0.05, 0.01)) == "completed"
    assert stop_reason(config, rows(0.2, 0.05)) is None
    assert stop_reason(dataclasses.replace(config, patience=0), rows(0.2, 0.2)) is None  # no patience, no stop


def test_a_halving_sweep_prunes_with_either_engine(fake_dataset, tmp_path, engine_name):
    """"pruned" is a sweep's status, set between the engine's epochs: the same cells with either."""
    result = cli("sweep", "--optim", "sgd", "--lr", "0.5", "0.1", "0.01", "--hidden", "4", "--activation", "identity",
                 *tiny(3, hidden=None), "--prune", "halving", "--eta", "3", "--json", "--engine", engine_name,
                 "--run-dir", tmp_path / "s")
    assert result.exit_code == 0, result.stderr
    cells = {c["lr"]: c for c in json.loads(result.stdout)["cells"]}
    assert {lr: (c["status"], c["epochs_run"]) for lr, c in cells.items()} == \
        {0.5: ("completed", 3), 0.1: ("pruned", 1), 0.01: ("pruned", 1)}
    for lr in (0.1, 0.01):  # a pruned cell keeps its resume state, and no model
        cell = runs.RunDir(tmp_path / "s" / "cells" / f"sgd-lr{lr}-h4-s0")
        assert cell.load_last()["epoch"] == 1 and not cell.file("model.pt").exists()


# ---------------------------------------------------------------- derived seeds


def test_derived_seeds_are_distinct():
    purposes = ("init", "data", "dropout", "train-noise")
    seeds = {derive_seed(s, p) for s in range(3) for p in purposes}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(0, "data") == derive_seed(0, "data")


def test_the_seed_alone_fixes_the_numbers(tiny_data, engine_name):
    a = train_alone(tiny_config(**STREAMS), tiny_data, engine_name)
    b = train_alone(tiny_config(**STREAMS), tiny_data, engine_name)
    c = train_alone(tiny_config(**STREAMS, seed=1), tiny_data, engine_name)
    assert losses(a) == losses(b) and weights_equal(a.model, b.model)
    assert losses(a) != losses(c)


def test_a_cells_draws_do_not_depend_on_the_cells_it_trains_with(tiny_data, engine_name):
    """Trained with companions (other learning rates; other seeds too where the engine allows it),
    a cell makes the same draws as alone; the per-cell loop gives the very same numbers, the
    stacked engine the same up to float summation order."""
    config = tiny_config(**STREAMS, lr=0.01)
    seeds = (0, 0) if engine_name == "cells" else (1, 2)  # the per-cell loop trains one seed per lockstep group
    companions = [tiny_config(**STREAMS, lr=lr, seed=s) for lr, s in zip((0.003, 0.02), seeds)]
    together = engine.train_many([config, *companions], tiny_data, CPU, engine=engine_name)[0]
    alone = train_alone(config, tiny_data, engine_name)
    if engine_name == "cells":
        assert losses(together) == losses(alone) and weights_equal(together.model, alone.model)
    else:
        assert_same_histories(together, alone)
    both = (states_at([config, *companions], tiny_data, 1, engine_name)[0],
            states_at([config], tiny_data, 1, engine_name)[0])
    assert all(torch.equal(both[0]["rng"][k], both[1]["rng"][k]) for k in RNG_STREAMS)


# ---------------------------------------------------------------- exact resume


@pytest.mark.parametrize("optim", sorted(OPTIMIZERS))
def test_resume_is_exact_with_the_engine_that_wrote_the_state(tiny_data, engine_name, optim):
    """Stopped after 2 of 4 epochs (as a kill leaves last.pt) or run to 2 epochs and asked for 4
    (`--resume --epochs 4`): the same losses and weights, bit for bit, as 4 epochs straight."""
    config = tiny_config(**OPTIMIZERS[optim], **STREAMS, epochs=4)
    full = train_alone(config, tiny_data, engine_name)
    assert full.status == "completed"  # a model that learns (a collapsed one hides what its inputs were)
    (cut,) = states_at([config], tiny_data, 2, engine_name)
    (short,) = states_at([dataclasses.replace(config, epochs=2)], tiny_data, 2, engine_name)
    assert cut["status"] == "running" and short["status"] == "completed"
    for state in (cut, short):
        assert state["epoch"] == 2
        rest = train_alone(config, tiny_data, engine_name, resume=[copy.deepcopy(state)])
        assert losses(rest) == losses(full) and weights_equal(rest.model, full.model)
        assert rest.status == full.status


@pytest.mark.parametrize("writer,reader", [("stacked", "cells"), ("cells", "stacked")])
@pytest.mark.parametrize("optim", sorted(OPTIMIZERS))
def test_a_state_resumes_with_the_other_engine(tiny_data, writer, reader, optim):
    """Within the stacked engine's tolerance of the uninterrupted run: a run may resume with either engine."""
    configs = [tiny_config(**OPTIMIZERS[optim], **STREAMS, epochs=4, seed=s) for s in (0, 1)]
    states = states_at(configs, tiny_data, 2, writer)
    assert [s["epoch"] for s in states] == [2, 2] and [s["status"] for s in states] == ["running", "running"]
    for config, state in zip(configs, states):
        resumed = train_alone(config, tiny_data, reader, resume=[copy.deepcopy(state)])
        assert_same_histories(resumed, train_alone(config, tiny_data, writer))


# ---------------------------------------------------------------- the files a run writes

LAST_PT = {"format", "version", "kind", "fmae_version", "config", *RESUME_KEYS}
MODEL_PT = {"format", "version", "kind", "fmae_version", "config", "state_dict", "status", "metrics", "environment"}
SUMMARY = {"schema_version", "status", "run_dir", "model", "config", "device", "epochs_run", "final_train_loss",
           "final_test_loss", "best_test_loss", "best_epoch", "train_seconds", "wall_seconds", "finished_at"}


def test_the_files_a_run_writes(fake_dataset, tmp_path, engine_name):
    r = tmp_path / "r"
    done = cli("train", *tiny(3), "--engine", engine_name, "--run-dir", r, "--json")
    assert done.exit_code == 0, done.stderr
    assert sorted(p.name for p in r.iterdir()) == \
        [".fmae.json", "config.json", "config.toml", "last.pt", "metrics.csv", "model.pt", "summary.json"]
    summary = json.loads((r / "summary.json").read_text())
    assert set(summary) == SUMMARY and summary == json.loads(done.stdout)
    assert summary["status"] == "completed" and summary["epochs_run"] == 3
    assert json.loads((r / "config.json").read_text())["environment"]["engine"] == engine_name
    with open(r / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["epoch", "train_loss", "test_loss", "seconds"]
    assert [x["epoch"] for x in rows] == ["1", "2", "3"]
    assert float(rows[-1]["test_loss"]) == summary["final_test_loss"]
    last = runs.RunDir(r).load_last()
    model = torch.load(r / "model.pt", map_location="cpu", weights_only=True)
    assert set(last) == LAST_PT and set(model) == MODEL_PT
    assert last["epoch"] == 3 and last["status"] == model["status"] == "completed"
    assert all(torch.equal(last["model"][k], v) for k, v in model["state_dict"].items())  # the final model
    assert [row[2] for row in last["history"]] == [float(x["test_loss"]) for x in rows]


def test_a_diverged_run_writes_no_model(fake_dataset, tmp_path, engine_name):
    r = tmp_path / "r"
    done = cli("train", "--optim", "sgd", "--lr", "1e6", "--activation", "identity", *tiny(5), "--engine", engine_name,
               "--run-dir", r, "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "diverged"
    assert sorted(p.name for p in r.iterdir()) == [".fmae.json", "config.json", "config.toml", "last.pt", "metrics.csv",
                                                   "summary.json"]
    assert runs.RunDir(r).load_last()["status"] == "diverged"


def test_both_engines_have_the_one_engine_signature():
    """fmae.training.contract.Engine is the signature; each engine of fmae.engine.TRAINERS has it."""
    import inspect

    from fmae.training.contract import Engine

    want = inspect.signature(Engine.__call__)
    want = want.replace(parameters=list(want.parameters.values())[1:])  # without self
    assert set(engine.BY_NAME) == {"cells", "stacked"}
    for name, engine_name in engine.BY_NAME.items():
        assert str(inspect.signature(engine_name)) == str(want), name
