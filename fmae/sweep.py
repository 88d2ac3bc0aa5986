"""Sweeps: plan the cells of a grid, run them through an executor, collect the results.

A cell is a self-contained unit: a TrainConfig in, a training run directory out. The in-process
executor trains the cells that share a seed (hence the data order) in lockstep over the same
minibatches; another executor (say, Ray) could take the same cells without touching the engine
or the run-directory format. This module never prints: progress flows through callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmae import runs
from fmae.config import SweepConfig, TrainConfig
from fmae.errors import FmaeError, RunDirError, out_of_memory
from fmae.locks import LOCK_NAME

FINISHED = ("completed", "stopped_early", "diverged")
SWEEP_FILES = ("sweep.json", "results.csv", "results.json", "best.pt")
RESULT_FIELDS = ("rank", "optim", "lr", "hidden", "seed", "status", "epochs_run", "final_train_loss",
                 "final_test_loss", "best_test_loss", "best_epoch", "seconds", "model")


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
        if doc["shared"] != sweep.shared():
            old, new = doc["shared"], sweep.shared()
            diff = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k))
            raise RunDirError(f"{self.path} holds a sweep with other shared settings ({diff})",
                              "use --overwrite to start it anew, or choose another --run-dir")
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
                runs.unlink_quietly(self.path / name)
            cells = sorted(self.cells_dir.iterdir()) if self.cells_dir.is_dir() else []
            for cell in cells:
                if cell.is_dir() and (cell / "config.json").is_file():
                    runs.RunDir(cell).remove_files()
                    runs.unlink_quietly(cell / LOCK_NAME)  # nobody holds it: we hold the sweep's
                    _rmdir_quietly(cell)
            _rmdir_quietly(self.cells_dir)
        runs.remove_stale_temporaries(self.path, SWEEP_FILES)

    def write_grid(self, sweep: SweepConfig) -> None:
        runs.atomic_write_json(self.path / "sweep.json", {
            "schema_version": runs.SCHEMA_VERSION,
            "grid": {"optim": list(sweep.optims), "lr": list(sweep.lrs), "hidden": list(sweep.hiddens),
                     "seed": list(sweep.seeds)},
            "shared": sweep.shared(),
        })
        try:
            self.cells_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise runs.io_error(self.cells_dir, exc) from None

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
                elif run.saved_config().to_dict() != config.to_dict():
                    raise RunDirError(f"{run.path} holds a run with other settings")
                else:
                    summary = _read_summary(run)
                    plan.done = summary is not None and summary.get("status") in FINISHED
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


def _read_summary(run: runs.RunDir) -> dict[str, Any] | None:
    try:
        return runs.read_json(run.file("summary.json"))
    except RunDirError:
        return None


def groups(plans: Sequence[CellPlan], *, lockstep: bool = True) -> list[list[CellPlan]]:
    """Cells to train together: same seed and batch size (so the same minibatches), same epoch reached.

    Without lockstep every cell is its own group. On a 2-core CPU, lockstep measured 4% slower
    than one cell after another (each model's weights leave the cache between minibatches) and
    the shared batch conversion is too cheap to pay for that; on a GPU, where one model cannot
    fill the device, training cells together is what pays.
    """
    out: dict[tuple[int, int, int], list[CellPlan]] = {}
    for i, p in enumerate(plans):
        if not p.done and p.error is None:
            key = (p.config.seed, p.config.batch_size, p.start_epoch) if lockstep else (i, 0, 0)
            out.setdefault(key, []).append(p)
    return list(out.values())


OnEpoch = Callable[[CellPlan, Any], None]
OnCell = Callable[[CellPlan, str], None]


def run_in_process(plans: Sequence[CellPlan], dataset: Any, device: Any, env: dict[str, Any], *,
                   on_epoch: OnEpoch, on_cell: OnCell, fail_fast: bool = False) -> None:
    """The in-process executor: each group of cells trained in lockstep, its files written per epoch."""
    from fmae import engine

    for plan in plans:
        if plan.error is not None and not plan.done:  # refused while planning (say, a damaged last.pt)
            on_cell(plan, "failed")
            if fail_fast:
                raise FmaeError(plan.error)
    for group in groups(plans, lockstep=getattr(device, "type", "cpu") != "cpu"):
        for p in group:
            if not p.run.exists:
                p.run.reset()
            runs.remove_stale_temporaries(p.run.path, runs.RUN_FILES)
            p.run.write_config(p.config, env)
        started = time.perf_counter()

        def epoch_done(index: int, cell: Any, metrics: Any, data_rng: Any, group: list[CellPlan] = group) -> None:
            plan = group[index]
            plan.run.save_last(plan.config, cell.resume_state(data_rng))  # first: metrics never run ahead
            plan.run.write_metrics(cell.history)
            on_epoch(plan, metrics)

        try:
            results = engine.train_many([p.config for p in group], dataset, device,
                                        resume=[p.resume for p in group], on_epoch=epoch_done)
            for plan, result in zip(group, results):
                plan.run.write_metrics(result.history)  # a kill between last.pt and metrics.csv left it behind
                if result.status != "diverged":
                    plan.run.save_model(plan.config, result.model.state_dict(), result.history, result.status, env)
                plan.run.write_summary(runs.summarize(plan.config, result.status, result.history, run_dir=plan.run.path,
                                                      device=str(device), wall_seconds=time.perf_counter() - started))
                plan.done = True
                on_cell(plan, result.status)
        except (FmaeError, OSError, RuntimeError, MemoryError) as exc:
            oom = out_of_memory(exc, group[0].config)
            for plan in group:
                plan.error = str(oom or exc)
                on_cell(plan, "failed")
            if fail_fast:
                raise oom or exc


def results(sweep_dir: SweepDir, sweep: SweepConfig, plans: Sequence[CellPlan] = ()) -> list[dict[str, Any]]:
    """One row per cell of the (merged) grid, ranked by final test loss."""
    errors = {p.name: p.error for p in plans if p.error}
    rows = []
    for config in sweep.cells():
        config = config.resolved()
        run = runs.RunDir(sweep_dir.cells_dir / runs.cell_name(config))
        summary = _read_summary(run) if run.exists else None
        status = "failed" if run.path.name in errors else (summary or {}).get("status", "pending")
        model = run.file("model.pt")
        rows.append({
            "rank": None, "optim": config.optim, "lr": config.learning_rate, "hidden": config.model.hidden,
            "seed": config.seed, "status": status,
            "epochs_run": (summary or {}).get("epochs_run", _saved_epochs(run)),
            "final_train_loss": (summary or {}).get("final_train_loss"),
            "final_test_loss": (summary or {}).get("final_test_loss"),
            "best_test_loss": (summary or {}).get("best_test_loss"),
            "best_epoch": (summary or {}).get("best_epoch"),
            "seconds": (summary or {}).get("train_seconds"),
            "model": str(model) if status in ("completed", "stopped_early") and model.exists() else None,
            "error": errors.get(run.path.name),
        })
    _rank(rows)
    return rows


def _saved_epochs(run: runs.RunDir) -> int:
    """Epochs saved by a cell without a summary (interrupted, or killed): what a rerun resumes from."""
    try:
        return int(run.load_last()["epoch"]) if run.file("last.pt").exists() else 0
    except FmaeError:
        return 0


def _rank(rows: list[dict[str, Any]]) -> None:
    """Rank the rows with a model and a finite final test loss, best first; sort the list in place."""
    for row in rows:
        row["rank"] = None
    ranked = sorted((r for r in rows if r["model"] and runs.finite_or_none(r["final_test_loss"]) is not None),
                    key=lambda r: r["final_test_loss"])
    for i, row in enumerate(ranked, 1):
        row["rank"] = i
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0))


def best_per_optim(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["rank"] is not None and row["optim"] not in out:
            out[row["optim"]] = row
    return out


def write_results(sweep_dir: SweepDir, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """results.csv, results.json and best.pt (a copy of the best cell's model.pt); returns the best row.

    The best cell's model.pt must load safely before it is copied; one that does not fails its
    row (in place) and the next best is taken.
    """
    import csv
    import io

    best_bytes = None
    while rows and rows[0]["rank"] == 1:
        try:
            best_bytes = Path(rows[0]["model"]).read_bytes()
            runs.load_checkpoint(rows[0]["model"], "model", data=best_bytes)
            break
        except (OSError, FmaeError) as exc:
            best_bytes = None
            why = exc.message if isinstance(exc, FmaeError) else f"cannot read {rows[0]['model']}: {exc.strerror}"
            rows[0].update(status="failed", model=None, error=f"{why} (hint: to redo only this cell, remove "
                           f"{Path(rows[0]['model']).parent} and run the same fmae sweep command again)")
            _rank(rows)

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*RESULT_FIELDS, "error"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    runs.atomic_write_text(sweep_dir.path / "results.csv", out.getvalue())
    best = rows[0] if rows and rows[0]["rank"] == 1 else None
    runs.atomic_write_json(sweep_dir.path / "results.json", {"schema_version": runs.SCHEMA_VERSION, "cells": list(rows),
                                                           "best": best})
    if best is not None and best_bytes is not None:
        runs.atomic_write_bytes(sweep_dir.path / "best.pt", best_bytes)
    return best
