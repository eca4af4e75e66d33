import json
import math

import numpy as np
import pytest

from mlplab.training.metrics import (
    confusion_matrix,
    evaluate_predictions,
    format_evaluation,
    json_safe,
    per_class_accuracy,
    wilson_interval,
)

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
FASHION += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def noisy_predictions(n=10000, error_rate=0.05, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    predicted = np.where(rng.random(n) < error_rate, rng.integers(0, 10, n), labels)
    return labels, predicted


def test_accuracy_is_the_fraction_of_matches():
    metrics = evaluate_predictions([1, 2, 3, 4], [1, 2, 0, 4], [str(d) for d in range(5)])
    assert metrics["accuracy"] == 0.75 and metrics["correct"] == 3 and metrics["total"] == 4


def test_wilson_interval_matches_the_published_value_for_95_of_100():
    low, high = wilson_interval(95, 100)
    assert low == pytest.approx(0.8882, abs=1e-4)
    assert high == pytest.approx(0.9785, abs=1e-4)


@pytest.mark.parametrize("correct, total", [(0, 10), (3, 10), (95, 100), (9812, 10000), (50, 50)])
def test_wilson_bounds_solve_the_score_equation(correct, total):
    # The Wilson bounds are the proportions q with |p - q| = z * sqrt(q (1 - q) / n).
    z = 1.959963984540054
    p = correct / total
    for q in wilson_interval(correct, total):
        assert abs(p - q) == pytest.approx(z * math.sqrt(q * (1 - q) / total), abs=1e-12)


def test_wilson_interval_contains_the_observed_accuracy_and_stays_in_unit_range():
    for correct, total in [(0, 7), (7, 7), (1, 2), (9999, 10000)]:
        low, high = wilson_interval(correct, total)
        assert 0.0 <= low <= correct / total <= high <= 1.0


def test_wilson_interval_narrows_with_more_samples():
    widths = [np.subtract(*wilson_interval(9 * n // 10, n)[::-1]) for n in (10, 100, 1000, 10000)]
    assert all(later < earlier for earlier, later in zip(widths, widths[1:]))


def test_wilson_interval_widens_with_higher_confidence():
    narrow = wilson_interval(90, 100, confidence=0.9)
    wide = wilson_interval(90, 100, confidence=0.99)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]


def test_wilson_interval_of_no_data_is_the_whole_unit_range():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bincount_confusion_matrix_equals_a_loop():
    labels, predicted = noisy_predictions(n=3000, error_rate=0.3)
    expected = np.zeros((10, 10), dtype=np.int64)
    for true, guess in zip(labels, predicted):
        expected[true, guess] += 1
    confusion = confusion_matrix(labels, predicted, 10)
    assert confusion.dtype == np.int64
    np.testing.assert_array_equal(confusion, expected)


def test_confusion_matrix_rows_are_true_classes():
    confusion = confusion_matrix([2, 2, 2], [0, 2, 2], 3)
    assert confusion[2, 0] == 1 and confusion[0, 2] == 0 and confusion[2, 2] == 2


def test_confusion_matrix_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError):
        confusion_matrix([0, 10], [0, 1], 10)


def test_per_class_accuracy_is_diagonal_over_row_totals_and_nan_for_empty_classes():
    confusion = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    result = per_class_accuracy(confusion)
    np.testing.assert_allclose(result[:2], [0.75, 0.5])
    assert math.isnan(result[2])


def test_evaluation_halves_are_first_and_last_5000_of_10000():
    labels, predicted = noisy_predictions()
    predicted[:5000] = labels[:5000]  # make the first half perfect, so the halves differ
    metrics = evaluate_predictions(labels, predicted, [str(d) for d in range(10)])
    assert metrics["first_half"]["total"] == metrics["last_half"]["total"] == 5000
    assert metrics["first_half"]["accuracy"] == 1.0
    assert metrics["last_half"]["accuracy"] == np.mean(predicted[5000:] == labels[5000:])
    assert metrics["first_half"]["correct"] + metrics["last_half"]["correct"] == metrics["correct"]


def test_evaluation_is_plain_json_with_consistent_numbers():
    labels, predicted = noisy_predictions()
    predicted[labels == 3] = 4  # class 3 is always wrong
    metrics = evaluate_predictions(labels, predicted, FASHION)
    json.dumps(metrics, allow_nan=False)
    assert metrics["total"] == 10000
    assert metrics["accuracy"] == np.mean(predicted == labels)
    assert metrics["wilson_low"] < metrics["accuracy"] < metrics["wilson_high"]
    assert metrics["per_class_accuracy"]["Dress"] == 0.0
    assert np.sum(metrics["confusion_matrix"]) == 10000


def test_evaluation_reports_none_for_a_class_with_no_examples():
    metrics = evaluate_predictions([0, 0, 1], [0, 1, 1], ["a", "b", "c"], halves=False)
    assert metrics["per_class_accuracy"]["c"] is None
    assert "first_half" not in metrics


def test_formatted_evaluation_shows_interval_halves_classes_and_aligned_matrix():
    labels, predicted = noisy_predictions()
    text = format_evaluation(evaluate_predictions(labels, predicted, FASHION))
    assert "95% interval" in text and "first half" in text and "last half" in text
    assert "Ankle boot" in text
    matrix_rows = text.split("confusion matrix")[1].splitlines()[2:]
    assert len(matrix_rows) == 10
    assert len({len(row) for row in matrix_rows}) == 1  # every row the same width: aligned


def test_a_single_test_image_is_scored_without_halves_and_formats():
    metrics = evaluate_predictions([3], [3], [str(d) for d in range(10)])
    assert metrics["accuracy"] == 1.0 and metrics["total"] == 1
    assert "first_half" not in metrics and "last_half" not in metrics
    text = format_evaluation(metrics)
    assert "accuracy" in text and "first half" not in text


def test_json_safe_turns_nan_and_infinities_into_null_everywhere():
    value = {"loss": float("nan"), "nested": [np.float32("inf"), 1.5, {"x": -math.inf}], "n": 3}
    safe = json_safe(value)
    assert safe == {"loss": None, "nested": [None, 1.5, {"x": None}], "n": 3}
    json.dumps(safe, allow_nan=False)  # raises on NaN or Infinity
    assert math.isnan(value["loss"])  # the input is left as it was
