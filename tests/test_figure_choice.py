"""What figures show, chosen outside the commands: the plot kinds the sources allow, the recon
figure's models, the seeded example images, labels; and the checkpoint helpers they load through."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fmae import checkpoints, runs
from fmae.config import PLOT_KINDS, ModelConfig, TrainConfig
from fmae.errors import ConfigError
from fmae.figures import choice as figure_choice


def record(optim: str, lr: float, hidden: int, loss: float | None, *, seed: int = 0, model: bool = True):
    config = TrainConfig(optim=optim, lr=lr, model=ModelConfig(hidden=hidden), seed=seed)
    return SimpleNamespace(config=config, final_test_loss=loss, status="completed" if loss else "diverged",
                           path=Path(f"{optim}-{lr}-{hidden}-{seed}"), file_exists=lambda name, m=model: m)


def test_all_is_every_kind_the_sources_allow_in_order():
    runs_only = {"a": ("run", [record("adam", 0.001, 8, 0.02)])}
    assert figure_choice.plot_kinds({"all"}, runs_only).kinds == ["curves", "recon"]
    sweep = {"s": ("sweep", [record(o, lr, 8, 0.03, seed=s) for o in ("sgd", "adam") for lr in (0.1, 0.01)
                             for s in (0, 1)])}
    assert figure_choice.plot_kinds({"all"}, sweep) == figure_choice.PlotChoice(list(PLOT_KINDS), {})


def test_all_says_why_it_skipped_compare_and_seeds():
    sweep = {"s": ("sweep", [record("sgd", lr, 8, 0.03) for lr in (0.1, 0.01)])}
    choice = figure_choice.plot_kinds({"all"}, sweep)
    assert choice.kinds == ["curves", "recon", "heatmap"]
    assert choice.skipped == {"compare": "needs finished SGD and Adam runs",
                              "seeds": "needs a sweep with several seeds"}
    assert figure_choice.plot_kinds({"curves"}, sweep).skipped == {}  # asked for by name: nothing to explain


def test_a_kind_the_sources_do_not_allow_says_what_it_needs():
    sources = {"a": ("run", [record("adam", 0.001, 8, 0.02)])}
    assert figure_choice.plot_kinds({"recon", "curves"}, sources).kinds == ["curves", "recon"]
    with pytest.raises(ConfigError, match="plot heatmap: needs a sweep directory among the sources"):
        figure_choice.plot_kinds({"heatmap"}, sources)
    with pytest.raises(ConfigError, match="plot compare: needs finished SGD and Adam runs"):
        figure_choice.plot_kinds({"curves", "compare"}, sources)


def test_nothing_to_draw():
    lost = {"a": ("run", [record("adam", 0.001, 8, None, model=False)])}
    with pytest.raises(ConfigError, match="nothing to draw from these sources"):
        figure_choice.plot_kinds({"all"}, lost)


def test_recon_shows_every_hidden_size_at_each_optimizers_best_lr():
    records = [record("adam", 0.001, 16, 0.010), record("adam", 0.001, 8, 0.020), record("adam", 0.01, 8, 0.005),
               record("sgd", 0.1, 8, 0.040)]
    models = figure_choice.recon_models({"s": ("sweep", records)})
    assert models == {"SGD h=8": Path("sgd-0.1-8-0/model.pt"), "Adam h=8": Path("adam-0.01-8-0/model.pt")}
    two = figure_choice.recon_models({"adam": ("run", records[:1]), "other": ("run", records[1:2])})
    assert list(two) == ["Adam h=16", "Adam h=8\nother"]


def test_example_images_are_a_seeded_choice():
    a = figure_choice.example_indices(100, 5, seed=3)
    assert torch.equal(a, figure_choice.example_indices(100, 5, seed=3))
    assert not torch.equal(a, figure_choice.example_indices(100, 5, seed=4))
    assert len(set(a.tolist())) == 5 and all(0 <= i < 100 for i in a.tolist())
    assert sorted(figure_choice.example_indices(3, 10, seed=0).tolist()) == [0, 1, 2]


def test_short_names():
    names = figure_choice.short_names(["runs/a/model.pt", "runs/s/best.pt", "x.pt", "other/a/model.pt"])
    assert names == {"runs/a/model.pt": "a", "runs/s/best.pt": "s", "x.pt": "x.pt",
                     "other/a/model.pt": "other/a/model.pt"}


def test_to_cpu_detaches_every_tensor_of_a_nest():
    w = torch.ones(2, requires_grad=True) * 2
    out = checkpoints.to_cpu({"a": w, "b": [w, (w, 3)], "c": "x"})
    assert not out["a"].requires_grad and isinstance(out["b"][1], tuple) and out["b"][1][1] == 3
    assert out["c"] == "x" and torch.equal(out["b"][0], torch.full((2,), 2.0))


def test_load_models_loads_a_path_given_twice_once(tmp_path):
    from fmae.model import build

    config = TrainConfig(model=ModelConfig(hidden=4))
    run = runs.RunDir(tmp_path / "r")
    run.save_model(config, build(config.model).state_dict(), [], "completed", {})
    path = run.file("model.pt")
    loaded = checkpoints.load_models([path, str(path)])
    assert len(loaded) == 1 and loaded[0].path == str(path) and loaded[0].precision == "fp32"
    assert loaded[0].recorded_test_loss is None and not loaded[0].model.training


def test_an_unknown_plot_kind_is_an_error():
    """A kind without its branch in draw fails, never draws the recon figure in its place (issue 32)."""
    def drawn():
        raise AssertionError("the recon figure was drawn")

    with pytest.raises(ValueError, match="no figure for plot kind 'nosuch'"):
        figure_choice.draw("nosuch", {}, train=False, overlay=False, reconstructions=drawn)
