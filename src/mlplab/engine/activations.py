"""Activation layers: element-wise functions and the softmax.

Each forward writes into its input when the graph allows it (``self.inplace``: the input has no
other reader), which saves an allocation and a pass over memory per layer and batch. Each
backward states its derivative beside the line that computes it. Derivatives are written in
terms of the cached output ``y`` where that is possible, so no second copy of ``x`` is kept.
"""

from __future__ import annotations

import numpy as np

from mlplab.engine.layers import Layer
from mlplab.errors import ConfigError


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for any logits: each row's own maximum is subtracted first.

    (A batch-wide maximum is a known trap: a row far below the batch maximum underflows to all
    zeros and then to 0/0.)
    """
    e = z - z.max(axis=1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=1, keepdims=True)
    return e


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``1 / (1 + exp(-z))`` as ``(1 + tanh(z / 2)) / 2``: the same function, with no overflow
    of ``exp`` for large negative ``z``."""
    out = np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out


class Activation(Layer):
    """An element-wise function; ``caches_output`` because backward reads ``y``."""

    caches_output = True

    def _target(self, x):
        """Where to write the output: over the input when allowed, else the layer's own array."""
        return x if self.inplace else self.work_array("out", x.shape, x.dtype)

    def _grad_target(self, grad_out):
        return self.work_array("grad_in", grad_out.shape, grad_out.dtype)

    def _mask_target(self):
        """A boolean array of the output's shape, kept from batch to batch (for ``y > 0``)."""
        return self.work_array("mask", self.y.shape, bool)


class Linear(Activation):
    """The identity, ``y = x``: "no activation" in an architecture string."""

    type_name = "linear"
    caches_output = False
    may_return_input = True

    def forward(self, x, training=False):
        return x

    def backward(self, grad_out):
        return grad_out  # dy/dx = 1


class Sigmoid(Activation):
    type_name = "sigmoid"

    def forward(self, x, training=False):
        self.y = sigmoid(x, out=self._target(x))
        return self.y

    def backward(self, grad_out):
        y = self.y
        one_minus_y = np.subtract(1.0, y, out=self.work_array("1-y", y.shape, y.dtype))
        grad_in = np.multiply(grad_out, y, out=self._grad_target(grad_out))
        grad_in *= one_minus_y  # dy/dx = y (1 - y)
        return grad_in


class Tanh(Activation):
    type_name = "tanh"

    def forward(self, x, training=False):
        self.y = np.tanh(x, out=self._target(x))
        return self.y

    def backward(self, grad_out):
        grad_in = np.multiply(self.y, self.y, out=self._grad_target(grad_out))
        np.subtract(1.0, grad_in, out=grad_in)
        grad_in *= grad_out  # dy/dx = 1 - y^2
        return grad_in


class ReLU(Activation):
    type_name = "relu"

    def forward(self, x, training=False):
        self.y = np.maximum(x, 0.0, out=self._target(x))
        return self.y

    def backward(self, grad_out):
        positive = np.greater(self.y, 0.0, out=self._mask_target())
        return np.multiply(grad_out, positive, out=self._grad_target(grad_out))  # dy/dx = [x > 0]


class LeakyReLU(Activation):
    """``y = x`` for ``x > 0``, ``slope * x`` otherwise."""

    type_name = "leaky-relu"

    def __init__(self, slope: float = 0.01):
        super().__init__()
        if not 0.0 <= slope < 1.0:
            raise ConfigError(f"leaky-relu slope must be in [0, 1), got {slope!r}")
        self.slope = float(slope)

    def forward(self, x, training=False):
        # For 0 <= slope < 1, max(x, slope x) is x where x > 0 and slope x elsewhere.
        self.y = np.maximum(x, self.slope * x, out=self._target(x))
        return self.y

    def backward(self, grad_out):
        derivative = np.where(self.y > 0.0, 1.0, self.slope).astype(grad_out.dtype)
        return grad_out * derivative  # dy/dx = 1 if x > 0 else slope

    def config(self):
        return {"slope": self.slope}


class ShiftedReLU(Activation):
    """``y = max(floor, x)``, by default ``max(-1, x)``.

    A ReLU whose floor is below zero keeps negative signal flowing; a user found that it keeps
    weight magnitudes steady from layer to layer, so deep stacks train without normalization.
    """

    type_name = "shifted-relu"

    def __init__(self, floor: float = -1.0):
        super().__init__()
        self.floor = float(floor)

    def forward(self, x, training=False):
        self.y = np.maximum(x, self.floor, out=self._target(x))
        return self.y

    def backward(self, grad_out):
        above = np.greater(self.y, self.floor, out=self._mask_target())
        return np.multiply(grad_out, above, out=self._grad_target(grad_out))  # dy/dx = [x > floor]

    def config(self):
        return {"floor": self.floor}


class ELU(Activation):
    """``y = x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise."""

    type_name = "elu"

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        if alpha <= 0.0:
            raise ConfigError(f"elu alpha must be positive, got {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, x, training=False):
        negative_part = np.expm1(np.minimum(x, 0.0))  # exp of positives would overflow
        negative_part *= self.alpha
        self.y = np.where(x > 0.0, x, negative_part)
        return self.y

    def backward(self, grad_out):
        y = self.y
        derivative = np.where(y > 0.0, 1.0, y + self.alpha).astype(grad_out.dtype)
        return grad_out * derivative  # dy/dx = 1 if x > 0 else alpha exp(x) = y + alpha

    def config(self):
        return {"alpha": self.alpha}


class Softmax(Activation):
    """Row-wise softmax as a layer, with its full Jacobian in backward.

    For training with cross-entropy, leave the softmax out of the graph: the loss
    :class:`~mlplab.engine.losses.SoftmaxCrossEntropy` fuses it, which is both exact and faster.
    """

    type_name = "softmax"

    def forward(self, x, training=False):
        self.y = softmax(x)
        return self.y

    def backward(self, grad_out):
        y = self.y
        # dL/dx_j = sum_i dL/dy_i y_i (delta_ij - y_j) = y_j (g_j - sum_i g_i y_i)
        return y * (grad_out - np.sum(grad_out * y, axis=1, keepdims=True))


ACTIVATIONS = ["linear", "sigmoid", "tanh", "relu", "leaky-relu", "shifted-relu", "elu", "softmax"]
