"""`--dry-run` of `fmae sweep` and `fmae train`: what would run, where and how, and how long it
would take, with nothing written in the run directory (no lock, no record, no repaired file).

The time is an estimate from a calibration measured on this machine: a few timed training steps
(forward, loss, backward, Adam step) of each hidden size and batch size on the device and threads
the cells would use, cached in the user's cache directory (calibration.json beside the dataset's
cache), times the epochs left of each cell (docs/sweeps.md#dry-run).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from fmae import numerics, runs
from fmae.config import SweepConfig, TrainConfig
from fmae.errors import FmaeError
from fmae.settings import SweepSettings, TrainSettings
from fmae.status import FINISHED, Status

TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000  # Fashion-MNIST's splits: an epoch's steps and its test pass
STEPS, WARMUP = 7, 3  # timed steps per calibration (their median), after these untimed ones
STATES = ("new", "finished", "resume", Status.PRUNED)  # a cell's state in a dry run, in this order


def calibration_path() -> Path:
    from fmae.data import user_cache_dir

    return user_cache_dir().parent / "calibration.json"


def _key(device: Any, threads: int, hidden: int, batch_size: int) -> str:
    """A calibration's key: the machine, torch, the device and threads, the kernels this process runs
    (the portable mode runs AVX2 kernels: slower on an AVX-512 CPU) and the step's shape."""
    import torch

    kernels = numerics.kernels()
    return f"{platform.node()}|{platform.machine()}|torch {torch.__version__}|{device}|threads {threads}|" \
           f"{kernels['torch_cpu_capability']} mkl {kernels['mkl_cbwr']}|h{hidden}|b{batch_size}"


def _enter(mode: str) -> None:
    """The dry run calibrates in the arithmetic the run would use: its numerics entered before torch
    loads. Where torch is loaded already (fmae called as a library), it calibrates in this process's
    arithmetic, which the calibration's key names."""
    try:
        numerics.enter(mode)
    except FmaeError:
        pass


