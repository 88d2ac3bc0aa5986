"""The stacked trainer: cells of one shape train as one model with parameters shaped [C, ...].

Cells that share `stack_key` (hidden size, batch size, dropout, activation, precision and
optimizer) form a stack, whatever their learning rate, momentum, seed or training noise. One
step of the stack is one `torch.baddbmm` per layer for all C cells; the summed loss gives each
cell exactly its own gradient (a cell's parameters meet no other cell's in any operation). Per
cell, as fmae.training.contract requires: its own minibatch order (its data generator's randperm,
gathered per cell into [C, B, 784]), its own dropout masks (fmae.model.dropout_bits drawn from
its own generator into its row: the per-cell engine's very draw), its own noise generator, its own
optimizer state and hyper-parameters as tensors (torch's SGD-with-momentum and Adam update rules,
per-cell lr and momentum). So a cell's masks and data order never depend on its stack-mates, and
its numbers equal those of the cell trained alone up to float summation order (matmul blocking).

One stack per optimizer (not SGD and Adam mixed in one stack): the simpler correct choice, since
a mixed stack would run both update rules over every cell and select; on a CPU it could not be
measured to pay, and on a GPU a report grid makes 2 stacks per hidden size either way.

Cells that finish, stop early or diverge leave the stack at the end of their epoch (their rows
are dropped); the others go on. Each epoch the stack's rows are copied into the cells' own
Autoencoder and optimizer, so evaluation, the collapse check, the resume state, model.pt and the
history are exactly the per-cell engine's code and layout: a stacked run resumes with either engine.
`seconds` of an epoch: the stack's training time shared equally among its cells, plus the cell's
own evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from fmae.config import TrainConfig
from fmae.data import FashionMNIST
from fmae.evaluation import autocast, evaluate, to_float
from fmae.model import dropout_bits, dropout_mask
from fmae.noise import add_noise
from fmae.status import Status
from fmae.training.cells import Cell, OnEpoch, data_generator, new_cell
from fmae.training.contract import EpochMetrics, TrainResult, final_status, output_loss, stop_reason

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # those of fmae.optim.Adam (torch.optim.Adam's defaults)


def stack_key(config: TrainConfig) -> tuple[Any, ...]:
    """Cells with equal keys train as one stack."""
    m = config.model
    return (m.hidden, config.batch_size, m.dropout, m.activation, config.precision, config.optim)


class _Stack:
    """The running cells of one stack: their parameters and optimizer state as [C, ...] tensors."""

    def __init__(self, members: list[tuple[int, Cell, torch.Generator]], device: torch.device) -> None:
        self.members = members
        self.device = device
        cells = [cell for _, cell, _ in members]
        first = cells[0].config
        self.optim, self.model = first.optim, first.model
        per_cell = [list(cell.model.parameters()) for cell in cells]
        self.params = [torch.stack([p[i].detach() for p in per_cell]).requires_grad_() for i in range(4)]
        lrs = torch.tensor([c.config.lr for c in cells], device=device)
        self.neg_lr = [(-lrs).view(-1, *[1] * (p.dim() - 1)) for p in self.params]
        if self.optim == "sgd":
            momenta = torch.tensor([c.config.momentum for c in cells], device=device)
            self.momentum = [momenta.view(-1, *[1] * (p.dim() - 1)) for p in self.params]
            self.uses_momentum = any(c.config.momentum for c in cells)
            self.buffers = [self._state_rows(cells, i, "momentum_buffer") for i in range(4)]
        else:
            self.exp_avg = [self._state_rows(cells, i, "exp_avg") for i in range(4)]
            self.exp_avg_sq = [self._state_rows(cells, i, "exp_avg_sq") for i in range(4)]
            self.steps = [int(c.optimizer.state[p[0]]["step"]) if p[0] in c.optimizer.state else 0
                          for c, p in zip(cells, per_cell)]

    def _state_rows(self, cells: list[Cell], i: int, key: str) -> torch.Tensor:
        rows = []
        for cell in cells:
            p = list(cell.model.parameters())[i]
            saved = cell.optimizer.state.get(p, {}).get(key)
            rows.append(torch.zeros_like(p) if saved is None else saved.detach().to(p.device, p.dtype))
        return torch.stack(rows)

    def keep(self, rows: list[int]) -> None:
        """Only these rows (stack positions) go on; the others leave the stack."""
        if len(rows) == len(self.members):
            return
        self.members = [self.members[r] for r in rows]
        if not rows:
            return
        idx = torch.tensor(rows, device=self.device)
        take = lambda ts: [t.detach().index_select(0, idx) for t in ts]  # noqa: E731
        self.params = [p.requires_grad_() for p in take(self.params)]
        self.neg_lr = take(self.neg_lr)
        if self.optim == "sgd":
            self.momentum, self.buffers = take(self.momentum), take(self.buffers)
            self.uses_momentum = any(cell.config.momentum for _, cell, _ in self.members)
        else:
            self.exp_avg, self.exp_avg_sq = take(self.exp_avg), take(self.exp_avg_sq)
            self.steps = [self.steps[r] for r in rows]

    def orders(self, n: int, device: torch.device) -> torch.Tensor:
        """Each cell's minibatch order of this epoch, [C, n]: its own generator's randperm (cells
        whose generators are in one state draw once, and all end in the state a draw leaves)."""
        drawn: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        rows = []
        for _, _, rng in self.members:
            key = bytes(rng.get_state().numpy())
            if key not in drawn:
                order = torch.randperm(n, generator=rng)
                drawn[key] = (order, rng.get_state())
            else:
                rng.set_state(drawn[key][1])
            rows.append(drawn[key][0])
        return torch.stack(rows).to(device)

    def losses(self, x: torch.Tensor) -> torch.Tensor:
        """The C cells' training losses of the minibatches x [C, B, 784] (clean: the targets)."""
        cells = [cell for _, cell, _ in self.members]
        inp = x
        if any(c.config.noise is not None for c in cells):
            inp = torch.stack([x[k] if c.config.noise is None else
                               add_noise(x[k], c.config.noise.kind, c.config.noise.sigma, c.noise_rng)
                               for k, c in enumerate(cells)])
        w1, b1, w2, b2 = self.params
        with autocast(self.device, cells[0].config.precision):
            hidden = torch.relu(torch.baddbmm(b1.unsqueeze(1), inp, w1.transpose(1, 2)))
            if round(self.model.dropout * (1 << 15)):  # SeededDropout's test: p rounds to a nonzero level
                n = hidden.shape[1] * hidden.shape[2]
                bits = torch.empty(len(cells), (n + 3) // 4, dtype=torch.int64, device=self.device)
                for k, c in enumerate(cells):
                    dropout_bits(n, self.device, c.dropout_rng, out=bits[k])
                hidden = hidden * dropout_mask(bits, hidden.shape, self.model.dropout, hidden.dtype)
            z = torch.baddbmm(b2.unsqueeze(1), hidden, w2.transpose(1, 2))
            return output_loss(self.model.activation, z, x, stacked=True)

    @torch.no_grad()
    def step(self) -> None:
        """One optimizer step of every cell: torch.optim's SGD (momentum, no dampening) or Adam."""
        if self.optim == "sgd":
            for p, neg_lr, momentum, buf in zip(self.params, self.neg_lr, self.momentum, self.buffers):
                if self.uses_momentum:  # momentum 0: the buffer is the gradient, as torch's update
                    buf.mul_(momentum).add_(p.grad)
                    p.addcmul_(buf, neg_lr)
                else:
                    p.addcmul_(p.grad, neg_lr)
                p.grad = None
            return
        beta1, beta2 = ADAM_BETAS
        self.steps = [s + 1 for s in self.steps]
        if len(set(self.steps)) == 1:  # the usual case: python scalars, in double as torch's own update
            bc1, bc2_sqrt = 1 - beta1 ** self.steps[0], math.sqrt(1 - beta2 ** self.steps[0])
        else:
            steps = torch.tensor(self.steps, dtype=torch.float64)
            bc1 = (1 - beta1 ** steps).float().to(self.device)
            bc2_sqrt = (1 - beta2 ** steps).sqrt().float().to(self.device)
        for p, neg_lr, m, v in zip(self.params, self.neg_lr, self.exp_avg, self.exp_avg_sq):
            shape = (-1, *[1] * (p.dim() - 1))
            g = p.grad
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            if isinstance(bc1, float):
                denom = (v.sqrt() / bc2_sqrt).add_(ADAM_EPS)
                p.addcmul_(m.div(denom), neg_lr / bc1)
            else:
                denom = (v.sqrt() / bc2_sqrt.view(shape)).add_(ADAM_EPS)
                p.addcmul_(m.div(denom), neg_lr / bc1.view(shape))
            p.grad = None

    @torch.no_grad()
    def to_cells(self) -> None:
        """Copy each cell's rows into its own Autoencoder and optimizer (the contract's layout)."""
        scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        for k, (_, cell, _) in enumerate(self.members):
            state = cell.optimizer.state
            for i, p in enumerate(cell.model.parameters()):
                p.copy_(self.params[i][k])
                if self.optim == "sgd":
                    if cell.config.momentum != 0:
                        state[p] = {"momentum_buffer": self.buffers[i][k].clone()}
                else:
                    state[p] = {"step": torch.tensor(float(self.steps[k]), dtype=scalar),
                                "exp_avg": self.exp_avg[i][k].clone(), "exp_avg_sq": self.exp_avg_sq[i][k].clone()}


def _train_stack(stack: _Stack, data: FashionMNIST, device: torch.device, max_epochs: int | None,
                 on_epoch: OnEpoch | None) -> None:
    train_x, test_x = data.train_images, data.test_images
    n, batch = train_x.shape[0], stack.members[0][1].config.batch_size
    epochs_left = max_epochs if max_epochs is not None else math.inf
    while epochs_left > 0 and stack.members:
        epochs_left -= 1
        orders = stack.orders(n, train_x.device)
        sums = torch.zeros(len(stack.members), device=device)
        spent = 0.0
        for start in range(0, n, batch):
            t0 = time.perf_counter()
            x = to_float(train_x[orders[:, start:start + batch]])
            losses = stack.losses(x)
            losses.sum().backward()
            stack.step()
            sums += losses.detach() * x.shape[1]
            spent += time.perf_counter() - t0
        stack.to_cells()
        totals = sums.tolist()
        going_on = []
        for k, (index, cell, data_rng) in enumerate(stack.members):
            t0 = time.perf_counter()
            test_loss = evaluate(cell.model, test_x, cell.config.precision)
            metrics = EpochMetrics(epoch=len(cell.history) + 1, train_loss=totals[k] / n, test_loss=test_loss,
                                   seconds=spent / len(stack.members) + time.perf_counter() - t0)
            cell.history.append(metrics)
            cell.status = stop_reason(cell.config, cell.history) or Status.RUNNING
            if on_epoch is not None:
                on_epoch(index, cell, metrics, data_rng)
            if cell.status == Status.RUNNING:
                going_on.append(k)
        stack.keep(going_on)


def train_stacked(
    configs: Sequence[TrainConfig],
    data: FashionMNIST,
    device: torch.device,
    *,
    resume: Sequence[dict[str, Any] | None] | None = None,
    on_epoch: OnEpoch | None = None,
    max_epochs: int | None = None,
) -> list[TrainResult]:
    """Train the configs as stacks (one per `stack_key`, one stack after another); any seeds,
    learning rates, momenta, noises and start epochs. Results in the order of `configs`."""
    resume = list(resume) if resume is not None else [None] * len(configs)
    cells = [new_cell(c, device, r) for c, r in zip(configs, resume)]
    data_rngs = [data_generator(c, r) for c, r in zip(configs, resume)]
    stacks: dict[tuple[Any, ...], list[tuple[int, Cell, torch.Generator]]] = {}
    for index, (cell, data_rng) in enumerate(zip(cells, data_rngs)):
        if cell.history:  # a resumed run may be finished already, or may go on to more epochs
            cell.status = stop_reason(cell.config, cell.history) or Status.RUNNING
        if cell.status == Status.RUNNING:
            stacks.setdefault(stack_key(cell.config), []).append((index, cell, data_rng))
    for members in stacks.values():
        _train_stack(_Stack(members, device), data, device, max_epochs, on_epoch)
    for cell in cells:
        cell.status = final_status(cell.status, cell.model, data.test_images, cell.config.precision)
    return [TrainResult(c.config, c.status, tuple(c.history), c.model) for c in cells]
