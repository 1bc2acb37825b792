"""A writer's slant and width: measured from real MNIST digits redrawn in a hand, undone before framing, and
applied by the reading path of a model whose config carries them."""

import copy
import dataclasses
import io

import numpy as np
import pytest
from benchmarks.finetune import ink, sheared, squeezed
from benchmarks.numbers import encoded
from PIL import Image

from digitcnn.inference import load_model
from digitcnn.preprocess import preprocess
from digitcnn.recognize import read_images
from digitcnn.writer import Writer, estimate_writer, straighten, writer_of


def written(digit: np.ndarray, lean: float = 0.0, width: float = 1.0) -> bytes:
    """An MNIST digit redrawn leaning right by `lean` (x per y) and at `width` of its width, dark on white, as
    benchmarks/finetune.py draws its writer styles."""
    return encoded(Image.fromarray(255 - np.asarray(squeezed(sheared(ink(digit), lean), width))), "PNG")


def framed(digit: np.ndarray, writer: Writer | None = None, **style) -> np.ndarray:
    """The 28x28 `preprocess` makes of the digit written in `style`, with `writer`'s hand undone."""
    return preprocess(Image.open(io.BytesIO(written(digit, **style))), writer)


@pytest.fixture(scope="module")
def validation(mnist):
    """100 validation digits (10 a class) the shipped model never trained on, and 10,000 training digits."""
    (x_train, y_train), _ = mnist
    x, y = x_train[-6000:], y_train[-6000:]
    chosen = np.concatenate([np.flatnonzero(y == digit)[:10] for digit in range(10)])
    return x[chosen], y[chosen], x_train[:10000] / 255, y_train[:10000]


def hand(validation, **style) -> Writer | None:
    digits, labels, reference, reference_labels = validation
    return estimate_writer(np.stack([framed(digit, **style) for digit in digits]), labels, reference, reference_labels)


def test_a_plain_hand_is_left_alone_and_a_slanted_or_narrow_one_is_measured(validation):
    assert hand(validation) is None
    narrow = hand(validation, width=0.5)
    assert narrow is not None and narrow.slant == 0.0 and 1.6 <= narrow.width <= 2.2
    leaning = hand(validation, lean=0.6)  # leaning right: the top moves right, so x falls as y grows
    assert leaning is not None and leaning.width == 1.0 and -0.7 <= leaning.slant <= -0.5
    both = hand(validation, lean=0.6, width=0.5)  # the slant is measured in the narrow hand's own columns
    assert both is not None and 1.6 <= both.width <= 2.2 and -0.4 <= both.slant <= -0.2


def test_a_few_classes_or_one_class_s_letterform_is_not_a_hand(validation):
    digits, labels, reference, reference_labels = validation
    narrow = np.stack([framed(digit, width=0.5) for digit in digits])
    plain = np.stack([framed(digit) for digit in digits])
    few = np.isin(labels, [1, 7])  # narrow 1s and 7s alone: too few classes to tell a hand from their letterforms
    assert estimate_writer(narrow[few], labels[few], reference, reference_labels) is None
    sevens = np.where((labels == 7)[:, None, None], narrow, plain)  # every class but the 7s as MNIST wrote them
    assert estimate_writer(sevens, labels, reference, reference_labels) is None


def test_straightening_a_hand_frames_its_digits_as_mnist_wrote_them(validation):
    digits = validation[0][:30]
    as_written = [framed(digit, lean=0.6, width=0.5) for digit in digits]
    undone = [framed(digit, Writer(-0.3, 2.0), lean=0.6, width=0.5) for digit in digits]
    originals = [framed(digit) for digit in digits]
    before = np.mean([np.abs(a - b).mean() for a, b in zip(as_written, originals, strict=True)])
    after = np.mean([np.abs(a - b).mean() for a, b in zip(undone, originals, strict=True)])
    assert after < 0.5 * before
    assert straighten(np.ones((5, 3), np.float32), None).shape == (5, 3)  # no hand: the digit as it came


def test_a_model_whose_config_carries_a_hand_reads_that_hand_through_predict_s_path(validation):
    digits, labels = validation[0], validation[1]
    files = [written(digit, width=0.35) for digit in digits]
    shipped = load_model(None, onnx_twin=True)
    tuned = copy.copy(shipped)
    tuned.config = dataclasses.replace(shipped.config, writer_width=2.4)
    assert writer_of(shipped.config) is None and writer_of(tuned.config) == Writer(0.0, 2.4)

    def accuracy(model) -> float:
        return float(np.mean([reading.label for reading in read_images(model, files)] == labels))

    assert accuracy(shipped) < 0.75 and accuracy(tuned) > 0.95
