"""The stacked engine against the per-cell one on the CPU: the numbers promise (every epoch's
losses, the weights and the optimizer state bit for bit, at 1 and 2 threads, whatever the
stack-mates), SGD and Adam rows in one stack, cells leaving the stack, the per-cell layout of a
stacked sweep's files, and --engine. What both engines promise alike (resume state, statuses,
exact resume, resume across engines) is tests/test_engine_contract.py's."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmae import engine, runs
from fmae.config import ModelConfig, TrainConfig
from fmae.errors import ConfigError
from fmae.execution import ExecutorConfig
from fmae.model import SeededDropout, dropout_bits, dropout_mask
from fmae.sweeps.directory import CellPlan
from fmae.sweeps.run import groups
from fmae.training.stacked import stack_key
from tests.helpers import assert_same_histories, cli, close, metrics_losses, same_nest, states_at, tiny, tiny_config

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


GRIDS = {
    "sgd-momentum": [tiny_config(optim="sgd", lr=lr, momentum=m, seed=s) for lr, m, s in
                     ((0.1, 0.9, 0), (0.05, 0.0, 1), (0.2, 0.5, 2), (0.1, 0.9, 1))],
    "adam": [tiny_config(optim="adam", lr=lr, seed=s) for lr, s in ((0.001, 0), (0.01, 1), (0.003, 2), (0.01, 0))],
}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_stacked_equals_per_cell_after_3_epochs(tiny_data, name):
    """One stack of mixed seeds, learning rates and momenta: each cell's numbers are its own."""
    configs = GRIDS[name]
    assert len({stack_key(c) for c in configs}) == 1  # one stack
    stacked = engine.train_many(configs, tiny_data, CPU, engine="stacked")
    finals = set()
    for config, result in zip(configs, stacked):
        alone = engine.train(config, tiny_data, CPU, engine="cells")
        assert_same_histories(result, alone)
        finals.add(result.history[-1].test_loss)
        for k, v in alone.model.state_dict().items():
            torch.testing.assert_close(result.model.state_dict()[k], v, rtol=1e-4, atol=1e-6)
    assert len(finals) == len(configs)  # the cells did train differently


# issue 28's grid: sgd, adam and sgd with momentum 0.9 x lr {0.1, 0.01, 0.001} x h {16, 32} x seeds {0, 1}
MUST_SHOW = [TrainConfig(model=ModelConfig(hidden=h), optim=o, lr=lr, momentum=m, epochs=3, seed=s)
             for o, m in (("sgd", 0.0), ("adam", 0.0), ("sgd", 0.9)) for lr in (0.1, 0.01, 0.001)
             for h in (16, 32) for s in (0, 1)]


def _epoch_states(configs, data, engine_name):
    """Every epoch's resume state of each config (copies), trained as `engine` trains a sweep's group."""
    states = {i: [] for i in range(len(configs))}
    groups_ = [list(range(len(configs)))] if engine_name == "stacked" else [[i] for i in range(len(configs))]
    results = [None] * len(configs)
    for group in groups_:
        def keep(j, cell, metrics, rng, group=group):
            states[group[j]].append(copy.deepcopy(cell.resume_state(rng)))
        for j, r in zip(group, engine.train_many([configs[i] for i in group], data, CPU, engine=engine_name,
                                                 on_epoch=keep)):
            results[j] = r
    return results, states


