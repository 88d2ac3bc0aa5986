"""Sweeps: the sweep directory (checked, reset, planned into cells) and running its cells.

A cell is a self-contained unit: a TrainConfig (and its resume state) in, a training run
directory out. fmae.executors runs the cells (in this process, in a local process pool, or on
Ray) and the driver writes every file. Successive halving is fmae.halving's; the ranked results
and their files are fmae.results'. This module never prints: progress flows through callbacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmae import atomic, runs
from fmae.config import ExecutorConfig, SweepConfig, TrainConfig, check_device
from fmae.errors import ConfigError, FmaeError, RunDirError
from fmae.locks import LOCK_NAME
from fmae.stats import RANKABLE

FINISHED = (*RANKABLE, "diverged", "collapsed")
SWEEP_FILES = ("sweep.json", "results.csv", "results.json", "results_groups.csv", "best.pt")


@dataclass
class CellPlan:
    config: TrainConfig
    run: runs.RunDir
    resume: dict[str, Any] | None = None
    done: bool = False
    error: str | None = None

    @property
    def name(self) -> str:
        return self.run.path.name

    @property
    def start_epoch(self) -> int:
        return int(self.resume["epoch"]) if self.resume else 0


@dataclass
class SweepDir:
    path: Path
    cells_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cells_dir = self.path / "cells"

    def open(self, sweep: SweepConfig, *, overwrite: bool) -> SweepConfig:
        """Check an existing sweep directory against `sweep`; returns the grid to report on (the union).

        Changes nothing on disk. A directory holding files but neither a sweep nor a training run
        of fmae's is refused, with --overwrite too: fmae replaces only what it wrote.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory", "choose another --run-dir")
        doc_path = self.path / "sweep.json"
        if (self.path / "config.json").exists() and not doc_path.exists():
            if not overwrite:
                raise RunDirError(f"{self.path} holds a training run, not a sweep",
                                  "choose another --run-dir, or add --overwrite to replace the run with the sweep")
            runs.RunDir(self.path).saved_config()  # refuses a config.json that fmae did not write
            return sweep
        if not doc_path.exists():
            runs.refuse_foreign(self.path, SWEEP_FILES)
            return sweep
        doc = self._read_doc(doc_path)
        if overwrite:
            return sweep
        old, new = dict(doc["shared"]), sweep.shared()
        if isinstance(old.get("epochs"), int) and old["epochs"] < new["epochs"]:
            old["epochs"] = new["epochs"]  # more epochs: every cell trains on from its last.pt
        if old != new:
            diff = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k))
            raise RunDirError(f"{self.path} holds a sweep with other shared settings ({diff})",
                              "use --overwrite to start it anew, or choose another --run-dir"
                              + ("; --epochs may only grow" if "epochs" in diff else ""))
        grid = doc["grid"]
        merge = lambda old, new: tuple(dict.fromkeys([*old, *new]))  # noqa: E731 - keeps order, drops repeats
        return SweepConfig(optims=merge(grid.get("optim", []), sweep.optims), lrs=merge(grid.get("lr", []), sweep.lrs),
                           hiddens=merge(grid.get("hidden", []), sweep.hiddens),
                           seeds=merge(grid.get("seed", []), sweep.seeds), base=sweep.base)

    @staticmethod
    def _read_doc(path: Path) -> dict[str, Any]:
        doc = runs.read_json(path)
        grid = doc.get("grid") if isinstance(doc, dict) else None
        if not (isinstance(grid, dict) and isinstance(doc.get("shared"), dict)
                and all(isinstance(v, list) for v in grid.values())):
            raise RunDirError(f"{path}: not an fmae sweep file (expected grid lists and shared settings)",
                              "fmae did not write it, or it was edited: choose an empty or new directory")
        return doc

    def reset(self, overwrite: bool) -> None:
        """With --overwrite, remove what fmae wrote here before (a sweep's files and cells, or a
        training run's files); always, fmae's stale temporaries. Files of others are left alone."""
        if overwrite:
            runs.RunDir(self.path).remove_files()  # a training run that the sweep replaces
            for name in SWEEP_FILES:
                atomic.unlink_quietly(self.path / name)
            cells = sorted(self.cells_dir.iterdir()) if self.cells_dir.is_dir() else []
            for cell in cells:
                if cell.is_dir() and (cell / "config.json").is_file():
                    runs.RunDir(cell).remove_files()
                    atomic.unlink_quietly(cell / LOCK_NAME)  # nobody holds it: we hold the sweep's
                    _rmdir_quietly(cell)
            _rmdir_quietly(self.cells_dir)
        runs.remove_stale_temporaries(self.path, SWEEP_FILES)

    def write_grid(self, sweep: SweepConfig) -> None:
        atomic.write_json(self.path / "sweep.json", {
            "schema_version": runs.SCHEMA_VERSION,
            "grid": {"optim": list(sweep.optims), "lr": list(sweep.lrs), "hidden": list(sweep.hiddens),
                     "seed": list(sweep.seeds)},
            "shared": sweep.shared(),
        })
        try:
            self.cells_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise atomic.io_error(self.cells_dir, exc) from None

    def plan(self, sweep: SweepConfig) -> list[CellPlan]:
        """One plan per cell: finished cells are marked done, unfinished ones carry their resume state."""
        plans = []
        for config in sweep.cells():
            config = config.resolved()
            run = runs.RunDir(self.cells_dir / runs.cell_name(config))
            plan = CellPlan(config, run)
            try:
                if not run.exists:
                    runs.refuse_foreign(run.path, runs.RUN_FILES)
                else:
                    saved = run.saved_config()
                    if saved.to_dict() != dataclasses.replace(config, epochs=saved.epochs).to_dict():
                        raise RunDirError(f"{run.path} holds a run with other settings")
                    summary = read_summary(run) or {}
                    status, trained = summary.get("status"), summary.get("epochs_run", 0)
                    plan.done = status in FINISHED and not (status == "completed" and trained < config.epochs)
                    if not plan.done and run.file("last.pt").exists():
                        plan.resume = run.load_last()
            except FmaeError as exc:  # this cell fails; the others go on
                plan.error = f"{exc.message} (hint: to redo only this cell, remove {run.path} and run the same " \
                             "fmae sweep command again)"
            plans.append(plan)
        return plans


