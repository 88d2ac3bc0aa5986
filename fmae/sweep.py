"""Sweeps: plan the cells of a grid, run them through an executor, collect the results.

A cell is a self-contained unit: a TrainConfig in, a training run directory out. The in-process
executor trains the cells that share a seed (hence the data order) in lockstep over the same
minibatches; another executor (say, Ray) could take the same cells without touching the engine
or the run-directory format. This module never prints: progress flows through callbacks.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmae import runs, stats
from fmae.config import SweepConfig, TrainConfig
from fmae.errors import FmaeError, RunDirError
from fmae.stats import RANKABLE, WITH_MODEL

FINISHED = (*RANKABLE, "diverged", "collapsed")
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
        """Check an existing sweep directory against `sweep`; returns the grid to report on (the union)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory", "choose another --run-dir")
        if (self.path / "config.json").exists() and not overwrite:
            raise RunDirError(f"{self.path} holds a training run, not a sweep", "choose another --run-dir")
        doc_path = self.path / "sweep.json"
        if not doc_path.exists() or overwrite:
            return sweep
        doc = runs.read_json(doc_path)
        old, new = dict(doc.get("shared") or {}), sweep.shared()
        if isinstance(old.get("epochs"), int) and old["epochs"] < new["epochs"]:
            old["epochs"] = new["epochs"]  # more epochs: every cell trains on from its last.pt
        if old != new:
            diff = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k))
            raise RunDirError(f"{self.path} holds a sweep with other shared settings ({diff})",
                              "use --overwrite to start it anew, or choose another --run-dir"
                              + ("; --epochs may only grow" if "epochs" in diff else ""))
        grid = doc.get("grid", {})
        merge = lambda old, new: tuple(dict.fromkeys([*old, *new]))  # noqa: E731 - keeps order, drops repeats
        return SweepConfig(optims=merge(grid.get("optim", []), sweep.optims), lrs=merge(grid.get("lr", []), sweep.lrs),
                           hiddens=merge(grid.get("hidden", []), sweep.hiddens),
                           seeds=merge(grid.get("seed", []), sweep.seeds), base=sweep.base)

    def reset(self, overwrite: bool) -> None:
        if overwrite:
            for name in ("sweep.json", "results.csv", "results.json", "best.pt"):
                (self.path / name).unlink(missing_ok=True)
            shutil.rmtree(self.cells_dir, ignore_errors=True)
        try:
            self.cells_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create {self.cells_dir}: {exc.strerror}", "check the path and permissions") \
                from None

    def write_grid(self, sweep: SweepConfig) -> None:
        runs.atomic_write_json(self.path / "sweep.json", {
            "schema_version": runs.SCHEMA_VERSION,
            "grid": {"optim": list(sweep.optims), "lr": list(sweep.lrs), "hidden": list(sweep.hiddens),
                     "seed": list(sweep.seeds)},
            "shared": sweep.shared(),
        })

    def plan(self, sweep: SweepConfig) -> list[CellPlan]:
        """One plan per cell: finished cells are marked done, unfinished ones carry their resume state."""
        plans = []
        for config in sweep.cells():
            config = config.resolved()
            run = runs.RunDir(self.cells_dir / runs.cell_name(config))
            plan = CellPlan(config, run)
            if run.exists:
                saved = run.saved_config()
                if saved.to_dict() != dataclasses.replace(config, epochs=saved.epochs).to_dict():
                    raise RunDirError(f"{run.path} holds a run with other settings", "use --overwrite")
                summary = _read_summary(run) or {}
                status, trained = summary.get("status"), summary.get("epochs_run", 0)
                plan.done = status in FINISHED and not (status == "completed" and trained < config.epochs)
                if not plan.done and run.file("last.pt").exists():
                    plan.resume = run.load_last()
            plans.append(plan)
        return plans


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
        if not p.done:
            key = (p.config.seed, p.config.batch_size, p.start_epoch) if lockstep else (i, 0, 0)
            out.setdefault(key, []).append(p)
    return list(out.values())


OnEpoch = Callable[[CellPlan, Any], None]
OnCell = Callable[[CellPlan, str], None]


def run_in_process(plans: Sequence[CellPlan], dataset: Any, device: Any, env: dict[str, Any], *,
                   on_epoch: OnEpoch, on_cell: OnCell, fail_fast: bool = False, stop_at: int | None = None) -> None:
    """The in-process executor: each group of cells trained in lockstep, its files written per epoch.

    With `stop_at`, cells train up to that epoch at most and those not finished by then stay
    unfinished (resumable), as successive halving needs between its rungs.
    """
    from fmae import engine

    for group in groups([p for p in plans if stop_at is None or p.start_epoch < stop_at],
                        lockstep=getattr(device, "type", "cpu") != "cpu"):
        for p in group:
            if not p.run.exists:
                p.run.reset()
            runs.remove_stale_temporaries(p.run.path)
            p.run.write_config(p.config, env)
        started = time.perf_counter()

        def epoch_done(index: int, cell: Any, metrics: Any, data_rng: Any, group: list[CellPlan] = group) -> None:
            plan = group[index]
            plan.run.save_last(plan.config, cell.resume_state(data_rng))  # first: metrics never run ahead
            plan.run.write_metrics(cell.history)
            on_epoch(plan, metrics)

        try:
            results = engine.train_many([p.config for p in group], dataset, device, resume=[p.resume for p in group],
                                        on_epoch=epoch_done,
                                        max_epochs=None if stop_at is None else stop_at - group[0].start_epoch)
            for plan, result in zip(group, results):
                if result.status == "running":  # paused at `stop_at`
                    plan.resume = plan.run.load_last()
                    continue
                plan.run.write_metrics(result.history)  # a kill between last.pt and metrics.csv left it behind
                if result.status != "diverged":
                    plan.run.save_model(plan.config, result.model.state_dict(), result.history, result.status, env)
                plan.run.write_summary(runs.summarize(plan.config, result.status, result.history, run_dir=plan.run.path,
                                                      device=str(device), wall_seconds=time.perf_counter() - started))
                plan.done = True
                on_cell(plan, result.status)
        except (FmaeError, OSError, RuntimeError) as exc:
            for plan in group:
                plan.error = str(exc)
                on_cell(plan, "failed")
            if fail_fast:
                raise



