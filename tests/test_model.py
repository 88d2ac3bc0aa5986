"""The autoencoder: its shapes, output activations, seeded init and dropout."""

import pytest
import torch

from fmae.config import ModelConfig
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
