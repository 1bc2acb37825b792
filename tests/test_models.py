import pytest
import torch
from torch import nn

from digitcnn.models import ARCHITECTURES, build_model, count_parameters


def test_seed_network_is_the_tutorials_layer_for_layer():
    model = build_model("seed")
    assert count_parameters(model) == 2_076_554
    kinds = [type(layer).__name__ for layer in model.body]
    assert kinds == [
        "Conv2d",
        "ReLU",
        "Conv2d",
        "ReLU",
        "Conv2d",
        "ReLU",
        "Dropout",
        "MaxPool2d",
        "Flatten",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    assert [layer.p for layer in model.body if isinstance(layer, nn.Dropout)] == [0.25, 0.5]
    assert model.body[9].in_features == 15488


def test_leaky_relu_variant_keeps_linear_convolutions_followed_by_leaky_relu():
    model = build_model("seed", activation="leaky_relu")
    assert count_parameters(model) == 2_076_554
    assert sum(isinstance(layer, nn.LeakyReLU) for layer in model.body) == 4
    assert not any(isinstance(layer, nn.ReLU) for layer in model.body)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_every_architecture_maps_pixels_to_finite_logits(arch, activation):
    torch.manual_seed(0)
    model = build_model(arch, activation).eval()
    logits = model(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()
    assert model.config.arch == arch and model.config.activation == activation


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="seed"):
        build_model("resnet9000")
    with pytest.raises(ValueError, match="leaky_relu"):
        build_model("seed", activation="gelu")
