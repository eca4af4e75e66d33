"""mlplab.training.loop.fit: reproducibility, history, schedules, stopping and the divergence guard."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from mlplab.data import load_dataset
from mlplab.engine.optimizers import make_optimizer
from mlplab.errors import ConfigError, DivergenceError
from mlplab.saving import read_archive
from mlplab.training import loop
from mlplab.training.checkpoints import CHECKPOINT_FORMAT
from mlplab.training.loop import (
    HISTORY_COLUMNS,
    EarlyStopping,
    History,
    evaluate_loss,
    fit,
    read_history_csv,
)
from mlplab.training.model import Model
from mlplab.training.schedules import BatchSizeRamp, Step, make_schedule

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def data():
    """600 training and 200 validation images of the fixture, as float features."""
    dataset = load_dataset(MNIST_SMALL)
    x = dataset.train_images.reshape(len(dataset.train_labels), -1).astype(np.float32) / 255
    y = dataset.train_labels
    return x[:600], y[:600], x[1800:], y[1800:]


def build(architecture="32:relu", seed=0):
    return Model.build(architecture, 784, CLASSES, seed=seed).network


def train(network, data, **options):
    x, y, x_val, y_val = data
    options = {
        "optimizer": make_optimizer("adam", 1e-3),
        "epochs": 2,
        "batch_size": 50,
        "validation_data": (x_val, y_val),
        "threads": 1,
        "progress": False,
        **options,
    }
    return fit(network, Model.build("", 784, CLASSES).loss, x, y, **options)


def weights(network):
    return {name: array.copy() for name, array in network.params.items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


class Snapshots:
    """A callback that keeps a copy of the weights after every epoch."""

    def __init__(self, network):
        self.network, self.by_epoch = network, {}

    def on_epoch_end(self, epoch, record):
        self.by_epoch[epoch] = weights(self.network)


# ------------------------------------------------------------------ reproducibility
def test_same_seed_and_threads_give_bit_identical_weights(data):
    first, second = build("32:relu:dropout(0.2)"), build("32:relu:dropout(0.2)")
    train(first, data, order_seed=7)
    train(second, data, order_seed=7)
    assert same_weights(weights(first), weights(second))


def test_a_different_shuffle_seed_gives_different_weights(data):
    first, second = build(), build()
    train(first, data, order_seed=1)
    train(second, data, order_seed=2)
    assert not same_weights(weights(first), weights(second))


def test_training_changes_the_weights_and_lowers_the_training_loss(data):
    network = build()
    before = weights(network)
    history = train(network, data, epochs=3)
    assert not same_weights(before, weights(network))
    assert history["train_loss"][-1] < history["train_loss"][0]


# ------------------------------------------------------------------ history
def test_history_has_one_complete_row_per_epoch(data):
    history = train(build(), data, epochs=3)
    assert len(history) == 3 and history["epoch"] == [1, 2, 3]
    assert set(history.columns) == set(HISTORY_COLUMNS)
    for column in HISTORY_COLUMNS:
        values = history[column]
        assert len(values) == 3 and all(v is not None and math.isfinite(v) for v in values), column
    assert all(0 <= v <= 1 for v in history["train_accuracy"] + history["val_accuracy"])
    assert all(s >= 0 for s in history["seconds"])
    assert history["batch_size"] == [50, 50, 50]
    assert history["learning_rate"] == [1e-3] * 3


def test_history_keeps_the_columns_other_code_reads_by_name():
    for column in ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert column in HISTORY_COLUMNS
    for column in ("learning_rate", "batch_size", "seconds", "train_loss_running", "steps"):
        assert column in HISTORY_COLUMNS


def test_train_loss_is_measured_in_inference_mode_after_the_epoch(data):
    x, y, _, _ = data
    network = build("64:relu:dropout(0.5)")
    snapshots = Snapshots(network)
    history = train(network, data, epochs=2, callbacks=[snapshots])
    loss = Model.build("", 784, CLASSES).loss
    for epoch in (1, 2):
        for name, array in snapshots.by_epoch[epoch].items():
            network.params[name][...] = array
        measured = evaluate_loss(network, loss, x, y)  # 600 examples: all are measured
        assert history["train_loss"][epoch - 1] == pytest.approx(measured[0], rel=1e-6)
        assert history["train_accuracy"][epoch - 1] == measured[1]
    # With dropout 0.5, the batches as trained do worse than the network they end with.
    assert history["train_loss_running"][1] > history["train_loss"][1]
    assert history["train_accuracy_running"][1] < history["train_accuracy"][1]
    assert history["steps"] == [12, 12]


def test_train_loss_of_a_large_set_is_measured_on_a_fixed_sample_chosen_by_the_order_seed(data):
    x, y, _, _ = data
    first, again = loop._train_measure_subset(x, y, 5), loop._train_measure_subset(x, y, 5)
    assert first[0] is x  # 600 examples: all of them, not a copy
    small = np.arange(600, dtype=np.float32)[:, None], y  # each example's feature is its index
    original = loop.TRAIN_MEASURE_EXAMPLES
    try:
        loop.TRAIN_MEASURE_EXAMPLES = 100
        sample = loop._train_measure_subset(*small, 5)
        same = loop._train_measure_subset(*small, 5)
        other = loop._train_measure_subset(*small, 6)
    finally:
        loop.TRAIN_MEASURE_EXAMPLES = original
    assert len(sample[1]) == 100 and len(np.unique(sample[0], axis=0)) == 100
    assert np.array_equal(sample[0], same[0]) and np.array_equal(sample[1], same[1])
    assert not np.array_equal(sample[0], other[0])
    assert np.array_equal(first[1], again[1])


@pytest.mark.parametrize("batch_size", [27, 63, 81, 189])
def test_batchnorm_trains_when_one_example_would_be_left_for_a_last_batch(data, batch_size):
    # 55,000 training images at these sizes leave one example over; so do 2 * size + 1.
    x, y, x_val, y_val = data
    n = 2 * batch_size + 1
    optimizer = make_optimizer("adam", 1e-3)
    network = build("16:batchnorm:relu")
    history = train(
        network, (x[:n], y[:n], x_val, y_val), epochs=2, batch_size=batch_size, optimizer=optimizer
    )
    assert history["steps"] == [2, 2] and int(optimizer.state["step"]) == 4
    assert history["batch_size"] == [batch_size, batch_size]


def test_history_without_validation_leaves_the_validation_columns_empty(data):
    history = train(build(), data, validation_data=None)
    assert history["val_loss"] == [None, None] and history["val_accuracy"] == [None, None]


def test_history_csv_and_json_read_back_the_same_numbers(data, tmp_path):
    history = train(build(), data)
    history.save(tmp_path)
    stored = read_history_csv(tmp_path / "history.csv")
    for column in HISTORY_COLUMNS:
        assert stored[column] == pytest.approx(history[column], rel=1e-12), column
    assert (tmp_path / "history.json").read_text().startswith("{")


def test_a_history_written_before_the_new_columns_reads_back_with_them_empty(tmp_path):
    old_columns = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    old = {"columns": {key: [1, 2] if key == "epoch" else [0.1, 0.2] for key in old_columns}}
    history = History.from_dict(old)
    assert len(history) == 2 and history["steps"] == [None, None]
    (tmp_path / "history.csv").write_text("epoch,train_loss\n1,0.5\n")
    assert read_history_csv(tmp_path / "history.csv")["train_loss_running"] == [None]


def test_batch_size_ramp_doubles_each_epoch_up_to_its_final_size(data):
    ramp = BatchSizeRamp(start=20, growth=2, final=128)
    history = train(build(), data, epochs=4, batch_size=ramp)
    assert history["batch_size"] == [20, 40, 80, 128]


def test_batch_size_ramp_sets_the_number_of_optimizer_steps(data):
    optimizer = make_optimizer("sgd", 0.05)
    train(
        build(),
        data,
        epochs=3,
        optimizer=optimizer,
        batch_size=BatchSizeRamp(start=100, growth=2, final=300),
    )
    # 600 examples: 6 batches of 100, 3 of 200, 2 of 300.
    assert int(optimizer.state["step"]) == 6 + 3 + 2


def test_cosine_schedule_rates_are_recorded_and_decrease(data):
    schedule = make_schedule("cosine", 0.01, 3)
    history = train(build(), data, epochs=3, schedule=schedule)
    rates = history["learning_rate"]
    assert rates[0] > rates[1] > rates[2] >= 0
    assert rates[0] <= 0.01
    # The recorded rate is the one of the epoch's last batch (12 batches of 50).
    assert rates == pytest.approx([schedule(epoch + 11 / 12) for epoch in range(3)], rel=1e-12)


# ------------------------------------------------------------------ stopping
def test_max_steps_stops_training_after_that_many_updates(data, tmp_path):
    optimizer = make_optimizer("adam", 1e-3)
    checkpoint = tmp_path / "checkpoint.npz"
    history = train(
        build(), data, epochs=5, optimizer=optimizer, max_steps=5, checkpoint_path=checkpoint
    )
    assert int(optimizer.state["step"]) == 5
    # The partial epoch is reported with the steps it got; the checkpoint keeps it unfinished.
    assert len(history) == 1 and history["steps"] == [5] and history.best_epoch == 1
    state = read_archive(checkpoint, CHECKPOINT_FORMAT).metadata["state"]
    assert (state["epoch"], state["batch_index"], state["step"]) == (0, 5, 5)
    assert state["history"]["columns"]["epoch"] == []


@pytest.mark.parametrize("max_steps", [0, -1, 2.5, True])
def test_max_steps_must_be_a_positive_integer(data, max_steps):
    with pytest.raises(ConfigError, match="max_steps"):
        train(build(), data, max_steps=max_steps)


def test_a_callback_returning_true_stops_training(data):
    seen = []

    class StopAtTwo:
        def on_epoch_end(self, epoch, record):
            seen.append((epoch, record["epoch"]))
            return epoch == 2

    history = train(build(), data, epochs=5, callbacks=[StopAtTwo()])
    assert len(history) == 2 and seen == [(1, 1), (2, 2)]
    assert history.stopped_early is False  # stopped by a callback, not by early stopping


def test_early_stopping_stops_and_restores_the_best_epoch(data):
    x, y, _, _ = data
    # Validation labels that are all wrong: the better the network learns, the higher the
    # validation loss, so epoch 1 is the best and patience 1 stops after epoch 2.
    wrong = (x, (y + 1) % 10)
    network = build()
    snapshots = Snapshots(network)
    history = train(
        network,
        data,
        epochs=6,
        optimizer=make_optimizer("adam", 1e-2),
        validation_data=wrong,
        early_stopping=EarlyStopping(patience=1),
        callbacks=[snapshots],
    )
    assert history["val_loss"][1] > history["val_loss"][0]
    assert history.stopped_early is True
    assert len(history) == 2 and history.best_epoch == 1
    assert same_weights(weights(network), snapshots.by_epoch[1])
    assert not same_weights(weights(network), snapshots.by_epoch[2])
    loss = Model.build("", 784, CLASSES).loss
    assert evaluate_loss(network, loss, *wrong)[0] == pytest.approx(
        min(history["val_loss"]), rel=1e-6
    )


def test_early_stopping_restores_the_best_weights_even_without_stopping(data):
    x, y, _, _ = data
    wrong = (x, (y + 1) % 10)
    network = build()
    snapshots = Snapshots(network)
    history = train(
        network,
        data,
        epochs=3,
        optimizer=make_optimizer("adam", 1e-2),
        validation_data=wrong,
        early_stopping=EarlyStopping(patience=5),
        callbacks=[snapshots],
    )
    assert len(history) == 3 and history.stopped_early is False
    best = int(np.argmin(history["val_loss"])) + 1
    assert history.best_epoch == best
    assert same_weights(weights(network), snapshots.by_epoch[best])


def test_early_stopping_without_validation_data_is_a_config_error(data):
    with pytest.raises(ConfigError, match="validation"):
        train(build(), data, validation_data=None, early_stopping=EarlyStopping(patience=1))


@pytest.mark.parametrize(
    "options", [{"monitor": "train_loss"}, {"patience": 0}, {"min_delta": -1.0}]
)
def test_early_stopping_refuses_impossible_settings(options):
    with pytest.raises(ConfigError):
        EarlyStopping(**options)


@pytest.mark.parametrize("epochs", [0, -1, 2.5])
def test_fit_refuses_a_non_positive_or_fractional_epoch_count(data, epochs):
    with pytest.raises(ConfigError, match="epochs"):
        train(build(), data, epochs=epochs)


# ------------------------------------------------------------------ divergence
def test_huge_learning_rate_raises_divergence_error_naming_epoch_step_and_rate(data):
    with pytest.raises(DivergenceError) as caught, warnings.catch_warnings():
        warnings.simplefilter("error")  # and no RuntimeWarning on the way
        train(build(), data, optimizer=make_optimizer("sgd", 1e20))
    message = str(caught.value)
    assert "epoch 1" in message and "step " in message
    assert "learning rate" in message and "1e+20" in message
    assert "\n" not in message
    assert caught.value.exit_code == 3


def test_divergence_after_a_good_epoch_keeps_that_epochs_checkpoint(data, tmp_path):
    checkpoint = tmp_path / "checkpoint.npz"
    network = build()
    snapshots = Snapshots(network)
    with pytest.raises(DivergenceError) as caught, np.errstate(all="ignore"):
        train(
            network,
            data,
            epochs=3,
            optimizer=make_optimizer("sgd", 0.1),
            schedule=lambda epoch: 0.1 if epoch < 1 else 1e20,
            checkpoint_path=checkpoint,
            callbacks=[snapshots],
        )
    message = str(caught.value)
    assert "epoch 2" in message and "learning rate" in message and str(checkpoint) in message
    archive = read_archive(checkpoint, CHECKPOINT_FORMAT)
    assert archive.metadata["state"]["epoch"] == 1 and archive.metadata["finished"] is False
    stored = archive.group("param")
    assert same_weights(stored, snapshots.by_epoch[1])
    assert all(np.isfinite(array).all() for array in stored.values())
    with np.load(checkpoint, allow_pickle=False) as raw:
        assert "__format__" in raw.files


@pytest.mark.parametrize(
    "schedule",
    [
        lambda epoch: math.inf if epoch >= 1 else 1e-3,
        lambda epoch: math.nan,
        Step(1e-3, every_epochs=0.01, gamma=1e30),  # overflows to inf within the first epoch
    ],
)
def test_a_schedule_giving_a_non_finite_rate_stops_with_a_one_line_config_error(data, schedule):
    with pytest.raises(ConfigError) as caught, warnings.catch_warnings():
        warnings.simplefilter("error")
        train(build(), data, epochs=2, schedule=schedule)
    message = str(caught.value)
    assert "learning-rate schedule gave" in message and "\n" not in message
