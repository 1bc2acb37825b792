"""Integrated gradients: exact on a linear model, complete and well placed on a small trained CNN."""

import numpy as np
import pytest
import torch
from torch import nn

from digitcnn.explain import integrated_gradients

QUADRANTS = [
    (slice(2, 12), slice(2, 12)),
    (slice(2, 12), slice(16, 26)),
    (slice(16, 26), slice(2, 12)),
    (slice(16, 26), slice(16, 26)),
]


def quadrant_images(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Faint noise everywhere and one bright 6×6 blob; the label is the quadrant the blob sits in."""
    images = torch.rand(count, 28, 28, generator=generator) * 0.15
    labels = torch.randint(0, 4, (count,), generator=generator)
    offsets = torch.randint(0, 5, (count, 2), generator=generator)
    for index, (label, (down, right)) in enumerate(zip(labels.tolist(), offsets.tolist(), strict=True)):
        rows, columns = QUADRANTS[label]
        top, left = rows.start + down, columns.start + right
        images[index, top : top + 6, left : left + 6] = 0.9
    return images, labels


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds synchronisation, and when another process
    holds the other core it made training 30× slower (300 ms a step instead of 10)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quadrant_model(one_thread):
    """A two-layer CNN (with dropout, so eval mode matters) trained to ~100% on the quadrant task in ~1 s."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(8 * 7 * 7, 10),
    )
    images, labels = quadrant_images(512, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        batch = torch.arange(step * 64, step * 64 + 64) % len(images)
        loss = nn.functional.cross_entropy(model(images[batch, None]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    test_images, test_labels = quadrant_images(64, generator)
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_images[:, None]).argmax(dim=1) == test_labels).float().mean().item()
    assert accuracy > 0.95, f"the test model itself failed to learn the task ({accuracy:.0%})"
    model.train()
    return model, test_images, test_labels


def logits_of(model: nn.Module, image) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(image, dtype=torch.float32)[None, None]).numpy()[0]


def test_linear_model_attribution_is_input_times_weight_exactly():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    image = torch.rand(28, 28).numpy()
    baseline = np.full((28, 28), 0.25, dtype=np.float32)
    for target in (0, 7):
        attribution = integrated_gradients(model, image, target=target, steps=4, baseline=baseline)
        weight = model[1].weight[target].detach().reshape(28, 28).numpy()
        np.testing.assert_allclose(attribution, (image - baseline) * weight, rtol=1e-5, atol=1e-7)


def test_completeness_and_placement_on_a_trained_cnn(quadrant_model):
    model, images, labels = quadrant_model
    for index in range(8):
        image, label = images[index].numpy(), int(labels[index])
        attribution = integrated_gradients(model, image)
        assert attribution.shape == (28, 28) and attribution.dtype == np.float32
        difference = logits_of(model, image)[label] - logits_of(model, np.zeros((28, 28)))[label]
        assert attribution.sum() == pytest.approx(difference, rel=0.02, abs=0.05)
        # The blob covers 36 of 784 pixels (under 5%) yet should carry most of the positive evidence.
        blob = image > 0.5
        positive = np.clip(attribution, 0, None)
        assert positive[blob].sum() > 0.75 * positive.sum()


def test_target_defaults_to_the_prediction_and_modes_are_restored(quadrant_model):
    model, images, _ = quadrant_model
    image = images[0].numpy()
    predicted = int(np.argmax(logits_of(model, image)))
    model.train()
    model[0].eval()  # a mixed state, which a plain model.train(was_training) would not restore
    default = integrated_gradients(model, image, steps=16)
    np.testing.assert_array_equal(default, integrated_gradients(model, image, target=predicted, steps=16))
    assert model.training and not model[0].training and model[7].training
    assert all(parameter.grad is None for parameter in model.parameters())


def test_works_inside_inference_mode_and_in_small_batches(quadrant_model):
    model, images, _ = quadrant_model
    image = images[1].numpy()
    whole = integrated_gradients(model, image, target=2, steps=20)
    with torch.inference_mode():
        chunked = integrated_gradients(model, torch.as_tensor(image)[None], target=2, steps=20, batch_size=6)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise_value_error(quadrant_model):
    model, images, _ = quadrant_model
    image = images[0].numpy()
    with pytest.raises(ValueError, match="28×28"):
        integrated_gradients(model, np.zeros((32, 32)))
    with pytest.raises(ValueError, match="divide uint8"):
        integrated_gradients(model, np.zeros((28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="target"):
        integrated_gradients(model, image, target=10)
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(model, image, steps=0)
