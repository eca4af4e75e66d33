"""Gradient checks: every layer, both losses, the penalties, graphs and random DAGs, in float64.

Each check compares the analytic backward pass with central differences through
:func:`mlplab.engine.gradcheck.check_gradients` and asserts the largest relative error is below
``gradcheck.TOLERANCE`` (1e-6). One test breaks a backward pass on purpose and asserts the checker
notices, so a checker that passes everything cannot hide behind the others.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlplab.engine import gradcheck
from mlplab.engine.activations import (
    ELU,
    LeakyReLU,
    Linear,
    ReLU,
    ShiftedReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from mlplab.engine.architecture import build_network
from mlplab.engine.graph import Network, Node
from mlplab.engine.layers import Add, Concat, Dense, Dropout, make_layer
from mlplab.engine.losses import SoftmaxCrossEntropy
from mlplab.engine.normalization import BatchNorm, LayerNorm
from mlplab.engine.regularizers import Regularization
from mlplab.errors import ConfigError

TOLERANCE = gradcheck.TOLERANCE
INPUT_SIZE, N_CLASSES, BATCH = 6, 4, 8


def data(seed=1, input_size=INPUT_SIZE, n_classes=N_CLASSES, batch=BATCH):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, input_size)), rng.integers(0, n_classes, size=batch)


def randomize_norm_params(network, seed=2):
    """gamma = 1 and beta = 0 would hide a missing gamma in a backward formula."""
    rng = np.random.default_rng(seed)
    for name, array in network.params.items():
        if name.endswith((".gamma", ".beta")):
            array[...] = rng.uniform(0.5, 1.5, size=array.shape)


def check(network, loss=None, regularization=None, seed=1):
    x, labels = data(seed, network.input_size, network.sizes[network.output])
    return gradcheck.check_gradients(
        network, loss or SoftmaxCrossEntropy(), x, labels, regularization
    )


def assert_passes(result):
    assert result.max_error < TOLERANCE, result.report()
    assert "input" in result.errors  # dL/dx is checked too
    assert all(count > 0 for count in result.checked.values())


# ----------------------------------------------------------------- each layer on its own
LAYERS = {
    "linear": Linear,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky-relu": lambda: LeakyReLU(0.1),
    "shifted-relu": lambda: ShiftedReLU(-1.0),
    "elu": lambda: ELU(1.3),
    "softmax": Softmax,
    "dropout (fixed mask)": lambda: Dropout(0.4),
    "layernorm": LayerNorm,
    "batchnorm (training mode)": BatchNorm,
}


def test_dense_layer_alone_has_exact_gradients():
    network = Network.stack(INPUT_SIZE, [Dense(N_CLASSES)], dtype=np.float64)
    assert_passes(check(network))


@pytest.mark.parametrize("name", list(LAYERS))
def test_each_layer_between_two_dense_layers_has_exact_gradients(name):
    network = Network.stack(
        INPUT_SIZE, [Dense(5), LAYERS[name](), Dense(N_CLASSES)], dtype=np.float64
    )
    randomize_norm_params(network)
    assert_passes(check(network))


def test_dropout_gradient_check_really_uses_a_mask():
    network = Network.stack(
        INPUT_SIZE, [Dense(50), Dropout(0.5), Dense(N_CLASSES)], dtype=np.float64
    )
    x, labels = data()
    network.forward(x, training=True)
    dropout = network.nodes["dropout1"].layer
    assert 0 < np.count_nonzero(dropout.mask == 0) < dropout.mask.size
    assert_passes(check(network))


# ----------------------------------------------------------------- losses and penalties
def test_cross_entropy_loss_has_exact_gradients():
    network = Network.stack(INPUT_SIZE, [Dense(5), Tanh(), Dense(N_CLASSES)], dtype=np.float64)
    assert_passes(check(network, SoftmaxCrossEntropy()))


@pytest.mark.parametrize("settings", [{"l1": 1e-2}, {"l2": 1e-1}, {"l1": 1e-3, "l2": 1e-2}])
def test_l1_and_l2_penalty_gradients_are_exact(settings):
    network = Network.stack(INPUT_SIZE, [Dense(5), Sigmoid(), Dense(N_CLASSES)], dtype=np.float64)
    assert_passes(check(network, regularization=Regularization(**settings)))


# ----------------------------------------------------------------- graphs
def test_skip_connection_and_concat_graph_has_exact_gradients():
    result = gradcheck.check_architecture(gradcheck.SKIP_AND_CONCAT, input_size=12, n_classes=5)
    assert_passes(result)
    assert {"hidden.weight", "project.weight", "norm.gamma", "logits.bias"} <= set(result.errors)


def test_add_of_three_inputs_has_exact_gradients():
    network = Network(
        INPUT_SIZE,
        [
            Node("a", Dense(5), ["input"]),
            Node("b", Dense(5), ["input"]),
            Node("b_act", Tanh(), ["b"]),
            Node("c", Dense(5), ["a"]),
            Node("sum", Add(), ["a", "b_act", "c"]),
            Node("act", Sigmoid(), ["sum"]),
            Node("logits", Dense(N_CLASSES), ["act"]),
        ],
        dtype=np.float64,
    )
    assert_passes(check(network))


def test_architecture_string_with_every_step_has_exact_gradients():
    result = gradcheck.check_architecture(
        "dropout(0.2),7:layernorm:elu,6:batchnorm:leaky-relu(0.2),5:shifted-relu(-1):dropout(0.3)",
        input_size=INPUT_SIZE,
        n_classes=N_CLASSES,
    )
    assert_passes(result)


def test_built_in_suite_passes_completely():
    results = gradcheck.run_suite()
    failed = [r.report() for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert len(results) == len(gradcheck.SUITE)


# ----------------------------------------------------------------- random DAGs
ACTIVATION_STEPS = [
    "sigmoid",
    "tanh",
    "relu",
    "leaky-relu",
    "shifted-relu",
    "elu",
    "softmax",
    "linear",
    "layernorm",
    "batchnorm",
    "dropout",
]
STEP_OPTIONS = {
    "leaky-relu": {"slope": 0.1},
    "shifted-relu": {"floor": -1.0},
    "elu": {"alpha": 0.7},
    "dropout": {"rate": 0.3},
}


def random_dag(seed, input_size=INPUT_SIZE, n_classes=N_CLASSES, n_steps=None):
    """A random graph spec: Dense layers of random sizes, random activations and norm layers,
    Add merges of two or three earlier nodes of equal size and Concat merges of any two; the
    leftover leaves are concatenated and projected to ``n_classes`` logits, so every node leads
    to the output."""
    rng = np.random.default_rng(seed)
    sizes = {"input": input_size}
    read = {"input": 0}
    nodes = []

    def add(name, entry, inputs, size):
        nodes.append({"name": name, **entry, "inputs": inputs})
        for source in inputs:
            read[source] += 1
        sizes[name], read[name] = size, 0

    n_steps = n_steps or int(rng.integers(6, 12))
    for index in range(n_steps):
        name = f"n{index}"
        kind = rng.choice(["dense", "step", "merge"], p=[0.4, 0.4, 0.2]) if index else "dense"
        earlier = list(sizes)
        if kind == "merge":
            by_size: dict[int, list[str]] = {}
            for node_name in earlier:
                by_size.setdefault(sizes[node_name], []).append(node_name)
            groups = [group for group in by_size.values() if len(group) >= 2]
            if groups and rng.random() < 0.7:
                group = groups[rng.integers(len(groups))]
                k = int(rng.integers(2, min(3, len(group)) + 1))
                inputs = [str(n) for n in rng.choice(group, size=k, replace=False)]
                add(name, {"type": "add"}, inputs, sizes[inputs[0]])
            else:
                inputs = [str(n) for n in rng.choice(earlier, size=2, replace=False)]
                add(name, {"type": "concat"}, inputs, sizes[inputs[0]] + sizes[inputs[1]])
        elif kind == "step":  # mostly chained onto the newest node, as in real stacks
            source = earlier[-1] if rng.random() < 0.6 else str(rng.choice(earlier))
            step = str(rng.choice(ACTIVATION_STEPS))
            add(name, {"type": step, **STEP_OPTIONS.get(step, {})}, [source], sizes[source])
        else:
            source = str(rng.choice(earlier))
            units = int(rng.choice([3, 4, 5]))
            add(name, {"type": "dense", "units": units}, [source], units)
    leaves = [name for name in sizes if name != "input" and read[name] == 0]
    if len(leaves) > 1:
        add("leaves", {"type": "concat"}, leaves, sum(sizes[n] for n in leaves))
        leaves = ["leaves"]
    add("logits", {"type": "dense", "units": n_classes}, leaves, n_classes)
    return {"input_size": input_size, "nodes": nodes}


def test_random_dag_generator_makes_varied_graphs():
    specs = [random_dag(seed) for seed in range(12)]
    types = {node["type"] for spec in specs for node in spec["nodes"]}
    assert {"add", "concat", "dense"} <= types
    assert len(types & set(ACTIVATION_STEPS)) >= 6
    assert any(len(node["inputs"]) == 3 for spec in specs for node in spec["nodes"])
    # every spec is a valid network whose nodes all lead to the output
    for spec in specs:
        network = build_network(spec, INPUT_SIZE, N_CLASSES, dtype=np.float64)
        assert len(network.order) == len(spec["nodes"])


@pytest.mark.parametrize("seed", range(30))
def test_random_dag_has_exact_gradients(seed):
    spec = random_dag(seed)
    network = build_network(spec, INPUT_SIZE, N_CLASSES, dtype=np.float64, seed=seed)
    randomize_norm_params(network, seed)
    result = check(network, seed=seed + 100)
    assert result.max_error < TOLERANCE, f"{spec}\n{result.report()}"


def in_place_mismatches(seed):
    """Where the graph ``random_dag(seed)`` with its planned in-place writes differs from the
    same graph with every in-place write switched off (logits in training and inference mode,
    and every parameter gradient); an empty list when they agree."""
    spec = random_dag(seed)
    x, labels = data(seed + 100)

    def run(inplace_allowed, training):
        network = build_network(spec, INPUT_SIZE, N_CLASSES, dtype=np.float64, seed=seed)
        if not inplace_allowed:
            for node in network.nodes.values():
                node.layer.inplace = False
        logits = network.forward(x.copy(), training=training).copy()
        if not training:
            return logits, {}
        loss = SoftmaxCrossEntropy()
        loss.forward(logits, labels)
        network.backward(loss.backward())
        return logits, {name: g.copy() for name, g in network.grads.items()}

    mismatches = []
    for training in (True, False):
        planned_logits, planned_grads = run(True, training)
        copied_logits, copied_grads = run(False, training)
        if not np.allclose(planned_logits, copied_logits, rtol=1e-12, atol=1e-12):
            mismatches.append(f"logits (training={training})")
        mismatches += [
            name
            for name in copied_grads
            if not np.allclose(planned_grads[name], copied_grads[name], rtol=1e-12, atol=1e-12)
        ]
    return mismatches


def test_in_place_planning_never_changes_the_results_of_150_random_dags():
    """In-place writes are an optimization: they must give the same logits and gradients as
    the same graph computed with copies everywhere."""
    failures = {seed: in_place_mismatches(seed) for seed in range(150)}
    failures = {seed: where for seed, where in failures.items() if where}
    assert not failures, "in-place planning corrupted results:\n" + "\n".join(
        f"seed {seed}: {where}\n  {random_dag(seed)['nodes']}" for seed, where in failures.items()
    )


# ----------------------------------------------------------------- the checker itself
def test_checker_detects_relu_backward_that_ignores_the_mask(monkeypatch):
    network = Network.stack(INPUT_SIZE, [Dense(8), ReLU(), Dense(N_CLASSES)], dtype=np.float64)
    assert_passes(check(network))
    monkeypatch.setattr(ReLU, "backward", lambda self, grad_out: grad_out)
    result = check(network)
    assert not result.passed
    assert result.errors["dense1.weight"] > 1e-3
    assert "wrong gradient" in result.report()


def test_checker_detects_layernorm_backward_missing_the_mean_terms(monkeypatch):
    network = Network.stack(INPUT_SIZE, [Dense(8), LayerNorm(), Dense(N_CLASSES)], dtype=np.float64)
    randomize_norm_params(network)

    def shortcut(self, grad_out):  # the common wrong shortcut: grad * gamma / std
        self._scale_and_shift(grad_out)
        return grad_out * self.params["gamma"] * self.inv_std

    monkeypatch.setattr(LayerNorm, "backward", shortcut)
    assert check(network).errors["dense1.weight"] > 1e-3


def test_checker_detects_a_wrong_bias_gradient(monkeypatch):
    network = Network.stack(INPUT_SIZE, [Dense(8), Sigmoid(), Dense(N_CLASSES)], dtype=np.float64)
    original = Dense.backward

    def doubled_bias(self, grad_out):
        result = original(self, grad_out)
        self.grads["bias"] *= 2.0
        return result

    monkeypatch.setattr(Dense, "backward", doubled_bias)
    result = check(network)
    assert result.errors["dense1.bias"] > 1e-3 and result.errors["dense2.bias"] > 1e-3


def test_checker_refuses_float32_networks():
    network = Network.stack(INPUT_SIZE, [Dense(N_CLASSES)], dtype=np.float32)
    x, labels = data()
    with pytest.raises(ConfigError, match="float64"):
        gradcheck.check_gradients(network, SoftmaxCrossEntropy(), x, labels)


def test_checker_samples_at_most_max_entries_per_tensor():
    network = Network.stack(30, [Dense(20), Tanh(), Dense(N_CLASSES)], dtype=np.float64)
    x, labels = data(input_size=30)
    result = gradcheck.check_gradients(network, SoftmaxCrossEntropy(), x, labels, max_entries=50)
    assert result.checked["dense1.weight"] == 50
    assert result.checked["dense1.bias"] == 20
    assert result.passed, result.report()


def test_relative_error_is_judged_on_each_tensors_own_scale_plus_the_numeric_noise():
    assert gradcheck.relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert gradcheck.relative_error(np.array([0.0, 4.0]), np.array([0.0, 3.0])) == 0.25
    # no absolute floor: a tiny tensor that is wrong by a factor of 3 is wrong
    assert gradcheck.relative_error(np.array([1e-12]), np.array([3e-12])) == pytest.approx(2 / 3)
    assert gradcheck.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    # differences within the numeric noise pass: |a - n| < TOLERANCE * scale + noise
    small = gradcheck.relative_error(np.array([0.0]), np.array([1e-12]), noise=2e-12)
    assert small < TOLERANCE
    assert gradcheck.relative_error(np.array([0.0]), np.array([1e-12]), noise=1e-13) > TOLERANCE


def deep_sigmoid_network():
    """16 sigmoid layers: the first layer's gradients are about 1e-11 (vanishing gradients)."""
    return build_network("16x16:sigmoid", INPUT_SIZE, N_CLASSES, dtype=np.float64, seed=0)


