import numpy as np
import pytest
import torch
from torch import nn

from digitcnn.models import ARCHITECTURES, ByteDropout, build_model, count_parameters


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
        "ByteDropout",
        "MaxPool2d",
        "Flatten",
        "Linear",
        "ReLU",
        "ByteDropout",
        "Linear",
    ]
    assert [layer.rate for layer in model.body if isinstance(layer, ByteDropout)] == [0.25, 0.5]
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


def test_with_no_name_the_python_api_builds_the_network_the_command_trains():
    from digitcnn.config import default_arch

    assert build_model().config.arch == default_arch("mnist") == "lean"
    assert build_model(dataset="fashion-mnist").config.arch == default_arch("fashion-mnist") == "fast"


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="seed"):
        build_model("resnet9000")
    with pytest.raises(ValueError, match="leaky_relu"):
        build_model("seed", activation="gelu")


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_byte_dropout_keeps_the_expected_fraction_scaled_and_is_identity_in_eval(rate):
    torch.manual_seed(0)
    layer = ByteDropout(rate)
    features = torch.ones(64, 128, 22, 22)
    dropped = layer(features)
    kept = dropped != 0
    assert kept.float().mean().item() == pytest.approx(1 - rate, abs=2e-3)
    assert torch.allclose(dropped[kept], torch.tensor(1 / (1 - rate)))
    # Independent per element: neighbouring bytes of one 64-bit draw are not correlated.
    flat = kept.flatten().float()
    assert torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1].abs() < 0.01
    assert torch.equal(layer.eval()(features), features)
    with pytest.raises(ValueError):
        ByteDropout(0.3)


def trained_briefly(arch: str, x_train, y_train):
    """A model whose BatchNorm statistics and scales are no longer their initial 0/1: a few real training steps."""
    from digitcnn import fit

    torch.manual_seed(0)
    model = build_model(arch)
    fit(model, x_train[:512], y_train[:512], batch_size=64, epochs=1, validation_split=0.0, verbose=False)
    return model


def assert_same_outputs(logits: torch.Tensor, expected: torch.Tensor) -> None:
    """The same to 1e-5: probabilities absolutely, logits relative to their largest (float32 sums in another order
    differ by a few units in the last place of the largest terms)."""
    scale = expected.abs().max()
    assert (logits - expected).abs().max() <= 1e-5 * scale, float((logits - expected).abs().max() / scale)
    torch.testing.assert_close(logits.softmax(1), expected.softmax(1), atol=1e-5, rtol=0)


# lean's first BatchNorm follows a pooling step, not a convolution, and stays.
@pytest.mark.parametrize(("arch", "left_unfolded"), [("fast", 0), ("strided", 0), ("lean", 1), ("best", 0)])
def test_folded_batchnorm_gives_the_models_own_outputs(arch, left_unfolded, mnist):
    from digitcnn.models import fold_batchnorm, inference_network, torch_logits

    (x_train, y_train), (x_test, _) = mnist
    model = trained_briefly(arch, x_train, y_train).eval()
    folded = fold_batchnorm(model)
    assert sum(isinstance(module, nn.BatchNorm2d) for module in folded.modules()) == left_unfolded
    assert any(isinstance(module, nn.BatchNorm2d) for module in model.modules())  # the model itself is untouched
    pixels = torch.as_tensor(x_test[:300]).float().div(255)[:, None]
    with torch.inference_mode():
        assert_same_outputs(folded(pixels), model(pixels))
    # predict's path uses the folded copy, and a new one once the weights change.
    assert inference_network(model) is inference_network(model) is not model
    before = torch_logits(model, x_test[:300])
    with torch.no_grad():
        model.body[0].weight.mul_(0.5)
    after = torch_logits(model, x_test[:300])
    with torch.inference_mode():
        assert_same_outputs(torch.from_numpy(after), model(pixels))
    assert abs(after - before).max() > 1e-3
    # Made inside predict's inference mode, the copy still takes gradients (the look-inside view's saliency).
    from digitcnn.explain import integrated_gradients

    assert np.isfinite(integrated_gradients(inference_network(model), x_test[0] / 255, steps=4)).all()
    # A model whose layers are watched (forward hooks, as the look-inside view's) runs as it is.
    handle = model.body[0].register_forward_hook(lambda *_: None)
    assert inference_network(model) is model
    handle.remove()
