"""Layers on their own: Dense, Dropout, the merges, every activation, LayerNorm and BatchNorm."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mlplab.engine.activations import (
    ELU,
    LeakyReLU,
    Linear,
    ReLU,
    ShiftedReLU,
    Sigmoid,
    Softmax,
    Tanh,
    sigmoid,
    softmax,
)
from mlplab.engine.graph import Network
from mlplab.engine.layers import LAYER_TYPES, Add, Concat, Dense, Dropout, make_layer
from mlplab.engine.normalization import BatchNorm, LayerNorm
from mlplab.errors import ConfigError


def built(layer, size=5, dtype=np.float64, seed=0):
    layer.build([size], np.random.default_rng(seed), dtype)
    return layer


def rows(n=4, size=5, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal((n, size)) * scale


# ----------------------------------------------------------------- Dense
def test_dense_computes_x_times_weight_transposed_plus_bias():
    layer = built(Dense(3), size=4)
    assert layer.params["weight"].shape == (3, 4)  # (out, in) like torch.nn.Linear
    layer.params["bias"][...] = [1.0, -2.0, 0.5]
    x = rows(2, 4)
    expected = np.array(
        [
            [
                sum(x[i, k] * layer.params["weight"][j, k] for k in range(4))
                + layer.params["bias"][j]
                for j in range(3)
            ]
            for i in range(2)
        ]
    )
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12)


def test_dense_backward_gives_weight_bias_and_input_gradients():
    layer = built(Dense(3), size=4)
    x, grad_out = rows(2, 4, seed=1), rows(2, 3, seed=2)
    layer.forward(x)
    grad_in = layer.backward(grad_out)
    np.testing.assert_allclose(layer.grads["weight"], grad_out.T @ x, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], grad_out.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(grad_in, grad_out @ layer.params["weight"], rtol=1e-12)


def test_dense_rejects_impossible_unit_counts_and_unknown_initializers():
    for units in (0, -3, 2.5, True, "10"):
        with pytest.raises(ConfigError, match="positive whole number"):
            Dense(units)
    with pytest.raises(ConfigError, match="unknown initializer 'he-norml'"):
        Dense(10, init="he-norml")


def test_first_dense_layer_skips_the_input_gradient_unless_it_is_asked_for():
    network = Network.stack(4, [Dense(3)], dtype=np.float64)
    layer = network.nodes["dense1"].layer
    assert layer.input_grad_needed is False
    x, grad_out = rows(2, 4), rows(2, 3, seed=1)
    network.forward(x, training=True)
    assert layer.backward(grad_out) is None
    network.forward(x, training=True)
    assert network.backward(grad_out) is None
    network.forward(x, training=True)
    grad_x = network.backward(grad_out, input_grad=True)
    np.testing.assert_allclose(grad_x, grad_out @ layer.params["weight"], rtol=1e-12)
    assert layer.input_grad_needed is False  # asking once does not change later steps


def test_layer_config_rebuilds_an_equal_layer_through_the_registry():
    for layer in [
        Dense(7, init="he-normal"),
        Dropout(0.25),
        LeakyReLU(0.2),
        ShiftedReLU(-2.0),
        ELU(0.5),
        LayerNorm(1e-4),
        BatchNorm(0.8, 1e-3),
        Sigmoid(),
        Add(),
        Concat(),
    ]:
        rebuilt = make_layer(layer.type_name, **layer.config())
        assert type(rebuilt) is type(layer) and rebuilt.config() == layer.config()
        assert LAYER_TYPES[layer.type_name] is type(layer)


def test_make_layer_rejects_unknown_types_and_options_with_a_config_error():
    with pytest.raises(ConfigError, match="unknown layer type 'conv99'.*dense"):
        make_layer("conv99")
    with pytest.raises(ConfigError, match="bad options .*'sigmoid'"):
        make_layer("sigmoid", slope=0.1)


# ----------------------------------------------------------------- Dropout
def test_dropout_is_the_identity_at_inference():
    layer = built(Dropout(0.5))
    x = rows()
    np.testing.assert_array_equal(layer.forward(x, training=False), x)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), np.ones_like(x))


def test_dropout_backward_uses_the_mask_drawn_in_forward():
    layer = built(Dropout(0.4), size=50)
    x = rows(20, 50, scale=3.0) + 10.0  # no zeros in x, so y / x recovers the mask
    y = layer.forward(x.copy(), training=True)
    mask = y / x
    assert set(np.unique(np.round(mask, 12))) == {0.0, round(1 / 0.6, 12)}
    grad_out = rows(20, 50, seed=3)
    np.testing.assert_allclose(layer.backward(grad_out), grad_out * mask, rtol=1e-12)


def test_dropout_keeps_about_one_minus_rate_and_preserves_the_expected_value():
    rate = 0.3
    layer = built(Dropout(rate), size=1000, dtype=np.float32)
    y = layer.forward(np.ones((400, 1000), dtype=np.float32), training=True)
    kept = np.count_nonzero(y) / y.size
    assert kept == pytest.approx(1 - rate, abs=0.005)  # 400k draws: sd of the fraction ~7e-4
    np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-6)  # inverted scaling
    assert y.mean(dtype=np.float64) == pytest.approx(1.0, abs=0.01)


def test_dropout_draws_a_new_mask_each_training_step():
    layer = built(Dropout(0.5), size=100)
    first = layer.forward(np.ones((10, 100)), training=True)
    second = layer.forward(np.ones((10, 100)), training=True)
    assert not np.array_equal(first, second)


def test_dropout_rejects_rates_outside_zero_to_one():
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(ConfigError, match="dropout rate"):
            Dropout(rate)


def test_dropout_in_place_after_dense_gives_the_same_results_as_with_a_copy():
    def run(inplace):
        network = Network.stack(6, [Dense(8), Dropout(0.5), Dense(3)], dtype=np.float64, seed=3)
        assert network.nodes["dropout1"].layer.inplace  # planned: Dense's output is free
        network.nodes["dropout1"].layer.inplace = inplace
        logits = network.forward(rows(5, 6), training=True).copy()
        network.backward(rows(5, 3, seed=1))
        return logits, {name: g.copy() for name, g in network.grads.items()}

    logits_inplace, grads_inplace = run(True)
    logits_copy, grads_copy = run(False)
    np.testing.assert_array_equal(logits_inplace, logits_copy)
    for name in grads_copy:
        np.testing.assert_array_equal(grads_inplace[name], grads_copy[name])


# ----------------------------------------------------------------- merges
def test_add_sums_any_number_of_inputs_and_passes_the_gradient_to_each():
    layer = Add()
    layer.build([3, 3, 3], np.random.default_rng(0), np.float64)
    a, b, c = rows(2, 3, seed=1), rows(2, 3, seed=2), rows(2, 3, seed=3)
    a_before = a.copy()
    np.testing.assert_allclose(layer.forward(a, b, c), a + b + c, rtol=1e-12)
    np.testing.assert_array_equal(a, a_before)  # the first input is not overwritten
    grads = layer.backward(np.ones((2, 3)))
    assert len(grads) == 3 and all(np.array_equal(g, np.ones((2, 3))) for g in grads)


def test_add_refuses_inputs_of_different_sizes():
    with pytest.raises(ConfigError, match="equal size"):
        Add().build([3, 4], np.random.default_rng(0), np.float64)


def test_concat_joins_features_and_splits_the_gradient_back():
    layer = Concat()
    assert layer.build([2, 3], np.random.default_rng(0), np.float64) == 5
    a, b = rows(4, 2), rows(4, 3, seed=1)
    np.testing.assert_array_equal(layer.forward(a, b), np.hstack([a, b]))
    grad_out = rows(4, 5, seed=2)
    grad_a, grad_b = layer.backward(grad_out)
    np.testing.assert_array_equal(grad_a, grad_out[:, :2])
    np.testing.assert_array_equal(grad_b, grad_out[:, 2:])


# ----------------------------------------------------------------- activations
FORMULAS = {
    "linear": (Linear, lambda x: x),
    "sigmoid": (Sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (Tanh, np.tanh),
    "relu": (ReLU, lambda x: np.where(x > 0, x, 0.0)),
    "leaky-relu(0.1)": (lambda: LeakyReLU(0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
    "shifted-relu(-1)": (lambda: ShiftedReLU(-1.0), lambda x: np.where(x > -1, x, -1.0)),
    "shifted-relu(-0.5)": (lambda: ShiftedReLU(-0.5), lambda x: np.where(x > -0.5, x, -0.5)),
    "elu(1.5)": (lambda: ELU(1.5), lambda x: np.where(x > 0, x, 1.5 * (np.exp(x) - 1))),
    "softmax": (Softmax, lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)),
}


@pytest.mark.parametrize("name", list(FORMULAS))
def test_activation_forward_matches_its_textbook_formula(name):
    make, formula = FORMULAS[name]
    x = rows(6, 5, scale=2.0)
    np.testing.assert_allclose(built(make()).forward(x.copy()), formula(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", [n for n in FORMULAS if n != "softmax"])
def test_activation_backward_matches_a_central_difference_elementwise(name):
    make, formula = FORMULAS[name]
    layer = built(make())
    x = rows(6, 5, scale=2.0)
    layer.forward(x.copy(), training=True)
    grad_out = rows(6, 5, seed=4)
    h = 1e-6
    numeric = (formula(x + h) - formula(x - h)) / (2 * h)
    np.testing.assert_allclose(layer.backward(grad_out), grad_out * numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_has_no_overflow_warning_at_plus_and_minus_1000(dtype):
    x = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = built(Sigmoid(), dtype=dtype).forward(x.copy())
        plain = sigmoid(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, plain)
    assert y[0, 0] == 0.0 and y[0, 2] == 0.5 and y[0, 4] == 1.0
    assert np.all(np.isfinite(y))


def test_elu_has_no_overflow_warning_for_large_positive_inputs():
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = built(ELU()).forward(np.array([[1000.0, -1000.0]]))
    np.testing.assert_array_equal(y, [[1000.0, -1.0]])


def test_softmax_gives_probabilities_even_with_huge_logits():
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [1e6, 1e6, -1e6]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        p = softmax(x.copy())
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0]], atol=1e-300)


def test_activation_options_are_validated():
    with pytest.raises(ConfigError, match="slope"):
        LeakyReLU(1.5)
    with pytest.raises(ConfigError, match="alpha"):
        ELU(0.0)


def test_activation_writes_over_its_input_only_when_planned_in_place():
    x = rows()
    before = x.copy()
    layer = built(Tanh())
    layer.forward(x)
    np.testing.assert_array_equal(x, before)
    layer.inplace = True
    y = layer.forward(x)
    assert y is x
    np.testing.assert_allclose(x, np.tanh(before), rtol=1e-15)


def test_relu_followed_by_dropout_has_correct_gradients_in_a_network():
    """ReLU's backward reads its own output, so the dropout after it must not overwrite it."""
    network = Network.stack(4, [Dense(30), ReLU(), Dropout(0.5), Dense(2)], dtype=np.float64)
    assert not network.nodes["dropout1"].layer.inplace
    x, grad_logits = rows(6, 4), rows(6, 2, seed=1)
    network.forward(x, training=True)
    network.backward(grad_logits)
    dense1, dense2 = network.nodes["dense1"].layer, network.nodes["dense2"].layer
    mask = network.nodes["dropout1"].layer.mask
    h = x @ dense1.params["weight"].T + dense1.params["bias"]
    grad_h = (grad_logits @ dense2.params["weight"]) * mask * (h > 0)
    np.testing.assert_allclose(dense1.grads["weight"], grad_h.T @ x, rtol=1e-12)
    np.testing.assert_allclose(
        dense2.grads["weight"], grad_logits.T @ (np.maximum(h, 0) * mask), rtol=1e-12
    )


