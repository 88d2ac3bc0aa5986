"""Executors: where a sweep's cells train. The driver (the `fmae sweep` process) is the only writer.

Every executor runs the same tasks (fmae.executors.worker: epochs of a cell, or of a group of
cells trained together) and hands each finished epoch's resume state to the driver; the driver
loop (fmae.executors.driver.drive) gives it to the driver's writer (fmae.saving: metrics.csv
every epoch, last.pt at most every --checkpoint-every seconds) and, when a cell ends, saves its
end-of-run files (runs.RunDir, the code `fmae train` uses). So the sweep directory, the resume
rules and the numbers are the same whatever ran the cells. The inline backend (--jobs 1) keeps a
group's models in memory for all its epochs, each finished epoch handed over as it happens; a
pool worker or a Ray task runs one epoch per task, so a worker that dies costs at most its epoch
in flight: its task is run again from the state the driver holds.

The pieces, as concurrent.futures lays them out: fmae.executors.base (the backend protocol, one
plan per executor kind, the shared errors), fmae.executors.driver (the loop), one module per
kind (fmae.executors.local: `LocalPlan`, the inline and pool backends; fmae.executors.ray_cluster:
`RayPlan`, the Ray backend). A sweep chooses its plan once (`plan_for`), opens one backend
(`Session`) and closes it once, after all its rungs.
"""

from __future__ import annotations

from typing import Any

from fmae.execution import ExecutorConfig
from fmae.executors.base import Backend, ExecutorPlan


def plan_for(options: ExecutorConfig) -> ExecutorPlan:
    """The plan of `options.executor` (a name of fmae.execution.EXECUTORS): the one place that reads
    which executor a sweep has."""
    if options.executor == "ray":
        from fmae.executors.ray_cluster import RayPlan

        return RayPlan(options)
    from fmae.executors.local import LocalPlan

    return LocalPlan(options)


class Session:
    """The executor of one sweep: its plan's backend made on first use (nothing starts when every
    cell is finished), kept for every rung of successive halving, closed once (as a context
    manager: also on failure and interrupt, which stop the workers)."""

    def __init__(self, plan: ExecutorPlan, dataset: Any, device: Any) -> None:
        self.plan = plan
        self._args = (dataset, device)
        self._backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = self.plan.open(*self._args)
        return self._backend

    def __enter__(self) -> Session:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close(interrupted=kind is not None)