def step_seconds(hidden: int, batch_size: int, device: Any, threads: int, cache: dict[str, float],
                 on_measure: Any = None) -> float:
    """Seconds of one training step of a `hidden` model on `batch_size` images, from `cache` or
    measured now (then added to `cache`)."""
    key = _key(device, threads, hidden, batch_size)
    if key in cache:
        return cache[key]
    import torch

    from fmae.config import ModelConfig
    from fmae.model import build

    if on_measure is not None:
        on_measure(hidden, batch_size)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build(ModelConfig(hidden=hidden)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.rand(batch_size, 784, device=device)
        timings = []
        for _ in range(WARMUP + STEPS):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), x).backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - started)
        seconds = sorted(timings[WARMUP:])[STEPS // 2]  # the median: one step slowed by a busy machine is not the rate
    finally:
        torch.set_num_threads(previous)
    cache[key] = seconds
    return seconds


def read_cache() -> dict[str, float]:
    try:
        doc = json.loads(calibration_path().read_text())
        return {k: float(v) for k, v in doc.get("step_seconds", {}).items()} if isinstance(doc, dict) else {}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def write_cache(cache: dict[str, float]) -> None:
    """The calibration kept for next time; a cache that cannot be written is only a slower next dry run."""
    from fmae import atomic

    try:
        calibration_path().parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(calibration_path(), {"schema_version": runs.SCHEMA_VERSION, "step_seconds": cache})
    except (OSError, FmaeError):
        pass


def epoch_seconds(config: TrainConfig, step: float) -> float:
    """One epoch of `config`: its training steps, and the test pass (a forward, about a third of a step)."""
    steps = -(-TRAIN_IMAGES // config.batch_size)
    return steps * step + -(-TEST_IMAGES // config.batch_size) * step / 3


def epoch_costs(configs: dict[str, TrainConfig], device: Any, threads: int) -> dict[str, float]:
    """Each cell's estimated seconds per epoch from the calibration cache (what --dry-run measured
    on this machine), measuring nothing: a cell whose shape was never calibrated costs in proportion
    to its step's FLOPs (hidden x batch size), scaled by the calibrated cells' seconds per FLOP (or
    left in those relative units when none is). The progress display's ETA weighs cells by these
    from the first epoch on (cells of a sweep differ ~8x in cost)."""
    cache = read_cache()
    known = {name: cache.get(_key(device, threads, c.model.hidden, c.batch_size)) for name, c in configs.items()}
    flops = {name: float(c.model.hidden * c.batch_size) for name, c in configs.items()}
    rates = [known[n] / flops[n] for n in configs if known[n]]
    per_flop = sum(rates) / len(rates) if rates else 1.0
    return {name: epoch_seconds(c, known[name] or flops[name] * per_flop) for name, c in configs.items()}


def _cell(config: TrainConfig, run: runs.RunDir, overwrite: bool) -> dict[str, Any]:
    """What a cell would do: its state, the epochs done and left (reading its files, writing none)."""
    from fmae.sweeps.directory import read_summary

    row: dict[str, Any] = {"name": run.path.name, "optim": config.optim, "lr": config.lr,
                           "hidden": config.model.hidden, "seed": config.seed, "state": "new", "epochs_done": 0,
                           "epochs_left": config.epochs}
    if overwrite or not run.exists:
        return row
    try:
        summary = read_summary(run) or {}
        status, trained = summary.get("status"), summary.get("epochs_run", 0)
        if status == Status.PRUNED:
            return {**row, "state": Status.PRUNED, "epochs_done": trained, "epochs_left": 0}
        if status in FINISHED and not (status == Status.COMPLETED and trained < config.epochs):
            return {**row, "state": "finished", "epochs_done": trained, "epochs_left": 0}
        done = int(run.load_last()["epoch"]) if run.file("last.pt").exists() else 0
    except FmaeError as exc:
        return {**row, "state": "new", "note": exc.message}
    return {**row, "state": "resume" if done else "new", "epochs_done": done, "epochs_left": config.epochs - done}


def estimate(rows: list[dict[str, Any]], configs: list[TrainConfig], device: Any, threads: int, parallel: int,
             progress: Any) -> dict[str, Any]:
    """Seconds per cell (in place) and in all, from the calibration (measured now where missing)."""
    cache = read_cache()
    known = set(cache)

    def measuring(hidden: int, batch_size: int) -> None:
        progress.message(f"calibrating: a few steps of hidden {hidden}, batch {batch_size} on {device}")

    for row, config in zip(rows, configs):
        step = step_seconds(config.model.hidden, config.batch_size, device, threads, cache, measuring)
        row["seconds"] = round(row["epochs_left"] * epoch_seconds(config, step), 1)
    if set(cache) != known:
        write_cache(cache)
    work = sum(r["seconds"] for r in rows)
    return {"seconds": round(work / max(1, min(parallel, sum(1 for r in rows if r["epochs_left"]))), 1),
            "cell_epochs_left": sum(r["epochs_left"] for r in rows), "calibration": str(calibration_path()),
            "calibrated_now": len(set(cache) - known)}


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {"total": len(rows), **{s: sum(1 for r in rows if r["state"] == s) for s in STATES}}


def plan_sweep(settings: SweepSettings, progress: Any) -> dict[str, Any]:
    """`fmae sweep --dry-run`: the cells of the (merged) grid by state, where and how they would run,
    and the time estimate. Reads the sweep directory (checked as a run would check it); writes
    nothing there."""
    mode = numerics.mode(settings.executor.reproducible)
    _enter(mode)
    from fmae import engine, executors
    from fmae.device import resolve_device
    from fmae.sweeps.directory import SweepDir

    where = SweepDir(settings.path)
    merged: SweepConfig = where.open(settings.grid, overwrite=settings.overwrite)
    options = settings.executor
    plan = executors.plan_for(options)
    device = resolve_device(plan.planned_device("cpu" if options.reproducible else settings.device))
    threads = plan.threads()
    configs = merged.cells()
    rows = [_cell(c, runs.RunDir(where.cells_dir / runs.cell_name(c)), settings.overwrite) for c in configs]
    parallel = plan.parallel
    how = {"device": str(device), "engine": engine.resolve_engine(options.engine, device),
           "executor": options.executor, "jobs": options.jobs, "threads": threads,
           "precision": merged.base.precision, "numerics": mode}
    if settings.pruning is not None:
        how["prune"] = {"method": "halving", "eta": settings.pruning.eta,
                        "rungs": list(settings.pruning.rungs(merged.base.epochs))}
    return {"schema_version": runs.SCHEMA_VERSION, "dry_run": True, "command": "sweep", "sweep_dir": str(where.path),
            "cells": _counts(rows), "how": how,
            "estimate": estimate(rows, configs, device, threads, parallel, progress), "plan": rows}


def plan_train(settings: TrainSettings, progress: Any) -> dict[str, Any]:
    """`fmae train --dry-run`: the run (new, finished, to resume), where and how, and the estimate."""
    _enter(settings.numerics)
    from fmae import engine
    from fmae.device import resolve_device
    from fmae.executors.base import cores

    config = settings.config
    run = runs.RunDir(settings.run_dir or Path("runs") / runs.cell_name(config))
    runs.check_text_path(run.path)
    device = resolve_device("cpu" if settings.reproducible else settings.device)
    threads = settings.threads or cores()
    if settings.resume and run.exists:
        config = run.resumed_config(config, settings.explicit)
    row = _cell(config, run, settings.overwrite)
    if run.exists and not (settings.resume or settings.overwrite):
        row["note"] = f"{run.path} already holds a run: the command would be refused (add --resume or --overwrite)"
    how = {"device": str(device), "engine": engine.resolve_engine(settings.engine, device), "threads": threads,
           "precision": config.precision, "numerics": settings.numerics}
    return {"schema_version": runs.SCHEMA_VERSION, "dry_run": True, "command": "train", "run_dir": str(run.path),
            "cells": _counts([row]), "how": how,
            "estimate": estimate([row], [config], device, threads, 1, progress), "plan": [row]}