def test_deep_sigmoid_network_has_exact_gradients_even_where_they_vanish():
    network = deep_sigmoid_network()
    result = gradcheck.check_gradients(network, SoftmaxCrossEntropy(), *data(), max_entries=20)
    assert result.passed, result.report()
    assert np.abs(network.grads["dense1.weight"]).max() < 1e-9  # the case an absolute floor hid
    assert result.steps["dense1.weight"] == gradcheck.LARGE_STEP  # measured with the larger step


def test_checker_fails_a_deep_sigmoid_network_whose_first_layer_gradient_is_zeroed():
    """The mutation a checker with an absolute floor of 1e-3 let through: in a 16-layer sigmoid
    stack the first layer's true gradients are ~1e-11, so zeroing them all changed nothing."""
    network = deep_sigmoid_network()
    first = network.nodes["dense1"].layer
    correct_backward = first.backward

    def zeroed_backward(grad_out):
        grad_in = correct_backward(grad_out)
        first.grads["weight"][...] = 0.0
        first.grads["bias"][...] = 0.0
        return grad_in

    first.backward = zeroed_backward
    result = gradcheck.check_gradients(network, SoftmaxCrossEntropy(), *data(), max_entries=20)
    assert not result.passed
    assert result.errors["dense1.weight"] > 3 * TOLERANCE, result.report()
    assert result.errors["dense1.bias"] > 3 * TOLERANCE, result.report()
    assert result.errors["dense2.weight"] < TOLERANCE  # only the mutated layer is blamed
    assert "dense1.weight" in result.report() and "wrong gradient" in result.report()


def test_a_tensor_whose_true_gradient_is_zero_passes_and_a_wrong_one_does_not(monkeypatch):
    """The bias of a Dense layer before BatchNorm has no effect on the loss: its gradient is 0
    (up to rounding) on both sides and must pass; a bias gradient that is not zero must fail."""
    network = Network.stack(
        INPUT_SIZE, [Dense(8), BatchNorm(), Tanh(), Dense(N_CLASSES)], dtype=np.float64
    )
    result = check(network)
    assert_passes(result)
    assert np.abs(network.grads["dense1.bias"]).max() < 1e-15
    original = Dense.backward

    def bias_gradient_of_one_in_a_million(self, grad_out):
        grad_in = original(self, grad_out)
        self.grads["bias"] += 1e-6
        return grad_in

    monkeypatch.setattr(Dense, "backward", bias_gradient_of_one_in_a_million)
    assert check(network).errors["dense1.bias"] > TOLERANCE


def test_make_layer_knows_every_layer_type_the_checks_use():
    for name in ["dense", "add", "concat", *ACTIVATION_STEPS]:
        options = {"units": 3} if name == "dense" else STEP_OPTIONS.get(name, {})
        assert make_layer(name, **options).type_name == name
    assert isinstance(make_layer("concat"), Concat)
