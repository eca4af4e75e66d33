"""Gradient checking: analytic gradients against central differences, in float64.

For each parameter tensor, and for the input, the numerical derivative of an entry is
``(L(p + h) - L(p - h)) / 2h``. The error reported per tensor is

    max_i |analytic_i - numeric_i| / max(max_i |analytic_i|, max_i |numeric_i|, 1e-3)

the largest disagreement relative to the tensor's largest gradient. Why not a purely
element-wise relative error: central differences carry rounding noise of about 1e-10 in float64,
which swamps entries whose gradient is itself near zero. The floor of 1e-3 does the same for
tensors whose true gradient is zero everywhere (the bias of a Dense layer followed by BatchNorm).
Any wrong formula still shows up many orders of magnitude above the 1e-6 tolerance.

Stochastic layers are made deterministic by restoring every layer's random generator before
each evaluation, so dropout uses one fixed mask throughout a check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlplab.engine.architecture import build_network
from mlplab.engine.graph import Network
from mlplab.engine.losses import MeanSquaredError, SoftmaxCrossEntropy
from mlplab.engine.regularizers import Regularization
from mlplab.errors import ConfigError

TOLERANCE = 1e-6


@dataclass
class GradientCheck:
    name: str
    errors: dict[str, float]  # tensor name -> max relative error ("input" for dL/dx)
    checked: dict[str, int]  # tensor name -> number of entries compared

    @property
    def max_error(self) -> float:
        return max(self.errors.values())

    @property
    def passed(self) -> bool:
        return self.max_error < TOLERANCE

    def report(self) -> str:
        width = max(len(name) for name in self.errors)
        lines = [
            f"{self.name}: {'PASS' if self.passed else 'FAIL'} "
            f"(max relative error {self.max_error:.2e}, tolerance {TOLERANCE:.0e})"
        ]
        for name, error in self.errors.items():
            flag = "" if error < TOLERANCE else "   <-- wrong gradient"
            lines.append(
                f"  {name.ljust(width)}  {error:.2e}  ({self.checked[name]} entries){flag}"
            )
        return "\n".join(lines)


SCALE_FLOOR = 1e-3


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    scale = max(np.abs(analytic).max(), np.abs(numeric).max(), SCALE_FLOOR)
    return float(np.abs(analytic - numeric).max() / scale)


def check_gradients(
    network: Network,
    loss,
    x: np.ndarray,
    labels: np.ndarray,
    regularization: Regularization | None = None,
    name: str = "network",
    max_entries: int = 200,
    step: float = 1e-6,
    seed: int = 0,
) -> GradientCheck:
    """Compare ``network``'s backward pass with central differences of ``loss``.

    Tensors with more than ``max_entries`` entries are checked on a random sample of entries.
    The network must be float64; ``x`` is cast to it.
    """
    if network.dtype != np.float64:
        raise ConfigError("gradient checks need a float64 network: build it with dtype=np.float64")
    regularization = regularization or Regularization()
    x = np.array(x, dtype=np.float64)
    params = network.params
    rng_states = network.rng_states()

    def total_loss() -> float:
        network.set_rng_states(rng_states)  # the same dropout mask every time
        value = loss.forward(network.forward(x, training=True), labels)
        return value + regularization.penalty(params)

    total_loss()
    input_grad = network.backward(loss.backward(), input_grad=True)
    analytic = {name: grad.copy() for name, grad in network.grads.items()}
    regularization.add_penalty_gradients(params, analytic)
    analytic["input"] = input_grad
    params = {**params, "input": x}

    sampler = np.random.default_rng(seed)
    errors, checked = {}, {}
    for tensor_name, tensor in params.items():
        flat = tensor.reshape(-1)  # a view: changing it changes the tensor
        if flat.size > max_entries:
            indices = sampler.choice(flat.size, size=max_entries, replace=False)
        else:
            indices = np.arange(flat.size)
        numeric = np.empty(len(indices))
        for k, i in enumerate(indices):
            original = flat[i]
            flat[i] = original + step
            loss_plus = total_loss()
            flat[i] = original - step
            loss_minus = total_loss()
            flat[i] = original
            numeric[k] = (loss_plus - loss_minus) / (2 * step)
        errors[tensor_name] = relative_error(analytic[tensor_name].reshape(-1)[indices], numeric)
        checked[tensor_name] = len(indices)
    return GradientCheck(name, errors, checked)


def check_architecture(
    architecture: str | dict,
    input_size: int = 784,
    n_classes: int = 10,
    batch_size: int = 8,
    loss=None,
    regularization=None,
    seed: int = 0,
    max_entries: int = 200,
    name: str | None = None,
) -> GradientCheck:
    """Build ``architecture`` in float64 with random data and check its gradients."""
    network = build_network(architecture, input_size, n_classes, dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch_size, input_size))
    labels = rng.integers(0, n_classes, size=batch_size)
    return check_gradients(
        network,
        loss or SoftmaxCrossEntropy(),
        x,
        labels,
        regularization,
        name=name or str(architecture),
        max_entries=max_entries,
        seed=seed,
    )


SKIP_AND_CONCAT = {
    "nodes": [
        {"name": "hidden", "type": "dense", "units": 16, "inputs": ["input"]},
        {"name": "relu", "type": "relu", "inputs": ["hidden"]},
        {"name": "tanh", "type": "tanh", "inputs": ["hidden"]},
        {"name": "branches", "type": "concat", "inputs": ["relu", "tanh"]},
        {"name": "project", "type": "dense", "units": 16, "inputs": ["branches"]},
        {"name": "skip", "type": "add", "inputs": ["project", "hidden"]},
        {"name": "norm", "type": "layernorm", "inputs": ["skip"]},
        {"name": "logits", "type": "dense", "units": 5, "inputs": ["norm"]},
    ]
}

# One entry per layer type, loss and regularizer; `mlplab gradcheck` with no argument runs all.
SUITE = [
    ("dense + sigmoid", "16:sigmoid", {}),
    (
        "every element-wise activation",
        "16:tanh,16:relu,16:leaky-relu(0.1),16:shifted-relu(-1),16:elu,16:linear",
        {},
    ),
    ("softmax as a hidden layer", "16:softmax", {}),
    ("dropout (fixed mask)", "dropout(0.3),16:relu:dropout(0.5)", {}),
    ("layer normalization", "16:layernorm:tanh,16:layernorm:relu", {}),
    ("batch normalization", "16:batchnorm:sigmoid,16:batchnorm:relu", {}),
    ("skip connection + concat of relu and tanh branches", SKIP_AND_CONCAT, {}),
    ("mse loss, sigmoid output", "16:sigmoid", {"loss": MeanSquaredError("sigmoid")}),
    ("mse loss, softmax output", "16:tanh", {"loss": MeanSquaredError("softmax")}),
    ("mse loss, linear output", "16:relu", {"loss": MeanSquaredError("linear")}),
    ("l1 + l2 penalties", "16:sigmoid", {"regularization": Regularization(l1=1e-3, l2=1e-2)}),
]


def run_suite(input_size: int = 12, n_classes: int = 5, seed: int = 0) -> list[GradientCheck]:
    return [
        check_architecture(architecture, input_size, n_classes, seed=seed, name=name, **options)
        for name, architecture, options in SUITE
    ]
