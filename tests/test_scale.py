"""A sweep's size: memory that does not grow with the number of cells (issue 30)."""

from __future__ import annotations

import gc
import json

import pytest
import torch

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
