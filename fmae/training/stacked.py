"""The stacked engine: cells of one shape train as one model, their parameters rows of one buffer.

Cells that share `stack_key` (hidden size, batch size, dropout, activation, precision) form a
stack, whatever their optimizer, learning rate, momentum, seed or training noise. A cell's four
parameters lie in its row of one flat [C, P] buffer (each parameter 64-byte aligned in its row, as
a tensor of its own is); the matmuls see them as [C, ...] views, the optimizers as rows. One step
of the stack is one `torch.baddbmm` per layer forward and the batched backward written out by hand
(the very kernels autograd runs for `baddbmm`, with no graph to build), so a step dispatches a
fixed number of operations, whatever C is: what a GPU, bound by launches at these sizes, needs.

Exact. On the CPU a cell in a stack equals the cell trained alone (fmae.training.cells) bit for
bit: the batched matmuls are the per-cell engine's matmuls batch by batch; each row's loss is its
own `torch.dot` (the per-cell loss's reduction); each optimizer steps its rows with torch's update
arithmetic (its fmae.optim spec's `stacked` rule: per-row hyper-parameters as tensors holding the float32 scalars
torch's kernels use); the epoch's train loss is accumulated as the per-cell engine does; the test
loss is one batched forward with each row's `mse_loss` sum, as fmae.evaluation.evaluate sums it.
Per cell, as fmae.training.contract requires: its own minibatch order (its data generator's
randperm; cells whose generators are in one state share one gather), its own dropout masks
(fmae.model.dropout_bits drawn from its own generator into its row: the per-cell engine's very
draw), its own noise generator and optimizer state. On a GPU, batched and plain cuBLAS matmuls may
round differently: there the promise is 1e-4 after 10 epochs (tests marked `device`).

SGD and Adam rows share a stack: rows are ordered by optimizer, and each optimizer steps its own
range of rows (so the report's grid is one stack per hidden size, not two).

Lean. Per step nothing is allocated that can be reused (the minibatch, the dropout bits, the loss's
difference and each row's view of them are static buffers), no host sync; per epoch one copy of
the minibatch orders to the device, one of Adam's per-step scalars, and one copy of every cell's
losses to the host. A cell's resume state is a snapshot of the stack's rows kept on the device
(`Snapshot`): it reaches the host only when it is saved. Cells that finish, stop early or diverge
leave the stack at the end of their epoch (their rows are dropped, their Autoencoder filled from
them); the others go on. A cell in a stack has no optimizer of its own: its rows' rule steps it.
`seconds` of an epoch: the stack's training time shared equally among its cells, plus its batched
evaluation shared alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fmae import optim
from fmae.config import TrainConfig
from fmae.data import FashionMNIST
from fmae.evaluation import EVAL_CHUNK, autocast, to_float
from fmae.model import Autoencoder, SeededDropout, dropout_bits, scaled_keep
from fmae.noise import add_noise
from fmae.status import Status
from fmae.training.cells import data_generator, seeded
from fmae.training.contract import (
    EpochMetrics,
    OnEpoch,
    Snapshot,
    TrainResult,
    final_status,
    mse,
    plain_state,
    stop_reason,
)
from fmae.training.layout import Buffers, Layout, compact_cpu


def stack_key(config: TrainConfig) -> tuple[Any, ...]:
    """Cells with equal keys train as one stack."""
    m = config.model
    return (m.hidden, config.batch_size, m.dropout, m.activation, config.precision)


class _Stack:
    """The running cells of one stack: their parameters, gradients and optimizer state as rows."""

    def __init__(self, members: list[tuple[int, _StackedCell, torch.Generator]], device: torch.device) -> None:
        members = sorted(members, key=lambda m: m[1].config.optim)  # rows of one optimizer together
        first = members[0][1]
        self.device, self.model, self.precision = device, first.config.model, first.config.precision
        self.layout = Layout([p.shape for p in first.model.parameters()])
        like = next(first.model.parameters())
        self.params = self.layout.flatten([list(c.model.parameters()) for _, c, _ in members], like)
        by_optimizer: dict[str, list[_StackedCell]] = {}
        for _, cell, _ in members:
            by_optimizer.setdefault(cell.config.optim, []).append(cell)
        self.optimizers: list[tuple[Any, int, int]] = []
        start = 0
        for name, rows in sorted(by_optimizer.items()):
            spec, end = optim.spec(name), start + len(rows)
            keys = {k for cell in rows for k in spec.state_keys(cell.config.momentum) if k != "step"}
            state = {key: self.layout.flatten([[cell.saved.get(i, {}).get(key, torch.zeros_like(p))
                                                for i, p in enumerate(cell.model.parameters())] for cell in rows],
                                              like) for key in keys}
            steps = [spec.steps_taken(cell.saved) for cell in rows]
            self.optimizers.append((spec.stacked([c.config.lr for c in rows], [c.config.momentum for c in rows],
                                                 state, steps, self.params[start:end]), start, end))
            start = end
        self.members = members
        self._compose()

    def _compose(self) -> None:
        """The views and buffers that depend on which rows the stack holds."""
        self.grads = torch.zeros_like(self.params)
        self.w1, self.b1, self.w2, self.b2 = self.layout.stacked(self.params)
        self.b1, self.b2 = self.b1.unsqueeze(1), self.b2.unsqueeze(1)
        self.w1t, self.w2t = self.w1.transpose(1, 2), self.w2.transpose(1, 2)
        gw1, gb1, gw2, gb2 = self.layout.stacked(self.grads)
        self.gw1t, self.gb1, self.gw2t, self.gb2 = gw1.transpose(1, 2), gb1.unsqueeze(1), gw2.transpose(1, 2), \
            gb2.unsqueeze(1)
        self.ranges = [(rule, self.params[a:b], self.grads[a:b]) for rule, a, b in self.optimizers]
        self._buffers: dict[tuple[int, bool], Buffers] = {}
        self.sums = torch.zeros(len(self.members), device=self.device)

    def buffers(self, batch: int, shared: bool) -> Buffers:
        key = (batch, shared)
        if key not in self._buffers:
            self._buffers[key] = Buffers(len(self.members), batch, self.model.hidden, self.device, shared)
        return self._buffers[key]

    def keep(self, rows: list[int]) -> None:
        """Only these rows (stack positions, ascending) go on; the others leave the stack."""
        if len(rows) == len(self.members):
            return
        self.members = [self.members[r] for r in rows]
        if not rows:
            return
        self.params = self.params.index_select(0, torch.tensor(rows, device=self.device))
        optimizers, start = [], 0
        for rule, a, b in self.optimizers:
            local = [r - a for r in rows if a <= r < b]
            if local:
                rule.keep(torch.tensor(local, device=self.device), local)
                optimizers.append((rule, start, start + len(local)))
                start += len(local)
        self.optimizers = optimizers
        self._compose()

    def orders(self, n: int) -> tuple[torch.Tensor, bool]:
        """This epoch's minibatch orders on the device: [n] when every cell draws the same (one
        gather serves them all), else [C, n]; each cell's generator ends in the state its own draw
        leaves (cells whose generators are in one state draw once)."""
        drawn: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (state before, order, state after)
        rows = []
        for _, _, rng in self.members:
            before = rng.get_state()
            same = next((d for d in drawn if torch.equal(d[0], before)), None)
            if same is None:
                order = torch.randperm(n, generator=rng)
                same = (before, order, rng.get_state())
                drawn.append(same)
            else:
                rng.set_state(same[2])
            rows.append(same[1])
        if len(drawn) == 1:
            return rows[0].to(self.device), True
        return torch.stack(rows).to(self.device), False

    # ------------------------------------------------------------------ one step

    def step(self, train: torch.Tensor, index: torch.Tensor, shared: bool, j: int) -> None:
        """One minibatch for every cell: forward, the loss (added to `sums`), backward, update."""
        cells = [cell for _, cell, _ in self.members]
        batch = index.shape[-1]
        buf = self.buffers(batch, shared)
        if shared:
            torch.index_select(train, 0, index, out=buf.x)
            x = buf.x_rows
        else:
            x = train[index]
        inp = x
        if any(c.config.noise is not None for c in cells):
            inp = torch.stack([x[k] if c.config.noise is None else
                               add_noise(x[k], c.config.noise.kind, c.config.noise.sigma, c.noise_rng)
                               for k, c in enumerate(cells)])
        low = self.precision == "bf16"
        cast = (lambda t: t.to(torch.bfloat16)) if low else (lambda t: t)  # autocast's casts, by hand
        w1t, w2t, w2 = cast(self.w1t), cast(self.w2t), cast(self.w2)
        inp_c = cast(inp)
        hidden = torch.relu(torch.baddbmm(cast(self.b1), inp_c, w1t))
        mask = None
        if round(self.model.dropout * SeededDropout.LEVELS):  # SeededDropout's test: p rounds to a nonzero level
            n = batch * self.model.hidden
            for row, c in zip(buf.bit_rows, cells):
                dropout_bits(n, self.device, c.dropout_rng, out=row)
            mask = scaled_keep(buf.lanes, self.model.dropout, hidden.dtype)  # the lanes: static views of the bits
            dropped = hidden * mask
        else:
            dropped = hidden
        z = torch.baddbmm(cast(self.b2), dropped, w2t)
        grad_z = self._loss(z, x, buf).to(z.dtype)
        # the backward of the two baddbmm, relu and dropout: the kernels autograd runs for them
        self._write(self.gb2, torch.sum, grad_z, 1, keepdim=True)
        self._write(self.gw2t, torch.bmm, dropped.transpose(1, 2), grad_z)
        grad_h = torch.bmm(grad_z, w2)
        if mask is not None:
            grad_h.mul_(mask)
        grad_h = torch.ops.aten.threshold_backward(grad_h, hidden, 0)
        self._write(self.gb1, torch.sum, grad_h, 1, keepdim=True)
        self._write(self.gw1t, torch.bmm, inp_c.transpose(1, 2), grad_h)
        for rule, params, grads in self.ranges:
            rule.step(params, grads, j)

    def _write(self, out: torch.Tensor, fn: Any, *args: Any, **kwargs: Any) -> None:
        """A gradient into its view of the fp32 gradient buffer; in bf16 made in bf16, then copied
        (what autocast's casts do in autograd)."""
        if self.precision == "bf16":
            out.copy_(fn(*args, **kwargs))
        else:
            fn(*args, **kwargs, out=out)

    def _loss(self, z: torch.Tensor, target: torch.Tensor, buf: Buffers) -> torch.Tensor:
        """Each row's loss added to `sums` (weighted by the batch, as the per-cell engine adds it);
        returns d(sum of the losses)/dz. fmae.training.contract's loss, row by row."""
        batch = z.shape[1]
        activation = self.model.activation
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            if activation in ("relu", "identity"):  # FusedOutputMSE, per row
                count = batch * z.shape[2]
                if activation == "relu":
                    torch.clamp_min(z, 0, out=buf.diff)  # torch.relu is clamp_min(0)
                else:
                    buf.diff.copy_(z)
                buf.diff.sub_(target)
                for row, out in zip(buf.diff_rows, buf.dot_rows):
                    torch.dot(row, row, out=out)
                self.sums.add_(buf.dots.div(count).mul_(batch))
                grad = buf.diff.mul_(2.0 / count)
                return torch.ops.aten.threshold_backward(grad, z, 0) if activation == "relu" else grad
            leaf = z.detach().requires_grad_()
            with torch.enable_grad():
                out = torch.sigmoid(leaf) if activation == "sigmoid" else leaf
                losses = torch.stack([mse(out[k], target[k]) for k in range(z.shape[0])])
                (grad,) = torch.autograd.grad(losses.sum(), leaf)
            self.sums.add_(losses.detach().mul(batch))
            return grad

    # ------------------------------------------------------------------ per epoch

    @torch.no_grad()
    def evaluate(self, test: torch.Tensor) -> torch.Tensor:
        """Each row's summed squared error over the test set [C] (double): one batched forward per
        chunk, each row's sum as fmae.evaluation.evaluate makes it."""
        rows = len(self.members)
        total = None
        for chunk in test.split(EVAL_CHUNK):
            x = chunk.expand(rows, *chunk.shape)
            with autocast(self.device, self.precision):
                hidden = torch.relu(torch.baddbmm(self.b1, x, self.w1t))
                z = torch.baddbmm(self.b2, hidden, self.w2t)
                out = torch.relu(z) if self.model.activation == "relu" else \
                    torch.sigmoid(z) if self.model.activation == "sigmoid" else z
            out = out.float()
            part = torch.stack([F.mse_loss(out[k], chunk, reduction="sum") for k in range(rows)]).double()
            total = part if total is None else total + part
        return total

    def snapshot(self) -> _Rows:
        """The stack's rows as they are now, copied on the device."""
        return _Rows(self.layout, self.params.clone(),
                     [(rule, a, b, rule.snapshot(), list(rule.steps)) for rule, a, b in self.optimizers])

    @torch.no_grad()
    def to_cells(self, rows: Sequence[int]) -> None:
        """Fill these rows' cells' own Autoencoder (when they leave the stack)."""
        now = _Rows(self.layout, self.params, [])
        for k in rows:
            cell = self.members[k][1]
            cell.model.load_state_dict(now.model_state(k, cell))


class _Rows:
    """A stack's rows at the end of an epoch (copies on the device), each cell's state made from
    its row only when asked: the stack may have lost rows meanwhile, the snapshot keeps its own."""

    def __init__(self, layout: Layout, params: torch.Tensor, groups: list[tuple[Any, int, int, dict, list[int]]]):
        self.layout, self.params, self.groups = layout, params, groups

    def model_state(self, k: int, cell: _StackedCell) -> dict[str, torch.Tensor]:
        """Row k as the contract's "model" (the Autoencoder's state_dict), on the CPU."""
        names = list(cell.model.state_dict().keys())
        return {name: compact_cpu(t) for name, t in zip(names, self.layout.split(self.params[k]))}

    def cell_state(self, k: int, cell: _StackedCell) -> dict[str, Any]:
        """Row k as the contract's "model" and "optimizer" (torch's layout), on the CPU."""
        model = self.model_state(k, cell)
        names = list(model)
        ((rule, a, states, steps),) = [(r, a, st, sp) for r, a, b, st, sp in self.groups if a <= k < b]
        per_param: dict[int, dict[str, torch.Tensor]] = {i: {} for i in range(len(names))}
        for key, value in rule.cell_state(states, k - a, steps[k - a], cell.config.momentum).items():
            parts = self.layout.split(value) if value.dim() else [value] * len(names)
            for i, part in enumerate(parts):
                per_param[i][key] = compact_cpu(part)
        return {"model": model,
                "optimizer": {"state": {i: st for i, st in per_param.items() if st},
                              "param_groups": [{**cell.group, "params": list(range(len(names)))}]}}


@dataclass
class _StackedCell:
    """A cell trained in a stack: the contract's seeded model and generators, no optimizer of its own
    (its rows' rule steps it); its resume state comes from the stack's snapshot of its epoch."""

    config: TrainConfig
    model: Autoencoder
    dropout_rng: torch.Generator
    noise_rng: torch.Generator
    history: list[EpochMetrics]
    group: dict[str, Any]  # its optimizer's param group, as its resume states carry it
    saved: dict[int, dict[str, Any]]  # the optimizer state it resumes from, by parameter ({}: a fresh start)
    status: Status = Status.RUNNING
    latest: Snapshot | None = None

    @classmethod
    def start(cls, config: TrainConfig, device: torch.device, resume: dict[str, Any] | None) -> _StackedCell:
        model, dropout_rng, noise_rng, history = seeded(config, device, resume)
        spec, saved = optim.spec(config.optim), None if resume is None else resume["optimizer"]
        group = spec.resumed_group(config.lr, config.momentum, saved, len(list(model.parameters())))
        return cls(config, model, dropout_rng, noise_rng, history, group, optim.state_by_position(saved))

    def snapshot(self, data_rng: torch.Generator) -> Snapshot:
        return self.latest

    def resume_state(self, data_rng: torch.Generator) -> dict[str, Any]:
        return dict(self.latest)


def _train_stack(stack: _Stack, data: FashionMNIST, device: torch.device, max_epochs: int | None,
                 on_epoch: OnEpoch | None) -> None:
    train, test = to_float(data.train_images.to(device)), to_float(data.test_images.to(device))
    n, batch = train.shape[0], stack.members[0][1].config.batch_size
    numel = data.test_images.numel()
    epochs_left = max_epochs if max_epochs is not None else math.inf
    while epochs_left > 0 and stack.members:
        epochs_left -= 1
        rows = len(stack.members)
        t0 = time.perf_counter()
        order, shared = stack.orders(n)
        steps = -(-n // batch)
        for rule, _, _ in stack.optimizers:
            rule.begin_epoch(steps)
        stack.sums.zero_()
        for j, start in enumerate(range(0, n, batch)):
            stack.step(train, order[..., start:start + batch], shared, j)
        test_sums = stack.evaluate(test)
        losses = torch.cat([stack.sums.double(), test_sums]).tolist()  # the epoch's one copy to the host
        snap = stack.snapshot()
        spent = (time.perf_counter() - t0) / rows
        going_on, leaving = [], []
        for k, (_, cell, data_rng) in enumerate(stack.members):
            metrics = EpochMetrics(epoch=len(cell.history) + 1, train_loss=losses[k] / n,
                                   test_loss=losses[rows + k] / max(1, numel), seconds=spent)
            cell.history.append(metrics)
            cell.status = stop_reason(cell.config, cell.history) or Status.RUNNING
            cell.latest = Snapshot(plain_state(cell.history, cell.status, data_rng, cell.dropout_rng, cell.noise_rng),
                                   lambda snap=snap, k=k, cell=cell: snap.cell_state(k, cell))
            (going_on if cell.status == Status.RUNNING else leaving).append(k)
        stack.to_cells(leaving if epochs_left > 0 else range(rows))
        for k in range(rows):
            index, cell, data_rng = stack.members[k]
            if on_epoch is not None:
                on_epoch(index, cell, cell.history[-1], data_rng)
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
    """Train the configs as stacks (one per `stack_key`, one stack after another); any optimizers,
    seeds, learning rates, momenta, noises and start epochs. Results in the order of `configs`."""
    resume = list(resume) if resume is not None else [None] * len(configs)
    cells = [_StackedCell.start(c, device, r) for c, r in zip(configs, resume)]
    data_rngs = [data_generator(c, r) for c, r in zip(configs, resume)]
    stacks: dict[tuple[Any, ...], list[tuple[int, _StackedCell, torch.Generator]]] = {}
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
