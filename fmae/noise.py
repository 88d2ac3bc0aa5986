"""Noise models for `fmae denoise` and denoising training: pure functions of a seeded generator.

All take float images in [0, 1] of shape [N, 784] and return a new tensor clipped to [0, 1], so
two checkpoints are compared on the very same noisy images when given the same generator state.
The kinds' names are config.NOISES.
"""

from __future__ import annotations

import torch


def image_gaussian(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The report's noise: eps ~ N(mu, s^2) per pixel, mu and s those of the image's own pixels."""
    mu = x.mean(dim=1, keepdim=True)
    s = x.std(dim=1, keepdim=True)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * s + mu
    return (x + sigma * eps).clamp_(0.0, 1.0)


def gaussian(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * eps).clamp_(0.0, 1.0)


def salt_pepper(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fraction sigma of the pixels set to 0 or 1 with equal odds."""
    u = torch.rand(x.shape, generator=generator, device=x.device)
    out = x.clone()
    out[u < sigma / 2] = 0.0
    out[(u >= sigma / 2) & (u < sigma)] = 1.0
    return out


def speckle(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * x * eps).clamp_(0.0, 1.0)


_MODELS = {"image-gaussian": image_gaussian, "gaussian": gaussian, "salt-pepper": salt_pepper, "speckle": speckle}


def add_noise(x: torch.Tensor, kind: str, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    return _MODELS[kind](x, sigma, generator)
