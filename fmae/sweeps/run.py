"""Running a sweep: `run_sweep` (settings in, the results document out) and its cells grouped into
tasks, handed to the sweep's executor, every epoch to the driver's writer. This module never
prints: progress flows through one SweepProgress object.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from fmae.config import ExecutorConfig, check_device
from fmae.errors import ConfigError, FmaeError
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

    def begin(self, total: int, finished: int, epochs: int) -> None:
        """The sweep's cells: `total` of them, `finished` already, each trained to `epochs`."""

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
    from fmae import data, executors, runs, saving
    from fmae.interrupts import interrupted
    from fmae.locks import lock_run_dir
    from fmae.sweeps import halving, results
    from fmae.trackers import export, open_trackers, require

    grid, options, pruning = settings.grid, settings.executor, settings.pruning
    where = SweepDir(settings.path)
    rungs = pruning.rungs(grid.base.epochs) if pruning is not None else ()
    pruned_how = None if pruning is None else {"method": "halving", "eta": pruning.eta, "rungs": list(rungs)}
    executors.start_early(options)
    device = cell_device(options, settings.device)
    require(settings.trackers)  # a missing package: one error, before anything is written
    started = time.perf_counter()
    with lock_run_dir(where.path), progress, open_trackers(settings.trackers, progress.message) as trackers:
        merged = where.open(grid, overwrite=settings.overwrite)
        dataset = data.find_and_load(settings.data_dir, download=settings.download, on_found=progress.message,
                                     device="cpu" if options.executor == "ray" else device)
        env = runs.environment(str(device), dataset.source, dataset.sha256, threads=cell_threads(options),
                               engine=cell_engine(options, device))
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
                         + f", on {device} ({grid.base.precision}, {_how(options, env['threads'])})")
        hint = executors.busy_hint("sweep") if len(todo) > held and (options.executor, options.jobs, options.threads) \
            == ("local", 1, None) else None  # nothing to train: no note about training slowly
        if hint:
            progress.message(hint)
        progress.begin(len(plans), len(plans) - len(todo), grid.base.epochs)

        try:  # one executor for the whole sweep (every rung), closed before the writer writes the latest states
            with saving.Saver(settings.checkpoint_every, trackers=trackers) as saver, \
                    executors.Session(options, dataset, device) as session:
                def pruned(plan: CellPlan) -> None:
                    halving.prune(plan, str(device))
                    saver.forget(plan.run)
                    progress.cell_ended(plan, Status.PRUNED)

                def train_to(subset: list[CellPlan], stop_at: int | None = None) -> None:
                    run(subset, session, saver, env, options, device=device, progress=progress,
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


def _how(options: ExecutorConfig, threads: int) -> str:
    """How the cells train, as the sweep's first line says it: `2 jobs x 1 thread`, `ray, ...`."""
    threads_each = f"{threads} thread{'s' if threads != 1 else ''}"
    if options.executor == "local" and options.jobs > 1:
        return f"{options.jobs} jobs x {threads_each}"
    return f"ray, {threads_each} per cell" if options.executor == "ray" else threads_each


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


def cell_device(options: ExecutorConfig, device: str) -> Any:
    """Where the cells train. On Ray (checked to be installed, before any data is read), the
    workers' device, which the driver need not have: cuda when --gpus-per-cell > 0, else cpu."""
    from fmae.device import resolve_device

    if options.executor != "ray":
        return resolve_device(device)
    check_device(device)
    from fmae.executors.ray_cluster import import_ray

    import_ray(options.address)
    import torch

    wanted = "cuda" if options.gpus_per_cell > 0 else "cpu"
    if device not in ("auto", wanted):
        raise ConfigError(f"--executor ray with --gpus-per-cell {options.gpus_per_cell:g} trains on {wanted}, "
                          f"not --device {device}", "leave --device auto; --gpus-per-cell > 0 means cuda")
    return torch.device(wanted)


def cell_engine(options: ExecutorConfig, device: Any) -> str:
    """The trainer the cells train with (stacked or cells; recorded in config.json's environment)."""
    from fmae import engine

    return engine.resolve_engine(options.engine, device)


def cell_threads(options: ExecutorConfig) -> int:
    """The torch threads each cell trains with (recorded in config.json: they change the float sums)."""
    from fmae import executors

    threads = options.worker_threads(executors.cores())
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return threads


def split(group: list[CellPlan], parts: int) -> list[list[CellPlan]]:
    """A group cut into `parts` near-equal groups (in order), none empty."""
    parts = max(1, min(parts, len(group)))
    size, extra = divmod(len(group), parts)
    cuts = [i * size + min(i, extra) for i in range(parts + 1)]
    return [group[a:b] for a, b in zip(cuts, cuts[1:])]


def run(plans: Sequence[CellPlan], session: Any, saver: Any, env: dict[str, Any], options: ExecutorConfig, *,
        device: Any, progress: SweepProgress, fail_fast: bool = False, stop_at: int | None = None) -> None:
    """Train the unfinished cells on the sweep's executor (`session`, an executors.Session opened
    once per sweep), every epoch to the driver's writer `saver` (fmae.saving).

    With the stacked engine (`options.engine`; auto: on cuda and mps) a task is a stack of cells
    (fmae.training.stacked.stack_key). With the per-cell engine, on a CPU every cell is a task of its own; on
    an accelerator same-seed cells train together (a task is a group). With Ray and
    --gpus-per-cell, each task asks for that many GPUs and the groups are cut so that there are as
    many tasks as the cluster runs at once. With `stop_at`, cells train up to that epoch and those
    not finished then stay unfinished (resumable), as successive halving needs between its rungs.
    """
    from fmae import executors

    trainer = cell_engine(options, device)
    for plan in plans:
        if plan.error is not None and not plan.done:  # refused while planning (say, a damaged last.pt)
            progress.cell_ended(plan, Status.FAILED)
            if fail_fast:
                raise FmaeError(plan.error)
    todo = groups([p for p in plans if stop_at is None or p.start_epoch < stop_at],
                  lockstep=getattr(device, "type", "cpu") != "cpu", stacked=trainer == "stacked")
    if not todo:
        return
    backend = session.backend
    if options.executor == "ray" and options.gpus_per_cell > 0:
        todo = [part for g in todo for part in split(g, backend.slots)]
    executors.drive(backend, todo, saver=saver, device=str(device), env=env, threads=cell_threads(options),
                    max_retries=options.max_retries, on_start=progress.cell_started, on_epoch=progress.cell_epoch,
                    on_cell=progress.cell_ended,
                    fail_fast=fail_fast, stop_at=stop_at, engine=trainer)
