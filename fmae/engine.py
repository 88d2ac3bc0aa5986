"""Training: configs and data in, trained models and their per-epoch metrics out.

This room owns the training loop (one model, or several in lockstep), its resume state, the
seeds derived from the user's, the device a command runs on, and early stopping. Measuring a
model is fmae.evaluation's. The engine never prints and never writes files; progress flows out
through callbacks. Models that share a seed and a batch size are
trained in lockstep: each minibatch is gathered and converted once, then fed to every model, so
a sweep pays for the data once. Each model keeps its own optimizer and dropout generator, so its
losses are exactly those it would have had trained alone.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fmae import optim
from fmae.checkpoints import to_cpu
from fmae.config import TrainConfig, check_device
from fmae.data import FashionMNIST
from fmae.errors import DeviceError
from fmae.evaluation import autocast, evaluate, is_collapsed, to_float
from fmae.stats import RANKABLE
from fmae.model import Autoencoder, build
from fmae.noise import add_noise



@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    test_loss: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    config: TrainConfig
    status: str  # completed | stopped_early | diverged | collapsed (running: stopped by max_epochs)
    history: tuple[EpochMetrics, ...]
    model: Autoencoder

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def derive_seed(seed: int, purpose: str) -> int:
    """Independent generator seeds for init, data order and dropout from one user seed."""
    digest = hashlib.sha256(f"fmae:{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device a command runs on: `name` checked (ConfigError), then found (DeviceError)."""
    check_device(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is available here", "use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("--device mps: no Apple MPS device is available here", "use --device cpu or auto")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process (None: leave torch's default, all cores)."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error; on CPU twice as fast as F.mse_loss at these shapes (measured)."""
    diff = out.float() - target
    return (diff * diff).mean()


class _FusedOutputMSE(torch.autograd.Function):
    """MSE(activation(z), target) for a ReLU or identity output, with its gradient made in the forward pass.

    The loss is a scalar, so d loss / d z is known once z is: computing it here in a few in-place
    passes replaces the chain of autograd nodes (activation, subtraction, square, mean) and their
    temporaries. On CPU the output side is the largest cost after the matmuls at small h.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, target: torch.Tensor, relu: bool) -> torch.Tensor:
        with torch.autocast(z.device.type, enabled=False):  # the loss is always computed in fp32
            z = z.float()
            diff = (torch.relu(z) if relu else z.clone()).sub_(target)
            flat = diff.view(-1)
            loss = torch.dot(flat, flat) / flat.numel()
            grad = diff.mul_(2.0 / flat.numel())
            if relu:
                grad = torch.ops.aten.threshold_backward(grad, z, 0)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        return grad * grad_loss, None, None


def training_loss(model: Autoencoder, inp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss of one minibatch: fused for ReLU and identity outputs, plain otherwise."""
    activation = model.config.activation
    if activation in ("relu", "identity"):
        return _FusedOutputMSE.apply(model.logits(inp), target, activation == "relu")
    return mse(model(inp), target)


@dataclass
class Cell:
    """One model in training: its config, module, optimizer, dropout generator and history."""

    config: TrainConfig
    model: Autoencoder
    optimizer: optim.SGD | optim.Adam  # torch.optim's kernels and state layout (fmae.optim says why)
    dropout_rng: torch.Generator
    noise_rng: torch.Generator
    history: list[EpochMetrics] = field(default_factory=list)
    status: str = "running"

    def resume_state(self, data_rng: torch.Generator) -> dict[str, Any]:
        """Everything needed to continue exactly where this epoch ended (tensors and plain data)."""
        return {
            "epoch": len(self.history),
            "model": to_cpu(self.model.state_dict()),
            "optimizer": to_cpu(self.optimizer.state_dict()),
            "rng": {"data": data_rng.get_state(), "dropout": self.dropout_rng.get_state(),
                    "noise": self.noise_rng.get_state()},
            "history": [[m.epoch, m.train_loss, m.test_loss, m.seconds] for m in self.history],
            "status": self.status,
        }


def _make_optimizer(config: TrainConfig, model: Autoencoder) -> optim.SGD | optim.Adam:
    if config.optim == "sgd":
        return optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)
    return optim.Adam(model.parameters(), lr=config.learning_rate)


def new_cell(config: TrainConfig, device: torch.device, resume: dict[str, Any] | None = None) -> Cell:
    init_rng = torch.Generator().manual_seed(derive_seed(config.seed, "init"))
    model = build(config.model, seed_generator=init_rng).to(device)
    dropout_rng = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "dropout"))
    model.dropout.generator = dropout_rng
    optimizer = _make_optimizer(config, model)
    noise_rng = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "train-noise"))
    cell = Cell(config, model, optimizer, dropout_rng, noise_rng)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        dropout_rng.set_state(resume["rng"]["dropout"])
        if "noise" in resume["rng"]:
            noise_rng.set_state(resume["rng"]["noise"])
        cell.history = [EpochMetrics(int(e), float(a), float(b), float(s)) for e, a, b, s in resume["history"]]
    return cell


def _stop_reason(cell: Cell) -> str | None:
    last = cell.history[-1]
    if not (math.isfinite(last.train_loss) and math.isfinite(last.test_loss)):
        return "diverged"
    patience = cell.config.patience
    if patience and len(cell.history) > patience:
        before = cell.history[-1 - patience].test_loss
        if (before - last.test_loss) / before < cell.config.min_delta:
            return "stopped_early"
    if len(cell.history) >= cell.config.epochs:
        return "completed"
    return None


OnEpoch = Callable[[int, Cell, EpochMetrics, torch.Generator], None]


def train_many(
    configs: Sequence[TrainConfig],
    data: FashionMNIST,
    device: torch.device,
    *,
    resume: Sequence[dict[str, Any] | None] | None = None,
    on_epoch: OnEpoch | None = None,
    max_epochs: int | None = None,
) -> list[TrainResult]:
    """Train several models in lockstep over the same minibatches.

    All configs must share seed and batch size (so they share the data order) and resume states,
    if any, must be at the same epoch. `on_epoch(index, cell, metrics, data_rng)` is called after
    each finished epoch of each model; `cell.resume_state(data_rng)` is what to save to resume.
    With `max_epochs`, stop after that many epochs: unfinished models come back with status
    "running", and their last resume state continues them exactly (the sweep executors run a
    cell one epoch per task this way).
    """
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
            cell.status = _stop_reason(cell) or "running"

    train_x, test_x = data.train_images, data.test_images
    n, batch = train_x.shape[0], first.batch_size
    epochs_left = max_epochs if max_epochs is not None else math.inf
    while epochs_left > 0 and any(c.status == "running" for c in cells):
        epochs_left -= 1
        active = [c for c in cells if c.status == "running"]
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
            cell.status = _stop_reason(cell) or "running"
            if on_epoch is not None:
                on_epoch(cells.index(cell), cell, metrics, data_rng)
    for cell in cells:
        if cell.status in RANKABLE and is_collapsed(cell.model, test_x, cell.config.precision):
            cell.status = "collapsed"
    return [TrainResult(c.config, c.status, tuple(c.history), c.model) for c in cells]


def train(
    config: TrainConfig,
    data: FashionMNIST,
    device: torch.device,
    *,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[Cell, EpochMetrics, torch.Generator], None] | None = None,
) -> TrainResult:
    """Train one model: the single-model face of `train_many`."""
    callback = None if on_epoch is None else (lambda _i, cell, m, rng: on_epoch(cell, m, rng))
    return train_many([config], data, device, resume=[resume], on_epoch=callback)[0]
