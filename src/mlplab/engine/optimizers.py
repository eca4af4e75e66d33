"""Optimizers, sharing one small contract over named arrays.

An optimizer updates parameters in place from their gradients, both given as dicts of named
arrays (``"dense1.weight"`` ...). Its own state (velocities, moment estimates, the step count)
is also a dict of named arrays, ``state``, so a checkpoint can save it and a resumed run
continues bit-identically. The learning rate is an attribute the training loop sets before each
step from the schedule.

Ordered by increasing complexity: SGD, Momentum (classic, dampened, Nesterov), RMSprop, Adam,
AdamW. Each defines ``_update(param, grad, *slots, scratch)`` for one tensor; the base class
calls it. Every one of these updates is element-wise, so how the elements are grouped changes no
bit of the result, and the base class uses that twice:

* When the parameters are consecutive pieces of one flat array, and the gradients of another (as
  :class:`~mlplab.engine.graph.Network` packs them), it updates the flat arrays instead of each
  tensor: on a small network the per-call overhead is most of the update.
* It runs ``_update`` over chunks of :data:`UPDATE_CHUNK` elements rather than whole arrays.
  NumPy makes one pass over memory per operation, and Adam's step is ten of them: over whole
  arrays of a 784-1000-10 net (3 MB each) every pass streams its arrays from far caches or
  memory again, while a chunk's arrays stay close from the first pass to the last.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from mlplab.errors import ConfigError

# Elements per chunk of the update. Adam's update of 785,010 float32 parameters, right after a
# product as in training, alternated in one process on the 2-core machine (medians of 60): in one
# piece 2.8 ms (3.5 ms beside a second BLAS thread), in chunks of 2^14 3.3 (3.4), 2^15 2.8 (3.0),
# 2^16 2.4 (2.8), 2^17 2.4 (2.8), 2^18 2.3 (2.6). Smaller chunks lose to the per-call cost
# (ten NumPy calls a chunk); from 2^16 on a chunk's arrays (parameters, gradients, two moments,
# the scratch: 5 x 512 KiB at 2^17) stay in the caches between passes.
UPDATE_CHUNK = 1 << 17


class Optimizer:
    """Base class: ``update(params, grads)`` runs one step over every named tensor.

    ``learning_rate`` must stay positive and finite: setting it (the training loop does, from the
    schedule, before every step) checks it, so an infinite or NaN rate is a ConfigError rather
    than weights that silently become NaN.
    """

    name = ""
    state_names: tuple[str, ...] = ()  # per-tensor state arrays, e.g. ("velocity",)

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate
        self.state = {"step": np.zeros((), dtype=np.int64)}

    @property
    def state(self) -> dict[str, np.ndarray]:
        return self._state

    @state.setter
    def state(self, value: dict[str, np.ndarray]) -> None:
        """Load a state (a checkpoint's) by replacing the whole dict, as this does."""
        value = self._upgraded_state(value)
        if "step" in value:  # a writable 0-d array, which update() counts in place
            value = {**value, "step": np.array(value["step"], dtype=np.int64)}
        kinds = {key.split("/", 1)[0] for key in value if "/" in key}
        if not kinds <= set(self.state_names):
            raise ConfigError(
                f"the optimizer state holds {', '.join(sorted(kinds))} arrays, and {self.name} "
                f"keeps {', '.join(self.state_names) or 'none'}; it belongs to another optimizer"
            )
        self._state = value
        # Per tensor: its state arrays and a work array (kept between steps: allocating it anew
        # costs page faults; not saved), looked up once instead of at every step.
        self._tensor_slots: dict[str, tuple] = {}  # name -> (shape, dtype, slots)
        # For packed parameters (see _packed_arrays): the tensors seen, and the flat arrays.
        self._packing: tuple[tuple, tuple, tuple[np.ndarray, ...]] | None = None

    @property
    def learning_rate(self) -> float:
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._learning_rate = _positive("learning_rate", value)

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        step = self.state["step"]
        step[()] = int(step) + 1  # in place: += on a 0-d array is a ufunc call, ten times slower
        self._begin_step()
        packed = self._packed_arrays(params, grads)
        if packed is not None:
            groups = [packed]  # every tensor at once (a dozen calls cost a small net 10%)
        else:
            groups = [(p, grads[name], *self._slots(name, p)) for name, p in params.items()]
        for *arrays, scratch in groups:
            size = arrays[0].size
            if size <= scratch.size:
                self._update(*arrays, scratch[:size].reshape(arrays[0].shape))
            elif not all(a.flags.c_contiguous for a in arrays):
                self._update(*arrays, np.empty_like(arrays[0]))  # a layer's strided array
            else:
                flat = [a.reshape(-1) for a in arrays]  # views: the arrays are contiguous
                for start in range(0, size, scratch.size):
                    stop = min(start + scratch.size, size)
                    self._update(*(f[start:stop] for f in flat), scratch[: stop - start])

    def _packed_arrays(self, params, grads) -> tuple[np.ndarray, ...] | None:
        """``(flat_params, flat_grads, *flat_state, scratch)`` when ``params`` and ``grads`` are
        consecutive pieces of one flat array each, in the same order; else None.

        The check is made once; later steps only confirm that the dicts hold the same arrays
        (a layer may have put a new one in). The state arrays become pieces of flat arrays
        too, so ``state`` keeps one array per tensor, named as before, for checkpoints.
        """
        packing = self._packing
        if (
            packing is not None
            and len(packing[0]) == len(params)
            and all(map(operator.is_, packing[0], params.values()))
            and all(map(operator.is_, packing[1], grads.values()))
        ):
            return packing[2]
        self._packing = None
        if not params or list(params) != list(grads):
            return None
        flat_params = _flat_base(list(params.values()))
        flat_grads = _flat_base(list(grads.values()))
        if flat_params is None or flat_grads is None or flat_grads.dtype != flat_params.dtype:
            return None
        flat_state = []
        for kind in self.state_names:
            flat = np.zeros_like(flat_params)
            for name, piece in zip(params, _pieces(flat, params.values())):
                if f"{kind}/{name}" in self.state:  # loaded from a checkpoint
                    piece[...] = self.state[f"{kind}/{name}"]
                self.state[f"{kind}/{name}"] = piece
            flat_state.append(flat)
        self._tensor_slots = {}  # the per-tensor path must see the new state arrays
        arrays = (flat_params, flat_grads, *flat_state, _scratch(flat_params))
        self._packing = (tuple(params.values()), tuple(grads.values()), arrays)
        return arrays

    def _slots(self, name: str, like: np.ndarray) -> tuple[np.ndarray, ...]:
        """The tensor's state arrays (zeros before its first step), then its work array."""
        shape, dtype, slots = self._tensor_slots.get(name, (None, None, ()))
        if shape != like.shape or dtype != like.dtype:
            for kind in self.state_names:
                self.state.setdefault(f"{kind}/{name}", np.zeros_like(like))
            slots = (*(self.state[f"{k}/{name}"] for k in self.state_names), _scratch(like))
            self._tensor_slots[name] = (like.shape, like.dtype, slots)
        return slots

    def _upgraded_state(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A state saved by an earlier mlplab, in today's form (see Adam)."""
        return state

    def _begin_step(self) -> None:
        """Compute per-step scalars (bias corrections) once, outside the per-tensor loop."""

    def _update(self, param, grad, *slots_and_scratch) -> None:
        """Update one tensor (or a chunk of it) in place; the last argument is scratch space."""
        raise NotImplementedError

    def config(self) -> dict:
        return {"learning_rate": self.learning_rate}


class SGD(Optimizer):
    """``p <- p - lr * g``"""

    name = "sgd"

    def _update(self, param, grad, scratch):
        np.multiply(grad, self.learning_rate, out=scratch)
        param -= scratch


class Momentum(Optimizer):
    """SGD with momentum, in three forms that differ in where the learning rate enters.

    * classic: ``v <- mu v - lr g``, ``p <- p + v``
    * dampened (some course material): ``v <- mu v + (1 - mu) lr g``, ``p <- p - v``
    * Nesterov: ``v <- mu v - lr g``, ``p <- p + mu v - lr g`` (the gradient is read at the
      look-ahead point, in the reformulation of Sutskever et al., 2013)
    """

    name = "momentum"
    state_names = ("velocity",)

    def __init__(
        self,
        learning_rate: float,
        momentum: float = 0.9,
        nesterov: bool = False,
        dampened: bool = False,
    ):
        super().__init__(learning_rate)
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and dampened:
            raise ConfigError("choose either nesterov or dampened momentum, not both")
        self.momentum, self.nesterov, self.dampened = float(momentum), nesterov, dampened

    def _update(self, param, grad, velocity, scratch):
        mu, lr = self.momentum, self.learning_rate
        velocity *= mu
        if self.dampened:
            np.multiply(grad, (1.0 - mu) * lr, out=scratch)
            velocity += scratch
            param -= velocity
            return
        np.multiply(grad, lr, out=scratch)
        velocity -= scratch
        if self.nesterov:  # p += mu v - lr g
            param -= scratch
            np.multiply(velocity, mu, out=scratch)
        else:
            scratch = velocity
        param += scratch

    def config(self):
        return {
            **super().config(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "dampened": self.dampened,
        }


class RMSprop(Optimizer):
    """``s <- rho s + (1 - rho) g^2``, ``p <- p - lr g / (sqrt(s) + eps)``"""

    name = "rmsprop"
    state_names = ("square_avg",)

    def __init__(self, learning_rate: float = 1e-3, rho: float = 0.9, eps: float = 1e-8):
        super().__init__(learning_rate)
        self.rho, self.eps = _fraction("rho", rho), _positive("eps", eps)

    def _update(self, param, grad, square_avg, scratch):
        square_avg *= self.rho
        np.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - self.rho
        square_avg += scratch
        np.sqrt(square_avg, out=scratch)
        scratch += self.eps
        np.divide(grad, scratch, out=scratch)
        scratch *= self.learning_rate
        param -= scratch

    def config(self):
        return {**super().config(), "rho": self.rho, "eps": self.eps}


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), with bias-corrected moment estimates::

        m <- b1 m + (1 - b1) g           v <- b2 v + (1 - b2) g^2
        p <- p - lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)

    The state holds the moments as decayed sums, ``m_sum = m / (1 - b1)`` and
    ``v_sum = v / (1 - b2)``, whose updates need no multiplication of ``g``::

        m_sum <- b1 m_sum + g            v_sum <- b2 v_sum + g^2

    Every constant then folds into two scalars per step (bias corrections ``bc1 = 1 - b1^t``,
    ``bc2 = 1 - b2^t``, as PyTorch folds them)::

        p <- p - step_size * m_sum / (sqrt(v_sum) + eps_hat)
        step_size = lr (1 - b1) sqrt(bc2) / (bc1 sqrt(1 - b2)),  eps_hat = eps sqrt(bc2 / (1 - b2))

    so each element costs ten passes over memory with one scratch array and no temporaries,
    against twelve for the textbook form (NumPy cannot fuse a multiply with an add; on a
    784-1000-10 net the update is a third of a step).
    """

    name = "adam"
    state_names = ("m_sum", "v_sum")

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ):
        super().__init__(learning_rate)
        self.beta1, self.beta2 = _fraction("beta1", beta1), _fraction("beta2", beta2)
        self.eps = _positive("eps", eps)

    def _begin_step(self):
        t = int(self.state["step"])
        bias_correction1 = 1.0 - self.beta1**t
        bias_correction2 = 1.0 - self.beta2**t
        v_scale = math.sqrt(bias_correction2 / (1.0 - self.beta2))  # sqrt(v_hat / v_sum)
        # Python floats (not NumPy float64 scalars) keep the array arithmetic in float32.
        self._step_size = self.learning_rate * (1.0 - self.beta1) / bias_correction1 * v_scale
        self._eps_hat = self.eps * v_scale

    def _upgraded_state(self, state):
        """Checkpoints written before 2026-12 hold the moments themselves, ``m/<tensor>`` and
        ``v/<tensor>``: they become the sums, so those runs resume."""
        state = dict(state)
        for key in [key for key in state if key.startswith(("m/", "v/"))]:
            kind, tensor = key.split("/", 1)
            beta = self.beta1 if kind == "m" else self.beta2
            state[f"{kind}_sum/{tensor}"] = state.pop(key) / (1.0 - beta)  # keeps the dtype
        return state

    def _update(self, param, grad, m_sum, v_sum, scratch):
        m_sum *= self.beta1  # m_sum <- b1 m_sum + g
        m_sum += grad
        np.multiply(grad, grad, out=scratch)  # v_sum <- b2 v_sum + g^2
        v_sum *= self.beta2
        v_sum += scratch
        np.sqrt(v_sum, out=scratch)  # p <- p - step_size * m_sum / (sqrt(v_sum) + eps_hat)
        scratch += self._eps_hat
        np.divide(m_sum, scratch, out=scratch)
        scratch *= self._step_size
        param -= scratch

    def config(self):
        return {**super().config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019):
    ``p <- p - lr * weight_decay * p`` before the Adam step, applied to weights, not biases."""

    name = "adamw"

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        super().__init__(learning_rate, beta1, beta2, eps)
        self.weight_decay = _non_negative("weight_decay", weight_decay)

    def update(self, params, grads):
        shrink = 1.0 - self.learning_rate * self.weight_decay
        for name, param in params.items():
            if name.endswith(".weight"):
                param *= shrink
        super().update(params, grads)

    def config(self):
        return {**super().config(), "weight_decay": self.weight_decay}


def _scratch(like: np.ndarray) -> np.ndarray:
    """A flat work array for one chunk of ``like``'s update: kept between steps (allocating it
    anew costs page faults) and never saved."""
    return np.empty(min(like.size, UPDATE_CHUNK), dtype=like.dtype)


def _flat_base(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The flat array that ``arrays`` tile exactly, as consecutive C-ordered pieces, or None."""
    base = arrays[0].base
    if not isinstance(base, np.ndarray) or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    address = start = base.__array_interface__["data"][0]
    for array in arrays:
        if (
            array.base is not base
            or not array.flags.c_contiguous
            or array.__array_interface__["data"][0] != address
        ):
            return None
        address += array.nbytes
    return base if address == start + base.nbytes else None


def _pieces(flat: np.ndarray, like) -> list[np.ndarray]:
    """Views of ``flat`` shaped as the arrays ``like``, one after the other."""
    pieces, offset = [], 0
    for array in like:
        pieces.append(flat[offset : offset + array.size].reshape(array.shape))
        offset += array.size
    return pieces


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, RMSprop, Adam, AdamW)}


def make_optimizer(name: str, learning_rate: float, **options) -> Optimizer:
    """The optimizer called ``name``; ``nesterov`` is a shorthand for Nesterov momentum."""
    if name == "nesterov":
        name, options = "momentum", {**options, "nesterov": True}
    if name not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {name!r}; choose one of: {', '.join([*OPTIMIZERS, 'nesterov'])}"
        )
    try:
        return OPTIMIZERS[name](learning_rate, **options)
    except TypeError as error:
        raise ConfigError(f"bad options {options} for optimizer {name!r}: {error}") from None


def _positive(name, value):
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


def _non_negative(name, value):
    if not value >= 0:
        raise ConfigError(f"{name} must not be negative, got {value!r}")
    return float(value)


def _fraction(name, value):
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)
