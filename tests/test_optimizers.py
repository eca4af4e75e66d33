"""Optimizers against straightforward float64 reference implementations written here.

The reference updates follow the papers' formulas literally (no folded bias corrections, no
scratch arrays, no chunks). The engine runs in float32 and must agree to about 1e-6 relative
(measured against the largest parameter), in float64 to 1e-12; the chunked path (tensors larger
than ``UPDATE_CHUNK``) must give results bit-identical to updating each tensor in one piece.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlplab.engine import optimizers
from mlplab.engine.optimizers import UPDATE_CHUNK, make_optimizer
from mlplab.errors import ConfigError

STEPS = 6
SHAPES = {"big.weight": (400, 400), "big.bias": (400,), "small.weight": (4, 7), "norm.gamma": (7,)}


def problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}
    grads = [
        {
            name: rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 10.0])
            for name, shape in SHAPES.items()
        }
        for _ in range(STEPS)
    ]
    return params, grads


# ----------------------------------------------------------------- reference implementations
def reference_sgd(p, gs, lr):
    for g in gs:
        p = p - lr * g
    return p


def reference_momentum(p, gs, lr, mu):
    v = np.zeros_like(p)
    for g in gs:
        v = mu * v - lr * g
        p = p + v
    return p


def reference_dampened_momentum(p, gs, lr, mu):
    v = np.zeros_like(p)
    for g in gs:
        v = mu * v + (1 - mu) * lr * g
        p = p - v
    return p


def reference_nesterov(p, gs, lr, mu):
    """PyTorch's formulation: buf = mu buf + g; p -= lr (g + mu buf). With a constant learning
    rate it equals Sutskever's look-ahead form that the engine uses."""
    buf = np.zeros_like(p)
    for g in gs:
        buf = mu * buf + g
        p = p - lr * (g + mu * buf)
    return p


def reference_rmsprop(p, gs, lr, rho, eps):
    s = np.zeros_like(p)
    for g in gs:
        s = rho * s + (1 - rho) * g**2
        p = p - lr * g / (np.sqrt(s) + eps)
    return p


def reference_adam(p, gs, lr, b1, b2, eps, weight_decay=0.0):
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(gs, start=1):
        p = p * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


