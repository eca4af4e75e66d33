"""The engine's speed devices change no result: the compiled graph walk, the parameter names
joined once, and the work arrays of the activations and of dropout."""

from __future__ import annotations

import numpy as np
import pytest

from mlplab.engine.activations import ReLU, ShiftedReLU, Sigmoid, Tanh
from mlplab.engine.graph import Network, Node
from mlplab.engine.layers import Add, Concat, Dense, Dropout, Layer
from mlplab.engine.losses import SoftmaxCrossEntropy


def built(layer, size=6, dtype=np.float32, seed=0):
    layer.build([size], np.random.default_rng(seed), dtype)
    return layer


def rows(n=16, size=6, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, size)).astype(dtype)


# ----------------------------------------------------------------- the graph walk
def test_a_dag_gives_the_same_logits_and_gradients_as_running_its_layers_by_hand():
    """The precomputed plan (inputs, values freed after their last reader) is only a shortcut."""
    network = Network(
        5,
        [
            Node("hidden", Dense(6)),
            Node("tanh", Tanh(), ["hidden"]),
            Node("sigmoid", Sigmoid(), ["hidden"]),
            Node("both", Concat(), ["tanh", "sigmoid"]),
            Node("project", Dense(6), ["both"]),
            Node("skip", Add(), ["project", "hidden"]),
            Node("logits", Dense(3), ["skip"]),
        ],
        dtype=np.float64,
    )
    x, labels = rows(8, 5, dtype=np.float64), np.array([0, 1, 2, 0, 1, 2, 0, 1])
    p = network.params
    hidden = x @ p["hidden.weight"].T + p["hidden.bias"]
    t, s = np.tanh(hidden), 1 / (1 + np.exp(-hidden))
    project = np.concatenate([t, s], axis=1) @ p["project.weight"].T + p["project.bias"]
    skip = project + hidden
    logits = skip @ p["logits.weight"].T + p["logits.bias"]
    np.testing.assert_allclose(network.forward(x, training=True), logits, rtol=1e-12)

    loss = SoftmaxCrossEntropy()
    loss.forward(network.forward(x, training=True), labels)
    network.backward(loss.backward())
    grad_logits = np.exp(logits - logits.max(axis=1, keepdims=True))
    grad_logits /= grad_logits.sum(axis=1, keepdims=True)
    grad_logits[np.arange(8), labels] -= 1
    grad_logits /= 8
    grad_skip = grad_logits @ p["logits.weight"]
    grad_both = grad_skip @ p["project.weight"]
    grad_hidden = grad_skip + grad_both[:, :6] * (1 - t * t) + grad_both[:, 6:] * s * (1 - s)
    np.testing.assert_allclose(network.grads["hidden.weight"], grad_hidden.T @ x, rtol=1e-10)
    np.testing.assert_allclose(network.grads["logits.weight"], grad_logits.T @ skip, rtol=1e-10)


def test_params_and_grads_see_an_array_a_layer_put_in_place_of_its_old_one():
    """Names are joined once, but arrays are looked up at every call: a custom layer that
    assigns a new gradient array (instead of writing into the old one) is still trained."""

    class Scale(Layer):
        type_name = ""  # not registered: a test-only layer

        def build(self, input_sizes, rng, dtype):
            self.params["gain"] = np.ones(input_sizes[0], dtype=dtype)
            self.grads["gain"] = np.zeros(input_sizes[0], dtype=dtype)
            return input_sizes[0]

        def forward(self, x, training=False):
            self.x = x
            return x * self.params["gain"]

        def backward(self, grad_out):
            self.grads["gain"] = (grad_out * self.x).sum(axis=0)  # a new array, on purpose
            return grad_out * self.params["gain"]

    scale = Scale()
    nodes = [
        Node("hidden", Dense(4)),
        Node("scale", scale, ["hidden"]),
        Node("out", Dense(2), ["scale"]),
    ]
    network = Network(4, nodes, dtype=np.float64)
    loss = SoftmaxCrossEntropy()
    loss.forward(network.forward(rows(8, 4, dtype=np.float64), training=True), np.arange(8) % 2)
    network.backward(loss.backward())
    assert network.grads["scale.gain"] is scale.grads["gain"]
    assert np.abs(network.grads["scale.gain"]).sum() > 0
    scale.params["gain"] = np.full(4, 2.0)
    assert network.params["scale.gain"] is scale.params["gain"]


