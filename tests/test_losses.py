"""Losses from logits: exact at the extremes, row-wise stable, with the fused gradients."""

from __future__ import annotations

import numpy as np
import pytest

from mlplab.engine.losses import MeanSquaredError, SoftmaxCrossEntropy, make_loss
from mlplab.errors import ConfigError


def reference_cross_entropy(logits, labels):
    """Per-row -log softmax(z)[y], in float64 with the row's own maximum (log-sum-exp)."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return lse - z[np.arange(len(z)), labels]


def onehot(labels, n_classes):
    return np.eye(n_classes)[labels]


def test_cross_entropy_is_finite_and_exact_for_logits_of_plus_minus_1000():
    loss = SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert loss.forward(np.array([[1000.0, -1000.0]]), np.array([0])) == 0.0
        assert loss.forward(np.array([[1000.0, -1000.0]]), np.array([1])) == 2000.0
        assert loss.forward(np.array([[-1000.0, 1000.0]]), np.array([0])) == 2000.0
        grad = loss.backward()
    np.testing.assert_array_equal(grad, [[-1.0, 1.0]])


def test_cross_entropy_of_float32_huge_logits_is_exact_too():
    loss = SoftmaxCrossEntropy()
    logits = np.array([[1000.0, -1000.0]], dtype=np.float32)
    assert loss.forward(logits, np.array([1])) == 2000.0
    assert loss.backward().dtype == np.float32


def test_cross_entropy_of_each_row_does_not_depend_on_the_other_rows_scale():
    """The batch-wide maximum trap: with one global max, the row at -1000 would underflow."""
    rows = np.array([[1000.0, 999.0, 998.0], [-1000.0, -1001.0, -1003.0], [0.5, -0.5, 2.0]])
    labels = np.array([1, 2, 0])
    loss = SoftmaxCrossEntropy()
    alone = [loss.forward(rows[i : i + 1], labels[i : i + 1]) for i in range(3)]
    together = loss.forward(rows, labels)
    assert np.isfinite(together)
    assert together == pytest.approx(np.mean(alone), rel=1e-14)
    np.testing.assert_allclose(alone, reference_cross_entropy(rows, labels), rtol=1e-12)
    assert alone[1] == pytest.approx(3.0 + np.log(1 + np.exp(-1) + np.exp(-3)), rel=1e-14)


def test_cross_entropy_matches_the_textbook_formula_on_ordinary_logits():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((20, 10)), rng.integers(0, 10, 20)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(20), labels]))
    assert SoftmaxCrossEntropy().forward(logits, labels) == pytest.approx(expected, rel=1e-13)


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((7, 4)) * 5, rng.integers(0, 4, 7)
    loss = SoftmaxCrossEntropy()
    loss.forward(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss.backward(), (p - onehot(labels, 4)) / 7, rtol=1e-12, atol=1e-16)


def test_cross_entropy_does_not_change_the_logits():
    logits = np.array([[3.0, 1.0, -2.0]])
    before = logits.copy()
    loss = SoftmaxCrossEntropy()
    loss.forward(logits, np.array([0]))
    loss.backward()
    np.testing.assert_array_equal(logits, before)


def test_cross_entropy_predictions_are_probabilities_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-5000.0, -5000.0, -5001.0]])
    p = SoftmaxCrossEntropy().predict(logits)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0])


def test_cross_entropy_float32_agrees_with_float64_within_1e_5_relative():
    """Stated tolerance: float32 loss within 1e-5 relative of float64, gradient within 1e-6
    absolute (entries are at most 1/N = 0.016)."""
    rng = np.random.default_rng(2)
    logits, labels = rng.standard_normal((64, 10)) * 4, rng.integers(0, 10, 64)
    loss64, loss32 = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    value64 = loss64.forward(logits, labels)
    value32 = loss32.forward(logits.astype(np.float32), labels)
    assert value32 == pytest.approx(value64, rel=1e-5)
    grad32 = loss32.backward()
    assert grad32.dtype == np.float32
    np.testing.assert_allclose(grad32, loss64.backward(), rtol=0, atol=1e-6)


def test_mse_is_half_the_squared_distance_to_onehot_averaged_over_rows():
    rng = np.random.default_rng(3)
    logits, labels = rng.standard_normal((5, 3)), rng.integers(0, 3, 5)
    activations = {
        "sigmoid": 1 / (1 + np.exp(-logits)),
        "softmax": np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True),
        "linear": logits,
    }
    for name, a in activations.items():
        expected = 0.5 * np.mean(np.sum((a - onehot(labels, 3)) ** 2, axis=1))
        assert MeanSquaredError(name).forward(logits, labels) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("output_activation", ["sigmoid", "softmax", "linear"])
def test_mse_gradient_matches_central_differences(output_activation):
    rng = np.random.default_rng(4)
    logits, labels = rng.standard_normal((4, 3)), rng.integers(0, 3, 4)
    loss = MeanSquaredError(output_activation)
    loss.forward(logits, labels)
    analytic = loss.backward()
    numeric = np.empty_like(logits)
    h = 1e-6
    for index in np.ndindex(logits.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = (loss.forward(plus, labels) - loss.forward(minus, labels)) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-10)


def test_mse_with_sigmoid_is_finite_for_huge_logits():
    loss = MeanSquaredError("sigmoid")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss.forward(np.array([[1000.0, -1000.0]]), np.array([0]))
        grad = loss.backward()
    assert value == 0.0
    np.testing.assert_array_equal(grad, [[0.0, 0.0]])


def test_loss_names_and_options_are_checked():
    assert isinstance(make_loss("cross-entropy"), SoftmaxCrossEntropy)
    assert make_loss("mse", output_activation="softmax").output_activation == "softmax"
    with pytest.raises(ConfigError, match="unknown loss 'hinge'"):
        make_loss("hinge")
    with pytest.raises(ConfigError, match="mse output activation 'relu'"):
        MeanSquaredError("relu")
