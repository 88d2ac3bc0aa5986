"""Running a sweep: `run_sweep` (settings in, the results document out) and its cells grouped into
tasks, handed to the sweep's executor, every epoch to the driver's writer. This module never
prints: progress flows through one SweepProgress object.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from fmae.errors import FmaeError
from fmae.execution import ExecutorConfig
from fmae.settings import SweepSettings
from fmae.status import Status
from fmae.sweeps.directory import CellPlan, SweepDir


class SweepProgress(Protocol):
    """What a sweep reports as it goes (fmae.cli.ui.SweepFeedback draws it). A context manager,
    entered once the sweep directory is locked and left before the results are rendered."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...

    def message(self, text: str) -> None:
        """A line for the user (stderr): the data found, the sweep's size, a hint."""

    def begin(self, total: int, finished: int, epochs: int, work: dict[str, tuple[float, int]]) -> None:
        """The sweep's cells: `total` of them, `finished` already, each trained to `epochs`; `work`:
        each unfinished cell's estimated seconds per epoch and epochs left (the ETA's weights)."""

    def cell_started(self, plan: CellPlan) -> None: ...

    def cell_epoch(self, plan: CellPlan, metrics: Any) -> None: ...

    def cell_ended(self, plan: CellPlan, status: str) -> None:
        """A cell finished, failed or was pruned (`plan.error` says why it failed)."""

    def paused(self, plans: Sequence[CellPlan]) -> None:
        """`plans` left training (at a rung of successive halving, or at the end)."""


def run_sweep(settings: SweepSettings, progress: SweepProgress) -> dict[str, Any]:
    """Run a whole sweep: lock and open its directory, plan its cells, train the unfinished ones on
    its executor (every rung of successive halving), write results.csv/json and best.pt; returns
    the results document (`fmae sweep --json`). Ctrl-C and SIGTERM write the results so far and
    raise Interrupted naming the command that resumes the sweep. With --dry-run, what it would do
    (fmae.sweeps.dry_run), nothing written."""
    if settings.dry_run:
        from fmae.sweeps.dry_run import plan_sweep

        return plan_sweep(settings, progress)
    from fmae import numerics

    mode = numerics.mode(settings.executor.reproducible)
    numerics.enter(mode)  # before torch loads, here and in every worker this process starts
    from fmae import data, executors, runs, saving
    from fmae.device import environment
    from fmae.interrupts import interrupted
    from fmae.locks import lock_run_dir
    from fmae.sweeps import dry_run, halving, results
    from fmae.trackers import export, open_trackers, require

    grid, options, pruning = settings.grid, settings.executor, settings.pruning
    where = SweepDir(settings.path)
    rungs = pruning.rungs(grid.base.epochs) if pruning is not None else ()
    pruned_how = None if pruning is None else {"method": "halving", "eta": pruning.eta, "rungs": list(rungs)}
    plan = executors.plan_for(options)  # the executor, chosen once
    plan.start_early()
    device = plan.device("cpu" if settings.executor.reproducible else settings.device)
    require(settings.trackers)  # a missing package: one error, before anything is written
    started = time.perf_counter()
    with lock_run_dir(where.path), progress, open_trackers(settings.trackers, progress.message) as trackers:
        merged = where.open(grid, overwrite=settings.overwrite)
        if not settings.overwrite:  # a sweep's cells share one kind of arithmetic: any trained cell tells
            for saved in sorted((where.path / "cells").glob("*/config.json"))[:1]:
                numerics.resumable(runs.RunDir(saved.parent).saved_environment(), mode, f"the sweep in {where.path}")
        dataset = data.find_and_load(settings.data_dir, download=settings.download, on_found=progress.message,
                                     device=plan.data_device(device))
        numerics.verify(mode)
        env = environment(str(device), dataset.source, dataset.sha256, threads=plan.threads(),
                          engine=cell_engine(options, device), numerics=mode)
        where.reset(settings.overwrite)
        where.write_grid(merged)
        runs.write_resolved_config(where.path, settings.resolved)
        export.begin_sweep(trackers, where.path)
        plans = where.plan(grid)
        export.log_cells(trackers, where.path, finished_only=True)  # the unfinished catch up as they resume
        todo = [p for p in plans if not p.done]
        held = sum(1 for p in todo if p.saved_status == Status.PRUNED)  # pruned at a rung: finished, though resumable
        progress.message(f"sweep {where.path}: {len(plans)} cell{'s' if len(plans) != 1 else ''}, "
                         f"{len(plans) - len(todo) + held} already finished" + (f" ({held} pruned)" if held else "")
                         + f", on {device} ({grid.base.precision}, {numerics.describe(mode)}"
                         f"{plan.describe(env['threads'])})")
        hint = plan.busy_note() if len(todo) > held else None  # nothing to train: no note about training slowly
        if hint:
            progress.message(hint)
        costs = dry_run.epoch_costs({p.name: p.config for p in todo}, device, env["threads"])
        progress.begin(len(plans), len(plans) - len(todo), grid.base.epochs,
                       {p.name: (costs[p.name], max(0, p.config.epochs - p.start_epoch)) for p in todo})

        try:  # one executor for the whole sweep (every rung), closed before the writer writes the latest states
            with saving.Saver(settings.checkpoint_every, trackers=trackers) as saver, \
                    executors.Session(plan, dataset, device) as session:
                def pruned(plan: CellPlan) -> None:
                    halving.prune(plan, str(device))
                    saver.forget(plan.run)
                    progress.cell_ended(plan, Status.PRUNED)

                def train_to(subset: list[CellPlan], stop_at: int | None = None) -> None:
                    run(subset, session, saver, env, device=device, progress=progress,
                        fail_fast=settings.fail_fast, stop_at=stop_at)
                    progress.paused(subset)

                if pruning is None:
                    train_to(plans)
                else:
                    halving.successive_halving(plans, rungs, pruning.eta, train_to, pruned)
        except KeyboardInterrupt as exc:
            rows = results.collect(where, merged, plans)
            best = results.write(where, rows, merged.base.epochs, pruned_how)
            saved = ("finished epochs are saved" if any(r["epochs_run"] for r in rows)
                     else "it was interrupted before any epoch finished")
            raise interrupted(exc, "sweep", saved, resume=settings.to_args(),
                              partial=results.document(where, rows, best, merged.base.epochs, pruned_how)) from None
        rows = results.collect(where, merged, plans)
        best = results.write(where, rows, merged.base.epochs, pruned_how)
        doc = results.document(where, rows, best, merged.base.epochs, pruned_how)
        export.end_sweep(trackers, where.path, doc)
    doc["wall_seconds"] = round(time.perf_counter() - started, 3)
    return doc


