"""A sweep's size (issue 30): memory that does not grow with its cells, figures and tables that adapt to it."""

from __future__ import annotations

import gc
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fmae.cli import ui
from fmae.figures import plots
from tests.helpers import cli

RATES = ["0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2"]  # x 4 seeds: 32 cells


def live() -> tuple[int, int]:
    """Live torch tensors and live objects the garbage collector tracks, after a collection."""
    gc.collect()
    objects = gc.get_objects()
    return sum(1 for o in objects if issubclass(type(o), torch.Tensor)), len(objects)


@pytest.mark.parametrize("how", [[], ["--jobs", "2"], ["--prune", "halving", "--eta", "2", "--min-epochs", "1"]],
                         ids=["inline", "jobs2", "halving"])
def test_an_ended_cell_leaves_nothing_in_the_driver(fake_dataset, tmp_path, monkeypatch, how):
    """What the driver holds once a cell has ended (finished, failed or pruned) is the same after
    the 8th as after the last: a finished cell's resume state kept per cell (a few kB of small
    tensors) pinned the C heap between the large buffers later cells freed, ~9 MB per cell of the
    real dataset's sweeps. Counted in this process, at every cell's end."""
    from fmae.cli import ui

    seen: list[tuple[int, int]] = []
    ended = ui.SweepFeedback.cell_ended

    def counting(self, plan, status):
        ended(self, plan, status)
        seen.append(live())

    monkeypatch.setattr(ui.SweepFeedback, "cell_ended", counting)
    epochs = "4" if "halving" in how else "1"
    result = cli("sweep", "--optim", "sgd", "--lr", *RATES, "--hidden", "1", "--seed", "0", "1", "2", "3",
                 "--batch-size", "16", "--epochs", epochs, "--threads", "1", "--run-dir", tmp_path / "s", *how,
                 "-q", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len(doc["cells"]) == len(seen) == 32 and result.stderr == ""
    if "halving" in how:
        assert sum(r["status"] == "pruned" for r in doc["cells"]) == 24
    (tensors_then, objects_then), (tensors_end, objects_end) = seen[7], seen[-1]
    assert tensors_end < len(seen), seen  # fewer live tensors than cells: none is a cell's (7 a cell were)
    assert tensors_end <= tensors_then + 4, seen
    assert objects_end <= objects_then + 24 * 20, seen


# ---------------------------------------------------------------- figures and tables that adapt to the sweep's size


def record(lr: float, hidden: int = 1, seed: int = 0, loss: float | None = None, status: str = "completed",
           optim: str = "sgd") -> SimpleNamespace:
    """A run as fmae.runs.read_source gives it, made up: its loss falls with the learning rate unless given."""
    loss = 0.2 - 0.01 * math.log10(lr) + 0.001 * seed + 0.0001 * hidden if loss is None else loss
    config = SimpleNamespace(optim=optim, lr=lr, model=SimpleNamespace(hidden=hidden), seed=seed)
    final = None if status in ("collapsed", "diverged") else loss
    return SimpleNamespace(config=config, final_test_loss=final, status=status, path=Path("/nowhere"),
                           file_exists=lambda name: True,
                           metrics=[{"epoch": 1, "test_loss": loss * 1.5, "train_loss": loss * 1.6},
                                    {"epoch": 2, "test_loss": loss, "train_loss": loss * 1.1}])


def grid(rates: int, seeds: int = 4, hiddens: tuple[int, ...] = (1,)) -> list[SimpleNamespace]:
    """`rates` learning rates from 0.001 to 1 x hidden sizes x seeds; the largest rate collapsed for seed 0."""
    lrs = [10 ** (-3 + 3 * i / max(1, rates - 1)) for i in range(rates)]
    return [record(lr, h, s, status="collapsed" if (lr == lrs[-1] and s == 0) else "completed")
            for lr in lrs for h in hiddens for s in range(seeds)]


def pixels(fig) -> tuple[int, int]:
    from matplotlib.image import imread

    image = imread(io.BytesIO(plots.figure_bytes(fig, "png")))
    return image.shape[1], image.shape[0]


def test_tick_positions_label_all_or_every_kth():
    assert plots.tick_positions(12) == list(range(12))
    ticks = plots.tick_positions(250)
    assert len(ticks) <= plots.MAX_TICKS and ticks[0] == 0 and len({b - a for a, b in zip(ticks, ticks[1:])}) == 1
    assert plots.best_first(["a", "b", "c", "d"], {"a": 3.0, "b": None, "c": 1.0, "d": 2.0}, 2) == ["c", "d"]
    assert plots.best_first(["a", "b"], {}, 2) == ["a", "b"]


def test_a_small_heatmap_keeps_its_numbers_and_words():
    fig = plots.heatmap(grid(6))  # 24 cells
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert sum(t.startswith("0.") for t in texts) == 6 and texts.count("collapsed") == 1
    assert len(fig.axes[0].get_yticklabels()) == 6 and "one in" not in fig.axes[0].get_ylabel()


def test_a_heatmap_of_250_rates_drops_its_numbers_and_thins_its_labels():
    fig = plots.heatmap(grid(250))  # 1,000 cells
    ax = fig.axes[0]
    assert len(ax.texts) == 0 and len(ax.collections) == 1  # the collapsed cell: one x, no words
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) <= plots.MAX_TICKS and labels[0] == "1"
    assert ax.get_ylabel() == "learning rate (250; one in 9 labelled)"
    assert "x: seeds lost" in fig.get_suptitle()
    assert max(pixels(fig)) <= plots.MAX_PIXELS


