"""Image quality metrics: MSE, PSNR, SSIM (torchmetrics) and per-class reductions.

Inputs are float images in [0, 1] of shape [N, 784]; every function returns per-image values
so callers can average them or reduce them per class.
"""

from __future__ import annotations

import torch


def mse_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred.float() - target.float()) ** 2).mean(dim=1)


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """PSNR in dB with data range 1: 10 log10(1 / MSE) per image."""
    return 10.0 * torch.log10(1.0 / mse_per_image(pred, target).clamp_min(eps))


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
    """SSIM with the standard 11x11 Gaussian window, sigma 1.5, data range 1 (torchmetrics)."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    out = []
    for p, t in zip(pred.split(chunk), target.split(chunk)):
        out.append(ssim(p.float().reshape(-1, 1, 28, 28), t.float().reshape(-1, 1, 28, 28), data_range=1.0,
                        kernel_size=11, sigma=1.5, gaussian_kernel=True, reduction="none"))
    return torch.cat(out) if out else torch.empty(0)


def summary(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean MSE, PSNR and SSIM over the images."""
    return {
        "mse": float(mse_per_image(pred, target).double().mean()),
        "psnr": float(psnr_per_image(pred, target).double().mean()),
        "ssim": float(ssim_per_image(pred, target).double().mean()),
    }


def per_class(values: torch.Tensor, labels: torch.Tensor, n_classes: int = 10) -> list[float | None]:
    """The mean of per-image `values` for each label (None for a class with no image)."""
    sums = torch.zeros(n_classes, dtype=torch.float64).index_add_(0, labels.cpu(), values.double().cpu())
    counts = torch.bincount(labels.cpu(), minlength=n_classes)
    return [float(s / c) if c else None for s, c in zip(sums, counts)]


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
