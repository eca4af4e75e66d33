"""Gradient checking: analytic gradients against central differences, in float64.

For each parameter tensor, and for the input, the numerical derivative of an entry is
``(L(p + h) - L(p - h)) / 2h``. Each tensor is judged on its own scale: with ``a`` the analytic
and ``n`` the numerical entries of one tensor, its error is

    max_i |a_i - n_i| / (scale + noise / TOLERANCE),    scale = max(max_i |a_i|, max_i |n_i|)

which is below ``TOLERANCE`` (1e-6) exactly when ``max |a - n| < TOLERANCE * scale + noise``:
the disagreement must be a millionth of the tensor's *own* largest gradient, plus what the
central differences cannot resolve. ``noise`` is that resolution, estimated per tensor:

* rounding: the loss is only known to about ``eps * |L|`` (``eps`` = 2.2e-16), so a difference
  quotient with step ``h`` carries ``~eps |L| / h`` of noise (4 ulps of the larger of ``|L|`` and
  1 are allowed: 1e-9 for ``h = 1e-6`` and a loss near 1);
* truncation, for tensors measured with the large step below: the disagreement between the
  estimates at steps ``H`` and ``H / 2``.

Why not one absolute floor for every tensor (``max(scale, 1e-3)``, as this checker once had):
the first layers of a deep sigmoid stack have gradients of 1e-11, and against a floor of 1e-3
even a gradient that is entirely zero passes. Why not a purely element-wise relative error:
entries whose own gradient is near zero would drown in rounding noise.

A tensor whose gradient is too small for step ``h`` to resolve (``scale < noise / TOLERANCE``)
is measured again with the steps ``H = 1e-2`` and ``H / 2``, which move the loss far more than
its rounding, and Richardson extrapolation ``(4 n(H/2) - n(H)) / 3`` cancels the ``H^2`` error
term. A vanishing gradient of 1e-11 is then known to about 1e-13, so a zeroed one fails by
orders of magnitude. A tensor whose true gradient is exactly zero (the bias of a Dense layer
followed by BatchNorm) passes when both its analytic and numerical values stay within the
noise. The report gives every tensor's error and the step it was measured with.

Stochastic layers are made deterministic by restoring every layer's random generator before
each evaluation, so dropout uses one fixed mask throughout a check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlplab.engine.architecture import build_network
from mlplab.engine.graph import Network
from mlplab.engine.losses import MeanSquaredError, SoftmaxCrossEntropy
from mlplab.engine.regularizers import Regularization
from mlplab.errors import ConfigError

TOLERANCE = 1e-6
ROUNDING_ULPS = 4.0  # how many ulps of the loss its computed value may be off by
LARGE_STEP = 1e-2  # the step for tensors whose gradients are too small for the default step


@dataclass
class GradientCheck:
    name: str
    errors: dict[str, float]  # tensor name -> scale-aware error ("input" for dL/dx)
    checked: dict[str, int]  # tensor name -> number of entries compared
    steps: dict[str, float] = field(default_factory=dict)  # tensor name -> step h used

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
            step = f", step {self.steps[name]:.0e}" if name in self.steps else ""
            lines.append(
                f"  {name.ljust(width)}  {error:.2e}  ({self.checked[name]} entries{step}){flag}"
            )
        return "\n".join(lines)


def relative_error(analytic: np.ndarray, numeric: np.ndarray, noise: float = 0.0) -> float:
    """``max |a - n| / (scale + noise / TOLERANCE)``: the tensor's error on its own scale.

    ``scale`` is the largest gradient of the tensor, analytic or numeric; ``noise`` the
    absolute error the numerical estimate may carry. Below ``TOLERANCE`` exactly when
    ``max |a - n| < TOLERANCE * scale + noise``. A tensor that is zero on both sides has error 0.
    """
    difference = float(np.abs(analytic - numeric).max()) if analytic.size else 0.0
    if difference == 0.0:
        return 0.0
    scale = max(float(np.abs(analytic).max()), float(np.abs(numeric).max()))
    return difference / (scale + noise / TOLERANCE)


def rounding_noise(loss_value: float, step: float) -> float:
    """How far a central difference with ``step`` can be off from rounding of the loss alone."""
    return ROUNDING_ULPS * np.finfo(np.float64).eps * max(abs(loss_value), 1.0) / step


def central_differences(function, flat: np.ndarray, indices, h: float) -> np.ndarray:
    """``(f(w + h e_i) - f(w - h e_i)) / 2h`` for each entry ``i`` of ``flat`` in ``indices``.

    ``flat`` is a flat view of the array ``function()`` reads, changed in place one entry at a
    time and restored after each.
    """
    numeric = np.empty(len(indices))
    for k, i in enumerate(indices):
        original = flat[i]
        flat[i] = original + h
        loss_plus = function()
        flat[i] = original - h
        loss_minus = function()
        flat[i] = original
        numeric[k] = (loss_plus - loss_minus) / (2 * h)
    return numeric


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

    loss_value = total_loss()
    input_grad = network.backward(loss.backward(), input_grad=True)
    analytic = {name: grad.copy() for name, grad in network.grads.items()}
    regularization.add_penalty_gradients(params, analytic)
    analytic["input"] = input_grad
    params = {**params, "input": x}

    sampler = np.random.default_rng(seed)
    errors, checked, steps = {}, {}, {}
    for tensor_name, tensor in params.items():
        flat = tensor.reshape(-1)  # a view: changing it changes the tensor
        if flat.size > max_entries:
            indices = sampler.choice(flat.size, size=max_entries, replace=False)
        else:
            indices = np.arange(flat.size)
        expected = analytic[tensor_name].reshape(-1)[indices]
        numeric = central_differences(total_loss, flat, indices, step)
        noise, used_step = rounding_noise(loss_value, step), step
        scale = max(float(np.abs(expected).max()), float(np.abs(numeric).max()))
        if scale < noise / TOLERANCE:  # too small for this step: measure with a larger one
            coarse = central_differences(total_loss, flat, indices, LARGE_STEP)
            fine = central_differences(total_loss, flat, indices, LARGE_STEP / 2)
            numeric = (4.0 * fine - coarse) / 3.0  # Richardson: the h^2 error terms cancel
            # (4 fine - coarse) / 3 carries at most 1.5x the rounding noise of the finer step;
            # the two estimates' disagreement bounds what truncation (or a kink) adds.
            disagreement = float(np.abs(fine - coarse).max())
            noise = 2.0 * rounding_noise(loss_value, LARGE_STEP / 2) + disagreement
            used_step = LARGE_STEP
        errors[tensor_name] = relative_error(expected, numeric, noise)
        checked[tensor_name] = len(indices)
        steps[tensor_name] = used_step
    return GradientCheck(name, errors, checked, steps)


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