def test_values_no_later_node_reads_are_freed_but_the_output_is_returned():
    seen = {}
    network = Network.stack(6, [Dense(5), ReLU(), Dense(4), Tanh(), Dense(3)])
    logits = network.forward(rows(), observe=lambda name, value: seen.setdefault(name, value))
    assert list(seen) == network.order
    assert logits is seen[network.output]


# ----------------------------------------------------------------- work arrays, same bits
@pytest.mark.parametrize(
    ("layer", "derivative"),
    [
        (Sigmoid(), lambda g, y: g * y * (1.0 - y)),
        (Tanh(), lambda g, y: g * (1.0 - y * y)),
        (ReLU(), lambda g, y: g * (y > 0.0)),
        (ShiftedReLU(-1.0), lambda g, y: g * (y > -1.0)),
    ],
    ids=["sigmoid", "tanh", "relu", "shifted-relu"],
)
def test_activation_backward_into_work_arrays_gives_the_bits_of_the_plain_formula(
    layer, derivative
):
    layer = built(layer)
    for seed in (1, 2):  # a second batch reuses the work arrays
        y = layer.forward(rows(seed=seed) * 3, training=True).copy()
        grad_out = rows(seed=seed + 10)
        kept = grad_out.copy()
        grad_in = layer.backward(grad_out)
        np.testing.assert_array_equal(grad_in, derivative(kept, y))
        np.testing.assert_array_equal(grad_out, kept)  # grad_out is never changed in place


def test_dropout_mask_in_work_arrays_gives_the_bits_of_the_plain_formula():
    layer = built(Dropout(0.3), size=50)
    reference_rng = np.random.default_rng(0)
    reference_rng.bit_generator.state = layer.rng.bit_generator.state
    for seed in (1, 2):
        x = rows(20, 50, seed=seed)
        y = layer.forward(x.copy(), training=True)
        keep = reference_rng.random(x.shape, dtype=np.float32) >= 0.3
        mask = keep * np.float32(1 / 0.7)
        np.testing.assert_array_equal(y, x * mask)
        grad_out = rows(20, 50, seed=seed + 10)
        np.testing.assert_array_equal(layer.backward(grad_out), grad_out * mask)


# ----------------------------------------------------------------- one flat array of parameters
def _network_and_gradients(seed=0):
    network = Network.stack(6, [Dense(5), Tanh(), Dense(4), Sigmoid(), Dense(3)], seed=seed)
    rng = np.random.default_rng(seed)
    steps = [
        {name: rng.standard_normal(p.shape).astype(p.dtype) for name, p in network.params.items()}
        for _ in range(4)
    ]
    return network, steps


@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam", "adamw"])
def test_packed_parameters_are_updated_in_one_call_with_the_bits_of_one_call_per_tensor(name):
    from mlplab.engine.optimizers import make_optimizer

    network, steps = _network_and_gradients()
    flat = next(iter(network.params.values())).base
    assert flat is not None and flat.size == network.n_params  # every parameter, one array
    loose = {n: p.copy() for n, p in network.params.items()}  # the same values, apart
    packed_optimizer, loose_optimizer = make_optimizer(name, 0.1), make_optimizer(name, 0.1)
    for step in steps:
        grads = network.grads
        for n, g in step.items():
            grads[n][...] = g
        packed_optimizer.update(network.params, grads)
        loose_optimizer.update(loose, {n: g.copy() for n, g in step.items()})
    assert packed_optimizer._packing is not None and loose_optimizer._packing is None
    for n, p in network.params.items():
        np.testing.assert_array_equal(p, loose[n], err_msg=n)
    for key, array in loose_optimizer.state.items():  # the state keeps one array per tensor
        np.testing.assert_array_equal(packed_optimizer.state[key], array, err_msg=key)


def test_a_gradient_array_put_in_place_of_the_packed_one_is_still_used():
    from mlplab.engine.optimizers import make_optimizer

    network, _ = _network_and_gradients()
    optimizer = make_optimizer("sgd", 1.0)
    optimizer.update(network.params, network.grads)  # packed: the gradients are all zero
    layer = network.nodes["dense1"].layer
    before = layer.params["bias"].copy()
    layer.grads["bias"] = np.ones_like(before)  # a new array, not a view of the flat one
    optimizer.update(network.params, network.grads)
    np.testing.assert_array_equal(layer.params["bias"], before - 1.0)
