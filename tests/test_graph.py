"""Networks as DAGs: ordering, validation, parameters, summaries, in-place safety, a hand step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlplab.engine.activations import Linear, ReLU, Sigmoid, Tanh
from mlplab.engine.architecture import network_from_string
from mlplab.engine.graph import Network, Node
from mlplab.engine.layers import Add, Concat, Dense, Dropout
from mlplab.engine.losses import SoftmaxCrossEntropy
from mlplab.engine.normalization import BatchNorm
from mlplab.engine.optimizers import SGD
from mlplab.errors import ConfigError


def rows(n=4, size=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, size))


def skip_nodes():
    return [
        Node("hidden", Dense(6), ["input"]),
        Node("relu", ReLU(), ["hidden"]),
        Node("tanh", Tanh(), ["hidden"]),
        Node("both", Concat(), ["relu", "tanh"]),
        Node("project", Dense(6), ["both"]),
        Node("skip", Add(), ["project", "hidden"]),
        Node("logits", Dense(3), ["skip"]),
    ]


def logits_and_grads(network, x, labels):
    loss = SoftmaxCrossEntropy()
    logits = network.forward(x, training=True).copy()
    loss.forward(logits, labels)
    network.backward(loss.backward())
    return logits, {name: g.copy() for name, g in network.grads.items()}


# ----------------------------------------------------------------- ordering and validation
def test_topological_order_puts_every_node_after_its_inputs_whatever_the_declaration_order():
    nodes = skip_nodes()
    reference = Network(5, nodes, output="logits", dtype=np.float64)
    x, labels = rows(), np.array([0, 1, 2, 0])
    expected_logits, expected_grads = logits_and_grads(reference, x, labels)
    for permutation in np.random.default_rng(0).permuted(np.tile(np.arange(7), (5, 1)), axis=1):
        shuffled = [skip_nodes()[i] for i in permutation]
        network = Network(5, shuffled, output="logits", dtype=np.float64)
        position = {name: i for i, name in enumerate(network.order)}
        for node in network.nodes.values():
            assert all(position[i] < position[node.name] for i in node.inputs if i != "input")
        for name, array in reference.params.items():  # same weights, whatever the order
            network.params[name][...] = array
        logits, grads = logits_and_grads(network, x, labels)
        np.testing.assert_allclose(logits, expected_logits, rtol=1e-12)
        for name in expected_grads:
            np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-12)


def test_output_defaults_to_the_last_node_listed():
    assert Network(5, skip_nodes()).output == "logits"


def test_a_cycle_is_a_config_error_naming_its_nodes():
    with pytest.raises(ConfigError, match=r"cycle through node\(s\) .*\ba\b.*\bb\b"):
        Network(
            5, [Node("a", Dense(4), ["b"]), Node("b", ReLU(), ["a"]), Node("out", Dense(2), ["b"])]
        )
    with pytest.raises(ConfigError, match="cycle through node.*self"):
        Network(5, [Node("self", ReLU(), ["self"]), Node("out", Dense(2), ["self"])])


def test_an_input_that_names_no_node_is_a_config_error():
    with pytest.raises(ConfigError, match="'out' reads from 'hiden', which is not a node"):
        Network(5, [Node("hidden", Dense(4)), Node("out", Dense(2), ["hiden"])])


def test_a_node_that_does_not_lead_to_the_output_is_a_config_error():
    with pytest.raises(ConfigError, match="orphan.*do not lead to the output 'out'"):
        Network(
            5,
            [
                Node("hidden", Dense(4)),
                Node("orphan", Tanh(), ["hidden"]),
                Node("out", Dense(2), ["hidden"]),
            ],
        )


def test_add_of_mismatched_sizes_is_a_config_error_naming_the_node():
    with pytest.raises(ConfigError, match="node 'sum'.*equal size.*\\[4, 3\\]"):
        Network(
            5,
            [
                Node("a", Dense(4)),
                Node("b", Dense(3)),
                Node("sum", Add(), ["a", "b"]),
                Node("out", Dense(2), ["sum"]),
            ],
        )


def test_wrong_number_of_inputs_is_a_config_error():
    with pytest.raises(ConfigError, match="'out' \\(dense\\) takes 1 input\\(s\\), got 2"):
        Network(5, [Node("a", Dense(4)), Node("out", Dense(2), ["a", "input"])])
    with pytest.raises(ConfigError, match="'sum' \\(add\\) takes at least 2 input\\(s\\), got 1"):
        Network(5, [Node("a", Dense(4)), Node("sum", Add(), ["a"]), Node("out", Dense(2), ["sum"])])


def test_duplicate_or_reserved_node_names_are_a_config_error():
    with pytest.raises(ConfigError, match="'a' is used twice"):
        Network(5, [Node("a", Dense(4)), Node("a", Dense(2))])
    with pytest.raises(ConfigError, match="'input' is used twice or reserved"):
        Network(5, [Node("input", Dense(4))])


def test_one_layer_object_in_two_nodes_is_a_config_error_naming_both_nodes():
    """A layer caches its input and owns one gradient array: used twice, the second use
    overwrites the first and the gradients come out wrong (a gradient check error of 0.63)."""
    shared = Dense(5)
    with pytest.raises(ConfigError, match=r"nodes 'a' and 'b' use the same Dense\(units=5"):
        Network(5, [Node("a", shared), Node("b", shared, ["a"]), Node("out", Dense(2), ["b"])])
    relu = ReLU()
    with pytest.raises(ConfigError, match=r"'relu1' and 'relu2' use the same ReLU\(\) object"):
        Network.stack(5, [Dense(5), relu, Dense(5), relu, Dense(2)])


def test_bad_input_size_output_name_or_empty_network_is_a_config_error():
    with pytest.raises(ConfigError, match="input size"):
        Network(0, [Node("a", Dense(2))])
    with pytest.raises(ConfigError, match="at least one layer"):
        Network(5, [])
    with pytest.raises(ConfigError, match="output node 'nope'"):
        Network(5, [Node("a", Dense(2))], output="nope")


def test_forward_rejects_inputs_of_the_wrong_shape():
    network = Network.stack(5, [Dense(2)])
    with pytest.raises(ConfigError, match=r"\(N, 5\), got \(3, 4\)"):
        network.forward(np.zeros((3, 4)))


# ----------------------------------------------------------------- construction helpers
def test_stack_is_a_one_line_chain_named_by_type_counting_each_type_on_its_own():
    network = Network.stack(
        784, [Dense(100), Sigmoid(), Dropout(0.1), Dense(50), Sigmoid(), Dense(10)]
    )
    assert network.order == ["dense1", "sigmoid1", "dropout1", "dense2", "sigmoid2", "dense3"]
    assert network.nodes["sigmoid1"].inputs == ["dense1"]
    assert network.nodes["dense2"].inputs == ["dropout1"]
    assert network.sizes["sigmoid1"] == 100 and network.sizes["dense3"] == 10
    assert network.forward(np.zeros((2, 784), dtype=np.float32)).shape == (2, 10)


def test_summary_counts_the_books_and_the_forums_networks():
    small = network_from_string("32:sigmoid", 784, 10)
    assert small.n_params == 25_450
    assert "Total params: 25,450" in small.summary()
    big = network_from_string("950:relu,50:sigmoid", 784, 10)
    assert big.n_params == 793_810
    summary = big.summary()
    assert "Total params: 793,810" in summary
    assert "745,750" in summary and "(None, 950)" in summary  # 784 * 950 + 950


def test_summary_lists_batchnorm_buffers_separately():
    summary = network_from_string("16:batchnorm:relu", 8, 3).summary()
    assert "Non-trainable buffers: 32" in summary
    assert "Total params: " + f"{8 * 16 + 16 + 32 + 16 * 3 + 3:,}" in summary


def test_parameters_are_named_node_dot_param_in_topological_order():
    network = Network(5, skip_nodes())
    assert list(network.params) == [
        "hidden.weight",
        "hidden.bias",
        "project.weight",
        "project.bias",
        "logits.weight",
        "logits.bias",
    ]
    assert list(network.grads) == list(network.params)
    assert all(network.grads[n].shape == p.shape for n, p in network.params.items())
    assert network.params["project.weight"].shape == (6, 12)  # (out, in)


def test_same_seed_gives_identical_weights_and_another_seed_different_ones():
    def weights(seed):
        return network_from_string("20:relu,10:tanh", 8, 3, seed=seed).params

    first, again, other = weights(7), weights(7), weights(8)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["dense1.weight"], other["dense1.weight"])


def masks(network, x):
    network.forward(x, training=True)
    return {
        name: network.nodes[name].layer.mask.copy()
        for name in network.order
        if network.nodes[name].layer.type_name == "dropout"
    }


def test_dropout_seed_changes_the_masks_but_not_the_initial_weights():
    x = rows(6, 8)

    def build(**seeds):
        return network_from_string("dropout(0.3),20:relu:dropout(0.5),10:tanh", 8, 3, **seeds)

    reference = build(seed=4, dropout_seed=1)
    other_masks = build(seed=4, dropout_seed=2)
    other_weights = build(seed=5, dropout_seed=1)
    for name, array in reference.params.items():
        np.testing.assert_array_equal(other_masks.params[name], array, err_msg=name)
        assert not np.array_equal(other_weights.params[name], array) or name.endswith(".bias")
    first, second, third = masks(reference, x), masks(other_masks, x), masks(other_weights, x)
    assert list(first) == ["dropout1", "dropout2"]
    for name in first:
        assert not np.array_equal(first[name], second[name]), name
        np.testing.assert_array_equal(first[name], third[name], err_msg=name)  # seed: weights only


def test_dropout_seed_defaults_to_the_seed_on_a_stream_of_its_own():
    x = rows(6, 8)
    default = network_from_string("20:relu:dropout(0.5)", 8, 3, seed=9)
    explicit = network_from_string("20:relu:dropout(0.5)", 8, 3, seed=9, dropout_seed=9)
    assert default.dropout_seed == 9
    np.testing.assert_array_equal(masks(default, x)["dropout1"], masks(explicit, x)["dropout1"])


def test_rng_states_restore_the_exact_dropout_masks():
    network = network_from_string("dropout(0.2),20:relu:dropout(0.5)", 8, 3, seed=1)
    x = rows(6, 8)
    masks(network, x)  # move the generators on from their initial state
    states = network.rng_states()
    assert set(states) == {"dropout1", "dropout2"}
    expected = masks(network, x)
    masks(network, x)
    network.set_rng_states(states)
    for name, mask in masks(network, x).items():
        np.testing.assert_array_equal(mask, expected[name], err_msg=name)


@pytest.mark.parametrize("seeds", [{"seed": -1}, {"seed": 1.5}, {"dropout_seed": "7"}])
def test_seeds_must_be_whole_numbers_from_zero(seeds):
    with pytest.raises(ConfigError, match="seed must be a whole number >= 0"):
        Network.stack(4, [Dense(2)], **seeds)


def test_networks_use_the_requested_dtype_throughout():
    network = network_from_string("8:layernorm:relu", 5, 3, dtype=np.float64)
    assert all(p.dtype == np.float64 for p in network.params.values())
    assert network.forward(rows(2, 5).astype(np.float32)).dtype == np.float64
    assert network_from_string("8", 5, 3).forward(rows(2, 5)).dtype == np.float32


def test_predict_logits_in_batches_equals_one_big_forward():
    network = network_from_string("16:relu", 5, 3, dtype=np.float64)
    x = rows(23, 5)
    np.testing.assert_allclose(
        network.predict_logits(x, batch_size=4), network.forward(x), rtol=1e-13
    )


# ----------------------------------------------------------------- in-place safety
def test_activation_on_a_fan_out_is_not_planned_in_place():
    network = Network(5, skip_nodes())
    assert not network.nodes["relu"].layer.inplace  # "hidden" is also read by tanh and skip
    assert not network.nodes["tanh"].layer.inplace
    chain = Network.stack(5, [Dense(4), Tanh(), ReLU(), Dense(2)])
    assert chain.nodes["tanh1"].layer.inplace  # Dense's output has one reader
    assert not chain.nodes["relu1"].layer.inplace  # tanh's backward reads its own output
    assert not Network.stack(5, [Tanh(), Dense(2)]).nodes["tanh1"].layer.inplace  # the data


def test_fan_out_of_an_activation_gives_the_hand_computed_outputs_and_gradients():
    """relu(hidden) is read by both a sigmoid and a tanh: neither may overwrite it."""
    network = Network(
        4,
        [
            Node("hidden", Dense(5), ["input"]),
            Node("relu", ReLU(), ["hidden"]),
            Node("sig", Sigmoid(), ["relu"]),
            Node("tanh", Tanh(), ["relu"]),
            Node("both", Concat(), ["sig", "tanh"]),
            Node("logits", Dense(3), ["both"]),
        ],
        dtype=np.float64,
        seed=1,
    )
    x, labels = rows(6, 4), np.array([0, 1, 2, 2, 1, 0])
    W1, b1 = network.params["hidden.weight"], network.params["hidden.bias"]
    b1[...] = [0.1, -0.2, 0.3, 0.0, 0.05]
    W2, b2 = network.params["logits.weight"], network.params["logits.bias"]
    logits, grads = logits_and_grads(network, x, labels)

    h = x @ W1.T + b1
    r = np.maximum(h, 0.0)
    s, t = 1 / (1 + np.exp(-r)), np.tanh(r)
    c = np.hstack([s, t])
    z = c @ W2.T + b2
    np.testing.assert_allclose(logits, z, rtol=1e-12)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    grad_z = (p - np.eye(3)[labels]) / 6
    grad_c = grad_z @ W2
    grad_r = grad_c[:, :5] * s * (1 - s) + grad_c[:, 5:] * (1 - t * t)  # the two readers add up
    grad_h = grad_r * (h > 0)
    np.testing.assert_allclose(grads["logits.weight"], grad_z.T @ c, rtol=1e-12)
    np.testing.assert_allclose(grads["hidden.weight"], grad_h.T @ x, rtol=1e-12)
    np.testing.assert_allclose(grads["hidden.bias"], grad_h.sum(axis=0), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("passthrough", ["dropout", "linear"])
def test_residual_block_with_a_passthrough_layer_keeps_the_skip_input_intact(passthrough, training):
    """hidden -> dropout/linear -> relu -> project, added back to hidden. Dropout at inference
    (and Linear always) hands its input on unchanged, so a ReLU planned in place after it
    would overwrite ``hidden``, which the skip connection still has to read."""
    middle = Dropout(0.5) if passthrough == "dropout" else Linear()
    network = Network(
        4,
        [
            Node("hidden", Dense(5), ["input"]),
            Node("drop", middle, ["hidden"]),
            Node("act", ReLU(), ["drop"]),
            Node("project", Dense(5), ["act"]),
            Node("skip", Add(), ["project", "hidden"]),
            Node("logits", Dense(3), ["skip"]),
        ],
        dtype=np.float64,
        seed=2,
    )
    x = rows(6, 4, seed=3)
    P = network.params
    logits = network.forward(x, training=training)
    mask = middle.mask if (passthrough == "dropout" and training) else 1.0
    h = x @ P["hidden.weight"].T + P["hidden.bias"]
    block = np.maximum(h * mask, 0.0) @ P["project.weight"].T + P["project.bias"]
    expected = (block + h) @ P["logits.weight"].T + P["logits.bias"]
    np.testing.assert_allclose(
        logits,
        expected,
        rtol=1e-12,
        err_msg="the skip connection read a value overwritten in place",
    )


@pytest.mark.parametrize("architecture", ["dropout(0.2),tanh,16:relu", "linear,sigmoid,16:relu"])
@pytest.mark.parametrize("training", [False, True])
def test_forward_never_changes_the_callers_input_array(architecture, training):
    network = network_from_string(architecture, 5, 3, dtype=np.float32)
    x = rows(4, 5).astype(np.float32)  # the network's own dtype: no conversion copy
    before = x.copy()
    network.forward(x, training=training)
    np.testing.assert_array_equal(x, before, err_msg="forward overwrote the caller's data")


def test_batchnorm_after_a_fan_out_gets_the_gradients_of_both_readers():
    network = Network(
        4,
        [
            Node("hidden", Dense(5), ["input"]),
            Node("norm", BatchNorm(), ["hidden"]),
            Node("act", Sigmoid(), ["norm"]),
            Node("skip", Add(), ["act", "norm"]),
            Node("logits", Dense(3), ["skip"]),
        ],
        dtype=np.float64,
    )
    assert not network.nodes["act"].layer.inplace
    x, labels = rows(6, 4), np.array([0, 1, 2, 0, 1, 2])
    copied = Network(
        4,
        [
            Node("hidden", Dense(5), ["input"]),
            Node("norm", BatchNorm(), ["hidden"]),
            Node("act", Sigmoid(), ["norm"]),
            Node("skip", Add(), ["act", "norm"]),
            Node("logits", Dense(3), ["skip"]),
        ],
        dtype=np.float64,
    )
    for node in copied.nodes.values():
        node.layer.inplace = False
    logits, grads = logits_and_grads(network, x, labels)
    logits_copy, grads_copy = logits_and_grads(copied, x, labels)
    np.testing.assert_array_equal(logits, logits_copy)
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads_copy[name])


# ----------------------------------------------------------------- one step by hand
def test_one_sgd_step_of_a_2_2_2_sigmoid_network_matches_the_hand_computation():
    """x = (1, 2), label 1; hidden sigmoid; cross-entropy on the logits; SGD with rate 0.5."""
    network = Network.stack(2, [Dense(2), Sigmoid(), Dense(2)], dtype=np.float64)
    W1 = np.array([[0.1, 0.2], [0.3, 0.4]])
    b1 = np.array([0.1, -0.1])
    W2 = np.array([[0.5, -0.5], [0.2, 0.3]])
    b2 = np.array([0.0, 0.1])
    for name, value in [
        ("dense1.weight", W1),
        ("dense1.bias", b1),
        ("dense2.weight", W2),
        ("dense2.bias", b2),
    ]:
        network.params[name][...] = value

    # forward, entry by entry
    z1 = [0.1 * 1 + 0.2 * 2 + 0.1, 0.3 * 1 + 0.4 * 2 - 0.1]  # = [0.6, 1.0]
    a1 = [1 / (1 + math.exp(-z1[0])), 1 / (1 + math.exp(-z1[1]))]
    z2 = [0.5 * a1[0] - 0.5 * a1[1] + 0.0, 0.2 * a1[0] + 0.3 * a1[1] + 0.1]
    e = [math.exp(z2[0]), math.exp(z2[1])]
    p = [e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1])]
    expected_loss = -math.log(p[1])
    # backward: dL/dz2 = p - onehot(1); dL/da1 = W2^T dL/dz2; dL/dz1 = dL/da1 a1 (1 - a1)
    d2 = [p[0] - 0.0, p[1] - 1.0]
    da1 = [0.5 * d2[0] + 0.2 * d2[1], -0.5 * d2[0] + 0.3 * d2[1]]
    d1 = [da1[0] * a1[0] * (1 - a1[0]), da1[1] * a1[1] * (1 - a1[1])]
    lr = 0.5
    new_W2 = [[W2[i, j] - lr * d2[i] * a1[j] for j in range(2)] for i in range(2)]
    new_b2 = [b2[i] - lr * d2[i] for i in range(2)]
    new_W1 = [[W1[i, j] - lr * d1[i] * [1.0, 2.0][j] for j in range(2)] for i in range(2)]
    new_b1 = [b1[i] - lr * d1[i] for i in range(2)]

    x, labels = np.array([[1.0, 2.0]]), np.array([1])
    loss = SoftmaxCrossEntropy()
    logits = network.forward(x, training=True)
    np.testing.assert_allclose(logits, [z2], rtol=1e-14)
    assert loss.forward(logits, labels) == pytest.approx(expected_loss, rel=1e-14)
    network.backward(loss.backward())
    SGD(lr).update(network.params, network.grads)

    np.testing.assert_allclose(network.params["dense2.weight"], new_W2, rtol=1e-14)
    np.testing.assert_allclose(network.params["dense2.bias"], new_b2, rtol=1e-14)
    np.testing.assert_allclose(network.params["dense1.weight"], new_W1, rtol=1e-14)
    np.testing.assert_allclose(network.params["dense1.bias"], new_b1, rtol=1e-14)
    # a sanity anchor with plain numbers: z1 = (0.6, 1.0), and the step lowers the loss
    assert z1 == pytest.approx([0.6, 1.0])
    assert loss.forward(network.forward(x), labels) < expected_loss
