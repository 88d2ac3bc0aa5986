import math

import pytest
import torch

from fmae import evaluation, metrics, noise
from fmae.config import NOISES, NoiseConfig
from fmae.errors import ConfigError


def images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g) * 0.6
    x[: n // 2, :300] = 0.0  # some dark regions, like clothes on black
    return x


def test_image_gaussian_noise_has_each_images_own_mean_and_std():
    x = images()
    g = torch.Generator().manual_seed(1)
    sigma = 1.0
    mu, s = x.mean(1, keepdim=True), x.std(1, keepdim=True)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * s + mu
    expected = (x + sigma * eps).clamp(0, 1)
    assert torch.equal(noise.image_gaussian(x, sigma, g), expected)
    # the unclipped draw has the image's own statistics, image by image
    for i in (0, 40):
        assert float(eps[i].mean()) == pytest.approx(float(mu[i]), abs=4 * float(s[i]) / 28)
        assert float(eps[i].std()) == pytest.approx(float(s[i]), rel=0.1)


@pytest.mark.parametrize("kind", NOISES)
def test_every_noise_clips_to_unit_range_and_is_seeded(kind):
    x = images()
    a = noise.add_noise(x, kind, 0.8, torch.Generator().manual_seed(3))
    b = noise.add_noise(x, kind, 0.8, torch.Generator().manual_seed(3))
    c = noise.add_noise(x, kind, 0.8, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 and a.shape == x.shape
    assert torch.equal(noise.add_noise(x, kind, 0.0, torch.Generator()), x)


def test_salt_pepper_fraction_and_values():
    x = torch.full((100, 784), 0.5)
    y = noise.salt_pepper(x, 0.2, torch.Generator().manual_seed(0))
    changed = y != 0.5
    assert float(changed.float().mean()) == pytest.approx(0.2, abs=0.01)
    assert float((y == 0).float().mean()) == pytest.approx(0.1, abs=0.01)
    assert float((y == 1).float().mean()) == pytest.approx(0.1, abs=0.01)


def test_gaussian_noise_std():
    x = torch.full((50, 784), 0.5)
    y = noise.gaussian(x, 0.1, torch.Generator().manual_seed(0))
    assert float((y - x).std()) == pytest.approx(0.1, rel=0.02)


@pytest.mark.parametrize("kwargs", [{"sigma": -0.1}, {"sigma": float("nan")}, {"kind": "poisson"},
                                    {"kind": "salt-pepper", "sigma": 1.5}])
def test_noise_config_rejects(kwargs):
    with pytest.raises(ConfigError):
        NoiseConfig(**kwargs)


def test_metrics_on_known_values():
    a = torch.zeros(2, 784)
    b = torch.full((2, 784), 0.1)
    assert metrics.mse_per_image(a, b).tolist() == pytest.approx([0.01, 0.01])
    assert metrics.psnr_per_image(a, b).tolist() == pytest.approx([20.0, 20.0])
    x = images(4)
    assert metrics.ssim_per_image(x, x).tolist() == pytest.approx([1.0] * 4, abs=1e-6)
    noisy = noise.gaussian(x, 0.3, torch.Generator().manual_seed(0))
    s = metrics.ssim_per_image(noisy, x)
    assert all(0 < v < 0.9 for v in s.tolist())
    summary = metrics.summary(noisy, x)
    assert summary["psnr"] == pytest.approx(float(metrics.psnr_per_image(noisy, x).mean()))


def test_ssim_matches_a_direct_gaussian_window_computation():
    x = images(3)
    y = noise.gaussian(x, 0.2, torch.Generator().manual_seed(5))
    # SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03; torchmetrics'
    # convention: reflect padding, mean over the whole 28x28 map
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    w = (g[:, None] * g[None, :]) / (g.sum() ** 2)
    w = w[None, None]
    pad = lambda t: torch.nn.functional.pad(t.double().reshape(-1, 1, 28, 28), (5, 5, 5, 5), mode="reflect")  # noqa
    X, Y = pad(x), pad(y)
    conv = lambda t: torch.nn.functional.conv2d(t, w)  # noqa: E731
    mx, my = conv(X), conv(Y)
    vx, vy, cxy = conv(X * X) - mx**2, conv(Y * Y) - my**2, conv(X * Y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    direct = ssim_map.mean(dim=(1, 2, 3))
    assert metrics.ssim_per_image(y, x).double().tolist() == pytest.approx(direct.tolist(), abs=1e-5)


def test_ssim_equals_torchmetrics_across_chunks():
    """The separable filter gives torchmetrics' SSIM (the convention the README names) to float precision,
    for any chunking, on clean/noisy pairs and on constant images."""
    from torchmetrics.functional.image import structural_similarity_index_measure as torchmetrics_ssim

    x = torch.cat([images(37), torch.zeros(2, 784), torch.ones(1, 784)])
    y = noise.gaussian(x, 0.4, torch.Generator().manual_seed(1))
    reference = torchmetrics_ssim(y.reshape(-1, 1, 28, 28), x.reshape(-1, 1, 28, 28), data_range=1.0,
                                  kernel_size=11, sigma=1.5, gaussian_kernel=True, reduction="none")
    for chunk in (1000, 16, 7):
        ours = metrics.ssim_per_image(y, x, chunk=chunk)
        assert ours.shape == reference.shape
        assert torch.allclose(ours, reference, atol=2e-6, rtol=0), float((ours - reference).abs().max())


def test_the_filter_matrix_is_a_reflect_padded_gaussian_convolution():
    g = metrics.gaussian_filter_matrix().double()
    assert torch.allclose(g.sum(dim=1), torch.ones(28, dtype=torch.float64))
    signal = torch.rand(28, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    taps = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    padded = torch.nn.functional.pad(signal[None, None], (5, 5), mode="reflect")
    conv = torch.nn.functional.conv1d(padded, (taps / taps.sum())[None, None])[0, 0]
    assert torch.allclose(g @ signal, conv, atol=1e-6)


def test_per_class():
    values = torch.tensor([1.0, 3.0, 5.0])
    labels = torch.tensor([0, 0, 2])
    assert metrics.per_class(values, labels, 3) == [2.0, None, 5.0]


def test_pca_baseline_against_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(5, 784, generator=g)
    train = torch.randn(300, 5, generator=g) @ basis + 0.01 * torch.randn(300, 784, generator=g)
    test = torch.randn(50, 5, generator=g) @ basis
    # direct: SVD of the centred training data
    mean = train.double().mean(0)
    _, _, vt = torch.linalg.svd(train.double() - mean, full_matrices=False)
    for k in (1, 5, 20):
        v = vt[:k].T
        t = test.double() - mean
        direct = float(((t - t @ v @ v.T) ** 2).mean())
        assert evaluation.pca_mse(train, test, k) == pytest.approx(direct, rel=1e-6, abs=1e-12)
    assert evaluation.pca_mse(train, test, 5) < 1e-3 < evaluation.pca_mse(train, test, 1)
    assert math.isfinite(evaluation.pca_mse(train, test, 0))
