"""Evaluation statistics: accuracy with a confidence interval, confusion matrix, per-class accuracy.

An accuracy measured on 10,000 test images is itself an estimate, so every accuracy we report comes
with a Wilson score interval. :func:`evaluate_predictions` also scores the first and last halves of
the test set separately: in MNIST the first 5,000 test images come from NIST's cleaner training
writers and the last 5,000 from its harder test writers, and "Programming Machine Learning" reports
the two halves as separate figures.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``correct / total``.

    Unlike the textbook ``p +- z * sqrt(p(1-p)/n)``, it stays inside [0, 1] and does not collapse
    to a single point when every prediction is right, which is exactly where good models live.

    Parameters
    ----------
    correct, total : int
        Number of successes and of trials. ``total = 0`` gives the uninformative ``(0.0, 1.0)``.
    confidence : float
        Two-sided coverage, e.g. 0.95.

    Returns
    -------
    (low, high) : tuple of float
    """
    if not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total, got correct={correct}, total={total}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if total == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, n = correct / total, total
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half_width = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0 or `total` correct one bound is exactly 0 or 1; set it so rounding does not leave 1e-17.
    low = 0.0 if correct == 0 else centre - half_width
    high = 1.0 if correct == total else centre + half_width
    return low, high


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs: rows are true classes, columns predictions.

    One ``np.bincount`` over the pair index ``true * n_classes + predicted`` replaces a Python loop.
    """
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if labels.shape != predicted.shape:
        raise ValueError(f"shapes differ: labels {labels.shape}, predicted {predicted.shape}")
    for name, values in (("labels", labels), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} must lie in 0..{n_classes - 1}")
    pairs = labels.ravel() * n_classes + predicted.ravel()
    counts = np.bincount(pairs, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each true class: diagonal over row sums; NaN for a class with no examples."""
    confusion = np.asarray(confusion)
    row_totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(confusion) / row_totals.astype(np.float64)


def _score(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy, counts and 95% Wilson interval of one slice, as plain Python numbers."""
    correct, total = int(np.sum(labels == predicted)), int(labels.size)
    low, high = wilson_interval(correct, total)
    return {
        "accuracy": correct / total,
        "correct": correct,
        "total": total,
        "wilson_low": low,
        "wilson_high": high,
    }


def evaluate_predictions(labels, predicted, class_names, halves: bool = True) -> dict:
    """Every statistic we report about a set of predictions, as a JSON-serializable dict.

    Parameters
    ----------
    labels, predicted : array_like of int, shape (N,)
        True and predicted class indices, in test-set order (the halves depend on the order).
    class_names : sequence of str
        Name of each class; its length is the number of classes.
    halves : bool
        Also score the first ``N // 2`` and the remaining examples separately (needs N >= 2).

    Returns
    -------
    dict
        ``accuracy``, ``correct``, ``total``, ``confidence`` (0.95), ``wilson_low``,
        ``wilson_high``, ``per_class_accuracy`` (name -> float, or None for a class with no
        examples), ``class_names``, ``confusion_matrix`` (nested lists, rows = true class) and,
        with ``halves``, ``first_half`` and ``last_half``, each with the first five keys.
    """
    labels, predicted = np.asarray(labels).ravel(), np.asarray(predicted).ravel()
    if labels.size == 0:
        raise ValueError("cannot evaluate zero predictions")
    class_names = [str(name) for name in class_names]
    confusion = confusion_matrix(labels, predicted, len(class_names))
    result = _score(labels, predicted)
    result["confidence"] = 0.95
    result["per_class_accuracy"] = {
        name: None if math.isnan(value) else float(value)
        for name, value in zip(class_names, per_class_accuracy(confusion))
    }
    result["class_names"] = class_names
    result["confusion_matrix"] = confusion.tolist()
    if halves and labels.size >= 2:
        middle = labels.size // 2
        result["first_half"] = _score(labels[:middle], predicted[:middle])
        result["last_half"] = _score(labels[middle:], predicted[middle:])
    return result


def json_safe(value):
    """``value`` with every NaN or infinity replaced by None, so that it is valid JSON.

    ``json.dumps`` writes ``NaN`` and ``Infinity``, which JSON does not have: a reader in another
    language fails on them. Nested dicts, lists and tuples are copied; NumPy scalars become
    Python numbers.
    """
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _describe(score: dict) -> str:
    return (
        f"{100 * score['accuracy']:.2f}% ({score['correct']}/{score['total']}), "
        f"95% interval {100 * score['wilson_low']:.2f}-{100 * score['wilson_high']:.2f}%"
    )


def format_evaluation(metrics: dict) -> str:
    """A readable text block for a dict made by :func:`evaluate_predictions`."""
    lines = [f"accuracy     {_describe(metrics)}"]
    for key, label in (("first_half", "first half "), ("last_half", "last half  ")):
        if key in metrics:
            lines.append(f"{label}  {_describe(metrics[key])}")

    names = metrics["class_names"]
    confusion = metrics["confusion_matrix"]
    width = max(len(name) for name in names)
    lines += ["", "per-class accuracy"]
    for i, (name, row) in enumerate(zip(names, confusion)):
        value = metrics["per_class_accuracy"][name]
        shown = "    n/a" if value is None else f"{100 * value:6.2f}%"
        lines.append(f"  {name:<{width}}  {shown}  ({row[i]}/{sum(row)})")

    # Columns are labelled by class index because class names ("T-shirt/top") are too wide.
    cell = max(len(str(count)) for row in confusion for count in row) + 1
    cell = max(cell, len(str(len(names) - 1)) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class index)"]
    lines.append(" " * (width + 6) + "".join(f"{j:>{cell}}" for j in range(len(names))))
    for i, (name, row) in enumerate(zip(names, confusion)):
        lines.append(f"  {i:>2} {name:<{width}} " + "".join(f"{count:>{cell}}" for count in row))
    return "\n".join(lines)
