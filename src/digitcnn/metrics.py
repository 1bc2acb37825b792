"""Classification and calibration metrics on plain numpy arrays: confusion matrix, per-class scores, ECE,
temperature scaling. No torch and no scikit-learn, so evaluation code and plots can share them anywhere."""

import dataclasses
import math

import numpy as np

# Temperature search range, as in the usual temperature-scaling recipes: below 0.05 or above 20 a model
# is broken rather than miscalibrated, and the bounds keep the search finite when the NLL is monotone.
TEMPERATURE_RANGE = (0.05, 20.0)
# Probabilities are clipped here before the log, so one zero-probability label cannot make the mean
# NLL infinite and hide every other example (scikit-learn's log_loss clips the same way).
PROBABILITY_FLOOR = 1e-15


@dataclasses.dataclass(frozen=True)
class ClassificationReport:
    """Per-class scores (arrays indexed by class) and their unweighted (macro) means.

    Undefined ratios (0/0, e.g. the precision of a class never predicted) count as 0.0, like
    scikit-learn's zero_division=0; macro means include every class, present or not."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # number of true examples of each class
    macro_precision: float
    macro_recall: float
    macro_f1: float
    accuracy: float

    def to_dict(self) -> dict:
        """Plain lists and floats, ready for json.dump."""
        return {
            field.name: (value.tolist() if isinstance(value, np.ndarray) else value)
            for field in dataclasses.fields(self)
            for value in [getattr(self, field.name)]
        }


@dataclasses.dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins for a reliability diagram; empty bins hold NaN confidence and accuracy."""

    edges: np.ndarray  # (bins + 1,) from 0 to 1; bin i covers (edges[i], edges[i + 1]]
    confidence: np.ndarray  # (bins,) mean top-label probability in the bin
    accuracy: np.ndarray  # (bins,) fraction of the bin's predictions that are right
    count: np.ndarray  # (bins,) int64 examples in the bin


def _labels(values, name: str, length: int | None = None) -> np.ndarray:
    labels = np.asarray(values)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {labels.shape}")
    is_integral = np.issubdtype(labels.dtype, np.integer) or np.all(np.equal(np.mod(labels, 1), 0))
    if not is_integral:
        raise ValueError(f"{name} must hold integer class indices")
    if length is not None and len(labels) != length:
        raise ValueError(f"{name} has {len(labels)} entries but {length} were expected")
    return labels.astype(np.int64)


def _scores(values, name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] < 2:
        raise ValueError(f"{name} must have shape (examples, classes) with at least 2 classes, got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} contains NaN or infinity")
    return scores


