"""metrics.py against hand-computed cases and against scikit-learn on random labels."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from digitcnn.metrics import (
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    most_confident_mistakes,
    negative_log_likelihood,
    per_class_metrics,
    reliability_bins,
    softmax,
)


@st.composite
def label_pairs(draw):
    num_classes = draw(st.integers(1, 12))
    size = draw(st.integers(1, 200))
    labels = st.lists(st.integers(0, num_classes - 1), min_size=size, max_size=size)
    return np.array(draw(labels)), np.array(draw(labels)), num_classes


def test_confusion_matrix_hand_case():
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_per_class_metrics_hand_case():
    # Class 0: TP 1, predicted 2, true 2. Class 1: TP 1, predicted 2, true 1. Class 2: TP 2, predicted 2,
    # true 3. Class 3: never true, never predicted, so every ratio is 0/0 -> 0.
    report = per_class_metrics(confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=4))
    np.testing.assert_allclose(report.precision, [1 / 2, 1 / 2, 1, 0])
    np.testing.assert_allclose(report.recall, [1 / 2, 1, 2 / 3, 0])
    np.testing.assert_allclose(report.f1, [1 / 2, 2 / 3, 4 / 5, 0])
    np.testing.assert_array_equal(report.support, [2, 1, 3, 0])
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.macro_f1 == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 4)
    assert report.to_dict()["support"] == [2, 1, 3, 0]


# With one class scikit-learn warns that it cannot infer the labels, although we pass them.
@pytest.mark.filterwarnings("ignore:A single label:UserWarning")
@settings(max_examples=60, deadline=None)
@given(label_pairs())
def test_metrics_match_scikit_learn(pair):
    truth, predicted, num_classes = pair
    labels = list(range(num_classes))
    matrix = confusion_matrix(truth, predicted, num_classes)
    np.testing.assert_array_equal(matrix, sk.confusion_matrix(truth, predicted, labels=labels))
    report = per_class_metrics(matrix)
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    np.testing.assert_allclose(report.precision, precision)
    np.testing.assert_allclose(report.recall, recall)
    np.testing.assert_allclose(report.f1, f1)
    np.testing.assert_array_equal(report.support, support)
    macro = sk.precision_recall_fscore_support(truth, predicted, labels=labels, average="macro", zero_division=0)
    assert (report.macro_precision, report.macro_recall, report.macro_f1) == pytest.approx(macro[:3])
    assert report.accuracy == pytest.approx(sk.accuracy_score(truth, predicted))


def test_metrics_match_scikit_learn_on_a_realistic_mnist_sized_case():
    generator = np.random.default_rng(0)
    truth = generator.integers(0, 10, 10_000)
    # 97% right, the rest wrong uniformly: per-class numbers in the range a real digit model produces.
    predicted = np.where(generator.random(10_000) < 0.97, truth, generator.integers(0, 10, 10_000))
    report = per_class_metrics(confusion_matrix(truth, predicted, 10))
    np.testing.assert_allclose(report.f1, sk.f1_score(truth, predicted, average=None))
    assert report.macro_recall == pytest.approx(sk.recall_score(truth, predicted, average="macro"))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="y_pred has 2 entries"):
        confusion_matrix([0, 1, 1], [0, 1], 2)
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix([0.5], [0], 2)
    with pytest.raises(ValueError, match="square"):
        per_class_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="temperature"):
        softmax([[1.0, 2.0]], temperature=0)
    with pytest.raises(ValueError, match="from_logits"):
        negative_log_likelihood([[3.0, -1.0]], [0])
    with pytest.raises(ValueError, match="bins"):
        reliability_bins([[0.5, 0.5]], [0], bins=0)


def test_softmax_is_stable_and_honours_temperature():
    probabilities = softmax([[1000.0, 1000.0, 0.0], [-1000.0, 0.0, 1000.0]])
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities[0], [0.5, 0.5, 0.0], atol=1e-12)
    logits = np.random.default_rng(1).normal(size=(5, 10))
    np.testing.assert_allclose(softmax(logits, temperature=2.0), softmax(logits / 2.0))
    np.testing.assert_allclose(softmax(logits).sum(axis=1), 1.0)


def test_negative_log_likelihood_from_probabilities_and_logits_agree():
    logits = np.random.default_rng(2).normal(scale=5, size=(50, 10))
    truth = np.arange(50) % 10
    from_logits = negative_log_likelihood(logits, truth, from_logits=True)
    assert from_logits == pytest.approx(negative_log_likelihood(softmax(logits), truth))
    assert from_logits == pytest.approx(sk.log_loss(truth, softmax(logits), labels=range(10)))
    assert negative_log_likelihood([[0.5, 0.5]], [1]) == pytest.approx(np.log(2))
    # A confident wrong answer is large but finite.
    assert np.isfinite(negative_log_likelihood([[1.0, 0.0]], [1]))


def test_expected_calibration_error_hand_case():
    # Five bins of width 0.2. Confidences 0.55 (right) | 0.65 (wrong), 0.75 (right) | 0.95 (right):
    # |1 - 0.55| * 1/4 + |0.5 - 0.7| * 2/4 + |1 - 0.95| * 1/4 = 0.1125 + 0.1 + 0.0125 = 0.225.
    probabilities = np.array([[0.55, 0.45], [0.65, 0.35], [0.25, 0.75], [0.95, 0.05]])
    truth = np.array([0, 1, 1, 0])
    assert expected_calibration_error(probabilities, truth, bins=5) == pytest.approx(0.225)
    binned = reliability_bins(probabilities, truth, bins=5)
    np.testing.assert_array_equal(binned.count, [0, 0, 1, 2, 1])
    np.testing.assert_allclose(binned.confidence[2:], [0.55, 0.7, 0.95])
    np.testing.assert_allclose(binned.accuracy[2:], [1.0, 0.5, 1.0])
    assert np.isnan(binned.accuracy[0])
    np.testing.assert_allclose(binned.edges, np.linspace(0, 1, 6))


def test_bins_are_right_closed_and_confidence_one_is_counted():
    binned = reliability_bins([[0.6, 0.4], [1.0, 0.0]], [0, 0], bins=5)
    np.testing.assert_array_equal(binned.count, [0, 0, 1, 0, 1])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(2, 10), st.integers(1, 20), st.integers(0, 2**32 - 1))
def test_expected_calibration_error_matches_a_direct_loop(size, num_classes, bins, seed):
    generator = np.random.default_rng(seed)
    probabilities = softmax(generator.normal(scale=3, size=(size, num_classes)))
    truth = generator.integers(0, num_classes, size)
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == truth
    expected = 0.0
    for lower, upper in zip(np.arange(bins) / bins, np.arange(1, bins + 1) / bins, strict=True):
        inside = (confidence > lower) & (confidence <= upper)
        if inside.any():
            expected += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    assert expected_calibration_error(probabilities, truth, bins) == pytest.approx(expected, abs=1e-12)


def calibrated_logits(size, seed, num_classes=10):
    """Logits of a perfectly calibrated model: labels are drawn from the model's own softmax."""
    generator = np.random.default_rng(seed)
    logits = generator.normal(scale=2.5, size=(size, num_classes))
    cumulative = softmax(logits).cumsum(axis=1)
    labels = (generator.random((size, 1)) > cumulative).sum(axis=1).clip(max=num_classes - 1)
    return logits, labels