@pytest.mark.dataset
@pytest.mark.parametrize("threads", [1, 2])
def test_a_cell_in_a_stack_equals_the_cell_alone_bit_for_bit(small_real, threads):
    """36 cells in one stack (SGD, SGD with momentum and Adam rows, two seeds, three rates, two
    sizes: the sizes make two stacks): every epoch's losses, the weights, the optimizer state and the
    generators equal those of the cell trained alone, to the last bit."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        stacked, stacked_states = _epoch_states(MUST_SHOW, small_real, "stacked")
        alone, alone_states = _epoch_states(MUST_SHOW, small_real, "cells")
    finally:
        torch.set_num_threads(saved)
    finals = set()
    for i, (s, a) in enumerate(zip(stacked, alone)):
        assert_same_histories(s, a)
        assert same_nest(s.model.state_dict(), a.model.state_dict()), MUST_SHOW[i]
        assert len(stacked_states[i]) == len(alone_states[i]) == 3
        for x, y in zip(stacked_states[i], alone_states[i]):
            assert same_nest({k: v for k, v in x.items() if k != "history"},
                             {k: v for k, v in y.items() if k != "history"}), (MUST_SHOW[i], x["epoch"])
        finals.add(s.history[-1].test_loss)
    assert len(finals) == len(MUST_SHOW)  # every cell trained its own way


def test_noise_sigmoid_and_no_dropout_in_a_stack(tiny_data):
    """Training noise per cell (some cells without), the unfused sigmoid loss, dropout 0."""
    from fmae.config import NoiseConfig

    model = ModelConfig(hidden=8, dropout=0.0, activation="sigmoid")
    configs = [tiny_config(model=model, lr=0.01, noise=NoiseConfig("gaussian", 0.3)),
               tiny_config(model=model, lr=0.01, seed=1),
               tiny_config(model=model, lr=0.003, noise=NoiseConfig("salt-pepper", 0.2), seed=2)]
    for config, result in zip(configs, engine.train_many(configs, tiny_data, CPU, engine="stacked")):
        assert_same_histories(result, engine.train(config, tiny_data, CPU, engine="cells"))


def test_bf16_stacks_run_close_to_per_cell(tiny_data):
    configs = [tiny_config(precision="bf16", lr=0.001, seed=s) for s in (0, 1)]
    for config, result in zip(configs, engine.train_many(configs, tiny_data, CPU, engine="stacked")):
        alone = engine.train(config, tiny_data, CPU, engine="cells")
        assert result.status == alone.status
        assert close(result.history[-1].test_loss, alone.history[-1].test_loss, rel=0.02)


def test_adam_cells_at_different_steps_share_a_stack(tiny_data):
    """Start epochs may differ within a stack (per-cell step counts): each cell still its own numbers."""
    configs = [tiny_config(lr=0.01, epochs=4, seed=s) for s in (0, 1)]
    state = states_at(configs[:1], tiny_data, 2, "cells")[0]
    resumed = engine.train_many(configs, tiny_data, CPU, engine="stacked", resume=[state, None])
    for config, result in zip(configs, resumed):
        assert_same_histories(result, engine.train(config, tiny_data, CPU, engine="cells"))


def test_cpu_default_engine_is_the_per_cell_loop(tiny_data):
    """auto on the CPU is cells, bit for bit; on cuda and mps it is stacked."""
    config = tiny_config()
    assert engine.resolve_engine("auto", CPU) == "cells"
    assert engine.resolve_engine("auto", torch.device("cuda")) == "stacked"
    assert engine.resolve_engine("auto", torch.device("mps")) == "stacked"
    assert engine.resolve_engine("stacked", CPU) == "stacked"
    default, cells = engine.train(config, tiny_data, CPU), engine.train(config, tiny_data, CPU, engine="cells")
    assert [(m.train_loss, m.test_loss) for m in default.history] == \
        [(m.train_loss, m.test_loss) for m in cells.history]
    with pytest.raises(ConfigError, match="engine must be one of"):
        engine.resolve_engine("fused", CPU)


def test_dropout_masks_of_a_stack_are_each_cells_own_draw():
    """Rows drawn into one buffer from each cell's generator equal SeededDropout's masks alone."""
    shape, p = (5, 7), 0.3
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 1)]
    n = shape[0] * shape[1]
    bits = torch.empty(3, (n + 3) // 4, dtype=torch.int64)
    for k, g in enumerate(gens):
        dropout_bits(n, CPU, g, out=bits[k])
    masks = dropout_mask(bits, (3, *shape), p, torch.float32)
    for k, seed in enumerate((1, 2, 1)):
        layer = SeededDropout(p, torch.Generator().manual_seed(seed))
        assert torch.equal(masks[k], layer(torch.ones(shape)))
    assert torch.equal(masks[0], masks[2]) and not torch.equal(masks[0], masks[1])
    assert all(g.get_state().equal(torch.Generator().manual_seed(s).get_state()) is False for g, s in
               zip(gens, (1, 2, 1)))  # each generator advanced by its own draw


def test_cells_leave_the_stack_and_the_others_equal_their_alone_numbers(tiny_data):
    """A diverging cell (huge SGD lr), one that stops early, one that completes sooner and one
    paused by max_epochs leave the stack; the others go on, each equal to its alone-trained run."""
    linear = ModelConfig(hidden=8, activation="identity")
    configs = [
        tiny_config(optim="sgd", lr=1e6, model=linear, epochs=5),                       # diverges
        tiny_config(optim="sgd", lr=0.05, model=linear, epochs=5, patience=1, min_delta=0.9),  # stops early at epoch 2
        tiny_config(optim="sgd", lr=0.05, model=linear, epochs=2, seed=1),              # completes at 2
        tiny_config(optim="sgd", lr=0.02, momentum=0.9, model=linear, epochs=5, seed=2),  # goes on to 5
        tiny_config(optim="sgd", lr=0.05, model=linear, epochs=5, seed=3),               # goes on to 5
    ]
    stacked = engine.train_many(configs, tiny_data, CPU, engine="stacked")
    assert [r.status for r in stacked] == ["diverged", "stopped_early", "completed", "completed", "completed"]
    assert len(stacked[0].history) < 5
    assert len(stacked[1].history) == 2 and len(stacked[2].history) == 2
    for config, result in zip(configs, stacked):
        alone = engine.train(config, tiny_data, CPU, engine="cells")
        if result.status == "diverged":
            assert alone.status == "diverged" and len(alone.history) == len(result.history)
        else:
            assert_same_histories(result, alone)
    paused = engine.train_many(configs[3:], tiny_data, CPU, engine="stacked", max_epochs=2)
    assert [r.status for r in paused] == ["running", "running"] and [len(r.history) for r in paused] == [2, 2]


def test_stacked_training_never_imports_torch_dynamo():
    """The stacked optimizers are torch's update rules by hand: no torch.optim, no 1.5 s dynamo import."""
    probe = (
        "import sys, torch\nfrom fmae import engine\nfrom fmae.config import ModelConfig, TrainConfig\n"
        "from fmae.data import FashionMNIST\n"
        "x = torch.randint(0, 256, (64, 784), dtype=torch.uint8); y = torch.zeros(64, dtype=torch.long)\n"
        "data = FashionMNIST(x, y, x[:16], y[:16], 'synthetic', {})\n"
        "configs = [TrainConfig(model=ModelConfig(hidden=8), optim=o, epochs=1, batch_size=16)"
        " for o in ('sgd', 'adam')]\n"
        "engine.train_many(configs, data, torch.device('cpu'), engine='stacked')\n"
        "print('DYNAMO' if 'torch._dynamo' in sys.modules else 'NO-DYNAMO')\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "NO-DYNAMO", out.stderr


def test_groups_form_stacks_across_seeds(tmp_path):
    def plan(i, **kw):
        return CellPlan(tiny_config(**kw), runs.RunDir(tmp_path / str(i)))

    plans = [plan(0, lr=0.01, seed=0), plan(1, lr=0.001, seed=1), plan(2, optim="sgd", lr=0.1, seed=0),
             plan(3, model=ModelConfig(hidden=16)), plan(4, lr=0.1, seed=2)]
    plans[4].resume = {"epoch": 1}
    stacked = [[p.run.path.name for p in g] for g in groups(plans, stacked=True)]
    assert stacked == [["0", "1", "2"], ["3"], ["4"]]  # SGD and Adam rows share a stack
    lockstep = [[p.run.path.name for p in g] for g in groups(plans)]
    assert lockstep == [["0", "2", "3"], ["1"], ["4"]]


def test_train_engine_stacked_via_the_cli_and_resume_with_cells(fake_dataset, tmp_path):
    stacked = cli("train", *tiny(2), "--lr", "0.01", "--json", "--engine", "stacked", "--run-dir",
                  str(tmp_path / "s"))
    assert stacked.exit_code == 0, stacked.stderr
    env = json.loads((tmp_path / "s" / "config.json").read_text())["environment"]
    assert env["engine"] == "stacked"
    more = cli("train", *tiny(3), "--lr", "0.01", "--json", "--engine", "cells", "--resume", "--run-dir",
               str(tmp_path / "s"))
    assert more.exit_code == 0, more.stderr
    assert json.loads((tmp_path / "s" / "config.json").read_text())["environment"]["engine"] == "cells"
    cells = cli("train", *tiny(3), "--lr", "0.01", "--json", "--run-dir", str(tmp_path / "c"))
    assert cells.exit_code == 0, cells.stderr
    assert json.loads((tmp_path / "c" / "config.json").read_text())["environment"]["engine"] == "cells"  # auto, CPU
    a, b = json.loads(more.stdout), json.loads(cells.stdout)
    assert a["epochs_run"] == b["epochs_run"] == 3 and close(a["final_test_loss"], b["final_test_loss"])
    bad = cli("train", *tiny(), "--engine", "fused", "--run-dir", str(tmp_path / "x"))
    assert bad.exit_code == 2 and "fused" in bad.stderr


def test_sweep_engine_stacked_through_the_executor_path(fake_dataset, tmp_path):
    """--jobs 1 with stacks of mixed seeds and optimizers: the cells' files are those of a per-cell
    sweep, their numbers bit for bit (metrics.csv but its seconds, model.pt and last.pt)."""
    grid = ["sweep", "--optim", "sgd", "adam", "--lr", "0.05", "0.01", "--hidden", "4", "--seed", "0", "1",
            "--batch-size", "16", "--epochs", "3", "--momentum", "0.5", "--threads", "1", "--jobs", "1", "-q", "--json"]
    stacked = cli(*grid, "--engine", "stacked", "--run-dir", str(tmp_path / "s"))
    assert stacked.exit_code == 0, stacked.stderr
    cells = cli(*grid, "--engine", "cells", "--run-dir", str(tmp_path / "c"))
    assert cells.exit_code == 0, cells.stderr
    rows = lambda out: {(r["optim"], r["lr"], r["seed"]): r for r in json.loads(out)["cells"]}  # noqa: E731
    s, c = rows(stacked.stdout), rows(cells.stdout)
    assert s.keys() == c.keys() and len(s) == 8
    for key in s:
        assert s[key]["status"] == c[key]["status"] and s[key]["epochs_run"] == c[key]["epochs_run"] == 3
        assert close(s[key]["final_test_loss"], c[key]["final_test_loss"]), key
    for cell in (tmp_path / "s" / "cells").iterdir():
        other = tmp_path / "c" / "cells" / cell.name
        assert json.loads((cell / "config.json").read_text())["environment"]["engine"] == "stacked"
        assert sorted(p.name for p in cell.iterdir()) == sorted(p.name for p in other.iterdir())
        ls, lc = runs.RunDir(cell).load_last(), runs.RunDir(other).load_last()
        assert same_nest({k: v for k, v in ls.items() if k not in ("config", "history")},
                         {k: v for k, v in lc.items() if k not in ("config", "history")}), cell.name
        ms = torch.load(cell / "model.pt", map_location="cpu", weights_only=True)
        mc = torch.load(other / "model.pt", map_location="cpu", weights_only=True)
        assert same_nest(ms["state_dict"], mc["state_dict"]) and ms.keys() == mc.keys()
        assert metrics_losses(cell / "metrics.csv") == metrics_losses(other / "metrics.csv")
    pool = cli(*grid[:-4], "--jobs", "2", "-q", "--json", "--engine", "stacked",
               "--run-dir", str(tmp_path / "p"))
    assert pool.exit_code == 0, pool.stderr
    p = rows(pool.stdout)  # the same stacks in pool workers: the same numbers, bit for bit
    assert {k: (r["status"], r["final_test_loss"]) for k, r in p.items()} == \
        {k: (r["status"], r["final_test_loss"]) for k, r in s.items()}


def test_executor_config_checks_the_engine():
    assert ExecutorConfig(engine="stacked").engine == "stacked"
    with pytest.raises(ConfigError, match="engine must be one of"):
        ExecutorConfig(engine="fast")


@pytest.mark.parametrize("bad", [["sgd-lr0.05-h4-s0"], ["sgd-lr0.05-h4-s0", "adam-lr0.01-h4-s1"]])
def test_a_cell_whose_files_fail_fails_alone_in_its_stack(fake_dataset, tmp_path, monkeypatch, bad):
    """Issue 27, case 1: the cells' directories replaced by files after their first epoch (every write
    of theirs then fails, as on a full disk): those cells fail, each with its own file's error;
    their stack-mates train on to the numbers of a clean sweep; results and --json are written."""
    from fmae import saving

    grid = ["sweep", "--optim", "sgd", "adam", "--lr", "0.05", "0.01", "--hidden", "4", "--seed", "0", "1",
            "--batch-size", "16", "--epochs", "3", "--threads", "1", "--engine", "stacked", "--checkpoint-every",
            "0", "-q", "--json"]
    clean = cli(*grid, "--run-dir", str(tmp_path / "clean"))
    assert clean.exit_code == 0, clean.stderr
    epoch, sabotaged = saving.Saver.epoch, []

    def sabotage(self, run, config, state):
        history = epoch(self, run, config, state)
        if run.path.name in bad and state["epoch"] == 1:
            self.flush()
            import shutil

            shutil.rmtree(run.path)
            run.path.write_text("not a directory\n")  # the fault: every later write of this cell fails
            sabotaged.append(run.path.name)
        return history

    monkeypatch.setattr(saving.Saver, "epoch", sabotage)
    hurt = cli(*grid, "--run-dir", str(tmp_path / "hurt"))
    assert sorted(sabotaged) == sorted(bad)  # the fault happened
    assert hurt.exit_code == 1, hurt.stderr  # a failed cell: exit 1, after the results
    doc = json.loads(hurt.stdout)
    name = lambda c: f"{c['optim']}-lr{c['lr']:g}-h{c['hidden']}-s{c['seed']}"  # noqa: E731
    rows, clean_rows = {name(c): c for c in doc["cells"]}, {name(c): c for c in json.loads(clean.stdout)["cells"]}
    assert len(rows) == 8
    for cell, row in rows.items():
        if cell in bad:
            assert row["status"] == "failed", row
        else:
            assert row["status"] == clean_rows[cell]["status"] and row["epochs_run"] == 3, row
            assert row["final_test_loss"] == clean_rows[cell]["final_test_loss"], cell
    assert (tmp_path / "hurt" / "results.json").exists() and (tmp_path / "hurt" / "results.csv").exists()
    for cell in bad:
        assert cell in rows[cell]["error"], rows[cell]  # its own file's error, not a stack-mate's
