"""Evaluate and denoise: checkpoints and images in, metric tables out. Never prints or writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fmae import metrics
from fmae.data import CLASS_NAMES, FashionMNIST
from fmae.engine import noisy_test_images, reconstruct, reconstruct_and_evaluate, to_float


@dataclass(frozen=True)
class Loaded:
    """A model rebuilt from its checkpoint, with where it came from."""

    path: str
    model: Any
    checkpoint: dict[str, Any]

    @property
    def precision(self) -> str:
        return self.checkpoint["config"].precision

    @property
    def recorded_test_loss(self) -> float | None:
        losses = self.checkpoint.get("metrics", {}).get("test_loss") or []
        return float(losses[-1]) if losses else None


def split(data: FashionMNIST, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return (data.train_images, data.train_labels) if name == "train" else (data.test_images, data.test_labels)


def evaluate_checkpoint(loaded: Loaded, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """MSE (the training loss, same code), mean PSNR and SSIM, MSE per class."""
    clean = to_float(images)
    out, mse = reconstruct_and_evaluate(loaded.model, images, loaded.precision)  # one pass over the model
    per_image = metrics.mse_per_image(out, clean)
    return {
        "checkpoint": loaded.path,
        "mse": mse,
        "psnr": float(metrics.psnr_per_image(out, clean).double().mean()),
        "ssim": float(metrics.ssim_per_image(out, clean).double().mean()),
        "per_class_mse": dict(zip(CLASS_NAMES, metrics.per_class(per_image, labels))),
        "recorded_test_loss": loaded.recorded_test_loss,
        "hidden": loaded.checkpoint["config"].model.hidden,
        "optim": loaded.checkpoint["config"].optim,
        "lr": loaded.checkpoint["config"].learning_rate,
    }


def pca_baseline(data: FashionMNIST, images: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    train = to_float(data.train_images).cpu()
    target = to_float(images).cpu()
    return {k: metrics.pca_mse(train, target, k) for k in sorted(set(ks))}


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
