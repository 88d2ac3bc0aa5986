"""The typed frozen configs: the report's defaults, every invalid value refused, a round trip through a dict."""

import pytest

from fmae.config import ModelConfig, TrainConfig
from fmae.errors import ConfigError
from fmae.settings import EvalSettings, PlotSettings


def test_default_is_the_report_setup():
    config = TrainConfig()
    assert (config.model.hidden, config.model.dropout, config.model.activation) == (512, 0.1, "relu")
    assert (config.epochs, config.batch_size) == (100, 1000)
    assert TrainConfig(optim="adam").lr == 0.001 and TrainConfig(optim="sgd").lr == 0.1


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
    config = TrainConfig(model=ModelConfig(hidden=64), optim="sgd", momentum=0.5)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"model": {"hidden": 3}, "bogus": 1})


@pytest.mark.parametrize("make", [
    lambda: EvalSettings(split="validation"), lambda: EvalSettings(baseline="svd"),
    lambda: PlotSettings(examples=0), lambda: PlotSettings(seed=-1), lambda: PlotSettings(kinds=("curves", "bars")),
    lambda: PlotSettings(fmt="gif"),
])
def test_eval_and_plot_settings_reject(make):
    with pytest.raises(ConfigError):
        make()

