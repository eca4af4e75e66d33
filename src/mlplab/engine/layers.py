"""The layer contract, the Dense layer, Dropout, and the Add / Concat merges.

A layer is a small object with ``forward`` and ``backward`` side by side:

* ``build(input_sizes, rng, dtype) -> output_size`` allocates parameters once the sizes of the
  inputs are known (the graph calls it in topological order; shapes are feature counts, the batch
  dimension is always first and free). ``rng`` is the layer's own generator: the graph derives
  it from the seed and the node's name, so a layer's initial weights do not depend on the
  layers around it.
* ``output_size(input_sizes)`` and ``count_params(input_sizes)`` say what ``build`` would make
  without allocating anything, so sizes can be checked against the memory first.
* ``forward(x, training)`` caches exactly what ``backward`` needs and returns the output.
* ``backward(grad_out)`` returns the gradient with respect to the input (a list of them for a
  merge with several inputs) and stores parameter gradients in ``self.grads`` under the same
  names as ``self.params``. It never changes ``grad_out`` in place.

Activations live in :mod:`mlplab.engine.activations`, normalization layers in
:mod:`mlplab.engine.normalization`. Every concrete layer registers itself under ``type_name`` so that
architectures can be written as strings, config files and JSON in saved models.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mlplab.engine import initializers
from mlplab.errors import ConfigError

LAYER_TYPES: dict[str, type[Layer]] = {}
# A speed device, switched off only by benchmarks/epoch_speed.py --ablation to measure its gain.
REUSE_WORK_ARRAYS = True


class Layer:
    """Base class: a node's computation, with no parameters unless a subclass adds them."""

    type_name: ClassVar[str] = ""
    n_inputs: ClassVar[int] = 1  # 0 means "any number >= 2" (merges)
    # True when backward reads the layer's own output (sigmoid, ReLU...). A following activation
    # may overwrite its input in place only if the producer of that input does not need it.
    caches_output: ClassVar[bool] = False
    # True when forward may return its input array itself (identity, dropout at inference): an
    # activation after it must not write in place, or it would overwrite the producer's output.
    may_return_input: ClassVar[bool] = False
    # True when forward draws random numbers while training (dropout): the graph then gives
    # the layer a generator from the dropout seed instead of the initialization seed.
    draws_random_numbers: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.type_name:
            LAYER_TYPES[cls.type_name] = cls

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}  # saved state that is not trained (BatchNorm)
        self.inplace = False  # set by the graph: may overwrite its input in forward
        self.input_grad_needed = True  # set by the graph: False when the input is the data
        self._work: dict[str, np.ndarray] = {}

    def work_array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """A scratch array kept from batch to batch.

        Allocating a fresh half-megabyte array for every batch costs page faults that add up to
        a tenth of an epoch; outputs written here stay valid until the layer's next call.
        """
        if not REUSE_WORK_ARRAYS:
            return np.empty(shape, dtype)
        array = self._work.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._work[name] = np.empty(shape, dtype)
        return array

    def output_size(self, input_sizes: list[int]) -> int:
        """Features per example of the output, from those of the inputs (no allocation)."""
        (size,) = input_sizes
        return size

    def count_params(self, input_sizes: list[int]) -> int:
        """Number of trainable parameters ``build`` would allocate for these input sizes."""
        return 0

    def build(self, input_sizes: list[int], rng: np.random.Generator, dtype) -> int:
        return self.output_size(input_sizes)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray):
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor arguments as plain JSON values; ``type(self)(**config())`` rebuilds it."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def make_layer(type_name: str, **options) -> Layer:
    """Create a registered layer by name, with a clear error for unknown names or options."""
    try:
        cls = LAYER_TYPES[type_name]
    except KeyError:
        raise ConfigError(
            f"unknown layer type {type_name!r}; choose one of: {', '.join(sorted(LAYER_TYPES))}"
        ) from None
    try:
        return cls(**options)
    except TypeError as error:
        raise ConfigError(f"bad options {options} for layer type {type_name!r}: {error}") from None


