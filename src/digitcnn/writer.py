"""A writer's hand as a slant and a width, estimated from their samples, and undone before a digit is framed.

Some people write every digit leaning the same way, or every digit narrower than MNIST's writers did. Fine-tuning
alone learns such a hand slowly from 10 samples a digit; undoing it first (shear each digit upright, widen it)
gives the model the shapes it already knows. Both are measured with image moments (the shear that makes a digit's
ink upright, and its ink's spread across its slant over its height: scale-free, so the same on a 28x28 and on a
photo), against the median of the base model's training digits (MNIST's) of the same class. `finetune`
estimates them from a person's samples and stores them in the run's ModelConfig; every reading path
(`preprocess`, `segment.crop`, the strip reader's crops) applies them through `preprocess.frame_crop`.
"""

from typing import NamedTuple

import numpy as np
from PIL import Image

# Below these, the estimate is within what 100 samples of MNIST's own writers scatter to (the letterform styles
# of `python -m benchmarks.finetune --styles`, MNIST digits but for a few strokes, give none): left as it is.
MIN_SLANT = 0.12  # shear, x per y
MIN_WIDTH = 1.15  # factor either way
# At most a 45-degree lean, and a hand at most three times narrower or wider than MNIST's: an estimate beyond is
# held there (too few samples, or not digits).
MAX_SLANT = 1.0
MAX_WIDTH = 3.0
# A hand is measured only from samples of this many classes at least: taught a few classes (their 1s and 7s, say),
# those classes' letterforms would pass for a slant or a width of every digit.
MIN_CLASSES = 5
INK = 0.05  # straightened ink this faint is resampling blur, not ink: the digit is cropped to the rest


class Writer(NamedTuple):
    """Undone in this order: the slant (x moves by -slant * (y - centre)), then the width (x scaled by `width`)."""

    slant: float = 0.0
    width: float = 1.0


def writer_of(config) -> Writer | None:
    """The hand a model's config says to undo, or None: a model that reads digits as they come."""
    writer = Writer(config.writer_slant, config.writer_width)
    return None if writer == Writer() else writer


def straighten(digit: np.ndarray, writer: Writer | None) -> np.ndarray:
    """A cropped digit (ink bright, float) with the writer's slant and width undone, cropped to its ink again."""
    if writer is None:
        return digit
    height, width = digit.shape
    image = Image.fromarray(digit.astype(np.float32), "F")
    if writer.slant:
        margin = int(np.ceil(abs(writer.slant) * height / 2)) + 1
        padded = Image.new("F", (width + 2 * margin, height))
        padded.paste(image, (margin, 0))
        # Each output pixel reads the input where the slant put it: x + slant * (y - centre).
        coefficients = (1, writer.slant, -writer.slant * height / 2, 0, 1, 0)
        image = padded.transform(padded.size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    if writer.width != 1.0:
        image = image.resize((max(1, round(image.width * writer.width)), height), Image.Resampling.BILINEAR)
    straightened = np.asarray(image, dtype=np.float32)
    rows, columns = np.flatnonzero(straightened.max(axis=1) > INK), np.flatnonzero(straightened.max(axis=0) > INK)
    if len(rows) == 0:
        return digit
    return straightened[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def shapes(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's slant (the shear, x per y, that its ink's second moments lean by) and its spread (the ink's
    standard deviation across that slant over its standard deviation down the image): (N, H, W) -> (N,), (N,)."""
    weights = np.asarray(images, dtype=np.float64)
    total = np.maximum(weights.sum(axis=(1, 2)), 1e-9)
    rows = np.arange(weights.shape[1], dtype=np.float64)[None, :, None]
    columns = np.arange(weights.shape[2], dtype=np.float64)[None, None, :]
    mean_row = (weights * rows).sum(axis=(1, 2)) / total
    mean_column = (weights * columns).sum(axis=(1, 2)) / total
    dy = rows - mean_row[:, None, None]
    dx = columns - mean_column[:, None, None]
    var_y = np.maximum((weights * dy * dy).sum(axis=(1, 2)) / total, 1e-9)
    var_x = (weights * dx * dx).sum(axis=(1, 2)) / total
    cov = (weights * dx * dy).sum(axis=(1, 2)) / total
    slant = cov / var_y
    across = np.sqrt(np.maximum(var_x - cov * cov / var_y, 1e-9))
    return slant, across / np.sqrt(var_y)


def estimate_writer(images, labels, reference_images, reference_labels) -> Writer | None:
    """The hand of `images` (a person's samples as `preprocess` frames them, with their class labels) against the
    same classes of `reference_images` (the model's own training digits): None when it is within MIN_SLANT and
    MIN_WIDTH of theirs, or when the samples cover fewer than MIN_CLASSES classes. Each class gives its median and
    the hand is the median over classes: a hand leans every digit, while a letterform (a 7's bar, a 1's flag, a
    slashed 0) changes one class's shape, and must not lean or squeeze the rest. The width comes first: it is
    measured across each digit's own slant, so a slant does not change it, while a narrow hand's slant is its
    reference's slant squeezed by the same width."""
    labels, reference_labels = np.asarray(labels), np.asarray(reference_labels)
    classes = [label for label in np.unique(labels) if (reference_labels == label).any()]
    if len(classes) < MIN_CLASSES:
        return None
    slants, spreads = shapes(images)
    reference_slants, reference_spreads = shapes(reference_images)
    widths, leans = [], []
    for label in classes:
        mine, theirs = labels == label, reference_labels == label
        widths.append(np.median(np.median(reference_spreads[theirs]) / spreads[mine]))
        leans.append((slants[mine], np.median(reference_slants[theirs])))
    width = float(np.clip(np.median(widths), 1 / MAX_WIDTH, MAX_WIDTH))
    slant = float(np.median([np.median(own - typical / width) for own, typical in leans]))
    slant = float(np.clip(slant, -MAX_SLANT, MAX_SLANT))
    writer = Writer(slant if abs(slant) >= MIN_SLANT else 0.0, width if max(width, 1 / width) >= MIN_WIDTH else 1.0)
    return None if writer == Writer() else writer
