"""Label smoothing in the softmax cross-entropy: exact, stable, the right gradient, torch's loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlplab.engine.architecture import build_network
from mlplab.engine.gradcheck import check_architecture, check_gradients
from mlplab.engine.losses import SoftmaxCrossEntropy, make_loss
from mlplab.errors import ConfigError
from mlplab.training.config import RunConfig
from mlplab.training.runs import prepare_run, train_run


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


# ------------------------------------------------------------------ from a run config
MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"


def fixture_config(**model) -> RunConfig:
    config = RunConfig()
    config.data.dataset = str(MNIST_SMALL)
    config.data.validation = 200
    config.model.architecture = "16:relu"
    config.training.epochs = 1
    config.training.threads = 1
    for key, value in model.items():
        setattr(config.model, key, value)
    return config


def test_model_label_smoothing_in_a_config_file_reaches_the_runs_loss(tmp_path):
    path = tmp_path / "smooth.toml"
    path.write_text('[model]\narchitecture = "16:relu"\nlabel_smoothing = 0.1\n')
    config = RunConfig.from_toml(path)
    assert config.model.label_smoothing == 0.1
    config.data.dataset, config.data.validation = str(MNIST_SMALL), 200
    prepared = prepare_run(config, progress=False)
    assert prepared.model.loss.label_smoothing == 0.1
    assert "label_smoothing = 0.1" in prepared.config.to_toml()


def test_a_run_with_label_smoothing_trains_and_reports_the_smoothed_loss():
    """Its validation loss is the smoothed objective, which no run can bring below H(q)."""
    eps, k = 0.2, 10
    q = np.array([1 - eps + eps / k] + [eps / k] * (k - 1))
    result = train_run(prepare_run(fixture_config(label_smoothing=eps), progress=False))
    assert result.history["val_loss"][0] > -(q * np.log(q)).sum()
    assert 0.0 <= result.evaluation["accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0, 1\)"),
        ({"loss": "mse", "label_smoothing": 0.1}, "label_smoothing is for cross-entropy"),
    ],
)
def test_bad_label_smoothing_is_refused_before_the_data_is_read(model, message):
    config = fixture_config(**model)
    config.data.dataset = "/nonexistent/dataset/folder"  # reading it would fail differently
    with pytest.raises(ConfigError, match=message):
        prepare_run(config, progress=False)


def test_label_smoothing_given_as_text_in_a_config_file_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[model]\nlabel_smoothing = "0.1"\n')
    with pytest.raises(ConfigError, match="label_smoothing should be a float"):
        RunConfig.from_toml(path)


def test_a_saved_model_keeps_its_label_smoothing_so_eval_reports_the_trained_loss(tmp_path):
    from mlplab.training.model import Model

    network = build_network("6:relu", input_size=4, n_classes=3, seed=0)
    path = Model(network, SoftmaxCrossEntropy(label_smoothing=0.1), ["a", "b", "c"]).save(
        tmp_path / "model.npz"
    )
    loaded = Model.load(path or tmp_path / "model.npz")
    assert loaded.loss.label_smoothing == pytest.approx(0.1)
