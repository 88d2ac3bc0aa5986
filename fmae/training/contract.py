"""The training contract: what every engine of fmae promises, written once.

fmae has two engines, the per-cell loop (fmae.training.cells: one model after another on each
minibatch) and the stacked engine (fmae.training.stacked: cells of one shape as one model with
parameters shaped [C, ...]). fmae.engine chooses between them (`--engine auto|stacked|cells`);
everything outside the training wing (runs, checkpoints, executors, eval, plot) sees cells only.
Both engines implement this contract:

Seeds. A cell's user seed s gives independent generators, `fmae.seeds.derive_seed(s, purpose)`: "init"
(the weights, drawn on the CPU), "data" (the minibatch order: one `torch.randperm` of the
training set per epoch, on the CPU), "dropout" (the dropout masks, on the training device,
drawn by fmae.model.dropout_mask) and "train-noise" (the noise of a denoising run, fmae.noise,
on the training device). A cell draws from its own generators only, so its data order, masks
and noise never depend on the cells it trains with.

The loss. Each minibatch's loss is the mean squared error between the output activation of the
logits and the clean image, computed in fp32 (`training_loss`; for relu and identity outputs the
fused form, whose gradient is made in the forward pass). A cell's train loss of an epoch is the
mean of its minibatch losses weighted by minibatch size; its test loss is
fmae.evaluation.evaluate over the test set in eval mode (no dropout), in the run's precision.

Statuses (fmae.status). RUNNING while a cell has epochs to go; after each epoch `stop_reason`
decides, in this order: DIVERGED (a non-finite train or test loss), STOPPED_EARLY (with patience
p > 0 and more than p epochs, the test loss fell by less than min_delta, relatively, over the last
p epochs), COMPLETED (epochs reached). A cell stopped by `max_epochs` stays RUNNING and is
resumable. When training ends, a COMPLETED or STOPPED_EARLY cell whose model gives every test
image the same output (fmae.evaluation.is_collapsed) becomes COLLAPSED. A sweep adds PRUNED
(successive halving), FAILED and INTERRUPTED; no engine sets those.

The resume state (last.pt holds it with the config), after each finished epoch of a cell:
    epoch      the number of finished epochs (== len(history))
    model      the state_dict of that cell's single Autoencoder (encoder.weight [h, 784],
               encoder.bias [h], decoder.weight [784, h], decoder.bias [784]), on the CPU
    optimizer  torch.optim's state_dict layout for that single model (fmae.optim): SGD keeps
               {"momentum_buffer"} per parameter when momentum > 0 (nothing otherwise), Adam
               {"step" (a CPU scalar tensor), "exp_avg", "exp_avg_sq"}; one param_group
    rng        {"data", "dropout", "noise"}: the states of the cell's three generators
    history    [[epoch, train_loss, test_loss, seconds], ...], one row per finished epoch
    status     as above, the plain string (str(Status))
It continues the cell exactly with either engine (on the CPU the stacked engine's numbers are
the per-cell engine's bit for bit): a run may resume with either engine.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from fmae.checkpoints import RESUME_KEYS, RNG_STREAMS
from fmae.config import TrainConfig
from fmae.data import FashionMNIST
from fmae.evaluation import is_collapsed
from fmae.model import Autoencoder
from fmae.status import RANKABLE, SET_BY_ENGINE, Status

STATUSES = SET_BY_ENGINE


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    test_loss: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    config: TrainConfig
    status: Status  # COMPLETED, STOPPED_EARLY, DIVERGED or COLLAPSED (RUNNING: stopped by max_epochs)
    history: tuple[EpochMetrics, ...]
    model: Autoencoder

    @property
    def epochs_run(self) -> int:
        return len(self.history)


# on_epoch(index, cell, metrics, data_rng): after each finished epoch of the config at `index`;
# cell.snapshot(data_rng) is its resume state (what to save)
OnEpoch = Callable[[int, Any, "EpochMetrics", torch.Generator], None]


class Engine(Protocol):
    """The one engine signature (fmae.training.cells.train_cells, fmae.training.stacked.train_stacked;
    fmae.engine.TRAINERS): train `configs` on `data`, from their resume states, calling `on_epoch`,
    at most `max_epochs` more epochs (unfinished cells come back RUNNING); results in their order."""

    def __call__(self, configs: Sequence[TrainConfig], data: FashionMNIST, device: torch.device, *,
                 resume: Sequence[dict[str, Any] | None] | None = None, on_epoch: OnEpoch | None = None,
                 max_epochs: int | None = None) -> list[TrainResult]: ...


class Snapshot(Mapping[str, Any]):
    """A cell's resume state at the end of an epoch, owned by its holder: training goes on without
    changing it. `plain` holds epoch, rng, history and status; `tensors()` makes "model" and
    "optimizer" on the CPU, once, on first use (from copies kept on the training device). So on a GPU
    a state crosses to the host only where it is saved (a checkpoint, written by the driver's
    writer thread) and a sweep whose checkpoint is not due copies nothing to the host."""

    def __init__(self, plain: dict[str, Any], tensors: Callable[[], dict[str, Any]]) -> None:
        self._plain, self._make = plain, tensors
        self._made: dict[str, Any] | None = None
        self._lock = threading.Lock()  # the driver and its writer thread may both ask first

    def _tensors(self) -> dict[str, Any]:
        with self._lock:
            if self._made is None:
                self._made, self._make = self._make(), None
            return self._made

    def __getitem__(self, key: str) -> Any:
        if key in self._plain:
            return self._plain[key]
        if key in RESUME_KEYS:
            return self._tensors()[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(RESUME_KEYS)

    def __len__(self) -> int:
        return len(RESUME_KEYS)


def plain_state(history: list[EpochMetrics], status: Status, *rngs: torch.Generator) -> dict[str, Any]:
    """A resume state's fields other than the tensors of "model" and "optimizer": the epoch, the
    generators' states (data, dropout, noise: RNG_STREAMS' order), the history and the status."""
    return {"epoch": len(history), "rng": {k: g.get_state() for k, g in zip(RNG_STREAMS, rngs, strict=True)},
            "history": history_rows(history), "status": str(status)}  # a plain string: torch loads no enum


def history_rows(history: list[EpochMetrics]) -> list[list[float]]:
    return [[m.epoch, m.train_loss, m.test_loss, m.seconds] for m in history]


def history_of_state(state: dict[str, Any]) -> list[EpochMetrics]:
    return [EpochMetrics(int(e), float(a), float(b), float(s)) for e, a, b, s in state["history"]]


def stop_reason(config: TrainConfig, history: list[EpochMetrics]) -> Status | None:
    """The status a cell takes after its last epoch in `history`, or None to go on."""
    last = history[-1]
    if not (math.isfinite(last.train_loss) and math.isfinite(last.test_loss)):
        return Status.DIVERGED
    patience = config.patience
    if patience and len(history) > patience:
        before = history[-1 - patience].test_loss
        if (before - last.test_loss) / before < config.min_delta:
            return Status.STOPPED_EARLY
    if len(history) >= config.epochs:
        return Status.COMPLETED
    return None


def final_status(status: Status, model: Autoencoder, test_images: torch.Tensor, precision: str) -> Status:
    """The collapse check when training ends: a ranked status becomes COLLAPSED for a constant model."""
    if status in RANKABLE and is_collapsed(model, test_images, precision):
        return Status.COLLAPSED
    return status


def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error; on CPU twice as fast as F.mse_loss at these shapes (measured)."""
    diff = out.float() - target
    return (diff * diff).mean()


