"""The per-cell engine: each model on its own, one after another on each minibatch.

Models that share a seed and a batch size may be trained in lockstep: each minibatch is gathered
and converted once, then fed to every model. A sweep groups cells so only on an accelerator
(fmae.sweeps.run.groups): there the data is paid for once per group; on a CPU lockstep measured
slower than one cell after another, so every cell is its own group and gathers its own. Each model keeps
its own optimizer and dropout generator, so its losses are exactly those it would have had
trained alone. It implements fmae.training.contract; this is the CPU's default engine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fmae import optim
from fmae.checkpoints import RESUME_KEYS, cloned, to_cpu
from fmae.config import TrainConfig
from fmae.data import FashionMNIST
from fmae.evaluation import autocast, evaluate, to_float
from fmae.model import Autoencoder, build
from fmae.noise import add_noise
from fmae.seeds import derive_seed
from fmae.status import Status
from fmae.training.contract import (
    EpochMetrics,
    OnEpoch,
    Snapshot,
    TrainResult,
    final_status,
    history_of_state,
    plain_state,
    stop_reason,
    training_loss,
)


@dataclass
class Cell:
    """One model in training: its config, module, optimizer, dropout generator and history."""

    config: TrainConfig
    model: Autoencoder
    optimizer: optim.Optimizer  # its spec's per-cell optimizer (fmae.optim)
    dropout_rng: torch.Generator
    noise_rng: torch.Generator
    history: list[EpochMetrics] = field(default_factory=list)
    status: Status = Status.RUNNING

    def resume_state(self, data_rng: torch.Generator) -> dict[str, Any]:
        """Everything needed to continue exactly where this epoch ended (the contract's resume state)."""
        state = {**plain_state(self.history, self.status, data_rng, self.dropout_rng, self.noise_rng),
                 "model": to_cpu(self.model.state_dict()), "optimizer": to_cpu(self.optimizer.state_dict())}
        return {key: state[key] for key in RESUME_KEYS}

    def snapshot(self, data_rng: torch.Generator) -> Snapshot:
        """This epoch's resume state as an owned copy, kept on the training device until it is saved."""
        model, optimizer = cloned(self.model.state_dict()), cloned(self.optimizer.state_dict())
        return Snapshot(plain_state(self.history, self.status, data_rng, self.dropout_rng, self.noise_rng),
                        lambda: {"model": to_cpu(model), "optimizer": to_cpu(optimizer)})




def seeded(config: TrainConfig, device: torch.device, resume: dict[str, Any] | None = None
           ) -> tuple[Autoencoder, torch.Generator, torch.Generator, list[EpochMetrics]]:
    """A cell's model, dropout and noise generators and history as the contract starts them (seeded)
    or as its resume state left them; its optimizer is the engine's."""
    init_rng = torch.Generator().manual_seed(derive_seed(config.seed, "init"))
    model = build(config.model, seed_generator=init_rng).to(device)
    dropout_rng = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "dropout"))
    model.dropout.generator = dropout_rng
    noise_rng = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "train-noise"))
    history: list[EpochMetrics] = []
    if resume is not None:
        model.load_state_dict(resume["model"])
        dropout_rng.set_state(resume["rng"]["dropout"])
        if "noise" in resume["rng"]:
            noise_rng.set_state(resume["rng"]["noise"])
        history = history_of_state(resume)
    return model, dropout_rng, noise_rng, history


def new_cell(config: TrainConfig, device: torch.device, resume: dict[str, Any] | None = None) -> Cell:
    """A cell as the contract starts it (seeded) or as its resume state left it, with its optimizer."""
    model, dropout_rng, noise_rng, history = seeded(config, device, resume)
    optimizer = optim.spec(config.optim).per_cell(model.parameters(), config.lr, config.momentum)
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
    return Cell(config, model, optimizer, dropout_rng, noise_rng, history)


def data_generator(config: TrainConfig, resume: dict[str, Any] | None) -> torch.Generator:
    """The cell's data-order generator (CPU), seeded or as its resume state left it."""
    data_rng = torch.Generator().manual_seed(derive_seed(config.seed, "data"))
    if resume is not None:
        data_rng.set_state(resume["rng"]["data"])
    return data_rng


def train_cells(
    configs: Sequence[TrainConfig],
    data: FashionMNIST,
    device: torch.device,
    *,
    resume: Sequence[dict[str, Any] | None] | None = None,
    on_epoch: OnEpoch | None = None,
    max_epochs: int | None = None,
) -> list[TrainResult]:
    """Train several models in lockstep over the same minibatches (fmae.engine.train_many says how)."""
    if not configs:
        return []
    first = configs[0]
    if any(c.seed != first.seed or c.batch_size != first.batch_size for c in configs):
        raise ValueError("train_many needs configs with one seed and one batch size")
    resume = list(resume) if resume is not None else [None] * len(configs)
    cells = [new_cell(c, device, r) for c, r in zip(configs, resume)]
    start = {len(c.history) for c in cells}
    if len(start) != 1:
        raise ValueError("train_many needs resume states at the same epoch")
    data_rng = torch.Generator().manual_seed(derive_seed(first.seed, "data"))
    for cell, state in zip(cells, resume):
        if state is not None:
            data_rng.set_state(state["rng"]["data"])
        if cell.history:  # a resumed run may be finished already, or may go on to more epochs
            cell.status = stop_reason(cell.config, cell.history) or Status.RUNNING

    train_x, test_x = data.train_images, data.test_images
    n, batch = train_x.shape[0], first.batch_size
    epochs_left = max_epochs if max_epochs is not None else math.inf
    while epochs_left > 0 and any(c.status == Status.RUNNING for c in cells):
        epochs_left -= 1
        active = [c for c in cells if c.status == Status.RUNNING]
        order = torch.randperm(n, generator=data_rng).to(train_x.device)
        losses = [torch.zeros((), device=device) for _ in active]
        spent = [0.0] * len(active)
        for model_cell in active:
            model_cell.model.train()
        for start_i in range(0, n, batch):
            x = to_float(train_x[order[start_i : start_i + batch]])
            for k, cell in enumerate(active):
                t0 = time.perf_counter()
                cell.optimizer.zero_grad(set_to_none=True)
                noise = cell.config.noise
                inp = x if noise is None else add_noise(x, noise.kind, noise.sigma, cell.noise_rng)
                with autocast(device, cell.config.precision):
                    loss = training_loss(cell.model, inp, x)
                loss.backward()
                cell.optimizer.step()
                losses[k] += loss.detach() * x.shape[0]
                spent[k] += time.perf_counter() - t0
        for k, cell in enumerate(active):
            t0 = time.perf_counter()
            test_loss = evaluate(cell.model, test_x, cell.config.precision)
            metrics = EpochMetrics(
                epoch=len(cell.history) + 1,
                train_loss=float(losses[k]) / n,
                test_loss=test_loss,
                seconds=spent[k] + time.perf_counter() - t0,
            )
            cell.history.append(metrics)
            cell.status = stop_reason(cell.config, cell.history) or Status.RUNNING
            if on_epoch is not None:
                on_epoch(cells.index(cell), cell, metrics, data_rng)
    for cell in cells:
        cell.status = final_status(cell.status, cell.model, test_x, cell.config.precision)
    return [TrainResult(c.config, c.status, tuple(c.history), c.model) for c in cells]
