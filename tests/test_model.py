"""The Model API: build, fit, predict, evaluate, save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlplab.data import load_dataset
from mlplab.engine.optimizers import make_optimizer
from mlplab.training.loop import History
from mlplab.training.model import Model

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def data():
    """Fixture MNIST as float features: (x_train, y_train, x_test, y_test)."""
    dataset = load_dataset(MNIST_SMALL)
    x_train = dataset.train_images.reshape(len(dataset.train_labels), -1).astype(np.float32) / 255
    x_test = dataset.test_images.reshape(len(dataset.test_labels), -1).astype(np.float32) / 255
    return x_train, dataset.train_labels, x_test, dataset.test_labels


@pytest.fixture(scope="module")
def trained(data):
    x_train, y_train, _, _ = data
    model = Model.build("32:relu", 784, CLASSES, seed=0)
    history = model.fit(
        x_train,
        y_train,
        optimizer=make_optimizer("adam", 3e-3),
        epochs=2,
        batch_size=64,
        threads=1,
        progress=False,
    )
    return model, history


def test_fit_returns_a_history_with_one_row_per_epoch(trained):
    _, history = trained
    assert isinstance(history, History)
    assert len(history) == 2 and history["epoch"] == [1, 2]
    assert history.best_epoch == 2 and history.stopped_early is False


def test_fit_learns_the_fixture_well_above_chance(trained, data):
    model, _ = trained
    _, _, x_test, y_test = data
    assert model.evaluate(x_test, y_test)["accuracy"] > 0.7


def test_predict_proba_rows_are_probabilities_that_sum_to_one(trained, data):
    model, _ = trained
    probabilities = model.predict_proba(data[2])
    assert probabilities.shape == (500, 10)
    assert np.all(probabilities >= 0) and np.all(probabilities <= 1)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-5)


def test_predict_is_the_argmax_of_predict_proba(trained, data):
    model, _ = trained
    x_test = data[2]
    np.testing.assert_array_equal(model.predict(x_test), model.predict_proba(x_test).argmax(axis=1))


def test_evaluate_accuracy_agrees_with_predict(trained, data):
    model, _ = trained
    _, _, x_test, y_test = data
    result = model.evaluate(x_test, y_test)
    predicted = model.predict(x_test)
    assert result["accuracy"] == np.mean(predicted == y_test)
    assert result["correct"] == int(np.sum(predicted == y_test)) and result["total"] == 500
    assert result["wilson_low"] <= result["accuracy"] <= result["wilson_high"]
    assert result["first_half"]["total"] == 250 and result["last_half"]["total"] == 250
    assert result["first_half"]["correct"] + result["last_half"]["correct"] == result["correct"]
    assert np.isfinite(result["loss"]) and result["loss"] > 0


def test_save_then_load_gives_identical_probabilities_and_class_names(trained, data, tmp_path):
    model, _ = trained
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = Model.load(path)
    assert loaded.class_names == CLASSES
    np.testing.assert_array_equal(loaded.predict_proba(data[2]), model.predict_proba(data[2]))
    for name, array in model.network.params.items():
        assert np.array_equal(loaded.network.params[name], array), name


def test_saved_model_loads_without_pickle(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        assert all(archive[name].dtype != object for name in archive.files)
        assert str(archive["__format__"]) == "mlplab-model/1"


def test_mse_model_round_trips_its_loss_and_output_activation(data, tmp_path):
    x_train, y_train, x_test, _ = data
    model = Model.build("16:tanh", 784, CLASSES, loss="mse", output_activation="softmax", seed=1)
    model.fit(
        x_train[:200],
        y_train[:200],
        optimizer=make_optimizer("sgd", 0.5),
        epochs=1,
        batch_size=50,
        threads=1,
        progress=False,
    )
    path = tmp_path / "mse.npz"
    model.save(path)
    loaded = Model.load(path)
    assert loaded.loss.name == "mse" and loaded.loss.output_activation == "softmax"
    np.testing.assert_array_equal(
        loaded.predict_proba(x_test[:20]), model.predict_proba(x_test[:20])
    )


def network_params(model: Model) -> np.ndarray:
    params = model.network.params
    return np.concatenate([params[name].ravel() for name in sorted(params)])


def dropout_outputs(model: Model, x: np.ndarray) -> np.ndarray:
    return model.network.forward(x, training=True).copy()


def test_dropout_seed_changes_the_dropout_masks_and_not_the_initial_weights(data):
    x = data[0][:8]
    arch = "32:relu:dropout(0.5)"
    first = Model.build(arch, 784, CLASSES, seed=3, dropout_seed=0)
    same = Model.build(arch, 784, CLASSES, seed=3, dropout_seed=0)
    other = Model.build(arch, 784, CLASSES, seed=3, dropout_seed=1)
    np.testing.assert_array_equal(network_params(first), network_params(other))
    np.testing.assert_array_equal(dropout_outputs(first, x), dropout_outputs(same, x))
    assert not np.array_equal(dropout_outputs(first, x), dropout_outputs(other, x))