def _check_label_range(labels: np.ndarray, num_classes: int, name: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}")


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    num_classes = int(num_classes)
    truth = _labels(y_true, "y_true")
    predicted = _labels(y_pred, "y_pred", len(truth))
    _check_label_range(truth, num_classes, "y_true")
    _check_label_range(predicted, num_classes, "y_pred")
    flat = np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def per_class_metrics(confusion) -> ClassificationReport:
    """Precision, recall, F1 and support for every class of a confusion matrix, plus macro means and accuracy."""
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion must be a square (K, K) matrix, got shape {matrix.shape}")
    if np.any(matrix < 0):
        raise ValueError("confusion holds negative counts")
    true_positives = np.diag(matrix).astype(np.float64)
    predicted_totals = matrix.sum(axis=0)
    support = matrix.sum(axis=1).astype(np.int64)
    precision = _ratio(true_positives, predicted_totals)
    recall = _ratio(true_positives, support)
    # 2TP / (2TP + FP + FN) equals 2PR / (P + R) wherever that is defined, and is 0 where it is not.
    f1 = _ratio(2 * true_positives, predicted_totals + support)
    total = matrix.sum()
    return ClassificationReport(
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        accuracy=float(true_positives.sum() / total) if total > 0 else 0.0,
    )


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) along the last axis, in float64; the row maximum is subtracted first
    so large logits cannot overflow."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def negative_log_likelihood(scores, y_true, *, from_logits: bool = False) -> float:
    """Mean NLL in nats of the true labels: `scores` are probabilities (rows summing to 1), or logits when
    from_logits=True (then computed with a stable log-softmax rather than the log of a softmax)."""
    values = _scores(scores, "scores")
    truth = _labels(y_true, "y_true", len(values))
    _check_label_range(truth, values.shape[1], "y_true")
    rows = np.arange(len(values))
    if from_logits:
        return float(-_log_softmax(values)[rows, truth].mean())
    if np.any(values < 0) or not np.allclose(values.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(
            "scores are not probabilities (rows must be non-negative and sum to 1); pass from_logits=True for logits"
        )
    return float(-np.log(np.maximum(values[rows, truth], PROBABILITY_FLOOR)).mean())


def reliability_bins(probabilities, y_true, bins: int = 15) -> ReliabilityBins:
    """Bins the top-label confidence into `bins` equal-width bins and reports each bin's mean confidence,
    accuracy and count."""
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    bins = int(bins)
    values = _scores(probabilities, "probabilities")
    truth = _labels(y_true, "y_true", len(values))
    _check_label_range(truth, values.shape[1], "y_true")
    confidence = values.max(axis=1)
    correct = (values.argmax(axis=1) == truth).astype(np.float64)
    # k / bins rather than linspace, so edges such as 0.6 are the exact nearest floats; right-closed bins
    # (searchsorted "left") follow Guo et al., so a confidence of exactly 1 falls in the last bin.
    edges = np.arange(bins + 1, dtype=np.float64) / bins
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(index, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
    return ReliabilityBins(edges=edges, confidence=mean_confidence, accuracy=accuracy, count=count)


def expected_calibration_error(probabilities, y_true, bins: int = 15) -> float:
    """Top-label ECE: the count-weighted mean of |accuracy − confidence| over equal-width confidence bins."""
    binned = reliability_bins(probabilities, y_true, bins)
    filled = binned.count > 0
    gaps = np.abs(binned.accuracy[filled] - binned.confidence[filled])
    return float(np.sum(gaps * binned.count[filled]) / binned.count.sum())


def fit_temperature(logits, y_true, tolerance: float = 1e-5) -> float:
    """The temperature T minimizing the NLL of softmax(logits / T) on (validation) logits — temperature
    scaling, Guo et al. 2017. Deterministic; returns a bound of TEMPERATURE_RANGE if the optimum lies beyond.

    The NLL is convex in 1/T (a log-sum-exp of linear functions), hence unimodal in log T, so a
    golden-section search on log T finds the optimum without gradients or a starting guess."""
    values = _scores(logits, "logits")
    truth = _labels(y_true, "y_true", len(values))
    _check_label_range(truth, values.shape[1], "y_true")
    true_logits = values[np.arange(len(values)), truth]
    row_maxima = values.max(axis=1)

    def nll(log_temperature: float) -> float:
        inverse = math.exp(-log_temperature)
        log_normalizer = inverse * row_maxima + np.log(np.exp(inverse * (values - row_maxima[:, None])).sum(axis=1))
        return float(np.mean(log_normalizer - inverse * true_logits))

    low, high = math.log(TEMPERATURE_RANGE[0]), math.log(TEMPERATURE_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    nll_left, nll_right = nll(left), nll(right)
    while high - low > tolerance:
        if nll_left <= nll_right:
            high, right, nll_right = right, left, nll_left
            left = high - ratio * (high - low)
            nll_left = nll(left)
        else:
            low, left, nll_left = left, right, nll_right
            right = low + ratio * (high - low)
            nll_right = nll(right)
    return math.exp((low + high) / 2)


def most_confident_mistakes(probabilities, y_true, count: int) -> np.ndarray:
    """Indices of up to `count` wrongly predicted examples, most confident first (ties by index)."""
    if int(count) != count or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count}")
    values = _scores(probabilities, "probabilities")
    truth = _labels(y_true, "y_true", len(values))
    _check_label_range(truth, values.shape[1], "y_true")
    wrong = np.flatnonzero(values.argmax(axis=1) != truth)
    order = np.argsort(-values[wrong].max(axis=1), kind="stable")
    return wrong[order[: int(count)]].astype(np.int64)
