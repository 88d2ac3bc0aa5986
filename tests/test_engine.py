import dataclasses
import math

import pytest
import torch

from fmae import engine, evaluation
from fmae.config import ModelConfig, TrainConfig

CPU = torch.device("cpu")


def small(**kw) -> TrainConfig:
    base = dict(model=ModelConfig(hidden=32), optim="adam", epochs=3, batch_size=100, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def losses(result):
    return [(m.train_loss, m.test_loss) for m in result.history]



@pytest.mark.dataset
def test_loss_falls_on_a_small_real_subset(small_real):
    result = engine.train(small(epochs=4), small_real, CPU)
    test = [m.test_loss for m in result.history]
    assert result.status == "completed" and len(test) == 4
    assert test[-1] < 0.7 * test[0] and all(b < a for a, b in zip(test, test[1:]))


@pytest.mark.dataset
def test_same_seed_same_losses_other_seed_other_losses(small_real):
    a = engine.train(small(), small_real, CPU)
    b = engine.train(small(), small_real, CPU)
    c = engine.train(small(seed=1), small_real, CPU)
    assert losses(a) == losses(b)
    assert losses(a) != losses(c)


@pytest.mark.dataset
@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_resume_equals_uninterrupted(small_real, optim):
    full = engine.train(small(optim=optim, epochs=4, momentum=0.5 if optim == "sgd" else 0.0), small_real, CPU)
    saved = {}
    half_config = small(optim=optim, epochs=2, momentum=0.5 if optim == "sgd" else 0.0)
    engine.train(half_config, small_real, CPU, on_epoch=lambda cell, m, rng: saved.update(cell.resume_state(rng)))
    assert saved["epoch"] == 2
    rest = engine.train(dataclasses.replace(half_config, epochs=4), small_real, CPU, resume=saved)
    assert losses(rest) == losses(full)
    assert all(torch.equal(a, b) for a, b in zip(rest.model.state_dict().values(), full.model.state_dict().values()))


@pytest.mark.dataset
def test_lockstep_equals_alone(small_real):
    configs = [small(lr=lr, model=ModelConfig(hidden=h)) for lr in (0.01, 0.001) for h in (16, 32)]
    together = engine.train_many(configs, small_real, CPU)
    for config, result in zip(configs, together):
        assert losses(result) == losses(engine.train(config, small_real, CPU))


@pytest.mark.dataset
def test_non_finite_loss_is_diverged_not_a_crash(small_real):
    config = small(optim="sgd", lr=1e6, model=ModelConfig(hidden=32, activation="identity"), epochs=5)
    result = engine.train(config, small_real, CPU)
    assert result.status == "diverged"
    assert not math.isfinite(result.history[-1].train_loss) or not math.isfinite(result.history[-1].test_loss)
    assert len(result.history) < 5


@pytest.mark.dataset
def test_early_stopping(small_real):
    result = engine.train(small(epochs=50, patience=2, min_delta=0.2), small_real, CPU)
    assert result.status == "stopped_early"
    h = [m.test_loss for m in result.history]
    assert (h[-3] - h[-1]) / h[-3] < 0.2 and len(h) < 50


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
    assert engine.resolve_device("cpu") == CPU
    assert engine.resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        from fmae.errors import DeviceError

        with pytest.raises(DeviceError, match="no CUDA device"):
            engine.resolve_device("cuda")


def test_derived_seeds_are_distinct():
    seeds = {engine.derive_seed(s, p) for s in range(3) for p in ("init", "data", "dropout")}
    assert len(seeds) == 9


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
