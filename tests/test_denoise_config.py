"""The validated configs that took the commands' value checks: DenoiseConfig, NoiseConfig.training,
PruneConfig.of, check_examples and figure_format; the CLI's defaults are theirs."""

from pathlib import Path

import pytest

from fmae.config import FIGURE_FORMATS, DenoiseConfig, NoiseConfig, check_examples, figure_format
from fmae.errors import ConfigError
from fmae.execution import PruneConfig


def test_denoise_defaults_are_the_clis():
    config = DenoiseConfig()
    assert (config.kind, config.sigmas, config.seed, config.limit, config.examples, config.index) == (
        NoiseConfig().kind, (NoiseConfig().sigma,), 0, None, 4, ())


@pytest.mark.parametrize("kwargs, message", [
    ({"sigmas": (0.5, -1.0)}, "sigma must be >= 0, got -1.0"),
    ({"kind": "salt-pepper", "sigmas": (2.0,)}, "at most 1, got 2.0"),
    ({"limit": 0}, "limit must be >= 1, got 0"),
    ({"examples": 0}, "examples must be >= 1, got 0"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"index": (1,)}, "--index picks the images of the --out figure"),
    ({"index": (3, -2), "grid": Path("g.png")}, "--index -2 is negative"),
    ({"grid": Path("g.jpg")}, "g.jpg: unknown figure format"),
    ({"curve": Path("c")}, "c: unknown figure format"),
])
def test_denoise_config_refuses_bad_values(kwargs, message):
    with pytest.raises(ConfigError) as caught:
        DenoiseConfig(**kwargs)
    assert message in caught.value.message


def test_denoise_config_checks_in_the_commands_order():
    """The first bad value is the one named, in the order the command always checked them."""
    with pytest.raises(ConfigError, match="sigma"):
        DenoiseConfig(sigmas=(-1.0,), limit=0, examples=0)
    with pytest.raises(ConfigError, match="limit"):
        DenoiseConfig(limit=0, examples=0, seed=-1)


def test_denoise_config_accepts_good_values():
    config = DenoiseConfig("speckle", (0.1, 0.2), 3, 100, 2, (0, 5), Path("g.PDF"), Path("c.svg"))
    assert config.index == (0, 5) and config.grid == Path("g.PDF")


def test_figure_format_is_case_blind_and_closed():
    assert [figure_format(f"x.{f.upper()}") for f in FIGURE_FORMATS] == list(FIGURE_FORMATS)
    assert figure_format("x.jpg") is None and figure_format("png") is None


def test_check_examples():
    assert check_examples(1) == 1
    with pytest.raises(ConfigError, match="examples must be >= 1, got -3"):
        check_examples(-3)


def test_training_noise_is_none_without_a_kind_but_its_sigma_is_checked():
    assert NoiseConfig.training(None, 0.5) is None
    assert NoiseConfig.training("gaussian", 0.2) == NoiseConfig("gaussian", 0.2)
    with pytest.raises(ConfigError, match="sigma must be >= 0"):
        NoiseConfig.training(None, -0.5)


def test_prune_options():
    assert PruneConfig.of(None, None, None) is None
    assert PruneConfig.of("halving", None, None) == PruneConfig()
    assert PruneConfig.of("halving", 2, 3) == PruneConfig(eta=2, min_epochs=3)
    for eta, min_epochs in ((2, None), (None, 1)):
        with pytest.raises(ConfigError, match="--eta and --min-epochs need --prune halving"):
            PruneConfig.of(None, eta, min_epochs)
