"""Image quality metrics: MSE, PSNR, SSIM (torchmetrics' convention) and per-class reductions.

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


def gaussian_filter_matrix(size: int = 28, taps: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The 1-D Gaussian filter over `size` pixels with reflect padding, as a [size, size] matrix.

    Row i holds the weights the filtered pixel i gives each input pixel: the window's taps
    (torchmetrics' kernel: offsets -(taps-1)/2 .. (taps-1)/2, exp(-(d/sigma)^2/2), normalised) with
    the taps that fall outside the image reflected back in (PyTorch's "reflect": -1 -> 1, size -> size-2).
    """
    offsets = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    weights = torch.exp(-((offsets / sigma) ** 2) / 2)
    weights /= weights.sum()
    matrix = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        for offset, weight in zip(offsets.tolist(), weights):
            j = i + int(offset)
            j = -j if j < 0 else 2 * (size - 1) - j if j >= size else j
            matrix[i, j] += weight
    return matrix.float()


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """SSIM with the standard 11x11 Gaussian window, sigma 1.5, data range 1, per image.

    torchmetrics' convention (structural_similarity_index_measure with gaussian_kernel=True):
    reflect padding, the SSIM map averaged over the whole 28x28 image. The 2-D window is the
    outer product of two 1-D ones, so each of the five maps is filtered as G X G^T with G from
    gaussian_filter_matrix: two small matrix products instead of a 2-D convolution. The second
    product leaves the maps transposed, which the per-image mean does not mind. In-place steps
    over chunks of 1000 images: fresh large temporaries cost more in page faults than in arithmetic.
    """
    c1, c2 = 0.01**2, 0.03**2
    g_t = gaussian_filter_matrix().T.contiguous().to(pred.device)
    out = []
    for p, t in zip(pred.split(chunk), target.split(chunk)):
        n = p.shape[0]
        p, t = p.float().reshape(n, 28, 28), t.float().reshape(n, 28, 28)
        maps = torch.empty(5, n, 28, 28, device=p.device)
        maps[0], maps[1] = p, t
        torch.mul(p, p, out=maps[2])
        torch.mul(t, t, out=maps[3])
        torch.mul(p, t, out=maps[4])
        mu_p, mu_t, pp, tt, pt = ((maps.view(5 * n, 28, 28) @ g_t).transpose(1, 2) @ g_t).view(5, n, 784)
        mu_pt = mu_p * mu_t
        mu_p.square_()
        mu_t.square_()
        var_sum = pp.sub_(mu_p).clamp_min_(0.0).add_(tt.sub_(mu_t).clamp_min_(0.0)).add_(c2)
        numerator = pt.sub_(mu_pt).mul_(2.0).add_(c2).mul_(mu_pt.mul_(2.0).add_(c1))
        denominator = mu_p.add_(mu_t).add_(c1).mul_(var_sum)
        out.append(numerator.div_(denominator).mean(dim=1))
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
