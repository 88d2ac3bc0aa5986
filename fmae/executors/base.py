"""What every executor is, as code: the backend protocol (`Backend`), one plan per executor kind
(`ExecutorPlan`), the errors the driver loop knows (`WorkerLost`, `CellFailed`), and the machine's
cores and load, which the plans and `fmae train` size threads by. Imports no torch and no backend.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

from fmae import faults
from fmae.errors import FmaeError
from fmae.execution import ExecutorConfig


class WorkerLost(Exception):
    """The process running a task died (killed, out of memory): the task may be run again."""


class CellFailed(FmaeError):
    """A cell's task raised or its worker died more often than --max-retries allowed."""


class Backend(Protocol):
    """What runs tasks (fmae.executors.worker.Task: epochs of a cell, or of cells trained together)."""

    inline: bool  # True: a task runs in the driver and hands each finished epoch to `on_state` as it ends
    slots: int  # tasks worth keeping in flight

    def submit(self, task: Any, on_state: Callable[[int, dict[str, Any]], None] | None) -> Any:
        """Start `task`; its handle. `on_state(index, state)` is called by an inline backend only."""

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any]]:
        """At least one finished task of `handles`: (handle, its per-cell reports, an exception or
        WorkerLost)."""

    def close(self, *, interrupted: bool) -> None:
        """Stop: with `interrupted`, whatever is in flight is stopped too."""


class ExecutorPlan(ABC):
    """One executor kind as a sweep uses it, chosen once (fmae.executors.plan_for): where its cells
    train, with how many threads, how the sweep's first line says so, how its tasks are cut, and the
    backend it opens. fmae.sweeps never asks which executor it has."""

    def __init__(self, options: ExecutorConfig) -> None:
        self.options = options

    def start_early(self) -> None:
        """Called before the driver imports torch and reads the dataset: checks and start-up work
        that may run meanwhile."""
        return None  # nothing to check or start, unless the kind says so

    @abstractmethod
    def device(self, requested: str) -> Any:
        """The torch device the cells train on, for --device `requested`."""

    def data_device(self, device: Any) -> Any:
        """Where the driver loads the dataset for cells that train on `device`."""
        return device

    def planned_device(self, requested: str) -> str:
        """The --device a dry run resolves to estimate on (it checks nothing of the backend)."""
        return requested

    @property
    def parallel(self) -> int:
        """Tasks that train at once, as a dry run's estimate counts them."""
        return 1

    def threads(self) -> int:
        """The torch threads each cell trains with (recorded in config.json: they change the float sums)."""
        threads = self.options.worker_threads(cores())
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        return threads

    @abstractmethod
    def describe(self, threads: int) -> str:
        """How the cells train, as the sweep's first line says it: `2 jobs x 1 thread`, `ray, ...`."""

    def busy_note(self) -> str | None:
        """A note for a busy machine, where this executor's threads would fight other work."""
        return None

    def tasks(self, groups: list[list[Any]], backend: Backend) -> list[list[Any]]:
        """The groups of cells cut into tasks for `backend`."""
        return groups

    @abstractmethod
    def open(self, dataset: Any, device: Any) -> Backend:
        """The backend of one sweep (fmae.executors.Session opens it on first use)."""


def threads_each(threads: int) -> str:
    return f"{threads} thread{'s' if threads != 1 else ''}"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The machine's load over the last minute (None where the system does not say)."""
    try:
        test = faults.load()
        return test if test is not None else os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def busy_hint(command: str) -> str | None:
    """A note when the machine is busy at start (load above the usable cores): all cores' worth of
    torch threads then fight the other work, and fewer threads per model finish sooner (measured:
    a 12-cell sweep at load 3 on 2 cores, --jobs 1 85.6 s, --jobs 2 38.2 s)."""
    load, n = load_average(), cores()
    if load is None or load <= n:
        return None
    busy = f"note: this machine is busy (load {load:.1f} on {n} core{'s' if n != 1 else ''})"
    if command == "train":
        return f"{busy}: --threads 1 may train faster"
    return f"{busy}: --jobs {max(2, n)} (one thread per cell) may finish sooner"