def test_the_seeds_figure_shows_the_best_set_ups_and_says_so():
    from fmae.figures.seeds import seeds

    small = seeds(grid(6))
    assert len(small.axes[0].get_xticks()) == 6 and "best" not in small.axes[0].get_title()
    fig = seeds(grid(250))
    ax = fig.axes[0]
    shown = [float(t.get_text().split("\n")[0]) for t in ax.get_xticklabels()]
    assert len(shown) == plots.MAX_SETUPS and "the best 24 of 250 set-ups" in ax.get_title()
    assert min(shown) > 0.1 and 1.0 not in shown  # the highest rates have the lowest losses; 1.0 lost a seed
    assert shown == sorted(shown, reverse=True)  # in the grid's order
    assert max(pixels(fig)) <= plots.MAX_PIXELS


def test_curves_show_the_best_hidden_sizes_and_panels_and_say_so():
    many = grid(2, seeds=1, hiddens=tuple(range(1, 41)))
    fig = plots.curves({"sweep": many})
    ax = fig.axes[0]
    assert len(ax.get_lines()) == plots.MAX_LINES and "the best 10 of 40 hidden sizes" in ax.get_title()
    assert {line.get_label() for line in ax.get_lines()} == {f"h = {h}" for h in range(1, 11)}  # lowest losses
    sources = {f"run{i}": [record(0.1, 8, loss=0.1 + i / 100)] for i in range(20)}
    fig = plots.curves(sources)
    drawn = [a for a in fig.axes if a.axison]
    assert len(drawn) == plots.MAX_PANELS and "the best 12 of 20 panels" in fig.get_suptitle()
    assert [a.get_title().split(":")[0] for a in drawn] == [f"run{i}" for i in range(12)]
    assert max(pixels(fig)) <= plots.MAX_PIXELS


def test_the_recon_figure_shows_the_best_hidden_sizes():
    from fmae.figures.choice import recon_models

    rows = recon_models({"s": ("sweep", grid(2, seeds=2, hiddens=tuple(range(1, 41))))})
    assert list(rows) == [f"SGD h={h}" for h in range(1, 11)]


def test_no_png_passes_the_screen_bound():
    from matplotlib.figure import Figure

    assert pixels(Figure(figsize=(6.4, 4.4))) == (768, 528)  # as ever
    assert pixels(Figure(figsize=(200, 5))) == (3000, 75)


def test_a_long_results_table_shows_its_best_rows_and_counts_the_rest():
    rows = [{"rank": i + 1, "status": "completed"} for i in range(990)] + [{"rank": None, "status": "collapsed"}] * 10
    shown, more = ui.clipped(rows, "cells", "results.csv")
    assert shown == rows[:ui.TABLE_HEAD]
    assert more == "... 975 more cells not shown (completed 965, collapsed 10); results.csv holds every one"
    assert ui.clipped(rows[:ui.TABLE_ROWS], "cells", "results.csv") == (rows[:ui.TABLE_ROWS], None)
    groups = [{"statuses": {"completed": 3, "collapsed": 1}}] * 120
    assert ui.clipped(groups, "groups", "x")[1] == \
        "... 95 more groups not shown (their cells: completed 285, collapsed 95); x holds every one"


def test_a_sweep_past_the_table_limit_prints_its_best_cells_json_stays_whole(fake_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(ui, "TABLE_ROWS", 6)
    monkeypatch.setattr(ui, "TABLE_HEAD", 3)
    args = ["sweep", "--optim", "sgd", "--lr", "0.01", "0.1", "--hidden", "1", "--seed", "0", "1", "2", "3",
            "--batch-size", "16", "--epochs", "1", "--threads", "1", "--run-dir", tmp_path / "s", "-q"]
    result = cli(*args)
    assert result.exit_code == 0 and result.stderr == "", result.stderr
    out = result.stdout
    assert "8 cells, the best 3 shown, best marked *" in out and "... 5 more cells not shown (" in out
    assert "results.csv (and --json) holds every one" in out
    cells_table = out.split("... 5 more cells")[0]
    assert len([line for line in cells_table.splitlines() if "│ sgd " in line]) == 3
    doc = json.loads(cli(*args, "--json").stdout)
    assert len(doc["cells"]) == 8 and len(doc["groups"]) == 2
    assert len((tmp_path / "s" / "results.csv").read_text().splitlines()) == 9