CASES = {
    "sgd": ({}, lambda p, gs, name: reference_sgd(p, gs, 0.1)),
    "momentum": ({"momentum": 0.9}, lambda p, gs, name: reference_momentum(p, gs, 0.1, 0.9)),
    "dampened momentum": (
        {"momentum": 0.8, "dampened": True},
        lambda p, gs, name: reference_dampened_momentum(p, gs, 0.1, 0.8),
    ),
    "nesterov": (
        {"momentum": 0.9, "nesterov": True},
        lambda p, gs, name: reference_nesterov(p, gs, 0.1, 0.9),
    ),
    "rmsprop": (
        {"rho": 0.9, "eps": 1e-8},
        lambda p, gs, name: reference_rmsprop(p, gs, 0.1, 0.9, 1e-8),
    ),
    "adam": (
        {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        lambda p, gs, name: reference_adam(p, gs, 0.1, 0.9, 0.999, 1e-8),
    ),
    "adamw": (
        {"weight_decay": 0.05},
        lambda p, gs, name: reference_adam(
            p, gs, 0.1, 0.9, 0.999, 1e-8, 0.05 if name.endswith(".weight") else 0.0
        ),
    ),
}
ENGINE_NAME = {"dampened momentum": "momentum", "nesterov": "momentum"}


def run_engine(case, dtype, seed=0):
    options, _ = CASES[case]
    params, grads = problem(seed)
    params = {name: p.astype(dtype) for name, p in params.items()}
    optimizer = make_optimizer(ENGINE_NAME.get(case, case), 0.1, **options)
    for step_grads in grads:
        optimizer.update(params, {name: g.astype(dtype) for name, g in step_grads.items()})
    return params, optimizer


def run_reference(case, dtype, seed=0):
    _, reference = CASES[case]
    params, grads = problem(seed)
    # the reference starts from the values the engine sees (rounded to dtype), in float64
    return {
        name: reference(
            p.astype(dtype).astype(np.float64),
            [g[name].astype(dtype).astype(np.float64) for g in grads],
            name,
        )
        for name, p in params.items()
    }


def relative_difference(actual, expected):
    return float(np.abs(actual.astype(np.float64) - expected).max() / np.abs(expected).max())


def test_the_test_problem_exercises_the_chunked_path_with_an_uneven_last_chunk():
    assert np.prod(SHAPES["big.weight"]) > UPDATE_CHUNK
    assert np.prod(SHAPES["big.weight"]) % UPDATE_CHUNK != 0
    assert np.prod(SHAPES["small.weight"]) < UPDATE_CHUNK


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_matches_the_reference_in_float64(case):
    params, _ = run_engine(case, np.float64)
    expected = run_reference(case, np.float64)
    for name in SHAPES:
        assert relative_difference(params[name], expected[name]) < 1e-12, name


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_matches_the_reference_in_float32_to_about_1e_6(case):
    params, _ = run_engine(case, np.float32)
    expected = run_reference(case, np.float32)
    for name in SHAPES:
        assert params[name].dtype == np.float32
        assert relative_difference(params[name], expected[name]) < 2e-6, name


@pytest.mark.parametrize("case", list(CASES))
def test_chunked_and_one_piece_updates_are_bit_identical(case, monkeypatch):
    chunked, _ = run_engine(case, np.float32)
    monkeypatch.setattr(optimizers, "UPDATE_CHUNK", 1 << 62)  # every tensor in one piece
    whole, _ = run_engine(case, np.float32)
    monkeypatch.setattr(optimizers, "UPDATE_CHUNK", 1000)  # many chunks, the last one short
    many, _ = run_engine(case, np.float32)
    for name in SHAPES:
        np.testing.assert_array_equal(chunked[name], whole[name], err_msg=name)
        np.testing.assert_array_equal(many[name], whole[name], err_msg=name)


@pytest.mark.parametrize(
    "case, names",
    [
        ("sgd", set()),
        ("momentum", {"velocity"}),
        ("rmsprop", {"square_avg"}),
        ("adam", {"m_sum", "v_sum"}),
        ("adamw", {"m_sum", "v_sum"}),
    ],
)
def test_optimizer_state_is_a_dict_of_named_arrays(case, names):
    _, optimizer = run_engine(case, np.float32)
    state = optimizer.state
    assert isinstance(state, dict) and all(isinstance(a, np.ndarray) for a in state.values())
    assert int(state["step"]) == STEPS
    expected = {"step"} | {f"{kind}/{name}" for kind in names for name in SHAPES}
    assert set(state) == expected
    for kind in names:
        assert state[f"{kind}/big.weight"].shape == SHAPES["big.weight"]
        assert state[f"{kind}/big.weight"].dtype == np.float32


def test_resuming_from_copied_state_continues_bit_identically():
    params, grads = problem(1)
    params = {n: p.astype(np.float32) for n, p in params.items()}
    grads = [{n: g.astype(np.float32) for n, g in step.items()} for step in grads]
    straight = make_optimizer("adam", 0.01)
    straight_params = {n: p.copy() for n, p in params.items()}
    for step in grads:
        straight.update(straight_params, step)

    first = make_optimizer("adam", 0.01)
    resumed_params = {n: p.copy() for n, p in params.items()}
    for step in grads[:3]:
        first.update(resumed_params, step)
    second = make_optimizer("adam", 0.01)
    second.state = {name: array.copy() for name, array in first.state.items()}
    for step in grads[3:]:
        second.update(resumed_params, step)
    for name in params:
        np.testing.assert_array_equal(resumed_params[name], straight_params[name])


def test_adam_state_of_an_earlier_mlplab_holding_the_moments_themselves_resumes():
    """Checkpoints written before the moments were kept as decayed sums hold ``m/<tensor>`` and
    ``v/<tensor>``; loaded, they continue as the textbook Adam does (to float64 rounding)."""
    params, grads = problem(2)
    b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-8
    m = {n: np.zeros_like(p) for n, p in params.items()}
    v = {n: np.zeros_like(p) for n, p in params.items()}
    textbook = {n: p.copy() for n, p in params.items()}
    for t, step in enumerate(grads, start=1):  # the textbook update, keeping m and v
        for n, g in step.items():
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            m_hat, v_hat = m[n] / (1 - b1**t), v[n] / (1 - b2**t)
            textbook[n] = textbook[n] - lr * m_hat / (np.sqrt(v_hat) + eps)
        if t == 3:  # what a checkpoint of the earlier mlplab held after three steps
            saved_params = {n: p.copy() for n, p in textbook.items()}
            saved_state = {"step": np.array(3), **{f"m/{n}": a.copy() for n, a in m.items()}}
            saved_state.update({f"v/{n}": a.copy() for n, a in v.items()})
    resumed = make_optimizer("adam", lr)
    resumed.state = saved_state
    assert {key.split("/")[0] for key in resumed.state if "/" in key} == {"m_sum", "v_sum"}
    for step in grads[3:]:
        resumed.update(saved_params, step)
    for name in params:
        assert relative_difference(saved_params[name], textbook[name]) < 1e-12, name


@pytest.mark.parametrize("saved_step", [7, np.int64(7), np.array(7, dtype=np.int32)])
def test_the_step_count_of_a_loaded_state_goes_on_counting_in_place(saved_step):
    # update() counts in a 0-d array in place; a state whose step is a plain or NumPy integer
    # (or another integer dtype) is loaded as such an array, so it counts on.
    p = {"w": np.zeros(3, dtype=np.float32)}
    g = {"w": np.ones(3, dtype=np.float32)}
    optimizer = make_optimizer("sgd", 0.1)
    saved = {"step": saved_step}
    optimizer.state = saved
    optimizer.update(p, g)
    step = optimizer.state["step"]
    assert isinstance(step, np.ndarray) and step.shape == () and step.dtype == np.int64
    assert int(step) == 8 and saved["step"] is saved_step  # the caller's dict is left alone


def test_a_state_of_another_optimizer_is_refused():
    sgd_state = make_optimizer("momentum", 0.1).state
    sgd_state["velocity/a.weight"] = np.zeros(3)
    with pytest.raises(ConfigError, match="velocity arrays, and adam keeps m_sum, v_sum"):
        make_optimizer("adam", 0.1).state = sgd_state


def test_adamw_decays_weights_but_not_biases_or_norm_scales():
    params = {"a.weight": np.ones((3, 3)), "a.bias": np.ones(3), "n.gamma": np.ones(3)}
    zero = {name: np.zeros_like(p) for name, p in params.items()}
    make_optimizer("adamw", 0.1, weight_decay=0.5).update(params, zero)
    np.testing.assert_allclose(params["a.weight"], 1 - 0.1 * 0.5, rtol=1e-15)
    np.testing.assert_array_equal(params["a.bias"], 1.0)
    np.testing.assert_array_equal(params["n.gamma"], 1.0)


def test_adam_first_step_moves_each_entry_by_about_the_learning_rate():
    params = {"w.weight": np.zeros(5)}
    make_optimizer("adam", 0.01).update(params, {"w.weight": np.array([1e-4, -3, 50, 1, -1e3])})
    np.testing.assert_allclose(
        params["w.weight"], -0.01 * np.sign([1e-4, -3, 50, 1, -1e3]), rtol=1e-3
    )


def test_learning_rate_set_between_steps_takes_effect():
    params = {"w.weight": np.ones(3)}
    optimizer = make_optimizer("sgd", 0.1)
    optimizer.update(params, {"w.weight": np.ones(3)})
    optimizer.learning_rate = 0.01
    optimizer.update(params, {"w.weight": np.ones(3)})
    np.testing.assert_allclose(params["w.weight"], 1 - 0.1 - 0.01, rtol=1e-15)


def test_update_never_changes_the_gradients():
    params, grads = problem(2)
    before = {n: g.copy() for n, g in grads[0].items()}
    for name in ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"]:
        make_optimizer(name, 0.1).update({n: p.copy() for n, p in params.items()}, grads[0])
        for n in before:
            np.testing.assert_array_equal(grads[0][n], before[n], err_msg=f"{name} {n}")


def test_make_optimizer_nesterov_shorthand_and_config():
    optimizer = make_optimizer("nesterov", 0.05, momentum=0.95)
    assert optimizer.name == "momentum" and optimizer.nesterov
    assert optimizer.config() == {
        "learning_rate": 0.05,
        "momentum": 0.95,
        "nesterov": True,
        "dampened": False,
    }


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_optimizer("adagrad", 0.1), "unknown optimizer 'adagrad'.*adam"),
        (lambda: make_optimizer("sgd", -0.1), "learning_rate must be positive"),
        (lambda: make_optimizer("sgd", 0.0), "learning_rate must be positive"),
        (lambda: make_optimizer("sgd", float("nan")), "learning_rate must be positive"),
        (lambda: make_optimizer("adam", float("inf")), "learning_rate must be positive and finite"),
        (lambda: make_optimizer("rmsprop", 0.1, eps=float("inf")), "eps must be positive"),
        (lambda: setattr(make_optimizer("sgd", 0.1), "learning_rate", float("inf")), "finite"),
        (lambda: setattr(make_optimizer("adam", 0.1), "learning_rate", float("nan")), "finite"),
        (lambda: make_optimizer("adam", 0.1, beta1=1.0), "beta1 must be in"),
        (lambda: make_optimizer("momentum", 0.1, momentum=-0.5), "momentum must be in"),
        (lambda: make_optimizer("momentum", 0.1, nesterov=True, dampened=True), "not both"),
        (
            lambda: make_optimizer("adamw", 0.1, weight_decay=-1),
            "weight_decay must not be negative",
        ),
        (lambda: make_optimizer("sgd", 0.1, momentum=0.9), "bad options .* for optimizer 'sgd'"),
    ],
)
def test_bad_optimizer_settings_are_config_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_a_strided_parameter_larger_than_a_chunk_is_updated_in_place():
    """A layer may hold a non-contiguous view; chunking it would update a copy and lose the step."""
    storage = np.ones((1000, 400), dtype=np.float32)
    strided = storage[:, ::2]  # 200,000 elements, more than a chunk, not contiguous
    assert strided.size > UPDATE_CHUNK and not strided.flags.c_contiguous
    make_optimizer("sgd", 0.5).update({"w": strided}, {"w": np.ones_like(strided)})
    assert np.all(storage[:, ::2] == 0.5) and np.all(storage[:, 1::2] == 1.0)
