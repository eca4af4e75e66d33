"""Losses, computed from the network's logits so that they are stable by construction.

The network's last layer outputs logits ``z`` (no activation). A loss knows the output
activation that turns logits into predictions and differentiates through it:

* :class:`SoftmaxCrossEntropy`: ``L = mean_i (logsumexp(z_i) - z_i[y_i])``, with the row-wise
  maximum inside the log-sum-exp. It is exact for any logits (no ``log(p + eps)``, no clipping:
  the reported loss is the true loss), and its gradient is the fused ``(softmax(z) - onehot) / N``.
* :class:`MeanSquaredError`: ``L = mean_i 1/2 ||a(z_i) - onehot_i||^2`` with ``a`` the output
  activation (sigmoid as in Nielsen's book, softmax, or linear).

Labels are integer class indices of shape ``(N,)``.
"""

from __future__ import annotations

import numpy as np

from mlplab.engine.activations import sigmoid, softmax
from mlplab.errors import ConfigError


class SoftmaxCrossEntropy:
    """Cross-entropy of the softmax of the logits, fused with the softmax."""

    name = "cross-entropy"
    output_activation = "softmax"

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        n = logits.shape[0]
        rows = np.arange(n)
        shifted = logits - logits.max(axis=1, keepdims=True)  # row-wise max: every row safe
        exp_shifted = np.exp(shifted)
        sum_exp = exp_shifted.sum(axis=1)
        # -log softmax(z)[y] = log(sum_j exp(z_j - m)) - (z_y - m); the max term cancels.
        loss = np.log(sum_exp) - shifted[rows, labels]
        exp_shifted /= sum_exp[:, None]
        self.probabilities, self.labels = exp_shifted, labels
        return float(loss.mean(dtype=np.float64))

    def backward(self) -> np.ndarray:
        n = self.probabilities.shape[0]
        grad = self.probabilities  # reused: dL/dz = (softmax(z) - onehot(y)) / N
        grad[np.arange(n), self.labels] -= 1.0
        grad *= 1.0 / n
        return grad

    def predict(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits)


class MeanSquaredError:
    """Quadratic cost on the output activation, ``1/2 ||a(z) - onehot||^2`` averaged over rows."""

    name = "mse"
    OUTPUT_ACTIVATIONS = ("sigmoid", "softmax", "linear")

    def __init__(self, output_activation: str = "sigmoid"):
        if output_activation not in self.OUTPUT_ACTIVATIONS:
            raise ConfigError(
                f"mse output activation {output_activation!r} is not one of "
                f"{', '.join(self.OUTPUT_ACTIVATIONS)}"
            )
        self.output_activation = output_activation

    def predict(self, logits: np.ndarray) -> np.ndarray:
        if self.output_activation == "sigmoid":
            return sigmoid(logits)
        if self.output_activation == "softmax":
            return softmax(logits)
        return logits.copy()

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        n = logits.shape[0]
        self.a = self.predict(logits)
        self.error = self.a.copy()
        self.error[np.arange(n), labels] -= 1.0  # a(z) - onehot(y)
        return float(0.5 * np.mean(np.sum(self.error * self.error, axis=1, dtype=np.float64)))

    def backward(self) -> np.ndarray:
        n = self.a.shape[0]
        g = self.error / n  # dL/da = (a - onehot) / N
        if self.output_activation == "sigmoid":
            return g * self.a * (1.0 - self.a)  # da/dz = a (1 - a)
        if self.output_activation == "softmax":  # da/dz = diag(a) - a a^T
            return self.a * (g - np.sum(g * self.a, axis=1, keepdims=True))
        return g  # linear: da/dz = 1


LOSSES = {"cross-entropy": SoftmaxCrossEntropy, "mse": MeanSquaredError}


def make_loss(name: str, **options):
    """The loss called ``name`` (``cross-entropy`` or ``mse``)."""
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
    if cls is SoftmaxCrossEntropy and options:
        raise ConfigError(
            f"cross-entropy takes no options (got {', '.join(options)}): its output "
            "activation is always the fused softmax; output_activation is for mse"
        )
    return cls(**options)
