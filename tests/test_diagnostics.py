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


def test_the_measurement_sample_is_spread_over_the_whole_set_and_deterministic():
    from mlplab.training.diagnostics import measurement_sample

    x = np.arange(5000, dtype=np.float32).reshape(2500, 2)
    y = np.arange(2500)
    sample_x, sample_y = measurement_sample(x, y, 1000)
    assert len(sample_y) == 1000 and len(np.unique(sample_y)) == 1000
    assert sample_y[0] == 0 and sample_y[-1] == 2499  # the first and last examples both
    np.testing.assert_array_equal(sample_x[:, 0], 2 * sample_y)  # images stay with their labels
    np.testing.assert_array_equal(measurement_sample(x, y, 1000)[1], sample_y)
    small_x, small_y = measurement_sample(x[:10], y[:10], 1000)
    assert len(small_y) == 10


def test_measuring_an_earlier_epoch_again_replaces_the_entries_from_it_on(tmp_path):
    import json

    x, y = sample()
    network = build_network("12:relu", 20, 4, seed=0)
    path = tmp_path / "layer_stats.json"
    callback = LayerStatistics(network, SoftmaxCrossEntropy(), x, y, path=path)
    for epoch in (1, 2, 3):
        callback.on_epoch_end(epoch, {})
    callback.measure(2)  # a run resumed from the checkpoint of epoch 1
    assert callback.epoch_numbers == [0, 1, 2]
    assert json.loads(path.read_text())["epoch_numbers"] == [0, 1, 2]  # written every time
    resumed = LayerStatistics(network, SoftmaxCrossEntropy(), x, y, at_start=False)
    resumed.restore(json.loads(path.read_text()))
    resumed.on_epoch_end(3, {})
    assert resumed.epoch_numbers == [0, 1, 2, 3]
    assert resumed.epochs[:3] == callback.to_dict()["epochs"]


def test_restoring_a_file_of_another_network_keeps_nothing():
    x, y = sample()
    loss = SoftmaxCrossEntropy()
    other = LayerStatistics(build_network("12:relu,6:relu", 20, 4, seed=0), loss, x, y).to_dict()
    callback = LayerStatistics(build_network("12:relu", 20, 4, seed=0), loss, x, y, at_start=False)
    callback.restore(other)
    assert callback.epochs == [] and callback.epoch_numbers == []


def test_a_diverged_network_gives_json_without_nan():
    import json

    x, y = sample()
    network = build_network("12:relu", 20, 4, seed=0)
    network.params["dense1.weight"][...] = np.nan
    stored = LayerStatistics(network, SoftmaxCrossEntropy(), x, y).to_dict()
    assert stored["epochs"][0]["dense1"]["weight_rms"] is None
    json.dumps(stored, allow_nan=False)  # raises on NaN


def test_saturated_and_dead_units_are_counted_where_the_activation_is_flat():
    x, y = sample()
    loss = SoftmaxCrossEntropy()
    relu = build_network("8:relu", 20, 4, seed=0)
    squashing = build_network("8:sigmoid,8:tanh", 20, 4, seed=0)
    fresh = {**layer_statistics(relu, loss, x, y), **layer_statistics(squashing, loss, x, y)}
    assert fresh["relu1"]["dead_fraction"] < 0.5
    assert fresh["sigmoid1"]["saturated_fraction"] < 0.1
    assert "saturated_fraction" not in fresh["dense1"]  # a dense layer is never flat
    relu.params["dense1.bias"][...] = -100.0  # every unit below zero on every example
    squashing.params["dense1.weight"][...] *= 1000.0  # sigmoid inputs far out on its tails
    dead, saturated = layer_statistics(relu, loss, x, y), layer_statistics(squashing, loss, x, y)
    assert dead["relu1"]["saturated_fraction"] == 1.0 and dead["relu1"]["dead_fraction"] == 1.0
    assert saturated["sigmoid1"]["saturated_fraction"] > 0.95
    assert 0.0 <= saturated["tanh1"]["dead_fraction"] <= saturated["tanh1"]["saturated_fraction"]