def _losses(plan: CellPlan) -> list[float]:
    return [m["test_loss"] for m in plan.run.read_metrics()]


def successive_halving(plans: Sequence[CellPlan], rungs: Sequence[int], eta: int,
                       train_to: Callable[[list[CellPlan], int], None], on_pruned: Callable[[CellPlan], None]) -> None:
    """Train every cell to the first rung, promote the best 1/eta (by test loss at that epoch,
    ties broken by cell name) to the next, and so on; the cells left behind are pruned.

    `train_to(plans, epoch)` trains each plan up to `epoch` (any executor); `on_pruned(plan)` records
    a pruned cell, which keeps its files and resumes later like any unfinished cell. Decisions use
    the loss logged at each rung epoch, so a rerun makes the same ones, and a promoted cell trains
    on from its last.pt exactly as in a full sweep.
    """
    contenders = list(plans)
    for i, rung in enumerate(rungs):
        train_to([p for p in contenders if not p.done and not p.error], rung)
        if i == len(rungs) - 1:
            return
        at_rung = []
        for plan in contenders:
            losses = [] if plan.error else _losses(plan)
            lost = plan.done and (_read_summary(plan.run) or {}).get("status") in ("diverged", "collapsed")
            if len(losses) >= rung and runs.finite_or_none(losses[rung - 1]) is not None and not lost:
                at_rung.append((losses[rung - 1], plan.name, plan))
        ranked = [plan for _, _, plan in sorted(at_rung, key=lambda t: t[:2])]
        keep = max(1, len(contenders) // eta)
        for plan in ranked[keep:]:
            if not plan.done:
                on_pruned(plan)
        contenders = ranked[:keep]



def prune(plan: CellPlan, device: str) -> None:
    """Record a cell left behind by successive halving: status `pruned`, its files kept."""
    from fmae.engine import EpochMetrics

    history = [EpochMetrics(int(e), float(a), float(b), float(s)) for e, a, b, s in plan.resume["history"]]
    plan.run.write_summary(runs.summarize(plan.config, "pruned", history, run_dir=plan.run.path, device=device,
                                          wall_seconds=0.0))
    plan.done = True


def cell_epochs(rows: Sequence[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """The training budget: cell-epochs trained against the full grid's (every cell to --epochs)."""
    trained = sum(int(r["epochs_run"] or 0) for r in rows)
    full = len(rows) * epochs
    return {"trained": trained, "full_grid": full, "fraction": round(trained / full, 4) if full else None}


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
            "epochs_run": (summary or {}).get("epochs_run", 0),
            "final_train_loss": (summary or {}).get("final_train_loss"),
            "final_test_loss": (summary or {}).get("final_test_loss"),
            "best_test_loss": (summary or {}).get("best_test_loss"),
            "best_epoch": (summary or {}).get("best_epoch"),
            "seconds": (summary or {}).get("train_seconds"),
            "model": str(model) if status in WITH_MODEL and model.exists() else None,
            "error": errors.get(run.path.name),
        })
    ranked = sorted((r for r in rows if r["status"] in RANKABLE and r["model"]
                     and runs.finite_or_none(r["final_test_loss"]) is not None),
                    key=lambda r: r["final_test_loss"])
    for i, row in enumerate(ranked, 1):
        row["rank"] = i
    return sorted(rows, key=lambda r: (r["rank"] is None, r["rank"] or 0))


def best_per_optim(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The best-ranked row (a cell, or a group of seeds) of each optimizer."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["rank"] is not None and row["optim"] not in out:
            out[row["optim"]] = row
    return out


def seed_groups(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The cells grouped over seeds, when the grid has several seeds (else None: nothing to group)."""
    return stats.groups(rows) if stats.has_seeds(rows) else None


def _csv(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in row.items()})
    return out.getvalue()


def write_results(sweep_dir: SweepDir, rows: Sequence[dict[str, Any]], epochs: int) -> dict[str, Any] | None:
    """results.csv, results.json (with results_groups.csv when there are several seeds) and best.pt
    (a copy of the best cell's model.pt); returns the best row."""
    runs.atomic_write_text(sweep_dir.path / "results.csv", _csv(rows, [*RESULT_FIELDS, "error"]))
    best = rows[0] if rows and rows[0]["rank"] == 1 else None
    doc: dict[str, Any] = {"schema_version": runs.SCHEMA_VERSION, "cells": list(rows), "best": best,
                           "cell_epochs": cell_epochs(rows, epochs)}
    group_rows = seed_groups(rows)
    if group_rows is not None:
        runs.atomic_write_text(sweep_dir.path / "results_groups.csv", _csv(group_rows, stats.GROUP_FIELDS))
        doc["groups"] = group_rows
    runs.atomic_write_json(sweep_dir.path / "results.json", doc)
    if best is not None:
        runs.atomic_write_bytes(sweep_dir.path / "best.pt", Path(best["model"]).read_bytes())
    return best
