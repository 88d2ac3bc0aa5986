"""Evaluation: how well a model reconstructs images, in one place.

This room owns running a model over images in eval mode (in chunks, with the run's precision),
the MSE that is both the training loss and what `fmae eval` reports, the collapse check, the
evaluation of a checkpoint (MSE, PSNR, SSIM, MSE per class) and the PCA baseline that puts its
numbers in context. Values in, values out: it never prints or writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fmae import metrics
from fmae.checkpoints import Loaded
from fmae.data import CLASS_NAMES, FashionMNIST
from fmae.model import Autoencoder

EVAL_CHUNK = 5000
COLLAPSE_TOLERANCE = 1e-6  # output spread over the test set at or below which a model is collapsed


def autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32).mul_(1.0 / 255.0)


def _eval_outputs(model: Autoencoder, images: torch.Tensor, precision: str):
    """(clean float chunk, model output) over `images` (uint8 or float in [0, 1]), in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    for chunk in images.split(EVAL_CHUNK):
        x = (to_float(chunk) if chunk.dtype == torch.uint8 else chunk.float()).to(device)
        with autocast(device, precision):
            yield x, model(x).float()


@torch.no_grad()
def reconstruct(model: Autoencoder, images: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Model outputs (float32) for uint8 or float images, in chunks, in eval mode."""
    outs = [out for _, out in _eval_outputs(model, images, precision)]
    return torch.cat(outs) if outs else torch.empty(0, images.shape[-1])


@torch.no_grad()
def reconstruct_and_evaluate(model: Autoencoder, images: torch.Tensor,
                             precision: str = "fp32") -> tuple[torch.Tensor, float]:
    """`reconstruct` and `evaluate` from one pass over the model: the same chunks and sums, the same MSE."""
    outs, total = [], 0
    for x, out in _eval_outputs(model, images, precision):
        outs.append(out)
        total = total + F.mse_loss(out, x, reduction="sum").double()
    return (torch.cat(outs) if outs else torch.empty(0, images.shape[-1])), float(total) / max(1, images.numel())


@torch.no_grad()
def evaluate(model: Autoencoder, images: torch.Tensor, precision: str = "fp32") -> float:
    """Mean squared error over every pixel of `images` (uint8 or float in [0, 1])."""
    total = sum(F.mse_loss(out, x, reduction="sum").double() for x, out in _eval_outputs(model, images, precision))
    return float(total) / max(1, images.numel())


@torch.no_grad()
def is_collapsed(model: Autoencoder, images: torch.Tensor, precision: str = "fp32") -> bool:
    """Whether the model gives every image the same output (say, every output ReLU dead).

    Such a model can end with a finite loss (Adam at lr 0.1: a constant all-zero image, test MSE
    0.2065), so divergence detection misses it; it has learned nothing about its input.
    """
    low = high = None
    for _, out in _eval_outputs(model, images, precision):
        lo, hi = out.amin(0), out.amax(0)
        low = lo if low is None else torch.minimum(low, lo)
        high = hi if high is None else torch.maximum(high, hi)
    return low is None or bool((high - low).max() <= COLLAPSE_TOLERANCE)


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
        "lr": loaded.checkpoint["config"].lr,
    }


def pca_baseline(data: FashionMNIST, images: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    train = to_float(data.train_images).cpu()
    target = to_float(images).cpu()
    return {k: pca_mse(train, target, k) for k in sorted(set(ks))}


def pca_mse(train: torch.Tensor, test: torch.Tensor, k: int) -> float:
    """Reconstruction MSE on `test` of PCA with k components fitted on `train` (float [N, 784]).

    The best any linear (affine) autoencoder of width k can do, which is what puts an
    autoencoder's numbers in context.
    """
    train = train.double()
    mean = train.mean(dim=0, keepdim=True)
    centred = train - mean
    cov = centred.T @ centred / max(1, train.shape[0] - 1)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    basis = vecs[:, -k:] if k > 0 else vecs[:, :0]
    t = test.double() - mean
    recon = t @ basis @ basis.T
    return float(((t - recon) ** 2).mean())


def reconstructions(models: Mapping[str, str | Path], images: torch.Tensor, device: Any) -> dict[str, torch.Tensor]:
    """Each checkpoint's reconstruction of `images`, by label: {label: model.pt} in, {label: outputs} out."""
    from fmae.checkpoints import load_model

    out = {}
    for label, path in models.items():
        model, ckpt = load_model(path, device)
        out[label] = reconstruct(model, images, ckpt["config"].precision)
    return out