# ----------------------------------------------------------------- normalization
def test_layernorm_rows_have_mean_zero_and_variance_one():
    layer = built(LayerNorm(), size=64)
    x = rows(10, 64, scale=7.0) + np.arange(10)[:, None] * 100.0  # very different row scales
    y = layer.forward(x)
    np.testing.assert_allclose(y.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=1), 1.0, rtol=1e-5)  # var / (var + eps), var ~ 49


def test_layernorm_applies_gamma_and_beta_per_feature():
    layer = built(LayerNorm(), size=5)
    layer.params["gamma"][...] = [1, 2, 3, 4, 5]
    layer.params["beta"][...] = [0, 0, 0, 0, 10]
    x = rows(3, 5)
    x_hat = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(
        layer.forward(x), x_hat * [1, 2, 3, 4, 5] + [0, 0, 0, 0, 10], rtol=1e-12
    )


def test_batchnorm_training_normalizes_each_feature_over_the_batch():
    layer = built(BatchNorm(), size=4)
    x = rows(50, 4, scale=3.0) + [1.0, -5.0, 10.0, 0.0]
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), 1.0, rtol=1e-5)


def test_batchnorm_running_statistics_update_with_momentum_and_unbiased_variance():
    layer = built(BatchNorm(momentum=0.9), size=3)
    x = rows(8, 3, scale=2.0) + 4.0
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.1 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        layer.buffers["running_var"], 0.9 + 0.1 * x.var(axis=0, ddof=1), rtol=1e-12
    )
    x2 = rows(8, 3, seed=5)
    layer.forward(x2, training=True)
    np.testing.assert_allclose(
        layer.buffers["running_mean"],
        0.9 * 0.1 * x.mean(axis=0) + 0.1 * x2.mean(axis=0),
        rtol=1e-12,
    )


