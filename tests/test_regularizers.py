"""L1 / L2 penalties, gradient clipping and the max-norm constraint."""

from __future__ import annotations

import numpy as np
import pytest

from mlplab.engine.regularizers import Regularization, is_weight
from mlplab.errors import ConfigError


def named_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense1.weight": rng.standard_normal((4, 3)),
        "dense1.bias": rng.standard_normal(4),
        "layernorm1.gamma": rng.standard_normal(4),
        "layernorm1.beta": rng.standard_normal(4),
        "dense2.weight": rng.standard_normal((2, 4)),
        "dense2.bias": rng.standard_normal(2),
    }


def zero_grads(params):
    return {name: np.zeros_like(p) for name, p in params.items()}


def test_only_parameters_named_weight_are_weights():
    assert is_weight("dense1.weight") and is_weight("a.b.weight")
    assert not any(is_weight(n) for n in ("dense1.bias", "norm.gamma", "norm.beta", "weight_x"))


def test_l2_gradient_is_l2_times_w_and_biases_are_untouched():
    params = named_arrays()
    grads = zero_grads(params)
    Regularization(l2=0.3).add_penalty_gradients(params, grads)
    for name, p in params.items():
        expected = 0.3 * p if name.endswith(".weight") else np.zeros_like(p)
        np.testing.assert_allclose(grads[name], expected, rtol=1e-15, err_msg=name)


def test_l1_gradient_is_l1_times_sign_w_and_biases_are_untouched():
    params = named_arrays()
    params["dense1.weight"][0, 0] = 0.0  # sign(0) = 0: the subgradient at zero
    grads = zero_grads(params)
    Regularization(l1=0.02).add_penalty_gradients(params, grads)
    for name, p in params.items():
        expected = 0.02 * np.sign(p) if name.endswith(".weight") else np.zeros_like(p)
        np.testing.assert_array_equal(grads[name], expected, err_msg=name)
    assert grads["dense1.weight"][0, 0] == 0.0


def test_penalty_gradients_add_to_the_data_gradient():
    params = named_arrays()
    grads = {name: np.ones_like(p) for name, p in params.items()}
    Regularization(l1=0.1, l2=0.5).add_penalty_gradients(params, grads)
    w = params["dense2.weight"]
    np.testing.assert_allclose(grads["dense2.weight"], 1 + 0.5 * w + 0.1 * np.sign(w), rtol=1e-15)
    np.testing.assert_array_equal(grads["dense2.bias"], 1.0)


def test_penalty_is_l1_sum_abs_plus_half_l2_sum_squares_of_weights_only():
    params = named_arrays()
    weights = [params["dense1.weight"], params["dense2.weight"]]
    expected = sum(0.1 * np.abs(w).sum() + 0.5 * 0.2 * (w**2).sum() for w in weights)
    assert Regularization(l1=0.1, l2=0.2).penalty(params) == pytest.approx(expected, rel=1e-14)
    assert Regularization().penalty(params) == 0.0


def test_no_regularization_leaves_gradients_and_weights_alone():
    params = named_arrays()
    grads = {name: np.ones_like(p) for name, p in params.items()}
    settings = Regularization()
    settings.add_penalty_gradients(params, grads)
    assert np.isnan(settings.clip_gradients(grads))
    settings.apply_max_norm(params)
    assert all(np.array_equal(g, np.ones_like(g)) for g in grads.values())
    for name, p in named_arrays().items():
        np.testing.assert_array_equal(params[name], p)


def global_norm(grads):
    return np.sqrt(sum(float((g**2).sum()) for g in grads.values()))


def test_clip_gradients_scales_all_gradients_to_the_clip_norm_when_above():
    grads = {name: p * 10 for name, p in named_arrays().items()}
    before = {name: g.copy() for name, g in grads.items()}
    norm_before = global_norm(grads)
    returned = Regularization(clip_norm=1.5).clip_gradients(grads)
    assert returned == pytest.approx(norm_before, rel=1e-12)
    assert global_norm(grads) == pytest.approx(1.5, rel=1e-12)
    for name in grads:  # one common scale keeps the direction
        np.testing.assert_allclose(grads[name], before[name] * 1.5 / norm_before, rtol=1e-12)


def test_clip_gradients_leaves_small_gradients_unchanged():
    grads = {name: p * 1e-3 for name, p in named_arrays().items()}
    before = {name: g.copy() for name, g in grads.items()}
    Regularization(clip_norm=100.0).clip_gradients(grads)
    for name in grads:
        np.testing.assert_array_equal(grads[name], before[name])


def test_max_norm_caps_each_units_incoming_weight_row():
    params = named_arrays()
    params["dense1.weight"][0] = [3.0, 4.0, 0.0]  # norm 5: capped to 2
    params["dense1.weight"][1] = [0.6, 0.8, 0.0]  # norm 1: left alone
    bias_before = params["dense1.bias"].copy()
    Regularization(max_norm=2.0).apply_max_norm(params)
    w = params["dense1.weight"]
    np.testing.assert_allclose(w[0], [1.2, 1.6, 0.0], rtol=1e-15)
    np.testing.assert_array_equal(w[1], [0.6, 0.8, 0.0])
    for weight in (params["dense1.weight"], params["dense2.weight"]):
        assert np.all(np.linalg.norm(weight, axis=1) <= 2.0 + 1e-12)
    np.testing.assert_array_equal(params["dense1.bias"], bias_before)


def test_max_norm_works_on_float32_weights_in_place():
    params = {"d.weight": np.full((3, 4), 10.0, dtype=np.float32)}
    array = params["d.weight"]
    Regularization(max_norm=1.0).apply_max_norm(params)
    assert params["d.weight"] is array and array.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"l1": -0.1}, "l1 must not be negative"),
        ({"l2": -1}, "l2 must not be negative"),
        ({"max_norm": 0}, "max_norm must be positive"),
        ({"clip_norm": -2.0}, "clip_norm must be positive"),
    ],
)
def test_bad_regularization_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        Regularization(**settings)


def test_penalties_and_clipping_work_on_a_networks_own_read_only_gradient_mapping():
    # Network.grads is a read-only mapping of the layers' arrays: penalties and clipping must
    # change those arrays in place (assigning into the mapping broke every l1/l2 run once).
    from mlplab.engine.architecture import build_network

    network = build_network("8:relu", input_size=5, n_classes=3, seed=0, dtype=np.float64)
    params, grads = network.params, network.grads
    for g in grads.values():
        g[...] = 1.0
    weight = params["dense1.weight"].copy()
    Regularization(l1=0.1, l2=0.3, clip_norm=1e6).add_penalty_gradients(params, grads)
    np.testing.assert_allclose(
        network.grads["dense1.weight"], 1.0 + 0.3 * weight + 0.1 * np.sign(weight)
    )
    Regularization(clip_norm=1e-3).clip_gradients(grads)
    total = np.sqrt(sum(float(np.vdot(g, g)) for g in network.grads.values()))
    assert total == pytest.approx(1e-3)
