"""Denoising with checkpoints (`fmae denoise`): the same seeded noisy test images for every model
and every sigma, each model's output, and the before/after metrics. Values in, values out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fmae import metrics
from fmae.checkpoints import Loaded
from fmae.evaluation import reconstruct, to_float
from fmae.noise import add_noise
from fmae.seeds import derive_seed


def noisy_test_images(clean: torch.Tensor, kind: str, sigma: float, seed: int) -> torch.Tensor:
    """Noisy copies of float images; the same seed gives the same noise draw at every sigma."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "denoise"))
    return add_noise(clean.cpu(), kind, sigma, generator).to(clean.device)


@dataclass(frozen=True)
class DenoiseRun:
    """Everything `fmae denoise` reports and draws."""

    rows: list[dict[str, Any]]
    clean: torch.Tensor
    noisy: dict[float, torch.Tensor]
    outputs: dict[tuple[int, float], torch.Tensor]


def denoise(models: Sequence[Loaded], images: torch.Tensor, kind: str, sigmas: Sequence[float],
            seed: int) -> DenoiseRun:
    """Every model sees the very same noisy images for each sigma."""
    clean = to_float(images)
    rows, noisy_by_sigma, outputs = [], {}, {}
    for sigma in sigmas:
        noisy = noisy_test_images(clean, kind, sigma, seed)
        noisy_by_sigma[sigma] = noisy
        before = metrics.summary(noisy, clean)
        for i, loaded in enumerate(models):
            out = reconstruct(loaded.model, noisy, loaded.precision)
            outputs[(i, sigma)] = out
            after = metrics.summary(out, clean)
            rows.append({
                "checkpoint": loaded.path, "sigma": sigma, "noise": kind,
                "noisy": before, "output": after,
                "gain": {"psnr": after["psnr"] - before["psnr"], "ssim": after["ssim"] - before["ssim"],
                         "mse": before["mse"] - after["mse"]},
            })
    return DenoiseRun(rows, clean, noisy_by_sigma, outputs)


def denoise_file(loaded: Loaded, source: Path, target: Path, device: Any) -> tuple[int, bytes]:
    """`fmae denoise --input`: the user's images (.png or .npy) through one model; returns how many
    images and the bytes of `target` (in its format), which the caller writes."""
    from fmae import images as user_images

    images = user_images.read_user_images(source)
    result = reconstruct(loaded.model, images.to(device), loaded.precision)
    return int(images.shape[0]), user_images.encode_user_images(result, target.suffix.lower())


def default_output(source: Path) -> Path:
    """Where `--input`'s result goes without --output: <input>.denoised<ext>."""
    return source.with_name(f"{source.stem}.denoised{source.suffix.lower()}")