def test_fit_temperature_recovers_a_known_temperature():
    logits, labels = calibrated_logits(10_000, seed=3)
    overconfident = 3.0 * logits
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.08)
    assert negative_log_likelihood(overconfident / temperature, labels, from_logits=True) < (
        negative_log_likelihood(overconfident, labels, from_logits=True)
    )
    ece_before = expected_calibration_error(softmax(overconfident), labels)
    ece_after = expected_calibration_error(softmax(overconfident, temperature), labels)
    assert ece_after < ece_before / 3


def test_fit_temperature_is_deterministic_scale_equivariant_and_a_minimum():
    logits, labels = calibrated_logits(2_000, seed=4)
    temperature = fit_temperature(logits, labels)
    assert fit_temperature(logits, labels) == temperature
    assert fit_temperature(2 * logits, labels) == pytest.approx(2 * temperature, rel=1e-3)
    best = negative_log_likelihood(logits / temperature, labels, from_logits=True)
    for nudged in (temperature * 0.98, temperature * 1.02):
        assert negative_log_likelihood(logits / nudged, labels, from_logits=True) > best


def test_fit_temperature_stops_at_the_range_when_the_data_are_separable():
    logits = np.array([[5.0, 0.0], [0.0, 5.0]])
    assert fit_temperature(logits, [0, 1]) == pytest.approx(0.05, rel=1e-3)


def test_most_confident_mistakes():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.8, 0.2]])
    truth = np.array([0, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(most_confident_mistakes(probabilities, truth, 3), [1, 4, 5])
    np.testing.assert_array_equal(most_confident_mistakes(probabilities, truth, 10), [1, 4, 5, 3, 2])
    assert most_confident_mistakes(probabilities, truth, 0).size == 0
    assert most_confident_mistakes([[1.0, 0.0]], [0], 5).size == 0
