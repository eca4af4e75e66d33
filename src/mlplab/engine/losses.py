"""Losses, computed from the network's logits so that they are stable by construction.

The network's last layer outputs logits ``z`` (no activation). A loss knows the output
activation that turns logits into predictions and differentiates through it:

* :class:`SoftmaxCrossEntropy`: ``L = mean_i (logsumexp(z_i) - z_i[y_i])``, with the row-wise
  maximum inside the log-sum-exp. It is exact for any logits (no ``log(p + eps)``, no clipping:
  the reported loss is the true loss), and its gradient is the fused ``(softmax(z) - onehot) / N``.
  With label smoothing ``eps`` the target is ``q = (1 - eps) onehot + eps / K`` in place of the
  one-hot vector: ``L = mean_i (logsumexp(z_i) - sum_k q_ik z_ik)``, gradient ``(softmax(z) - q) / N``.
* :class:`MeanSquaredError`: ``L = mean_i 1/2 ||a(z_i) - onehot_i||^2`` with ``a`` the output
  activation (sigmoid as in Nielsen's book, softmax, or linear).

Labels are integer class indices of shape ``(N,)``.
"""

from __future__ import annotations

import math

import numpy as np

from mlplab.engine.activations import sigmoid, softmax
from mlplab.errors import ConfigError


class SoftmaxCrossEntropy:
    """Cross-entropy of the softmax of the logits, fused with the softmax, with optional label
    smoothing.

    Parameters
    ----------
    label_smoothing : float
        ``eps`` in ``[0, 1)``. The target of a row with label ``y`` becomes
        ``q = (1 - eps) onehot(y) + eps / K`` over the ``K`` classes (Szegedy et al., 2016), so
        the network is not pushed to make its logits ever larger. ``0`` is the plain
        cross-entropy, computed exactly as without the option.

    Notes
    -----
    With ``q`` the target, ``L = mean_i (logsumexp(z_i) - sum_k q_ik z_ik)``: ``sum_k q_ik = 1``,
    so the row's maximum cancels as in the plain loss and no ``log(p + eps)`` appears. The
    gradient is ``(softmax(z) - q) / N``. The reported losses (training, validation, and the test
    loss a training run evaluates) are this smoothed objective, ``H(q, p) = H(q) + KL(q || p)``:
    its minimum is the entropy of ``q``, not 0, so they are comparable only between runs with
    the same ``eps``; accuracies are unaffected. A saved model records the loss by name only, so
    ``mlplab eval`` of it reports the plain cross-entropy.
    """

    name = "cross-entropy"
    output_activation = "softmax"

    def __init__(self, label_smoothing: float = 0.0):
        if (
            isinstance(label_smoothing, bool)
            or not isinstance(label_smoothing, int | float)
            or not 0.0 <= label_smoothing < 1.0
        ):
            raise ConfigError(
                f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}; "
                "0.1 is usual, 0 turns it off"
            )
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        n, n_classes = logits.shape
        rows = np.arange(n)
        # The row-wise max (every row safe), read at the argmax: the same value as max(axis=1)
        # in half its time, which matters when the loss is a tenth of a small network's step.
        shifted = logits - logits[rows, logits.argmax(axis=1)][:, None]
        label_term = shifted[rows, labels]
        exp_shifted = np.exp(shifted)
        sum_exp = np.add.reduce(exp_shifted, axis=1)
        # -log softmax(z)[y] = log(sum_j exp(z_j - m)) - (z_y - m); the max term cancels.
        loss = np.log(sum_exp) - label_term
        eps = self.label_smoothing
        if eps:
            # -sum_k q_k log softmax(z)_k = log(sum_j exp(z_j - m)) - sum_k q_k (z_k - m), with
            # sum_k q_k (z_k - m) = (1 - eps)(z_y - m) + eps/K sum_k (z_k - m): add back eps of
            # the label's term and take eps/K of every class's.
            loss += eps * label_term - (eps / n_classes) * np.add.reduce(shifted, axis=1)
        exp_shifted /= sum_exp[:, None]
        self.probabilities, self.labels = exp_shifted, labels
        return float(np.add.reduce(loss, dtype=np.float64)) / n if n else math.nan  # mean, f64

    def backward(self) -> np.ndarray:
        n, n_classes = self.probabilities.shape
        eps = self.label_smoothing
        grad = self.probabilities  # reused: dL/dz = (softmax(z) - q) / N
        grad[np.arange(n), self.labels] -= 1.0 - eps  # q = (1 - eps) onehot(y) + eps / K
        if eps:
            grad -= eps / n_classes
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
# The options each loss takes. Cross-entropy's output activation is always the fused softmax.
LOSS_OPTIONS = {"cross-entropy": ("label_smoothing",), "mse": ("output_activation",)}


def make_loss(name: str, **options):
    """The loss called ``name`` (``cross-entropy`` or ``mse``) with its options.

    ``cross-entropy`` takes ``label_smoothing``; ``mse`` takes ``output_activation``.

    Raises
    ------
    ConfigError
        For an unknown name, an option the loss does not take, or a bad value.
    """
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
    unknown = [option for option in options if option not in LOSS_OPTIONS[name]]
    if unknown:
        raise ConfigError(
            f"loss {name} takes only {', '.join(LOSS_OPTIONS[name])}, not {', '.join(unknown)}; "
            "label_smoothing is for cross-entropy (whose output is always the fused softmax), "
            "output_activation for mse"
        )
    return cls(**options)
