"""What a new user meets first: bare `fmae`, help placeholders, --data-dir, tables on 80 columns, figure titles."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from fmae import checkpoints, runs
from fmae.cli import ui
from fmae.figures import plots
from tests.helpers import cli, tiny


def test_bare_fmae_prints_the_help_as_help():
    result = cli()
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: fmae [OPTIONS] COMMAND") and "train" in result.stdout
    assert "error:" not in result.stdout


@pytest.mark.parametrize(("command", "shown"), [
    ("eval", ["--ckpt PATH..."]),
    ("denoise", ["--ckpt PATH...", "--sigma FLOAT...", "--index INT..."]),
    ("plot", ["Usage: fmae plot [OPTIONS] PATH...", "  PATH...  ",
              "--kind [all|curves|recon|heatmap|compare|seeds]..."]),
    ("sweep", ["--optim [adam|sgd]...", "--lr FLOAT...", "--hidden INT...", "--seed INT..."]),
])
def test_help_placeholders_name_what_to_type(command, shown):
    out = cli(command, "--help", env={"COLUMNS": "200"}).stdout
    for text in shown:
        assert text in out
    assert "list[" not in out and "{" not in out and "Path>" not in out


@pytest.mark.parametrize("command", ["eval", "denoise", "plot"])
def test_device_help_says_what_the_command_does_with_it(command):
    out = cli(command, "--help", env={"COLUMNS": "200"}).stdout
    line = next(x for x in out.splitlines() if "--device" in x)
    assert "Where to run the models" in line and "train" not in line


def test_train_device_help_is_unchanged():
    out = cli("train", "--help", env={"COLUMNS": "200"}).stdout
    assert "Where to train" in next(x for x in out.splitlines() if "--device" in x)


@pytest.mark.parametrize("kind", ["missing", "file", "incomplete"])
def test_an_explicit_data_dir_is_refused_not_passed_over(fake_dataset, tmp_path, kind):
    target = tmp_path / kind
    if kind == "file":
        target.write_text("x")
    elif kind == "incomplete":
        target.mkdir()
        (target / "train-images-idx3-ubyte.gz").write_bytes((fake_dataset / "train-images-idx3-ubyte.gz").read_bytes())
    result = cli("train", *tiny(1), "--run-dir", tmp_path / "r", "--data-dir", target)
    assert result.exit_code == 1, result.output  # the fake dataset in $FMAE_DATA_DIR would have worked
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: --data-dir {target}: ")
    assert {"missing": "no such directory", "file": "not a directory",
            "incomplete": "missing train-labels-idx1-ubyte[.gz], t10k-images"}[kind] in result.stderr
    assert not (tmp_path / "r" / "model.pt").exists()
    assert cli("train", *tiny(1), "--run-dir", tmp_path / "ok", "--data-dir", fake_dataset).exit_code == 0


def sweep_doc(n: int = 6) -> dict:
    cells = [{"rank": i + 1, "optim": "adam", "lr": 0.001, "hidden": 512, "seed": 0, "status": "stopped_early",
              "epochs_run": 100, "final_train_loss": 0.0123456 + i, "final_test_loss": 0.00412345 + i,
              "best_test_loss": 0.00401234 + i, "best_epoch": 97, "seconds": 1234.56789 / (i + 1)}
             for i in range(n)]
    return {"cells": cells, "sweep_dir": "runs/report/adam", "best": cells[0], "best_per_optim": {}}


@pytest.mark.parametrize("width", [80, 60])
def test_the_sweep_table_drops_columns_but_never_cuts_a_number(monkeypatch, capsys, width):
    from fmae.cli.training import _print_sweep

    console = Console(file=io.StringIO(), width=width, force_terminal=False)  # a terminal this wide
    monkeypatch.setattr(ui, "stdout_console", lambda: console)
    _print_sweep(sweep_doc())
    text = capsys.readouterr().out
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    assert all(f"{0.00412345 + i:.6f}" in text for i in range(6))  # every test loss in full
    assert text.splitlines()[0].strip() == "fmae sweep runs/report/adam: 6 cells, best marked *"


def test_a_table_too_wide_even_after_dropping_wraps_cells_instead_of_cutting(capsys):
    console = Console(file=io.StringIO(), width=30, force_terminal=False)
    ui.print_table("t", ["setting", "a", "b", "c"], [["MSE", "0.123456", "0.234567", "0.345678"]], console=console)
    text = capsys.readouterr().out
    assert "…" not in text and "5678" in text  # folded, all digits
    assert max(len(line) for line in text.splitlines()) <= 30


def test_a_long_title_is_one_line_and_seconds_have_one_decimal(capsys):
    console = Console(file=io.StringIO(), width=80, force_terminal=False)
    ui.print_table("fmae eval: test split, 10000 images", ["setting", "m"], [["MSE", "0.1"]], console=console)
    assert capsys.readouterr().out.splitlines()[0].strip() == "fmae eval: test split, 10000 images"
    assert [ui.fmt_seconds(v) for v in (82.2659, 5, 0.04, None)] == ["82.3", "5.0", "0.0", "-"]


def test_the_cells_bar_names_the_cell_in_training(fake_dataset, tmp_path, monkeypatch):
    seen = []
    original = ui.Feedback.advance

    def advance(self, key, done, total, info, line, count=None):
        if key == "cells":
            seen.append((count, info))  # the bar fills by work; it says cells done of all
        return original(self, key, done, total, info, line, count)

    monkeypatch.setattr(ui.Feedback, "advance", advance)
    monkeypatch.setattr(ui.Feedback, "info", lambda self, key, info: seen.append((None, info)))
    result = cli("sweep", "--optim", "sgd", "--lr", "0.1", "--hidden", "4", "8", "16", *tiny(1, hidden=None),
                 "--run-dir", tmp_path / "s")
    assert result.exit_code == 0, result.output
    # a cell is named from its start to its end, never before it starts (--jobs 1: one at a time)
    assert seen == [(None, "training sgd-lr0.1-h4-s0"), ("1/3", ""), (None, "training sgd-lr0.1-h8-s0"), ("2/3", ""),
                    (None, "training sgd-lr0.1-h16-s0"), ("3/3", ""), (None, "")]


@pytest.fixture
def sweeps(fake_dataset, tmp_path):
    s, a = tmp_path / "sgd", tmp_path / "adam"
    assert cli("sweep", "--optim", "sgd", "--lr", "0.1", *tiny(1, hidden=4), "--run-dir", s).exit_code == 0
    assert cli("sweep", "--optim", "adam", "--lr", "0.01", *tiny(1, hidden=4), "--run-dir", a).exit_code == 0
    return s, a


def test_figure_titles_write_sgd_and_adam(sweeps):
    s, a = sweeps
    sgd, adam = runs.read_source(s)[1], runs.read_source(a)[1]
    titles = [ax.get_title() for ax in plots.curves({"sgd": sgd, "adam": adam}).axes]
    assert titles == ["SGD, lr = 0.1", "Adam, lr = 0.01"]  # not "sgd: SGD", not "ADAM"
    assert [ax.get_title() for ax in plots.curves({"mine": adam}).axes] == ["mine: Adam, lr = 0.01"]
    assert [ax.get_title() for ax in plots.heatmap(sgd + adam).axes if ax.get_title()] == ["SGD", "Adam"]
    legend = [t.get_text() for t in plots.compare(sgd + adam).axes[0].get_legend().get_texts()]
    assert legend[0].startswith("SGD lr = 0.1") and legend[1].startswith("Adam lr = 0.01")


def test_the_denoise_grid_with_one_model_names_it_and_keeps_its_title(sweeps, tmp_path):
    s, _ = sweeps
    out = tmp_path / "fig.png"
    result = cli("denoise", "--ckpt", s / "best.pt", "--sigma", "0.5", "--out", out, "--json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["figures"] == {"grid": str(out)}
    import torch

    from fmae.checkpoints import Loaded
    from fmae.figures.choice import figure_labels as _figure_labels

    model, ckpt = checkpoints.load_model(s / "best.pt")
    one = Loaded(str(s / "best.pt"), model, ckpt)
    assert _figure_labels([one], {one.path: "sgd"}) == {one.path: "SGD h=4"}
    other = Loaded("x/model.pt", model, {**ckpt, "config": ckpt["config"]})
    assert _figure_labels([one, other], {one.path: "sgd", "x/model.pt": "x"}) == {
        one.path: "SGD h=4 lr=0.1 (sgd)", "x/model.pt": "SGD h=4 lr=0.1 (x)"}
    fig = plots.denoise_grid(torch.zeros(2, 784), torch.zeros(2, 784), {"SGD h=4": torch.zeros(2, 784)}, sigma=0.5,
                             noise="image-gaussian")
    assert "\n" in fig._suptitle.get_text()  # three images wide: the title takes two lines, not a cut one
    assert fig.axes[2].get_title().startswith("SGD h=4\n")


def test_help_examples_name_paths_the_readme_creates():
    """`runs/sgd/best.pt` exists after the README's sweep example; a bare `best.pt` only inside it."""
    out = cli("denoise", "--help", env={"COLUMNS": "200"}).stdout
    assert "fmae denoise --ckpt runs/sgd/best.pt" in out and " best.pt " not in out
    readme = (__import__("pathlib").Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "fmae sweep --optim sgd --lr 0.1 0.01 0.001 --hidden 64 128 256 512 --run-dir runs/sgd\n" in readme
    bare = [line for line in readme.splitlines() if "--ckpt best.pt" in line]
    assert bare and all(line.startswith("(cd runs/sgd && fmae denoise --ckpt best.pt") for line in bare)


def test_the_command_list_is_whole_at_80_columns():
    """`fmae --help` lists each command's one line whole on an 80-column terminal (click cut them with ...)."""
    import os

    from tests.helpers import cli

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        done = cli("--help")
    finally:
        if old is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = old
    assert done.exit_code == 0
    commands = done.stdout.split("Commands:")[1].strip().splitlines()
    assert [line.split()[0] for line in commands] == ["train", "sweep", "eval", "denoise", "plot", "export"]
    assert all("..." not in line and len(line) <= 80 for line in commands), commands
