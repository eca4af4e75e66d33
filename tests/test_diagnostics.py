"""Per-layer statistics: what they measure, and that measuring changes nothing."""

from __future__ import annotations

import numpy as np

from mlplab.engine.architecture import build_network
from mlplab.engine.losses import SoftmaxCrossEntropy
from mlplab.training.diagnostics import LayerStatistics, layer_statistics


def sample(n=64, features=20, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)).astype(np.float32), rng.integers(0, classes, n)


def test_gradients_vanish_layer_by_layer_in_a_deep_sigmoid_stack():
    x, y = sample()
    network = build_network("8x32:sigmoid", 20, 4, seed=0)
    stats = layer_statistics(network, SoftmaxCrossEntropy(), x, y)
    first, last = stats["dense1"]["weight_gradient_rms"], stats["dense8"]["weight_gradient_rms"]
    assert first < last / 100, (first, last)  # each sigmoid layer scales it down by <= 1/4


def test_statistics_name_every_node_and_weights_only_where_there_are_weights():
    x, y = sample()
    network = build_network("16:relu,dropout(0.5),8:sigmoid", 20, 4, seed=0)
    stats = layer_statistics(network, SoftmaxCrossEntropy(), x, y)
    assert set(stats) == set(network.order)
    assert {"activation_mean", "activation_std", "gradient_std"} <= set(stats["relu1"])
    assert "weight_rms" in stats["dense2"] and "weight_rms" not in stats["sigmoid1"]
    weights = network.params["dense1.weight"].astype(np.float64)
    assert stats["dense1"]["weight_rms"] == np.sqrt(np.mean(weights**2))


def test_measuring_changes_neither_the_next_training_step_nor_the_running_statistics():
    x, y = sample()
    loss = SoftmaxCrossEntropy()

    def one_step(measure: bool):
        network = build_network("16:batchnorm:relu:dropout(0.3),8:tanh", 20, 4, seed=3)
        if measure:
            layer_statistics(network, loss, x, y)
        loss.forward(network.forward(x, training=True), y)
        network.backward(loss.backward())
        return {**network.grads, **{f"buffer {k}": v for k, v in network.buffers.items()}}

    plain, measured = one_step(False), one_step(True)
    assert plain.keys() == measured.keys()
    for name in plain:
        np.testing.assert_array_equal(plain[name], measured[name], err_msg=name)


def test_the_callback_records_one_entry_per_epoch_plus_the_start():
    from mlplab.engine.optimizers import SGD
    from mlplab.training.loop import fit

    x, y = sample(n=96)
    network = build_network("12:sigmoid", 20, 4, seed=0)
    loss = SoftmaxCrossEntropy()
    callback = LayerStatistics(network, loss, x[:32], y[:32])
    fit(network, loss, x, y, optimizer=SGD(0.5), epochs=3, progress=False, callbacks=[callback])
    assert len(callback.epochs) == 4
    assert callback.to_dict()["nodes"] == list(network.order)
    assert callback.epochs[0]["dense1"]["weight_rms"] != callback.epochs[-1]["dense1"]["weight_rms"]
