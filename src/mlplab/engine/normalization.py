"""Layer normalization and batch normalization, with their exact analytic backward passes.

Both normalize ``x`` to ``x_hat = (x - mean) / sqrt(var + eps)`` and then scale and shift,
``y = gamma * x_hat + beta``. LayerNorm takes mean and variance over the features of each row;
BatchNorm over the rows of the batch, per feature. Because the mean and variance depend on every
element they are taken over, the gradient of each input depends on all the others in its group.
With ``g = dL/dx_hat = grad_out * gamma`` and ``n`` elements per group the exact result is

    dL/dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps)

(means over the same group). Dropping the last two terms, a common shortcut, is wrong.
"""

from __future__ import annotations

import numpy as np

from mlplab.engine.layers import Layer
from mlplab.errors import ConfigError


def _normalize_backward(grad_out, gamma, x_hat, inv_std, axis):
    g = grad_out * gamma  # dL/dx_hat = grad_out * gamma
    mean_g = g.mean(axis=axis, keepdims=True)
    mean_g_x_hat = (g * x_hat).mean(axis=axis, keepdims=True)
    return (g - mean_g - x_hat * mean_g_x_hat) * inv_std  # the formula in the module docstring


class _Normalization(Layer):
    def __init__(self, eps: float = 1e-5):
        super().__init__()
        if eps <= 0:
            raise ConfigError(f"normalization eps must be positive, got {eps!r}")
        self.eps = float(eps)

    def count_params(self, input_sizes):
        (size,) = input_sizes
        return 2 * size  # gamma and beta

    def build(self, input_sizes, rng, dtype):
        (size,) = input_sizes
        self.params["gamma"] = np.ones(size, dtype=dtype)
        self.params["beta"] = np.zeros(size, dtype=dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        return size

    def _scale_and_shift(self, grad_out):
        np.sum(grad_out * self.x_hat, axis=0, out=self.grads["gamma"])  # dL/dgamma = sum g x_hat
        np.sum(grad_out, axis=0, out=self.grads["beta"])  # dL/dbeta = sum g

    def config(self):
        return {"eps": self.eps}


class LayerNorm(_Normalization):
    """Normalize each example over its features (Ba, Kiros and Hinton, 2016)."""

    type_name = "layernorm"

    def forward(self, x, training=False):
        mean = x.mean(axis=1, keepdims=True)
        centred = x - mean
        var = np.mean(centred * centred, axis=1, keepdims=True)
        self.inv_std = 1.0 / np.sqrt(var + self.eps)
        self.x_hat = centred * self.inv_std
        return self.x_hat * self.params["gamma"] + self.params["beta"]

    def backward(self, grad_out):
        self._scale_and_shift(grad_out)
        return _normalize_backward(grad_out, self.params["gamma"], self.x_hat, self.inv_std, axis=1)


class BatchNorm(_Normalization):
    """Normalize each feature over the batch (Ioffe and Szegedy, 2015).

    Training uses the batch's statistics and updates running averages,
    ``running = momentum * running + (1 - momentum) * batch``; inference uses the running ones.
    The running variance is the unbiased batch variance, as in PyTorch.
    """

    type_name = "batchnorm"

    def __init__(self, momentum: float = 0.9, eps: float = 1e-5):
        super().__init__(eps)
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"batchnorm momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)

    def build(self, input_sizes, rng, dtype):
        size = super().build(input_sizes, rng, dtype)
        self.buffers["running_mean"] = np.zeros(size, dtype=dtype)
        self.buffers["running_var"] = np.ones(size, dtype=dtype)
        return size

    def forward(self, x, training=False):
        if training:
            if x.shape[0] < 2:
                raise ConfigError("batchnorm needs batches of at least 2 examples while training")
            mean = x.mean(axis=0)
            centred = x - mean
            var = np.mean(centred * centred, axis=0)
            n = x.shape[0]
            m = self.momentum
            self.buffers["running_mean"] *= m
            self.buffers["running_mean"] += (1.0 - m) * mean
            self.buffers["running_var"] *= m
            self.buffers["running_var"] += (1.0 - m) * var * (n / (n - 1))
        else:
            centred = x - self.buffers["running_mean"]
            var = self.buffers["running_var"]
        self.training = training
        self.inv_std = 1.0 / np.sqrt(var + self.eps)
        self.x_hat = centred * self.inv_std
        return self.x_hat * self.params["gamma"] + self.params["beta"]

    def backward(self, grad_out):
        self._scale_and_shift(grad_out)
        if not self.training:  # fixed statistics: a per-feature affine map
            return grad_out * (self.params["gamma"] * self.inv_std)  # dy/dx = gamma / std
        return _normalize_backward(grad_out, self.params["gamma"], self.x_hat, self.inv_std, axis=0)

    def config(self):
        return {"momentum": self.momentum, "eps": self.eps}
