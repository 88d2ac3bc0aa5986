"""What a command's library call reports as it goes when all it reports is lines: the Progress
protocol, taken by `run_eval`, `run_denoise` and `run_plot` (fmae.cli.ui.Feedback draws it). A
training run and a sweep report epochs and cells too (fmae.train_run.TrainProgress,
fmae.sweeps.run.SweepProgress).
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    """A context manager, entered once the inputs are checked and left before the result is rendered."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...

    def message(self, text: str) -> None:
        """A line for the user (stderr): the data found, a step begun, a figure written."""
