import pytest
import torch

from fmae.config import ModelConfig, TrainConfig
from fmae.errors import ConfigError
from fmae.model import build


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "identity"])
def test_shapes_and_output_activation(activation):
    model = build(ModelConfig(hidden=16, activation=activation), seed_generator=torch.Generator().manual_seed(0))
    assert model.encoder.weight.shape == (16, 784) and model.decoder.weight.shape == (784, 16)
    out = model.eval()(torch.rand(5, 784))
    assert out.shape == (5, 784)
    if activation == "relu":
        assert out.min() >= 0
    if activation == "sigmoid":
        assert 0 <= out.min() and out.max() <= 1


def test_default_is_the_report_setup():
    config = TrainConfig()
    assert (config.model.hidden, config.model.dropout, config.model.activation) == (512, 0.1, "relu")
    assert (config.epochs, config.batch_size) == (100, 1000)
    assert TrainConfig(optim="adam").learning_rate == 0.001 and TrainConfig(optim="sgd").learning_rate == 0.1


def test_init_is_seeded_and_follows_torch_bounds():
    a = build(ModelConfig(hidden=8), seed_generator=torch.Generator().manual_seed(1))
    b = build(ModelConfig(hidden=8), seed_generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.encoder.weight, b.encoder.weight)
    assert a.encoder.weight.abs().max() <= 1 / 784**0.5 and a.decoder.weight.abs().max() <= 1 / 8**0.5


def test_dropout_uses_its_generator_and_scales():
    model = build(ModelConfig(hidden=1000, dropout=0.5)).train()
    model.dropout.generator = torch.Generator().manual_seed(3)
    x = torch.ones(4, 1000)
    y1 = model.dropout(x)
    model.dropout.generator = torch.Generator().manual_seed(3)
    assert torch.equal(y1, model.dropout(x))
    assert set(y1.unique().tolist()) == {0.0, 2.0}
    assert 0.4 < (y1 == 0).float().mean() < 0.6
    assert torch.equal(model.eval().dropout(x), x)


@pytest.mark.parametrize("kwargs", [
    {"hidden": 0}, {"hidden": -3}, {"hidden": 2.5}, {"dropout": 1.0}, {"dropout": -0.1},
    {"dropout": float("nan")}, {"activation": "tanh"},
])
def test_model_config_rejects(kwargs):
    with pytest.raises(ConfigError):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {"optim": "rmsprop"}, {"lr": 0}, {"lr": -1.0}, {"lr": float("inf")}, {"epochs": 0}, {"batch_size": 0},
    {"seed": -1}, {"precision": "fp16"}, {"patience": -1}, {"min_delta": -0.1}, {"momentum": 0.9},
])
def test_train_config_rejects(kwargs):
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)


def test_config_round_trip():
    config = TrainConfig(model=ModelConfig(hidden=64), optim="sgd", momentum=0.5).resolved()
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"model": {"hidden": 3}, "bogus": 1})
