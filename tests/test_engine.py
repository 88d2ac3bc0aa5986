"""The engine on the real dataset: a model learns, the test loss is the MSE of one pass, bf16 stays
close, a denoising autoencoder beats the plain one; the device. What every engine promises (resume
state, statuses, stop rule, seeds, exact resume) is tests/test_engine_contract.py's."""

import dataclasses

import pytest
import torch

from fmae import engine, evaluation
from fmae.config import ModelConfig, TrainConfig
from fmae.device import resolve_device

CPU = torch.device("cpu")


def small(**kw) -> TrainConfig:
    base = dict(model=ModelConfig(hidden=32), optim="adam", epochs=3, batch_size=100, seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.dataset
def test_loss_falls_on_a_small_real_subset(small_real):
    result = engine.train(small(epochs=4), small_real, CPU)
    test = [m.test_loss for m in result.history]
    assert result.status == "completed" and len(test) == 4
    assert test[-1] < 0.7 * test[0] and all(b < a for a, b in zip(test, test[1:]))


@pytest.mark.dataset
def test_evaluate_is_the_mean_squared_error(small_real):
    result = engine.train(small(epochs=1), small_real, CPU)
    x = small_real.test_images.float() / 255
    with torch.no_grad():
        direct = float(((result.model.eval()(x) - x) ** 2).mean())
    assert evaluation.evaluate(result.model, small_real.test_images) == pytest.approx(direct, rel=1e-5)
    assert result.history[-1].test_loss == evaluation.evaluate(result.model, small_real.test_images)


@pytest.mark.dataset
def test_one_pass_gives_the_outputs_and_the_mse_of_two(small_real):
    """fmae eval runs the model once: the outputs and the MSE are exactly those of the two separate passes."""
    from fmae.checkpoints import Loaded
    from fmae.evaluation import evaluate_checkpoint

    result = engine.train(small(epochs=1), small_real, CPU)
    out, mse = evaluation.reconstruct_and_evaluate(result.model, small_real.test_images)
    assert torch.equal(out, evaluation.reconstruct(result.model, small_real.test_images))
    assert mse == evaluation.evaluate(result.model, small_real.test_images) == result.history[-1].test_loss
    calls = []
    result.model.register_forward_hook(lambda *_: calls.append(1))
    loaded = Loaded("m.pt", result.model, {"config": result.config, "metrics": {"test_loss": [mse]}})
    row = evaluate_checkpoint(loaded, small_real.test_images, small_real.test_labels)
    assert row["mse"] == mse and len(calls) == 1  # 500 test images: one chunk, one forward pass


@pytest.mark.dataset
def test_bf16_runs_close_to_fp32(small_real):
    a = engine.train(small(epochs=2), small_real, CPU)
    b = engine.train(small(epochs=2, precision="bf16"), small_real, CPU)
    assert b.history[-1].test_loss == pytest.approx(a.history[-1].test_loss, rel=0.05)


def test_device_resolution():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        from fmae.errors import DeviceError

        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.dataset
def test_denoising_autoencoder_beats_the_plain_one_at_its_sigma(real_data):
    from fmae import denoising, metrics
    from fmae.checkpoints import Loaded
    from fmae.config import NoiseConfig

    subset = real_data.subset(6000, 1000)
    base = small(epochs=4, model=ModelConfig(hidden=128))
    plain = engine.train(base, subset, CPU)
    dae = engine.train(dataclasses.replace(base, noise=NoiseConfig("image-gaussian", 0.5)), subset, CPU)
    loaded = [Loaded(name, r.model, {"config": r.config}) for name, r in (("plain", plain), ("dae", dae))]
    run = denoising.denoise(loaded, subset.test_images, "image-gaussian", [0.5], seed=0)
    psnr = {row["checkpoint"]: row["output"]["psnr"] for row in run.rows}
    assert psnr["dae"] > psnr["plain"] + 0.3, psnr  # 16.4 against 15.6 dB when written
    assert run.rows[0]["noisy"] == run.rows[1]["noisy"]  # the very same noisy images
    assert metrics.summary(run.clean, run.clean)["psnr"] > 90
