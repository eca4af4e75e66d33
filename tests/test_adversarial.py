"""Adversarial training (Goodfellow et al. 2015): the step's gradient is that of its objective,
the perturbation is the fast gradient sign, and its settings are checked."""

from __future__ import annotations

import numpy as np
import pytest

from mlplab.engine.architecture import network_from_string
from mlplab.engine.gradcheck import central_differences
from mlplab.engine.losses import SoftmaxCrossEntropy
from mlplab.engine.optimizers import make_optimizer
from mlplab.engine.regularizers import AdversarialTraining
from mlplab.errors import ConfigError
from mlplab.experiments.records import trial_key
from mlplab.training.config import RunConfig
from mlplab.training.loop import fit
from mlplab.training.runs import training_options

ARCHITECTURE = "7:tanh,5:sigmoid"  # smooth: finite differences are exact to ~1e-9 in float64


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(12, 6))
    y = rng.integers(0, 3, size=12)
    network = network_from_string(ARCHITECTURE, 6, 3, dtype=np.float64, seed=seed)
    return network, SoftmaxCrossEntropy(label_smoothing=0.1), x, y


def _loss(network, loss, x, y) -> float:
    return loss.forward(network.forward(x, training=True), y)


def _input_gradient(network, loss, x, y) -> np.ndarray:
    loss.forward(network.forward(x, training=True), y)
    return network.backward(loss.backward(), input_grad=True)


@pytest.mark.parametrize("weight", [0.5, 0.3, 1.0])
def test_one_adversarial_step_follows_the_gradient_of_its_objective(weight):
    """One full-batch SGD step with lr 1 moves the weights by minus the gradient of
    (1 - w) J(x) + w J(x + eps sign(dJ/dx)), the sign taken at the starting weights (it is flat
    almost everywhere, so the perturbation is a constant for the derivative)."""
    network, loss, x, y = _problem()
    adversarial = AdversarialTraining(epsilon=0.2, weight=weight)
    x_adv = x + 0.2 * np.sign(_input_gradient(network, loss, x, y))
    start = {name: p.copy() for name, p in network.params.items()}

    def objective() -> float:
        return (1 - weight) * _loss(network, loss, x, y) + weight * _loss(network, loss, x_adv, y)

    expected = {}
    for name, param in network.params.items():
        numeric = central_differences(objective, param.reshape(-1), range(param.size), 1e-6)
        expected[name] = numeric.reshape(param.shape)
    fit(
        network,
        loss,
        x,
        y,
        optimizer=make_optimizer("sgd", 1.0),
        epochs=1,
        batch_size=len(y),
        threads=1,
        progress=False,
        adversarial=adversarial,
    )
    for name, param in network.params.items():
        step = start[name] - param
        scale = np.abs(expected[name]).max()
        assert np.abs(step - expected[name]).max() <= 1e-7 * scale, name


def test_the_perturbation_moves_every_feature_by_epsilon_and_raises_the_loss():
    network, loss, x, y = _problem(1)
    grad_x = _input_gradient(network, loss, x, y)
    perturbed = AdversarialTraining(epsilon=0.05).perturb(x, grad_x)
    assert np.allclose(np.abs(perturbed - x), 0.05) and perturbed.dtype == x.dtype
    # To first order the loss rises by eps * |dJ/dx|_1, more than any other step of that size.
    clean = _loss(network, loss, x, y)
    assert _loss(network, loss, perturbed, y) > clean
    random = x + 0.05 * np.sign(np.random.default_rng(2).normal(size=x.shape))
    assert _loss(network, loss, perturbed, y) > _loss(network, loss, random, y)


def test_the_perturbation_keeps_a_float32_batch_float32():
    x = np.ones((2, 3), dtype=np.float32)
    grad = np.array([[1, -2, 0], [0.5, 0, -1]], dtype=np.float32)
    perturbed = AdversarialTraining(epsilon=0.1).perturb(x, grad)
    assert perturbed.dtype == np.float32
    assert np.allclose(perturbed, [[1.1, 0.9, 1.0], [1.1, 1.0, 0.9]])


@pytest.mark.parametrize(
    "epsilon, weight, named",
    [
        (0.0, 0.5, "epsilon"),
        (-0.1, 0.5, "epsilon"),
        (float("inf"), 0.5, "epsilon"),
        (float("nan"), 0.5, "epsilon"),
        (0.1, 0.0, "adversarial_weight"),
        (0.1, 1.5, "adversarial_weight"),
    ],
)
def test_impossible_settings_are_refused_naming_them(epsilon, weight, named):
    with pytest.raises(ConfigError, match=named):
        AdversarialTraining(epsilon=epsilon, weight=weight)


def test_a_config_turns_it_on_with_a_positive_epsilon_and_leaves_it_off_at_zero():
    config = RunConfig.from_dict(
        {"regularization": {"adversarial": 0.1, "adversarial_weight": 0.3}}
    )
    assert training_options(config)["adversarial"] == AdversarialTraining(0.1, 0.3)
    assert training_options(RunConfig())["adversarial"] is None


def test_trials_stored_before_adversarial_training_existed_keep_their_keys():
    """A config without it hashes as before the setting existed (the key is a fixed value)."""
    config = RunConfig().to_dict()
    without = {table: dict(values) for table, values in config.items()}
    for key in ("adversarial", "adversarial_weight"):
        del without["regularization"][key]
    assert trial_key(config) == trial_key(without)
    config["regularization"]["adversarial"] = 0.1
    assert trial_key(config) != trial_key(without)