def _rmdir_quietly(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:  # it holds files fmae did not write: they stay
        pass


def read_summary(run: runs.RunDir) -> dict[str, Any] | None:
    try:
        return runs.read_json(run.file("summary.json"))
    except RunDirError:
        return None


def groups(plans: Sequence[CellPlan], *, lockstep: bool = True, stacked: bool = False) -> list[list[CellPlan]]:
    """Cells to train together, each group one task.

    Stacked (the stacked engine): a stack, cells of one fmae.engine.stack_key (hidden size, batch
    size, dropout, activation, precision, optimizer) at the same epoch, whatever their seeds.
    Lockstep (the per-cell engine on an accelerator): same seed and batch size (so the same
    minibatches), same epoch reached. Otherwise every cell is its own group: on a 2-core CPU,
    lockstep measured 4% slower than one cell after another (each model's weights leave the cache
    between minibatches) and the shared batch conversion is too cheap to pay for that; on a GPU,
    where one model cannot fill the device, training cells together is what pays.
    """
    from fmae.engine import stack_key

    out: dict[tuple[Any, ...], list[CellPlan]] = {}
    for i, p in enumerate(plans):
        if not p.done and p.error is None:
            key = ((*stack_key(p.config), p.start_epoch) if stacked
                   else (p.config.seed, p.config.batch_size, p.start_epoch) if lockstep else (i, 0, 0))
            out.setdefault(key, []).append(p)
    return list(out.values())


OnEpoch = Callable[[CellPlan, Any], None]
OnCell = Callable[[CellPlan, str], None]


def cell_device(options: ExecutorConfig, device: str) -> Any:
    """Where the cells train. On Ray (checked to be installed, before any data is read), the
    workers' device, which the driver need not have: cuda when --gpus-per-cell > 0, else cpu."""
    from fmae import engine

    if options.executor != "ray":
        return engine.resolve_device(device)
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
        device: Any, on_start: Callable[[CellPlan], None], on_epoch: OnEpoch, on_cell: OnCell,
        fail_fast: bool = False, stop_at: int | None = None) -> None:
    """Train the unfinished cells on the sweep's executor (`session`, an executors.Session opened
    once per sweep), every epoch to the driver's writer `saver` (fmae.saving).

    With the stacked engine (`options.engine`; auto: on cuda and mps) a task is a stack of cells
    (fmae.engine.stack_key). With the per-cell engine, on a CPU every cell is a task of its own; on
    an accelerator same-seed cells train together (a task is a group). With Ray and
    --gpus-per-cell, each task asks for that many GPUs and the groups are cut so that there are as
    many tasks as the cluster runs at once. With `stop_at`, cells train up to that epoch and those
    not finished then stay unfinished (resumable), as successive halving needs between its rungs.
    """
    from fmae import executors

    trainer = cell_engine(options, device)
    for plan in plans:
        if plan.error is not None and not plan.done:  # refused while planning (say, a damaged last.pt)
            on_cell(plan, "failed")
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
                    max_retries=options.max_retries, on_start=on_start, on_epoch=on_epoch, on_cell=on_cell,
                    fail_fast=fail_fast, stop_at=stop_at, engine=trainer)
