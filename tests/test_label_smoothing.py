"""Label smoothing in the softmax cross-entropy: exact, stable, the right gradient, torch's loss."""

from __future__ import annotations

import numpy as np
import pytest

from mlplab.engine.architecture import build_network
from mlplab.engine.gradcheck import check_architecture, check_gradients
from mlplab.engine.losses import SoftmaxCrossEntropy, make_loss
from mlplab.errors import ConfigError


def reference_smoothed_cross_entropy(logits, labels, eps):
    """mean_i -sum_k q_ik log softmax(z_i)_k with q = (1-eps) onehot + eps/K, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    n, k = z.shape
    m = z.max(axis=1, keepdims=True)
    log_p = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    q = np.full((n, k), eps / k)
    q[np.arange(n), labels] += 1.0 - eps
    return float(-(q * log_p).sum(axis=1).mean()), q


def random_batch(n=32, k=10, scale=3.0, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, k)) * scale).astype(dtype), rng.integers(0, k, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_smoothing_equals_plain_cross_entropy_bit_for_bit(dtype):
    logits, labels = random_batch(dtype=dtype)
    plain, smoothed = SoftmaxCrossEntropy(), SoftmaxCrossEntropy(label_smoothing=0.0)
    assert smoothed.forward(logits.copy(), labels) == plain.forward(logits.copy(), labels)
    np.testing.assert_array_equal(smoothed.backward(), plain.backward())


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.5, 0.99])
def test_smoothed_loss_and_gradient_match_the_float64_reference_formula(eps):
    logits, labels = random_batch(seed=1)
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    expected, q = reference_smoothed_cross_entropy(logits, labels, eps)
    assert loss.forward(logits, labels) == pytest.approx(expected, rel=1e-13)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss.backward(), (p - q) / len(labels), rtol=1e-12, atol=1e-16)


def test_float32_smoothed_loss_agrees_with_float64_within_float32_precision():
    logits, labels = random_batch(seed=2)
    loss64 = SoftmaxCrossEntropy(0.1).forward(logits, labels)
    loss32 = SoftmaxCrossEntropy(0.1).forward(logits.astype(np.float32), labels)
    assert loss32 == pytest.approx(loss64, rel=1e-6)


def test_smoothed_loss_is_finite_and_exact_for_logits_of_plus_minus_1000():
    """q = [0.95, 0.05]: the loss is 0.05 * 2000 = 100 exactly, with no overflow or log(0)."""
    loss = SoftmaxCrossEntropy(label_smoothing=0.1)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert loss.forward(np.array([[1000.0, -1000.0]]), np.array([0])) == pytest.approx(
            100.0, rel=1e-15
        )
        grad = loss.backward()
    np.testing.assert_allclose(grad, [[0.05, -0.05]], rtol=1e-15)


def test_smoothed_loss_is_smallest_when_the_prediction_equals_the_smoothed_target():
    """Its minimum is the entropy of q, reached at softmax(z) = q, not at ever larger logits."""
    eps, k = 0.1, 10
    q = np.full(k, eps / k)
    q[3] += 1 - eps
    at_target = np.log(q)[None, :]  # softmax(log q) = q
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    value = loss.forward(at_target.copy(), np.array([3]))
    assert value == pytest.approx(-(q * np.log(q)).sum(), rel=1e-13)
    np.testing.assert_allclose(loss.backward(), 0.0, atol=1e-15)
    sharper = at_target * 3.0  # more confident than q: a higher loss, unlike plain CE
    assert loss.forward(sharper, np.array([3])) > value


def test_smoothed_loss_passes_the_gradient_checker():
    result = check_architecture(
        "16:tanh", input_size=12, n_classes=5, loss=SoftmaxCrossEntropy(label_smoothing=0.2)
    )
    assert result.passed, result.report()


def test_gradient_checker_catches_a_smoothed_loss_with_the_plain_gradient():
    """The check above has teeth: the plain gradient (softmax - onehot) / N fails it."""

    class WrongGradient(SoftmaxCrossEntropy):
        def backward(self):
            eps = self.label_smoothing
            self.label_smoothing = 0.0
            try:
                return super().backward()
            finally:
                self.label_smoothing = eps

    network = build_network("16:tanh", 12, 5, dtype=np.float64)
    rng = np.random.default_rng(1)
    x, labels = rng.standard_normal((8, 12)), rng.integers(0, 5, 8)
    result = check_gradients(network, WrongGradient(label_smoothing=0.2), x, labels)
    assert not result.passed, result.report()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_smoothed_loss_and_gradient_match_torch(eps):
    torch = pytest.importorskip("torch")
    logits, labels = random_batch(seed=3)
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    value = loss.forward(logits.copy(), labels)
    grad = loss.backward()
    torch_logits = torch.from_numpy(logits).requires_grad_(True)
    torch_loss = torch.nn.functional.cross_entropy(
        torch_logits, torch.from_numpy(labels), label_smoothing=eps
    )
    torch_loss.backward()
    assert value == pytest.approx(torch_loss.item(), rel=1e-12)
    np.testing.assert_allclose(grad, torch_logits.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), True, "0.1"])
def test_label_smoothing_outside_zero_to_one_is_refused_naming_the_range(bad):
    with pytest.raises(ConfigError, match=r"label_smoothing must be a number in \[0, 1\)"):
        SoftmaxCrossEntropy(label_smoothing=bad)


def test_make_loss_passes_label_smoothing_to_cross_entropy_only():
    assert make_loss("cross-entropy", label_smoothing=0.1).label_smoothing == 0.1
    with pytest.raises(ConfigError, match="label_smoothing is for cross-entropy"):
        make_loss("mse", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="output_activation for mse"):
        make_loss("cross-entropy", output_activation="sigmoid")
