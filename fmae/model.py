"""The autoencoder 784 -> h -> 784 of the report, with seeded initialisation and dropout."""

from __future__ import annotations

import math

import torch
from torch import nn

from fmae.config import INPUT_DIM, ModelConfig


class SeededDropout(nn.Module):
    """Inverted dropout drawing its masks from its own generator, so a seed fixes them.

    Speed: Bernoulli sampling costs one 32-bit draw per unit and was ~10% of a training step on
    CPU. One 64-bit draw gives four 15-bit lanes instead, so p is rounded to a multiple of
    1/32768 (0.1 becomes 0.100006) and the kept units are scaled by 1/(1 - that p): unbiased.
    """

    LEVELS = 1 << 15

    def __init__(self, p: float, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = p
        self.generator = generator
        self._threshold = round(p * self.LEVELS)
        self._scale = 1.0 / (1.0 - self._threshold / self.LEVELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self._threshold == 0:
            return x
        return x * dropout_mask(dropout_bits(x.numel(), x.device, self.generator), x.shape, self.p, x.dtype)


def dropout_bits(n: int, device: torch.device, generator: torch.Generator | None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """The random bits of one dropout mask of n units: (n + 3) // 4 int64 draws from `generator`
    (into `out`, a contiguous row of that many, when given: the same draw)."""
    if out is None:
        out = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    return out.random_(generator=generator)


def dropout_mask(bits: torch.Tensor, shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> torch.Tensor:
    """The scaled keep mask of `shape` from `bits` (the last dimension of `bits` holds one mask's
    draws; leading dimensions, if any, are separate masks: several cells' at once, each its own)."""
    n = math.prod(shape[len(bits.shape) - 1:])
    return scaled_keep(bits.view(torch.int16)[..., :n].reshape(shape), p, dtype)


def scaled_keep(lanes: torch.Tensor, p: float, dtype: torch.dtype) -> torch.Tensor:
    """The scaled keep mask from a mask's 16-bit lanes (overwritten): a lane's low 15 bits at or
    above p's level keep the unit, scaled by 1 / (1 - that level)."""
    levels = SeededDropout.LEVELS
    threshold = round(p * levels)
    return lanes.bitwise_and_(levels - 1).ge_(threshold).to(dtype).mul_(1.0 / (1.0 - threshold / levels))


_OUTPUT = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "identity": nn.Identity}


class Autoencoder(nn.Module):
    """Linear(784, h) -> ReLU -> Dropout(p) -> Linear(h, 784) -> output activation."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.Linear(INPUT_DIM, config.hidden)
        self.dropout = SeededDropout(config.dropout)
        self.decoder = nn.Linear(config.hidden, INPUT_DIM)
        self.output = _OUTPUT[config.activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.logits(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's output before the output activation (the engine fuses the two in training)."""
        return self.decoder(self.dropout(torch.relu(self.encoder(x))))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear initialisation, drawn from `generator` (CPU) for reproducibility."""
        for layer in (self.encoder, self.decoder):
            bound = 1.0 / math.sqrt(layer.in_features)
            for param in (layer.weight, layer.bias):
                values = torch.empty(param.shape).uniform_(-bound, bound, generator=generator)
                param.copy_(values)


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the model's weights, known without building it."""
    h = config.hidden
    return {"encoder.weight": (h, INPUT_DIM), "encoder.bias": (h,), "decoder.weight": (INPUT_DIM, h),
            "decoder.bias": (INPUT_DIM,)}


def build(config: ModelConfig, *, seed_generator: torch.Generator | None = None) -> Autoencoder:
    model = Autoencoder(config)
    if seed_generator is not None:
        model.reset_parameters(seed_generator)
    return model
