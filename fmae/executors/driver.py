"""The driver loop (`drive`): a sweep's tasks handed to a backend, every finished epoch to the
driver's writer, a cell's end saved as `fmae train` saves it. The same whatever backend runs the
tasks (fmae.executors.base.Backend), so the sweep directory and its numbers are too.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fmae import faults, manifest
from fmae.errors import FmaeError, out_of_memory
from fmae.executors.base import Backend, CellFailed, WorkerLost
from fmae.status import Status

EPOCHS_PER_TASK = 1  # in a worker: what a dead worker may cost; a task's overhead (model rebuilt from its state) is ~ms


def _pack_state(state: dict[str, Any] | None) -> bytes | None:
    """A resume state for a task: plain data only (last.pt as loaded carries its TrainConfig too)."""
    from fmae.executors.worker import pack

    return None if state is None else pack({k: v for k, v in state.items() if k != "config"})


def longest_first(groups: list[list[Any]], stop_at: int | None = None) -> list[list[Any]]:
    """Groups in order of their work left, largest first (stable): with several slots, the small
    cells then fill the gaps at the end instead of one large cell training alone while the other
    slots idle (on the report's grid in 2 slots, the last h=512 cell alone cost 4 s of 34).
    Work: hidden units x epochs left, summed over the group (an epoch's matmuls scale with h)."""
    def work(group: list[Any]) -> int:
        return sum(p.config.model.hidden * (min(p.config.epochs, stop_at or p.config.epochs) - p.start_epoch)
                   for p in group)

    return sorted(groups, key=work, reverse=True)


def drive(backend: Backend, groups: list[list[Any]], *, saver: Any, device: str, env: dict[str, Any],
          threads: int | None, max_retries: int, on_start: Callable[[Any], None],
          on_epoch: Callable[[Any, Any], None], on_cell: Callable[[Any, str], None],
          fail_fast: bool = False, stop_at: int | None = None, engine: str = "cells") -> None:
    """Run `groups` (lists of CellPlan trained together) through `backend`, every epoch to `saver`.

    A task whose worker died is run again from the last epoch the driver holds, up to `max_retries`
    times (Ray retries its own tasks and reports only what it gave up on). Ctrl-C and SIGTERM
    arrive here as KeyboardInterrupt and go on up: the sweep's Session stops the workers and its
    Saver writes the latest states. With `stop_at`, a cell that reaches that epoch unfinished is
    left so, its last.pt written (resumable). `engine`: the engine each task runs (stacked or
    cells). Returns once every write asked for is on disk.

    A cell that ends lets go of its resume state: nothing of it stays in memory but what its
    results row reads back from disk. Kept, each finished cell's few kB of small tensors pinned
    the C heap between the large buffers every later cell frees (evaluation's float copies of the
    test set), and glibc could return none of it: the driver grew by about the test set's size
    (~9 MB) per finished cell, to 8.9 GB at 1,000 tiny cells (issue 30).
    """
    from fmae import runs
    from fmae.executors.worker import Task, unpack
    from fmae.training.contract import history_of_state

    inline = backend.inline
    fault = faults.death() if not inline else None
    if backend.slots > 1:
        groups = longest_first(groups, stop_at)
    pending: deque[tuple[list[Any], int]] = deque((g, 0) for g in groups)
    running: dict[Any, tuple[list[Any], int]] = {}
    started: dict[str, float] = {}

    def fail(group: list[Any], exc: BaseException) -> None:
        """The cells of `group` failed (a cell's own files, or its whole task); the other cells, their
        stack-mates included, go on. The saver keeps a failed task's latest states (written on close)
        unless the failure was the cell's own files, which get nothing more."""
        exc = out_of_memory(exc, group[0].config) or exc
        for plan in group:
            if plan.error is None and not plan.done:
                plan.error, plan.resume = str(exc) or type(exc).__name__, None
                on_cell(plan, Status.FAILED)
        if fail_fast:
            raise exc if isinstance(exc, FmaeError) else CellFailed(str(exc)) from None

    def files_failed(plan: Any, exc: BaseException) -> None:
        saver.drop(plan.run)
        fail([plan], exc)

    def epoch_done(plan: Any, state: dict[str, Any]) -> None:
        if plan.error is not None:  # failed meanwhile (its files): its row trains on, unsaved
            return
        plan.resume = state
        try:
            metrics = saver.epoch(plan.run, plan.config, state)[-1]
        except (FmaeError, OSError) as exc:
            files_failed(plan, exc)
            return
        on_epoch(plan, metrics)

    def finish(plan: Any, status: str) -> None:
        state = plan.resume
        saver.finish(plan.run, plan.config, status, history_of_state(state), state["model"], env, device=device,
                     wall_seconds=time.perf_counter() - started[plan.name])
        plan.done, plan.resume = True, None  # only its results row stays (see the docstring)
        on_cell(plan, status)

    def start(plan: Any) -> None:
        started[plan.name] = time.perf_counter()
        if not plan.run.exists:
            plan.run.reset()
        manifest.remove_stale_temporaries(plan.run.path, runs.RUN_FILES)
        plan.run.write_config(plan.config, env)
        if plan.resume is not None:
            saver.resumed(plan.run, plan.config, plan.resume)  # last.pt is the truth: metrics.csv follows it
        else:
            saver.begin(plan.run, plan.config)  # the checkpoint clock starts with the run
        on_start(plan)

    while pending or running:
        while pending and len(running) < max(1, backend.slots):
            group, attempt = pending.popleft()
            for plan in group:
                if plan.name not in started:
                    try:
                        start(plan)
                    except (FmaeError, OSError) as exc:
                        files_failed(plan, exc)  # that cell alone: the rest of its group trains without it
            group = [p for p in group if p.error is None]
            if not group:
                continue
            first = group[0].start_epoch
            epochs = (None if stop_at is None else stop_at - first) if inline else EPOCHS_PER_TASK
            task = Task(tuple(p.name for p in group), tuple(p.config.to_dict() for p in group),
                        tuple(p.resume if inline else _pack_state(p.resume) for p in group), device, threads,
                        epochs, fault, engine, (env.get("machine") or {}).get("numerics", "default"))
            streamed = (lambda i, state, group=group: epoch_done(group[i], state)) if inline else None
            running[backend.submit(task, streamed)] = (group, attempt)
        for handle, outcome in backend.wait(list(running)):
            group, attempt = running.pop(handle)
            if isinstance(outcome, WorkerLost):
                if attempt < max_retries:
                    pending.appendleft((group, attempt + 1))
                    continue
                outcome = CellFailed(f"its worker died {attempt + 1} times ({outcome})", "see --max-retries")
            if isinstance(outcome, BaseException):
                fail(group, outcome)
                continue
            going_on = []
            for plan, report in zip(group, outcome):
                try:  # each cell on its own: a cell whose files fail fails alone
                    for blob in report["states"]:  # from a worker; the inline backend handed them over already
                        epoch_done(plan, unpack(blob))
                    if plan.error is not None:
                        continue
                    if report["status"] == Status.RUNNING and stop_at is not None and plan.start_epoch >= stop_at:
                        saver.checkpoint(plan.run)  # paused at a rung of successive halving: resumable from last.pt
                    elif report["status"] == Status.RUNNING:
                        going_on.append(plan)
                    else:
                        finish(plan, report["status"])
                except (FmaeError, OSError, RuntimeError) as exc:
                    files_failed(plan, exc)
            if going_on:
                pending.appendleft((going_on, 0))  # the same cells go on first: cells end one after another
    by_run = {p.run: p for g in groups for p in g}
    for run, exc in saver.failures().items():  # a last write that failed (a paused cell's last.pt): its cell alone
        if run in by_run:
            files_failed(by_run[run], exc)