def groups(plans: Sequence[CellPlan], *, lockstep: bool = True, stacked: bool = False) -> list[list[CellPlan]]:
    """Cells to train together, each group one task.

    Stacked (the stacked engine): a stack, cells of one fmae.training.stacked.stack_key (hidden size, batch
    size, dropout, activation, precision, optimizer) at the same epoch, whatever their seeds.
    Lockstep (the per-cell engine on an accelerator): same seed and batch size (so the same
    minibatches), same epoch reached. Otherwise every cell is its own group: on a 2-core CPU,
    lockstep measured 4% slower than one cell after another (each model's weights leave the cache
    between minibatches) and the shared batch conversion is too cheap to pay for that; on a GPU,
    where one model cannot fill the device, training cells together is what pays.
    """
    from fmae.training.stacked import stack_key

    out: dict[tuple[Any, ...], list[CellPlan]] = {}
    for i, p in enumerate(plans):
        if not p.done and p.error is None:
            key = ((*stack_key(p.config), p.start_epoch) if stacked
                   else (p.config.seed, p.config.batch_size, p.start_epoch) if lockstep else (i, 0, 0))
            out.setdefault(key, []).append(p)
    return list(out.values())


def cell_engine(options: ExecutorConfig, device: Any) -> str:
    """The engine the cells train with (stacked or cells; recorded in config.json's environment)."""
    from fmae import engine

    return engine.resolve_engine(options.engine, device)


def run(plans: Sequence[CellPlan], session: Any, saver: Any, env: dict[str, Any], *, device: Any,
        progress: SweepProgress, fail_fast: bool = False, stop_at: int | None = None) -> None:
    """Train the unfinished cells on the sweep's executor (`session`, an executors.Session opened
    once per sweep with its plan), every epoch to the driver's writer `saver` (fmae.saving).

    With the stacked engine (`options.engine`; auto: on cuda and mps) a task is a stack of cells
    (fmae.training.stacked.stack_key). With the per-cell engine, on a CPU every cell is a task of its own; on
    an accelerator same-seed cells train together (a task is a group). The plan cuts the groups
    into tasks (Ray with --gpus-per-cell: as many as the cluster runs at once). With `stop_at`,
    cells train up to that epoch and those not finished then stay unfinished (resumable), as
    successive halving needs between its rungs.
    """
    from fmae.executors.driver import drive

    plan = session.plan
    options = plan.options
    engine_name = cell_engine(options, device)
    for cell in plans:
        if cell.error is not None and not cell.done:  # refused while planning (say, a damaged last.pt)
            progress.cell_ended(cell, Status.FAILED)
            if fail_fast:
                raise FmaeError(cell.error)
    todo = groups([p for p in plans if stop_at is None or p.start_epoch < stop_at],
                  lockstep=getattr(device, "type", "cpu") != "cpu", stacked=engine_name == "stacked")
    if not todo:
        return
    backend = session.backend
    drive(backend, plan.tasks(todo, backend), saver=saver, device=str(device), env=env, threads=plan.threads(),
          max_retries=options.max_retries, on_start=progress.cell_started, on_epoch=progress.cell_epoch,
          on_cell=progress.cell_ended, fail_fast=fail_fast, stop_at=stop_at, engine=engine_name)