def test_batchnorm_inference_uses_the_running_statistics_not_the_batch():
    layer = built(BatchNorm(momentum=0.5, eps=1e-5), size=3)
    layer.buffers["running_mean"][...] = [1.0, 2.0, 3.0]
    layer.buffers["running_var"][...] = [4.0, 1.0, 0.25]
    layer.params["gamma"][...] = [2.0, 1.0, 1.0]
    x = rows(5, 3)
    expected = (x - [1.0, 2.0, 3.0]) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-5) * [2, 1, 1]
    np.testing.assert_allclose(layer.forward(x, training=False), expected, rtol=1e-12)
    # a single example works at inference, and the running statistics do not move
    np.testing.assert_allclose(layer.forward(x[:1], training=False), expected[:1], rtol=1e-12)
    np.testing.assert_array_equal(layer.buffers["running_mean"], [1.0, 2.0, 3.0])
    grad_out = rows(5, 3, seed=1)
    layer.forward(x, training=False)
    np.testing.assert_allclose(
        layer.backward(grad_out),
        grad_out * [2, 1, 1] / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-5),
        rtol=1e-12,
    )


def test_batchnorm_refuses_a_single_example_batch_while_training():
    with pytest.raises(ConfigError, match="at least 2"):
        built(BatchNorm()).forward(rows(1, 5), training=True)


def test_normalization_options_are_validated():
    with pytest.raises(ConfigError, match="eps"):
        LayerNorm(0.0)
    with pytest.raises(ConfigError, match="momentum"):
        BatchNorm(momentum=1.0)


def test_zeros_initializer_gives_zero_weights_and_softmax_regression_still_learns():
    from mlplab.engine.architecture import build_network
    from mlplab.engine.losses import SoftmaxCrossEntropy

    network = build_network("", 6, 3, init="zeros", dtype=np.float64)
    assert not network.params["dense1.weight"].any()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 6))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    loss = SoftmaxCrossEntropy()
    before = loss.forward(network.forward(x, training=True), y)
    network.backward(loss.backward())
    for name, param in network.params.items():
        param -= 0.5 * network.grads[name]
    after = loss.forward(network.forward(x, training=True), y)
    assert before == pytest.approx(np.log(3))  # zero weights: uniform predictions
    assert after < before
