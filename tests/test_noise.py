"""The Gaussian noise layer: N(0, std^2) added while training only, identity gradient, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import Crash, CrashAt, resume_data

from mlplab.engine.architecture import build_network, network_from_spec, parse_architecture
from mlplab.engine.gradcheck import check_architecture
from mlplab.engine.optimizers import make_optimizer
from mlplab.engine.regularizers import GaussianNoise
from mlplab.errors import ConfigError
from mlplab.saving import read_archive
from mlplab.training.checkpoints import CHECKPOINT_FORMAT
from mlplab.training.loop import HISTORY_COLUMNS
from mlplab.training.model import Model

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
CLASSES = [str(i) for i in range(10)]
ARCHITECTURE = "noise(0.3),48:relu:noise(0.5),24:tanh"  # noise: the generators' states matter


def built(std, size=100, seed=0):
    layer = GaussianNoise(std)
    layer.build([size], np.random.default_rng(seed), np.float32)
    return layer


def test_noise_is_the_identity_at_inference_returning_the_input_itself():
    x = np.random.default_rng(0).standard_normal((8, 100)).astype(np.float32)
    layer = built(0.5)
    assert layer.forward(x, training=False) is x
    assert layer.forward(x) is x  # inference is the default


def test_noise_of_std_zero_is_the_identity_while_training_too():
    x = np.ones((4, 100), np.float32)
    assert built(0.0).forward(x, training=True) is x


@pytest.mark.parametrize("std", [0.1, 0.3, 2.0])
def test_added_noise_has_mean_zero_and_the_given_std_while_training(std):
    x = np.full((2000, 100), 5.0, np.float32)
    out = built(std).forward(x, training=True)
    added = out.astype(np.float64) - 5.0
    # 200,000 draws: the sample mean is within 4 standard errors (std / 447) of 0, the sample
    # standard deviation within 1% of std.
    assert abs(added.mean()) < 4 * std / np.sqrt(added.size)
    assert added.std() == pytest.approx(std, rel=0.01)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(x, 5.0)  # the input was not changed in place


def test_noise_differs_from_batch_to_batch_and_between_entries():
    layer = built(0.3)
    x = np.zeros((16, 100), np.float32)
    first = layer.forward(x, training=True).copy()
    second = layer.forward(x, training=True)
    assert not np.array_equal(first, second)
    assert len(np.unique(first)) == first.size


def test_noise_gradient_is_the_identity_and_leaves_grad_out_alone():
    layer = built(0.3)
    layer.forward(np.zeros((4, 100), np.float32), training=True)
    grad_out = np.random.default_rng(1).standard_normal((4, 100)).astype(np.float32)
    before = grad_out.copy()
    np.testing.assert_array_equal(layer.backward(grad_out), before)
    np.testing.assert_array_equal(grad_out, before)


def test_network_with_noise_on_the_input_and_a_hidden_layer_passes_the_gradient_checker():
    result = check_architecture("noise(0.3),16:tanh:noise(0.5),16:relu", 12, 5)
    assert result.passed, result.report()
    assert "input" in result.errors


def test_noise_inside_a_network_changes_training_outputs_and_not_inference_ones():
    network = build_network("noise(0.3),16:tanh:noise(0.5)", 12, 5, dtype=np.float64)
    plain = build_network("16:tanh", 12, 5, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((8, 12))
    # Noise layers take their generators from the dropout seed, so the Dense layers' initial
    # weights are those of the same network without noise.
    for name, array in plain.params.items():
        np.testing.assert_array_equal(network.params[name], array)
    inference = network.forward(x, training=False).copy()
    np.testing.assert_array_equal(inference, plain.forward(x, training=False))
    assert not np.allclose(network.forward(x, training=True), inference)


def test_same_dropout_seed_gives_the_same_noise_and_another_gives_other_noise():
    x = np.zeros((8, 12), np.float32)

    def training_output(dropout_seed):
        network = build_network("noise(0.3),16:tanh", 12, 5, seed=0, dropout_seed=dropout_seed)
        return network.forward(x, training=True).copy()

    np.testing.assert_array_equal(training_output(1), training_output(1))
    assert not np.array_equal(training_output(1), training_output(2))


def test_noise_step_parses_with_its_std_and_defaults_to_0_1():
    assert parse_architecture("noise(0.3),100:relu:noise(0.5)") == [
        ("noise", {"std": 0.3}),
        ("dense", {"units": 100}),
        ("relu", {}),
        ("noise", {"std": 0.5}),
    ]
    assert parse_architecture("noise,10:relu")[0] == ("noise", {})
    assert GaussianNoise().std == 0.1


@pytest.mark.parametrize("text", ["noise(-0.1),10:relu", "noise(1e999),10:relu"])
def test_negative_or_infinite_noise_std_is_refused(text):
    with pytest.raises(ConfigError, match="noise std must be a finite number >= 0"):
        build_network(text, 12, 5)


@pytest.mark.parametrize("bad", [True, "0.3", float("nan")])
def test_noise_std_of_the_wrong_type_is_refused(bad):
    with pytest.raises(ConfigError, match="noise std"):
        GaussianNoise(bad)


def test_noise_in_a_graph_spec_and_through_the_saved_architecture():
    spec = {
        "nodes": [
            {"name": "jitter", "type": "noise", "std": 0.25, "inputs": ["input"]},
            {"name": "hidden", "type": "dense", "units": 8},
            {"name": "relu", "type": "relu"},
            {"name": "logits", "type": "dense", "units": 5},
        ]
    }
    network = network_from_spec(spec, 12, 5)
    assert isinstance(network.nodes["jitter"].layer, GaussianNoise)
    assert network.nodes["jitter"].layer.std == 0.25
    rebuilt = network_from_spec(network.architecture(), 12, 5)
    assert rebuilt.nodes["jitter"].layer.std == 0.25
    assert "jitter" in network.rng_states()


def test_model_with_noise_saves_and_loads_with_its_std(tmp_path):
    model = Model.build("noise(0.2),16:relu", 12, list("abcde"))
    model.save(tmp_path / "model.npz")
    loaded = Model.load(tmp_path / "model.npz")
    assert loaded.network.nodes["noise1"].layer.std == 0.2
    x = np.random.default_rng(3).standard_normal((4, 12)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


# ------------------------------------------------------------------ resuming (as test_resume.py)
@pytest.fixture(scope="module")
def data():
    return resume_data()


def train(data, checkpoint, resume=False, callbacks=(), max_steps=None):
    x, y, x_val, y_val = data
    model = Model.build(ARCHITECTURE, 784, CLASSES, seed=3)
    history = model.fit(
        x,
        y,
        optimizer=make_optimizer("adam", 2e-3),
        epochs=3,
        batch_size=40,
        validation_data=(x_val, y_val),
        order_seed=11,
        threads=1,
        checkpoint_path=checkpoint,
        resume=resume,
        progress=False,
        callbacks=callbacks,
        max_steps=max_steps,
    )
    return model, history


def assert_same_run(a, b):
    (model_a, history_a), (model_b, history_b) = a, b
    assert model_a.network.params.keys() == model_b.network.params.keys()
    for name, array in model_a.network.params.items():
        assert np.array_equal(array, model_b.network.params[name]), f"{name} differs"
    for column in HISTORY_COLUMNS:
        if column != "seconds":
            assert history_a[column] == history_b[column], column


def test_resume_after_a_crash_with_noise_is_bit_identical_to_an_uninterrupted_run(data, tmp_path):
    reference = train(data, tmp_path / "reference.npz")
    checkpoint = tmp_path / "interrupted.npz"
    with pytest.raises(Crash):
        train(data, checkpoint, callbacks=[CrashAt(2)])
    assert_same_run(train(data, checkpoint, resume=True), reference)


def test_resume_inside_an_epoch_with_noise_is_bit_identical(data, tmp_path):
    """Stopped after 20 steps, inside the second epoch of 15 steps: the generators' states
    must carry over mid-epoch."""
    reference = train(data, None)
    checkpoint = tmp_path / "stopped.npz"
    train(data, checkpoint, max_steps=20)
    assert_same_run(train(data, checkpoint, resume=True), reference)


def test_the_checkpoint_records_each_noise_generator_after_its_draws(data, tmp_path):
    """What makes the resumes above exact: the generators' states, not fresh generators."""
    checkpoint = tmp_path / "interrupted.npz"
    with pytest.raises(Crash):
        train(data, checkpoint, callbacks=[CrashAt(2)])
    saved = read_archive(checkpoint, CHECKPOINT_FORMAT).metadata["rng_states"]
    fresh = Model.build(ARCHITECTURE, 784, CLASSES, seed=3).network.rng_states()
    assert set(saved) == set(fresh) == {"noise1", "noise2"}
    for name in saved:  # one epoch of draws moved each generator on from its initial state
        assert saved[name] != json.loads(json.dumps(fresh[name])), name
