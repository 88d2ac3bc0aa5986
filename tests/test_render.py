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

