"""The one way a command prints its result (ui.emit: JSON, else the render) and its epoch lines."""

import io
import json

import pytest
from rich.console import Console

from fmae.cli import ui
from fmae.training.contract import EpochMetrics


def test_emit_prints_the_document_as_json_and_never_renders(capsys):
    rendered = []
    ui.emit({"a": 1, "b": [None, 0.5]}, True, rendered.append)
    assert json.loads(capsys.readouterr().out) == {"a": 1, "b": [None, 0.5]} and rendered == []


def test_emit_renders_without_json(capsys):
    ui.emit({"a": 1}, False, lambda doc: ui.write_stdout(f"a is {doc['a']}\n"))
    assert capsys.readouterr().out == "a is 1\n"


def test_emit_refuses_what_json_cannot_hold(capsys):
    with pytest.raises(ValueError):
        ui.emit({"loss": float("nan")}, True, lambda doc: None)


def test_an_epoch_is_one_plain_line():
    out = io.StringIO()
    feedback = ui.Feedback(console=Console(file=out, width=200), mode="plain")
    feedback.epoch("cell", "sgd-lr0.1-h8-s0", EpochMetrics(2, 0.5, float("nan"), 1.234), 10)
    assert out.getvalue() == "sgd-lr0.1-h8-s0 epoch 2/10 train_loss=0.500000 test_loss=nan seconds=1.23\n"


def test_an_epoch_prints_nothing_when_quiet():
    out = io.StringIO()
    ui.Feedback(console=Console(file=out), mode="quiet").epoch("k", "label", EpochMetrics(1, 0.1, 0.1, 0.1), 1)
    assert out.getvalue() == ""



def test_the_sweep_bar_weighs_cells_by_their_cost_from_the_first_epoch():
    """Issue 31: the cells bar advances by each cell-epoch's estimated seconds, so one epoch of a
    cell 8x as costly moves it 8x as far (rich's ETA is right from the first epoch), says cells done
    of all, and drops what a cell that ends sooner no longer owes."""
    from types import SimpleNamespace

    from fmae.cli.ui import SweepFeedback

    feedback = SweepFeedback(quiet=True)
    feedback.begin(3, 1, 4, {"small": (1.0, 4), "big": (8.0, 4)})
    assert feedback._work_total == 36.0 and feedback._cells() == "1/3"
    small, big = SimpleNamespace(name="small", start_epoch=0, error=None), SimpleNamespace(name="big", start_epoch=0,
                                                                                           error=None)
    metrics = SimpleNamespace(epoch=1, train_loss=0.1, test_loss=0.1, seconds=1.0)
    feedback.cell_started(small), feedback.cell_started(big)
    feedback.cell_epoch(big, metrics)
    assert feedback._work_done == 8.0  # one epoch of the big cell: 8 of 36
    feedback.cell_epoch(small, metrics)
    assert feedback._work_done == 9.0
    feedback.cell_ended(small, "stopped_early")  # 3 epochs it will never train
    assert feedback._work_total == 33.0 and feedback._cells() == "2/3"
