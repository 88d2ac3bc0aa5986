"""Training: configs and data in, trained models and their per-epoch metrics out.

This room owns the choice of engine (the device is fmae.device's); the training wing
(fmae.training) owns the rest: its contract (fmae.training.contract: resume state, derived seeds,
stop rule, statuses, loss, collapse check) and its two implementations, the per-cell loop
(fmae.training.cells) and the stacked engine (fmae.training.stacked). `resolve_engine` is the one
place that chooses between them. Measuring a model is fmae.evaluation's. The engine never prints
and never writes files; progress flows out through callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fmae.config import TrainConfig, check_engine
from fmae.data import FashionMNIST
from fmae.training.cells import Cell, train_cells
from fmae.training.contract import Engine, EpochMetrics, OnEpoch, TrainResult
from fmae.training.stacked import train_stacked

BY_NAME: dict[str, Engine] = {"cells": train_cells, "stacked": train_stacked}  # by --engine name (ENGINES)


def resolve_engine(name: str, device: Any) -> str:
    """The engine `--engine name` means on `device`: auto is stacked on cuda and mps (where one
    small model cannot fill the device), cells on the CPU (bit for bit the per-cell loop)."""
    check_engine(name)
    if name != "auto":
        return name
    return "stacked" if getattr(device, "type", str(device)) in ("cuda", "mps") else "cells"


def train_many(
    configs: Sequence[TrainConfig],
    data: FashionMNIST,
    device: torch.device,
    *,
    resume: Sequence[dict[str, Any] | None] | None = None,
    on_epoch: OnEpoch | None = None,
    max_epochs: int | None = None,
    engine: str = "auto",
) -> list[TrainResult]:
    """Train several models together; results in the order of `configs`.

    engine "cells" (auto on the CPU): in lockstep over the same minibatches, so all configs must
    share seed and batch size, and resume states, if any, must be at the same epoch. engine
    "stacked" (auto on cuda and mps): any configs; those of one `stack_key` train as one stack.
    `on_epoch(index, cell, metrics, data_rng)` is called after each finished epoch of each model;
    `cell.resume_state(data_rng)` is what to save to resume. With `max_epochs`, stop after that
    many epochs: unfinished models come back with status RUNNING, and their last resume state
    continues them exactly (the sweep executors run a cell one epoch per task this way).
    """
    chosen = BY_NAME[resolve_engine(engine, device)]
    return chosen(configs, data, device, resume=resume, on_epoch=on_epoch, max_epochs=max_epochs)


def train(
    config: TrainConfig,
    data: FashionMNIST,
    device: torch.device,
    *,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[Cell, EpochMetrics, torch.Generator], None] | None = None,
    engine: str = "auto",
) -> TrainResult:
    """Train one model: the single-model face of `train_many`."""
    callback = None if on_epoch is None else (lambda _i, cell, m, rng: on_epoch(cell, m, rng))
    return train_many([config], data, device, resume=[resume], on_epoch=callback, engine=engine)[0]
