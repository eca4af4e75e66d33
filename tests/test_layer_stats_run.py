"""Per-layer statistics of a run: ``--layer-stats`` / ``[training] layer_stats`` writes
``layer_stats.json``, ``plot_run`` draws ``layers.png``, and measuring changes no weight."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from mlplab.cli import main
from mlplab.errors import DataError
from mlplab.report.plots import layer_stats_figure
from mlplab.report.run_folder import plot_run, read_run
from mlplab.training.config import RunConfig
from mlplab.training.runs import LAYER_STATS_FILE, DataCache, prepare_run, train_run

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
SIGMOID_STACK = "5x32:sigmoid"
SIGMOID_NODES = [f"{kind}{i}" for i in range(1, 6) for kind in ("dense", "sigmoid")] + ["dense6"]


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv("MLPLAB_DATA", raising=False)


@pytest.fixture(scope="module")
def cache() -> DataCache:
    return DataCache()


@pytest.fixture(scope="module")
def sigmoid_run(tmp_path_factory) -> Path:
    """A 5x32 sigmoid stack trained 2 epochs with plain SGD by ``mlplab train --layer-stats``."""
    out = tmp_path_factory.mktemp("layers") / "sigmoid"
    arguments = [
        "train",
        "--dataset",
        str(MNIST_SMALL),
        "--validation",
        "200",
        "--threads",
        "1",
        "--arch",
        SIGMOID_STACK,
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--schedule",
        "constant",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--layer-stats",
        "--quiet",
        "--out",
        str(out),
    ]
    with contextlib.redirect_stdout(io.StringIO()), pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLPLAB_DATA", raising=False)
        assert main(arguments) == 0
    return out


def small_config(**training) -> RunConfig:
    config = RunConfig()
    config.data.dataset = str(MNIST_SMALL)
    config.data.validation = 200
    config.model.architecture = "16:batchnorm:relu:dropout(0.3),8:tanh"
    config.schedule.name = "constant"
    config.training.epochs = 2
    config.training.batch_size = 64
    config.training.threads = 1
    for key, value in training.items():
        setattr(config.training, key, value)
    return config


def test_the_flag_writes_one_entry_for_the_start_and_one_per_epoch(sigmoid_run):
    stats = json.loads((sigmoid_run / LAYER_STATS_FILE).read_text())
    assert stats["epoch_numbers"] == [0, 1, 2]
    assert len(stats["epochs"]) == 3
    assert stats["nodes"] == SIGMOID_NODES
    assert stats["types"]["dense1"] == "dense" and stats["types"]["sigmoid5"] == "sigmoid"
    assert stats["sample_size"] == 200  # the whole (fixture-sized) validation set
    for entry in stats["epochs"]:
        assert set(entry) == set(SIGMOID_NODES)
        assert {"activation_mean", "activation_std", "gradient_std"} <= set(entry["sigmoid3"])
        assert {"weight_rms", "weight_gradient_rms"} <= set(entry["dense6"])


def test_the_run_folder_gets_layers_png_and_the_saved_config_says_layer_stats(sigmoid_run):
    assert (sigmoid_run / "layers.png").stat().st_size > 10_000
    assert RunConfig.from_toml(sigmoid_run / "config.toml").training.layer_stats is True
    (sigmoid_run / "layers.png").unlink()
    written = plot_run(sigmoid_run)
    assert sigmoid_run / "layers.png" in written and (sigmoid_run / "layers.png").is_file()


def test_a_deep_sigmoid_stack_under_sgd_records_a_vanishing_gradient(sigmoid_run):
    stats = json.loads((sigmoid_run / LAYER_STATS_FILE).read_text())
    for number, entry in zip(stats["epoch_numbers"], stats["epochs"]):
        first, last = entry["dense1"]["gradient_std"], entry["dense6"]["gradient_std"]
        assert 0 < first < last / 100, (number, first, last)  # at most 1/4 per sigmoid layer


def test_layer_stats_change_no_weight_and_no_training_figure(cache):
    def trained(layer_stats: bool):
        prepared = prepare_run(small_config(layer_stats=layer_stats), data_cache=cache)
        result = train_run(prepared, progress=False)
        return prepared.model.network, result

    plain_network, plain = trained(False)
    measured_network, measured = trained(True)
    assert plain.layer_stats is None
    assert measured.layer_stats["epoch_numbers"] == [0, 1, 2]
    assert plain_network.params.keys() == measured_network.params.keys()
    for name, weights in plain_network.params.items():
        np.testing.assert_array_equal(weights, measured_network.params[name], err_msg=name)
    for name, buffer in plain_network.buffers.items():
        np.testing.assert_array_equal(buffer, measured_network.buffers[name], err_msg=name)
    for column in ("train_loss", "val_loss", "train_loss_running"):
        assert plain.history[column] == measured.history[column], column
    np.testing.assert_array_equal(plain.test_probabilities, measured.test_probabilities)


def test_without_a_validation_set_the_sample_is_1000_training_examples(cache):
    config = small_config(layer_stats=True, epochs=1)
    config.data.protocol = "none"
    result = train_run(prepare_run(config, data_cache=cache), progress=False)
    assert result.layer_stats["sample_size"] == 1000


def test_a_run_stopped_inside_an_epoch_measures_its_final_weights(cache):
    config = small_config(layer_stats=True, epochs=3, max_steps=40)  # 1800 / 64: 29 steps/epoch
    result = train_run(prepare_run(config, data_cache=cache), progress=False)
    assert len(result.history) == 2
    assert result.layer_stats["epoch_numbers"] == [0, 1, 2]


def test_a_resumed_run_continues_the_stored_entries(cache, tmp_path):
    out = tmp_path / "run"
    train_run(
        prepare_run(small_config(layer_stats=True, epochs=1), data_cache=cache),
        out,
        progress=False,
    )
    first = json.loads((out / LAYER_STATS_FILE).read_text())
    prepared = prepare_run(small_config(layer_stats=True, epochs=3), data_cache=cache)
    result = train_run(prepared, out, resume=True, progress=False)
    stored = json.loads((out / LAYER_STATS_FILE).read_text())
    assert stored["epoch_numbers"] == [0, 1, 2, 3]
    assert stored["epochs"][:2] == first["epochs"]
    assert result.layer_stats == stored


def test_layer_stats_may_be_turned_on_when_resuming(cache, tmp_path):
    out = tmp_path / "run"
    train_run(prepare_run(small_config(epochs=1), data_cache=cache), out, progress=False)
    assert not (out / LAYER_STATS_FILE).exists()
    prepared = prepare_run(small_config(layer_stats=True, epochs=2), data_cache=cache)
    result = train_run(prepared, out, resume=True, progress=False)
    assert result.layer_stats["epoch_numbers"] == [2]  # the epochs before were not measured


def test_the_figure_shows_the_gradient_falling_on_a_log_scale(sigmoid_run):
    stats = json.loads((sigmoid_run / LAYER_STATS_FILE).read_text())
    figure = layer_stats_figure(stats, title="sigmoid stack")
    activations, gradients, weights, weight_gradients = figure.axes[:4]
    assert gradients.get_yscale() == "log" and weight_gradients.get_yscale() == "log"
    labels = [tick.get_text() for tick in gradients.get_xticklabels()]
    assert labels == SIGMOID_NODES
    assert [tick.get_text() for tick in weights.get_xticklabels()] == [
        f"dense{i}" for i in range(1, 7)
    ]
    last_line = [line for line in gradients.get_lines() if "last" in line.get_label()][0]
    drawn = np.asarray(last_line.get_ydata(), dtype=float)
    recorded = [stats["epochs"][-1][name]["gradient_std"] for name in SIGMOID_NODES]
    np.testing.assert_allclose(drawn, recorded)
    notes = [text.get_text() for text in gradients.texts]
    assert any("dense1" in note and "dense6" in note for note in notes), notes


def test_a_level_gradient_is_drawn_on_at_least_three_decades():
    nodes = ["dense1", "relu1", "dense2"]
    entry = {name: {"gradient_std": 1e-3 * (1 + 0.3 * i)} for i, name in enumerate(nodes)}
    figure = layer_stats_figure({"nodes": nodes, "epochs": [entry]})
    low, high = figure.axes[1].get_ylim()
    assert np.log10(high / low) >= 3 - 1e-9


def test_missing_and_non_finite_values_leave_gaps_not_errors():
    nodes = ["dense1", "relu1", "dense2"]
    entry = {
        "dense1": {"gradient_std": None, "weight_rms": 0.1, "weight_gradient_rms": 0.0},
        "relu1": {"gradient_std": 0.0},
        "dense2": {"gradient_std": 1e-3, "weight_rms": 0.2, "weight_gradient_rms": 1e-2},
    }
    figure = layer_stats_figure({"nodes": nodes, "epochs": [entry]})
    drawn = np.asarray(figure.axes[1].get_lines()[0].get_ydata(), dtype=float)
    assert np.isnan(drawn[:2]).all() and drawn[2] == 1e-3


def test_a_corrupt_layer_stats_file_is_a_one_line_data_error(tmp_path):
    (tmp_path / LAYER_STATS_FILE).write_text('{"nodes": ["dense1"]')
    with pytest.raises(DataError, match="layer_stats.json"):
        read_run(tmp_path)
    (tmp_path / LAYER_STATS_FILE).write_text('{"nodes": ["dense1"]}')
    with pytest.raises(DataError, match="no per-epoch statistics"):
        read_run(tmp_path)
