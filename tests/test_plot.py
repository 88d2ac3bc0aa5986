"""`fmae plot` on tiny synthetic runs and sweeps: files, sizes, not blank, deterministic bytes."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from fmae import runs
from fmae.figures import plots
from tests.helpers import Recorder, cli

SHARED = ["--batch-size", "16", "--epochs", "3", "-q"]


@pytest.fixture
def sweeps(fake_dataset, tmp_path):
    s, a = tmp_path / "sgd", tmp_path / "adam"
    assert cli("sweep", "--optim", "sgd", "--lr", "1e6", "0.5", "0.1", "--hidden", "4", "8", "--activation",
               "identity", *SHARED, "--run-dir", s).exit_code == 0
    assert cli("sweep", "--optim", "adam", "--lr", "0.01", "0.001", "--hidden", "4", "8", "--activation", "identity",
               *SHARED, "--run-dir", a).exit_code == 0
    return s, a


def not_blank(path):
    from matplotlib.image import imread

    img = imread(path)
    return float(np.std(img[..., :3])) > 0.01


def test_all_kinds_from_two_sweeps_deterministic(sweeps, tmp_path):
    result = cli("plot", *sweeps, "--out", tmp_path / "figs", "--json")
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)["figures"]
    assert set(figures) == {"curves", "recon", "heatmap", "compare"}
    first = {}
    for kind, path in figures.items():
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, kind
        assert not_blank(path), kind
        first[kind] = data
    assert cli("plot", *sweeps, "--out", tmp_path / "figs", "-q").exit_code == 0
    for kind, path in figures.items():
        assert open(path, "rb").read() == first[kind], f"{kind} is not deterministic"


def test_run_plot_prints_nothing_and_reports_through_progress(sweeps, tmp_path, capsys):
    """The library call behind `fmae plot`: the figures written, what `all` skipped and each figure
    written reported through the one progress object (entered once), nothing on stdout or stderr."""
    from fmae.figures.run import run_plot
    from fmae.settings import PlotSettings

    capsys.readouterr()
    progress = Recorder()
    doc = run_plot(PlotSettings(sweeps, out=tmp_path / "f"), progress)
    assert doc["figures"] == {k: str(tmp_path / "f" / f"{k}.png") for k in ("curves", "recon", "heatmap", "compare")}
    assert progress.lines[0] == "plot: seeds skipped: it needs a sweep with several seeds among the sources"
    wrote = [line for line in progress.lines if line.startswith("wrote ")]
    assert wrote == [f"wrote {p}" for p in doc["figures"].values()]
    assert (progress.entered, progress.left) == (1, 1) and capsys.readouterr() == ("", "")


def test_sources_are_never_changed(sweeps, tmp_path):
    before = {p: p.stat().st_mtime_ns for s in sweeps for p in s.rglob("*")}
    assert cli("plot", *sweeps, "--out", tmp_path / "figs", "-q").exit_code == 0
    assert before == {p: p.stat().st_mtime_ns for s in sweeps for p in s.rglob("*")}


@pytest.mark.parametrize("fmt", ["svg", "pdf"])
def test_other_formats(sweeps, tmp_path, fmt):
    result = cli("plot", sweeps[0], "--kind", "heatmap", "curves", "--format", fmt, "--out", tmp_path / "f", "--json")
    assert result.exit_code == 0, result.stderr
    paths = json.loads(result.stdout)["figures"]
    assert set(paths) == {"heatmap", "curves"}
    head = open(paths["heatmap"], "rb").read(5)
    assert head == (b"<?xml" if fmt == "svg" else b"%PDF-")
    first = open(paths["curves"], "rb").read()
    cli("plot", sweeps[0], "--kind", "curves", "--format", fmt, "--out", tmp_path / "f")
    assert open(paths["curves"], "rb").read() == first


def test_best_lr_selection_skips_diverged(sweeps):
    _, records = runs.read_source(sweeps[0])
    statuses = {r.config.lr: r.status for r in records}
    assert statuses[1e6] == "diverged"
    best = plots.best_record(records, "sgd")
    finals = [r.final_test_loss for r in records if r.final_test_loss is not None]
    assert best.final_test_loss == min(finals) and plots.best_lr(records, "sgd") == best.config.lr
    assert plots.best_lr(records, "adam") is None


def test_heatmap_marks_diverged_cells(sweeps):
    _, records = runs.read_source(sweeps[0])
    fig = plots.heatmap(records)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("diverged") == 2  # lr 1e6 at h 4 and 8
    assert sum(1 for t in texts if t.startswith("0.")) == 4


def test_within_five_percent():
    assert plots.within([1.0, 0.5, 0.2, 0.105, 0.1]) == 4
    assert plots.within([0.3]) == 1
    assert plots.within([]) is None


def test_within_is_from_epoch_e_on_not_the_first_entry():
    # enters the 5% band at epoch 3, leaves it at 4 (+21%) and 6 (below it), stays in only from 7
    curve = [1.0, 0.5, 0.104, 0.121, 0.103, 0.09, 0.102, 0.099, 0.1]
    assert plots.within(curve, stays=False) == 3
    assert plots.within(curve) == 7
    assert all(abs(v - 0.1) <= 0.005 for v in curve[7 - 1:])
    assert abs(curve[6 - 1] - 0.1) > 0.005


def _record(optim, lr, test):
    config = SimpleNamespace(optim=optim, lr=lr, model=SimpleNamespace(hidden=8), seed=0)
    return SimpleNamespace(config=config, final_test_loss=test[-1], status="completed",
                           metrics=[{"epoch": i, "test_loss": v} for i, v in enumerate(test, 1)])


def test_compare_note_says_from_when_adam_stays_in_the_band():
    adam = [1.0, 0.5, 0.104, 0.121, 0.103, 0.09, 0.102, 0.099, 0.1]
    sgd = [2.0, 1.5, 1.2, 1.1, 1.0, 0.9, 0.8, 0.75, 0.7]
    fig = plots.compare([_record("sgd", 0.1, sgd), _record("adam", 0.001, adam)])
    (note,) = [t.get_text() for t in fig.axes[0].texts]
    assert "within 5% of its final loss from epoch 7 on (first inside at epoch 3, then out again)" in note
    assert [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_linestyle() == ":"][0] == 7


def test_single_run_and_errors(fake_dataset, tmp_path):
    r = tmp_path / "r"
    assert cli("train", "--hidden", "4", *SHARED, "--run-dir", r).exit_code == 0
    result = cli("plot", r, "--out", tmp_path / "f", "--json")
    assert result.exit_code == 0 and set(json.loads(result.stdout)["figures"]) == {"curves", "recon"}
    bad = cli("plot", r, "--kind", "heatmap", "--out", tmp_path / "f")
    assert bad.exit_code == 2 and "heatmap: needs a sweep directory" in bad.stderr
    neither = cli("plot", tmp_path / "f", "--out", tmp_path / "g")
    assert neither.exit_code == 1 and "neither a training run nor a sweep" in neither.stderr
    assert cli("plot", r / "model.pt").exit_code == 1


@pytest.fixture
def seeded(fake_dataset, tmp_path):
    s = tmp_path / "seeded"
    assert cli("sweep", "--optim", "sgd", "--lr", "0.5", "0.1", "--hidden", "4", "8", "--seed", "0", "1", "2",
               "--activation", "identity", *SHARED, "--run-dir", s).exit_code == 0
    return s


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_several_seeds_give_bands_group_means_and_the_seeds_figure(seeded, tmp_path):
    from fmae.figures.seeds import seeds as seeds_figure

    _, records = runs.read_source(seeded)
    group = [r.final_test_loss for r in records if r.config.lr == 0.5 and r.config.model.hidden == 8]
    assert len(group) == 3 and len(set(group)) == 3  # the seeds really differ
    assert f"{np.mean(group):.4f}" in _texts(plots.heatmap(records))  # the group mean, not the best seed
    curves = plots.curves({"seeded": records})
    assert len(curves.axes[0].collections) == 2  # one mean ± std band per hidden size
    fig = seeds_figure(records)
    dots = [line for line in fig.axes[0].lines if line.get_marker() == "o"]
    assert sorted(v for line in dots for v in line.get_ydata()) == sorted(r.final_test_loss for r in records)
    result = cli("plot", seeded, "--kind", "seeds", "heatmap", "curves", "--out", tmp_path / "f", "--json")
    assert result.exit_code == 0, result.stderr
    for path in json.loads(result.stdout)["figures"].values():
        assert not_blank(path)


def test_seeds_figure_needs_several_seeds(sweeps, tmp_path):
    result = cli("plot", sweeps[0], "--kind", "seeds", "--out", tmp_path / "f")
    assert result.exit_code == 2 and "needs a sweep with several seeds" in result.stderr


def test_heatmap_names_collapsed_and_pruned_cells(seeded):
    import dataclasses

    _, records = runs.read_source(seeded)
    marked = [dataclasses.replace(r, status="collapsed" if r.config.lr == 0.5 else "pruned")
              if r.config.model.hidden == 4 else r for r in records]
    texts = _texts(plots.heatmap(marked))
    assert texts.count("collapsed") == 1 and texts.count("pruned") == 1


def test_seeds_figure_marks_lost_set_ups_and_labels_its_axis(seeded):
    import dataclasses

    from fmae.figures.seeds import seeds as seeds_figure

    _, records = runs.read_source(seeded)
    # read back, a collapsed run has no final loss: the whole h=4, lr=0.5 set-up has no usable seed
    lost = [dataclasses.replace(r, status="collapsed") if (r.config.lr, r.config.model.hidden)
            == (0.5, 4) else r for r in records]
    assert sum(r.final_test_loss is None for r in lost) == 3
    fig = seeds_figure(lost)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "set-up: learning rate, hidden units h"
    (mark,) = ax.texts
    assert mark.get_text() == "x\ncollapsed"
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert mark.get_position()[0] == ticks.index("0.5\nh=4")
    assert len([c for c in ax.containers]) == 3  # a mean for each set-up but the lost one
    assert "x: no usable seed" in fig.get_suptitle()
    assert not seeds_figure(records).axes[0].texts and "red" not in seeds_figure(records).get_suptitle()


def test_two_optimizer_heatmap_has_a_colour_scale_per_panel(sweeps):
    records = [r for s in sweeps for r in runs.read_source(s)[1]]
    fig = plots.heatmap(records)
    panels, bars = fig.axes[:2], fig.axes[2:]
    assert [ax.get_title() for ax in panels] == ["SGD", "Adam"] and len(bars) == 2
    for ax, optim in zip(panels, ("sgd", "adam")):
        losses = [r.final_test_loss for r in records if r.config.optim == optim and r.final_test_loss is not None]
        norm = ax.images[0].norm
        assert (norm.vmin, norm.vmax) == pytest.approx((min(losses), max(losses)))
    assert panels[0].images[0].norm.vmin != panels[1].images[0].norm.vmin
    assert [b.get_ylabel() for b in bars] == ["SGD final test MSE per pixel", "Adam final test MSE per pixel"]


def test_plot_all_says_why_it_skipped_compare_and_seeds(sweeps, tmp_path):
    result = cli("plot", sweeps[0], "--out", tmp_path / "f", "--json")
    assert result.exit_code == 0, result.stderr
    assert set(json.loads(result.stdout)["figures"]) == {"curves", "recon", "heatmap"}
    skips = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert skips == ["plot: compare skipped: it needs finished SGD and Adam runs among the sources",
                     "plot: seeds skipped: it needs a sweep with several seeds among the sources"]
    quiet = cli("plot", sweeps[0], "--out", tmp_path / "f", "-q")
    assert quiet.exit_code == 0 and "skipped" not in quiet.stderr
    both = cli("plot", *sweeps, "--out", tmp_path / "f")
    assert both.exit_code == 0 and [line for line in both.stderr.splitlines() if "skipped" in line] == [
        "plot: seeds skipped: it needs a sweep with several seeds among the sources"]
