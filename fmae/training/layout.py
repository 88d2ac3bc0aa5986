"""The stacked engine's memory layout: where each of a cell's parameters lies in its row of the
stack's flat [C, P] buffer (`Layout`), and the static buffers one minibatch size reuses every step
(`Buffers`). fmae.training.stacked trains on them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fmae.config import INPUT_DIM

ALIGN = 16  # floats: each parameter starts 64-byte aligned in its row, as a tensor of its own does


class Layout:
    """Where each of a cell's parameters (in Autoencoder.parameters() order) lies in its row."""

    def __init__(self, shapes: Sequence[torch.Size]) -> None:
        self.shapes = [tuple(s) for s in shapes]
        self.spans: list[tuple[int, int]] = []
        offset = 0
        for shape in self.shapes:
            n = math.prod(shape)
            self.spans.append((offset, offset + n))
            offset += -(-n // ALIGN) * ALIGN
        self.size = offset

    def flatten(self, rows: Sequence[Sequence[torch.Tensor]], like: torch.Tensor) -> torch.Tensor:
        """[C, P] from each cell's tensors (the padding zero)."""
        flat = torch.zeros(len(rows), self.size, dtype=like.dtype, device=like.device)
        for k, tensors in enumerate(rows):
            for (a, b), t in zip(self.spans, tensors):
                flat[k, a:b].copy_(t.detach().reshape(-1))
        return flat

    def split(self, row: torch.Tensor) -> list[torch.Tensor]:
        """One row [P] as the cell's tensors (views)."""
        return [row[a:b].view(shape) for (a, b), shape in zip(self.spans, self.shapes)]

    def stacked(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """[C, P] as the C cells' parameters, each [C, *shape] (views): w1, b1, w2, b2."""
        return [flat[:, a:b].view(flat.shape[0], *shape) for (a, b), shape in zip(self.spans, self.shapes)]


def compact_cpu(t: torch.Tensor) -> torch.Tensor:
    """A copy on the CPU that owns just its elements (a view saved by torch.save drags its whole buffer)."""
    return t.detach().to("cpu", copy=True)


class Buffers:
    """The static buffers of one minibatch size: the batch, the dropout bits and masks' lanes, the
    loss's difference, and each row's view of them, made once and reused by every step."""

    def __init__(self, rows: int, batch: int, hidden: int, device: torch.device, shared: bool) -> None:
        self.x = torch.empty((batch, INPUT_DIM) if shared else (rows, batch, INPUT_DIM), device=device)
        self.x_rows = self.x.expand(rows, batch, INPUT_DIM)  # every row reads the one gathered batch
        n = batch * hidden
        self.bits = torch.empty(rows, (n + 3) // 4, dtype=torch.int64, device=device)
        self.bit_rows = list(self.bits.unbind(0))
        self.lanes = self.bits.view(torch.int16)[:, :n].view(rows, batch, hidden)
        self.diff = torch.empty(rows, batch, INPUT_DIM, device=device)
        self.diff_rows = [d.view(-1) for d in self.diff.unbind(0)]
        self.dots = torch.empty(rows, device=device)
        self.dot_rows = list(self.dots.unbind(0))