class Dense(Layer):
    """Fully connected layer ``y = x W^T + b``.

    ``weight`` has shape ``(units, in_features)``, one row per unit as in Nielsen's ``network.py``
    and PyTorch: with that layout both ``x W^T`` and ``grad_out^T x`` run as fast BLAS products.
    """

    type_name = "dense"

    def __init__(self, units: int, init: str = "glorot-uniform"):
        super().__init__()
        if not isinstance(units, int) or isinstance(units, bool) or units < 1:
            raise ConfigError(
                f"a dense layer needs a positive whole number of units, got {units!r}"
            )
        initializers.get(init)  # fail early on an unknown initializer name
        self.units = units
        self.init = init

    def output_size(self, input_sizes):
        return self.units

    def count_params(self, input_sizes):
        (in_features,) = input_sizes
        return self.units * (in_features + 1)  # weight (units, in_features) and bias (units,)

    def build(self, input_sizes, rng, dtype):
        (in_features,) = input_sizes
        self.params["weight"] = initializers.get(self.init)((self.units, in_features), rng, dtype)
        self.params["bias"] = np.zeros(self.units, dtype=dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        return self.units

    def forward(self, x, training=False):
        self.x = x
        y = self.work_array("out", (x.shape[0], self.units), x.dtype)
        np.matmul(x, self.params["weight"].T, out=y)  # y = x W^T + b
        y += self.params["bias"]
        return y

    def backward(self, grad_out):
        weight = self.params["weight"]
        np.matmul(grad_out.T, self.x, out=self.grads["weight"])  # dL/dW = grad_out^T x
        # dL/db = sum over the batch (add.reduce is np.sum without its Python wrapper)
        np.add.reduce(grad_out, axis=0, out=self.grads["bias"])
        if not self.input_grad_needed:  # the first layer: nobody wants dL/d(data)
            return None
        grad_in = self.work_array("grad_in", self.x.shape, grad_out.dtype)
        return np.matmul(grad_out, weight, out=grad_in)  # dL/dx = grad_out W

    def config(self):
        return {"units": self.units, "init": self.init}


class Dropout(Layer):
    """Inverted dropout: zero each input with probability ``rate`` and scale the rest by
    ``1 / (1 - rate)`` while training, so that inference is the identity.

    The mask drawn in ``forward`` is the one ``backward`` uses. Its random numbers come from the
    layer's own generator, which the graph derives from the dropout seed and the node's name, so
    runs are reproducible and resumable and the masks do not touch the initial weights.
    """

    type_name = "dropout"
    may_return_input = True
    draws_random_numbers = True

    def __init__(self, rate: float = 0.5):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.rng = np.random.default_rng(0)

    def build(self, input_sizes, rng, dtype):
        self.rng = rng  # the graph made this generator for this layer alone
        return super().build(input_sizes, rng, dtype)

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self.mask = None
            return x
        # The mask is drawn, compared and scaled in arrays kept from batch to batch: fresh
        # temporaries of a wide layer's size cost page faults at every step.
        draws = self.rng.random(dtype=x.dtype, out=self.work_array("mask", x.shape, x.dtype))
        keep = np.greater_equal(draws, self.rate, out=self.work_array("keep", x.shape, bool))
        self.mask = np.multiply(keep, x.dtype.type(1.0 / (1.0 - self.rate)), out=draws)
        if self.inplace:
            x *= self.mask
            return x
        return x * self.mask

    def backward(self, grad_out):
        if self.mask is None:
            return grad_out
        grad_in = self.work_array("grad_in", grad_out.shape, grad_out.dtype)
        return np.multiply(grad_out, self.mask, out=grad_in)  # dy/dx = mask / (1 - rate)

    def config(self):
        return {"rate": self.rate}


class Add(Layer):
    """Element-wise sum of two or more inputs of the same size (skip connections)."""

    type_name = "add"
    n_inputs = 0

    def output_size(self, input_sizes):
        if len(set(input_sizes)) != 1:
            raise ConfigError(f"add needs inputs of equal size, got sizes {list(input_sizes)}")
        return input_sizes[0]

    def build(self, input_sizes, rng, dtype):
        self.n_merged = len(input_sizes)
        return self.output_size(input_sizes)

    def forward(self, *inputs, training=False):
        total = inputs[0] + inputs[1]
        for x in inputs[2:]:
            total += x
        return total

    def backward(self, grad_out):
        return [grad_out] * self.n_merged  # d(sum)/dx_i = 1 for every input


class Concat(Layer):
    """Concatenation of two or more inputs along the feature axis (parallel branches)."""

    type_name = "concat"
    n_inputs = 0

    def output_size(self, input_sizes):
        return sum(input_sizes)

    def build(self, input_sizes, rng, dtype):
        self.sizes = list(input_sizes)
        return self.output_size(input_sizes)

    def forward(self, *inputs, training=False):
        return np.concatenate(inputs, axis=1)

    def backward(self, grad_out):
        # Each input receives its own slice of the gradient (views, no copy).
        bounds = np.cumsum([0] + self.sizes)
        return [grad_out[:, lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
