"""Weight initializers, all drawn from a seeded ``numpy.random.Generator``.

Weights have shape ``(fan_out, fan_in)``. The scale keeps the variance of activations (Glorot,
LeCun) or of ReLU activations (He) roughly constant from layer to layer:

=============== ================================ =======================================
name            distribution                     variance
=============== ================================ =======================================
glorot-uniform  U(-a, a), a = sqrt(6/(in+out))   2 / (fan_in + fan_out)
glorot-normal   N(0, s^2)                        2 / (fan_in + fan_out)
he-uniform      U(-a, a), a = sqrt(6/in)         2 / fan_in
he-normal       N(0, s^2)                        2 / fan_in
lecun-uniform   U(-a, a), a = sqrt(3/in)         1 / fan_in
lecun-normal    N(0, s^2)                        1 / fan_in
zeros           all weights 0                    0
=============== ================================ =======================================

``zeros`` is right only without hidden layers (softmax regression, as the course report trains
it): in a hidden layer every unit would get the same gradient and stay identical to the others.
"""

from __future__ import annotations

import numpy as np

from mlplab.errors import ConfigError


def _uniform(variance):
    def init(shape, rng, dtype):
        limit = np.sqrt(3.0 * variance(*shape))  # Var(U(-a, a)) = a^2 / 3
        return rng.uniform(-limit, limit, size=shape).astype(dtype)

    return init


def _normal(variance):
    def init(shape, rng, dtype):
        return (rng.standard_normal(size=shape) * np.sqrt(variance(*shape))).astype(dtype)

    return init


def _glorot(fan_out, fan_in):
    return 2.0 / (fan_in + fan_out)


def _he(fan_out, fan_in):
    return 2.0 / fan_in


def _lecun(fan_out, fan_in):
    return 1.0 / fan_in


def _zeros(shape, rng, dtype):
    return np.zeros(shape, dtype=dtype)


INITIALIZERS = {
    "glorot-uniform": _uniform(_glorot),
    "glorot-normal": _normal(_glorot),
    "he-uniform": _uniform(_he),
    "he-normal": _normal(_he),
    "lecun-uniform": _uniform(_lecun),
    "lecun-normal": _normal(_lecun),
    "zeros": _zeros,
}


def get(name: str):
    """The initializer called ``name``: a function ``(shape, rng, dtype) -> array``."""
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown initializer {name!r}; choose one of: {', '.join(INITIALIZERS)}"
        ) from None
