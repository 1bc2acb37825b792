"""The "not a digit" answer: a digit model's last output, trained on generated non-digits (nondigits.py), and
the threshold on its probability, chosen on the validation split, above which a reading says "not a digit"."""

import dataclasses

import numpy as np

from .metrics import softmax

NOT_A_DIGIT = "not a digit"  # the last class's name, and a reading's `error` when that class wins


@dataclasses.dataclass(frozen=True)
class RejectConfig:
    """The rejection's knobs, each chosen on the validation split (benchmarks/not_a_digit.py measures them)."""

    # Generated non-digits added to the training part, per training digit: 24,000 beside MNIST's 54,000, about four
    # digit classes' worth and 44% more steps an epoch (64% with the rendered digits below). Twice the 12,000 used
    # before took every generated family 0.3-9 points further on validation (benchmarks/README.md). A share, not a
    # count, so a --limit run or a small data set of the user's is not swamped by non-digits.
    nondigits_per_digit: float = 4 / 9
    # Training digits drawn as pictures and read back by `preprocess` (nondigits.rendered_digit), per training
    # digit, beside MNIST's own framing: without them the output flags people's digits for being framed by
    # `preprocess` rather than by MNIST's makers. 0.2 with some redrawn by an even pen: fine-pen and marker digits
    # flagged 0.9% on validation rather than 1.1 and 1.4% (benchmarks/README.md).
    rendered_per_digit: float = 0.2
    # Training digits as the strip reader crops them out of touching numbers (nondigits.blob_digits), per training
    # digit: a number's digits are judged on such crops, and without them the output flags them as cut digits.
    # At 0.2 a gated model reads 90-95% of touching and 76-87% of overlapping validation numbers, against 72-80%
    # and 27-33% without, and 88-95 / 72-80% with half as many crops, of any reading (benchmarks/README.md).
    blob_digits_per_digit: float = 0.2
    # Non-digits beside the validation digits: the threshold and the temperature are fitted on both.
    validation_nondigits: int = 3_000
    # Share of validation digits the threshold may flag: half the 1% allowed on the test set, as a margin.
    digit_flag_budget: float = 0.005
    # Never flag unless "not a digit" is more likely than all ten digits together.
    threshold_floor: float = 0.5
    # Several digits read in one image are not a number when the mean of their "not a digit" probabilities reaches
    # this share of the threshold: each digit of a number is clearly one, while the digit-like pieces the search
    # cuts a non-digit into each score lower than its whole would. At 0.6 (0.3 for a threshold of 0.5) gated-avg-v8
    # read every validation number as at 1 and flagged up to 10 points more of each generated family; at 0.5 the
    # averaged detectors read the same validation numbers and flag 1-2 points more pictograms, letters and doodles;
    # below it, overlapping numbers start to pay (benchmarks/README.md).
    several_digits_share: float = 0.5
    seed: int = 0  # of the validation non-digits (the training ones take the run's seed)


REJECT = RejectConfig()


def rejects(config) -> bool:
    """Whether a model (by its ModelConfig) has the "not a digit" output; models trained before it do not."""
    return getattr(config, "not_a_digit_threshold", None) is not None


def digit_probabilities(probabilities: np.ndarray, config) -> tuple[np.ndarray, np.ndarray | None]:
    """(the ten digits' probabilities, the "not a digit" probability or None) of predict's rows."""
    if not rejects(config):
        return probabilities, None
    return probabilities[..., :-1], probabilities[..., -1]


def flagged(probabilities: np.ndarray, config) -> np.ndarray:
    """Which rows of predict's probabilities say "not a digit" (all False for a model without the output)."""
    _, not_a_digit = digit_probabilities(probabilities, config)
    if not_a_digit is None:
        return np.zeros(len(probabilities), dtype=bool)
    return not_a_digit >= config.not_a_digit_threshold


def choose_threshold(digit_scores: np.ndarray, reject: RejectConfig = REJECT) -> float:
    """The lowest threshold that flags at most the budget's share of these (validation) digits: every
    non-digit above it is caught, and lowering it further would cost digits."""
    if len(digit_scores) == 0:
        return reject.threshold_floor
    return max(reject.threshold_floor, float(np.quantile(digit_scores, 1 - reject.digit_flag_budget)))


def training_examples(x_train, y_train, num_classes: int, seed: int, read_strips=None, reject: RejectConfig = REJECT):
    """The run's generated examples, (images, labels): non-digits as the last class, then training digits as
    `preprocess` reads them from pictures, then as the strip reader `read_strips` crops them out of touching numbers
    (none without one). All are made from these training digits only."""
    from .data import cache_folder
    from .nondigits import cached_blob_digits, cached_pool, cached_renders

    count = len(x_train)
    nondigits = cached_pool(round(count * reject.nondigits_per_digit), x_train, y_train, seed, cache_folder())
    renders, labels = cached_renders(round(count * reject.rendered_per_digit), x_train, y_train, seed, cache_folder())
    blobs, blob_labels = np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)
    if read_strips is not None:
        blob_count = round(count * reject.blob_digits_per_digit)
        blobs, blob_labels = cached_blob_digits(blob_count, x_train, y_train, seed, cache_folder(), read_strips)
    images = np.concatenate([nondigits, renders, blobs])
    nondigit_labels = np.full(len(nondigits), num_classes - 1, dtype=np.int64)
    return images, np.concatenate([nondigit_labels, labels.astype(np.int64), blob_labels.astype(np.int64)])


def with_validation_nondigits(x_validation, y_validation, num_classes: int, reject: RejectConfig = REJECT):
    """The validation digits followed by held-in non-digits made from them, labelled as the last class."""
    from .data import cache_folder
    from .nondigits import cached_pool

    # The seed is offset so these never repeat the training pool's drawings at seed 0.
    negatives = cached_pool(
        reject.validation_nondigits, x_validation, y_validation, 1_000_000 + reject.seed, cache_folder()
    )
    images = np.concatenate([np.asarray(x_validation), negatives])
    labels = np.concatenate([np.asarray(y_validation, dtype=np.int64), np.full(len(negatives), num_classes - 1)])
    return images, labels


def threshold_facts(logits: np.ndarray, labels: np.ndarray, temperature: float, reject: RejectConfig = REJECT):
    """The threshold chosen on validation logits (digits and non-digits) at `temperature`, and what it flags."""
    scores = softmax(logits, temperature)[:, -1]
    is_nondigit = labels == logits.shape[1] - 1
    threshold = choose_threshold(scores[~is_nondigit], reject)
    return {
        "not_a_digit_threshold": threshold,
        "validation_digits_flagged": float((scores[~is_nondigit] >= threshold).mean()),
        "validation_nondigits_flagged": float((scores[is_nondigit] >= threshold).mean()) if is_nondigit.any() else None,
    }


def calibrate(model, x_validation, y_validation, reject: RejectConfig = REJECT) -> dict:
    """Chooses the model's threshold on its validation split at its current temperature; returns the facts."""
    from .inference import predict_logits

    images, labels = with_validation_nondigits(x_validation, y_validation, model.config.num_classes, reject)
    facts = threshold_facts(predict_logits(model, images), labels, model.config.temperature, reject)
    model.config = dataclasses.replace(model.config, not_a_digit_threshold=facts["not_a_digit_threshold"])
    return facts