class FusedOutputMSE(torch.autograd.Function):
    """MSE(activation(z), target) for a ReLU or identity output, with its gradient made in the forward pass.

    The loss is a scalar, so d loss / d z is known once z is: computing it here in a few in-place
    passes replaces the chain of autograd nodes (activation, subtraction, square, mean) and their
    temporaries. On CPU the output side is the largest cost after the matmuls at small h.
    With z and target shaped [C, B, 784] (`stacked=True`) it gives the C cells' losses, one each.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, target: torch.Tensor, relu: bool, stacked: bool = False) -> torch.Tensor:
        with torch.autocast(z.device.type, enabled=False):  # the loss is always computed in fp32
            z = z.float()
            diff = (torch.relu(z) if relu else z.clone()).sub_(target)
            if stacked:
                flat = diff.view(diff.shape[0], -1)
                count = flat.shape[1]
                loss = torch.linalg.vecdot(flat, flat) / count
            else:
                flat = diff.view(-1)
                count = flat.numel()
                loss = torch.dot(flat, flat) / count
            grad = diff.mul_(2.0 / count)
            if relu:
                grad = torch.ops.aten.threshold_backward(grad, z, 0)
        ctx.stacked = stacked
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        if ctx.stacked:
            grad_loss = grad_loss.view(-1, 1, 1)
        return grad * grad_loss, None, None, None


def output_loss(activation: str, z: torch.Tensor, target: torch.Tensor, stacked: bool = False) -> torch.Tensor:
    """The loss of logits `z` (one cell's [B, 784], or C cells' [C, B, 784] with `stacked`)."""
    if activation in ("relu", "identity"):
        return FusedOutputMSE.apply(z, target, activation == "relu", stacked)
    out = torch.sigmoid(z) if activation == "sigmoid" else z
    if not stacked:
        return mse(out, target)
    diff = out.float() - target
    return (diff * diff).mean(dim=(1, 2))


def training_loss(model: Autoencoder, inp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss of one minibatch: fused for ReLU and identity outputs, plain otherwise."""
    activation = model.config.activation
    if activation in ("relu", "identity"):
        return FusedOutputMSE.apply(model.logits(inp), target, activation == "relu", False)
    return mse(model(inp), target)
