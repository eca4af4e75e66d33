"""Regularization: L1 and L2 penalties, the max-norm constraint, gradient clipping, adversarial
training, and the Gaussian noise layer.

Penalties apply to weights (parameters named ``*.weight``), never to biases or normalization
scales. The training step runs them in this order::

    backward -> add_penalty_gradients -> clip_gradients -> optimizer.update -> apply_max_norm

:class:`GaussianNoise` is a layer (the ``noise(0.3)`` step of an architecture string): like
dropout (:class:`~mlplab.engine.layers.Dropout`) it regularizes by perturbing activations while
training, and like dropout it is the identity at inference.

:class:`AdversarialTraining` changes what the step differentiates: the loss on the batch and on
the batch pushed a small step in the direction that increases the loss most (see its docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mlplab.engine.layers import Layer
from mlplab.errors import ConfigError


def is_weight(name: str) -> bool:
    return name.endswith(".weight")


@dataclass(frozen=True)
class Regularization:
    """Settings; all zero or None means "no regularization".

    Attributes
    ----------
    l1 : float
        Adds ``l1 * sum|W|`` to the loss, so ``l1 * sign(W)`` to the gradient.
    l2 : float
        Adds ``l2 / 2 * sum W^2`` to the loss, so ``l2 * W`` to the gradient (coupled weight
        decay; for decoupled decay use the ``adamw`` optimizer).
    max_norm : float or None
        After each step, rescale every unit's incoming weight vector (a row of the weight
        matrix) whose Euclidean norm exceeds ``max_norm`` back to that norm (Srebro and
        Shraibman; used with dropout by Srivastava et al., 2014).
    clip_norm : float or None
        Before each step, scale all gradients together so that their global norm is at most
        ``clip_norm``.
    """

    l1: float = 0.0
    l2: float = 0.0
    max_norm: float | None = None
    clip_norm: float | None = None

    def __post_init__(self):
        for name in ("l1", "l2"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)!r}")
        for name in ("max_norm", "clip_norm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")

    def penalty(self, params: dict[str, np.ndarray]) -> float:
        """The loss term the penalties add (reported separately from the data loss)."""
        total = 0.0
        for name, weight in params.items():
            if is_weight(name):
                if self.l1:
                    total += self.l1 * float(np.abs(weight).sum(dtype=np.float64))
                if self.l2:
                    total += 0.5 * self.l2 * float(np.square(weight, dtype=np.float64).sum())
        return total

    def add_penalty_gradients(self, params, grads) -> None:
        if not (self.l1 or self.l2):
            return
        for name, weight in params.items():
            if is_weight(name):
                # Added in place: ``grads`` may be a read-only mapping of the network's arrays.
                gradient = grads[name]
                if self.l2:
                    gradient += self.l2 * weight  # d(l2/2 W^2)/dW = l2 W
                if self.l1:
                    gradient += self.l1 * np.sign(weight)  # d(l1 |W|)/dW = l1 sign(W)

    def clip_gradients(self, grads) -> float:
        """Scale gradients to a global norm of at most ``clip_norm``; returns the norm before."""
        if self.clip_norm is None:
            return float("nan")
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
        if norm > self.clip_norm:
            scale = self.clip_norm / norm
            for g in grads.values():
                g *= scale
        return norm

    def apply_max_norm(self, params) -> None:
        if self.max_norm is None:
            return
        for name, weight in params.items():
            if is_weight(name):
                norms = np.sqrt(np.einsum("ij,ij->i", weight, weight))
                too_long = norms > self.max_norm
                if too_long.any():
                    weight[too_long] *= (self.max_norm / norms[too_long])[:, None]


@dataclass(frozen=True)
class AdversarialTraining:
    """Train on each batch and on its fast-gradient-sign perturbation (Goodfellow et al., 2015).

    The step minimizes ``(1 - weight) J(x) + weight J(x + epsilon sign(dJ/dx))``: ``dJ/dx``
    comes from the backward pass of the clean batch, which the step needs anyway, and the
    perturbed batch costs one more forward and backward pass, so a step takes about 1.65 times
    as long (measured on 784-1200-1200-10). The perturbation is treated as a constant
    (``sign`` is flat almost everywhere), so the parameter gradient is
    ``(1 - weight) dJ/dθ at x + weight dJ/dθ at x_adv``; dropout and noise layers draw new
    masks for the second pass. Nothing looks at the image as an image, so the method is
    permutation-invariant: shuffling the pixels the same way in every example changes nothing.

    Attributes
    ----------
    epsilon : float
        Size of the perturbation in the units of the network's input features (pixels in
        [0, 1] by default, so 0.1 moves each pixel by a tenth of its range).
    weight : float
        Share of the perturbed batch's loss in the objective, in (0, 1]; the paper's 0.5
        weighs both equally.
    """

    epsilon: float
    weight: float = 0.5

    def __post_init__(self):
        if not (isinstance(self.epsilon, int | float) and 0 < self.epsilon < math.inf):
            raise ConfigError(
                f"adversarial epsilon must be a positive finite number, got {self.epsilon!r}"
                " (0 in a config turns adversarial training off)"
            )
        if not (isinstance(self.weight, int | float) and 0 < self.weight <= 1):
            raise ConfigError(
                f"adversarial_weight must be in (0, 1], got {self.weight!r}; 0.5 weighs the "
                "clean and the perturbed batch equally"
            )

    def perturb(self, x: np.ndarray, grad_x: np.ndarray) -> np.ndarray:
        """``x + epsilon sign(dJ/dx)``: of all changes of at most epsilon per feature, the one
        that raises the loss most, to first order."""
        return x + x.dtype.type(self.epsilon) * np.sign(grad_x)


class GaussianNoise(Layer):
    """Additive Gaussian noise: ``y = x + std * n`` with ``n ~ N(0, 1)`` while training, ``y = x``
    at inference.

    Applied to the input (``noise(0.3),1000:relu``) it is a cheap form of data augmentation;
    after a hidden layer it perturbs that layer's activations. Unlike dropout nothing is
    rescaled: the noise has mean zero, so the expected output is already the input. The noise
    comes from the layer's own generator, which the graph derives from the dropout seed and
    the node's name, so runs are reproducible and a resumed run draws what an uninterrupted one
    would have (the generator's state is saved in checkpoints with the dropout generators').
    """

    type_name = "noise"
    may_return_input = True  # the identity at inference, and with std = 0
    draws_random_numbers = True

    def __init__(self, std: float = 0.1):
        super().__init__()
        if isinstance(std, bool) or not isinstance(std, int | float) or not 0.0 <= std < math.inf:
            raise ConfigError(
                f"noise std must be a finite number >= 0, got {std!r}; e.g. noise(0.3)"
            )
        self.std = float(std)
        self.rng = np.random.default_rng(0)

    def build(self, input_sizes, rng, dtype):
        self.rng = rng  # the graph made this generator for this layer alone
        return super().build(input_sizes, rng, dtype)

    def forward(self, x, training=False):
        if not training or self.std == 0.0:
            return x
        noise = self.work_array("noise", x.shape, x.dtype)
        self.rng.standard_normal(dtype=x.dtype, out=noise)  # float32 draws for a float32 net
        noise *= x.dtype.type(self.std)
        if self.inplace:
            x += noise
            return x
        return np.add(x, noise, out=noise)  # the scratch array becomes the output

    def backward(self, grad_out):
        return grad_out  # dy/dx = 1: the noise does not depend on x

    def config(self):
        return {"std": self.std}
