"""Per-layer statistics that explain training: how big the activations, the gradients and the
weights of each layer are.

They are what shows why a stack of sigmoid layers collapses under plain SGD (the gradient
shrinks by a factor of about four per layer on its way back, so the first layers never move),
and why ReLU stacks grow layer by layer while the shifted ReLU ``max(-1, x)`` stays level.

For each node of the network, measured on a fixed sample:

- ``activation_mean``, ``activation_std``: of its output, in inference mode;
- ``gradient_std``: of ``dL/d(output)`` during a training-mode forward and backward pass;
- for layers with weights, ``weight_rms`` (root mean square of the weight matrix) and
  ``weight_gradient_rms`` (of its gradient);
- for sigmoid, tanh, relu and shifted-relu nodes, ``saturated_fraction``: the fraction of
  outputs where the activation is flat, so that almost no gradient passes (sigmoid
  ``y(1-y) < 1%`` of its peak 1/4; tanh ``1-y^2 < 0.01``; a ReLU at its floor), and
  ``dead_fraction``: the fraction of units flat on every example of the sample (dead units).

Measuring changes nothing: the dropout generators and the batch-norm running statistics a
training-mode pass would move are put back, and the parameter gradients are restored.

>>> stats = layer_statistics(network, loss, x_sample, y_sample)     # doctest: +SKIP
>>> stats["dense1"]["weight_rms"], stats["sigmoid3"]["gradient_std"]  # doctest: +SKIP

During training, the :class:`LayerStatistics` callback measures at the start and after every
epoch, through :meth:`mlplab.training.model.Model.fit` (or :func:`mlplab.training.loop.fit`)::

    model = Model.build("5x32:sigmoid", 784, [str(d) for d in range(10)], seed=0)
    stats = LayerStatistics(model.network, model.loss, x_val[:1000], y_val[:1000])
    model.fit(x_train, y_train, optimizer=SGD(0.1), epochs=5, callbacks=[stats])
    stats.epochs[-1]["dense1"]["gradient_std"]    # after the last epoch
    layer_stats_figure(stats.to_dict())           # mlplab.report.plots: the picture

``mlplab train --layer-stats`` (``[training] layer_stats = true``) does the same on 1,000
validation examples and writes ``layer_stats.json`` and ``layers.png`` into the run folder.
"""

from __future__ import annotations

import time

import numpy as np

from mlplab.saving import write_json
from mlplab.training.metrics import json_safe

STATISTICS = (
    "activation_mean",
    "activation_std",
    "gradient_std",
    "weight_rms",
    "weight_gradient_rms",
    "saturated_fraction",
    "dead_fraction",
)
# Where each activation's derivative is (close to) zero, from its output y: there the gradient
# stops. Sigmoid and tanh: below 1% of their peak derivative (1/4 and 1).
FLAT = {
    "sigmoid": lambda layer, y: y * (1.0 - y) < 0.0025,
    "tanh": lambda layer, y: 1.0 - y * y < 0.01,
    "relu": lambda layer, y: y <= 0.0,
    "shifted-relu": lambda layer, y: y <= layer.floor,
}


def layer_statistics(network, loss, x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    """``{node name: {statistic: value}}`` for the nodes of ``network`` on the sample ``(x, y)``."""
    stats: dict[str, dict[str, float]] = {name: {} for name in network.order}

    def activations(name, output):
        values = output.astype(np.float64)
        stats[name]["activation_mean"] = float(values.mean())
        stats[name]["activation_std"] = float(values.std())
        layer = network.nodes[name].layer
        flat = FLAT.get(layer.type_name)
        if flat is not None and values.ndim == 2 and values.size:
            mask = flat(layer, values)
            stats[name]["saturated_fraction"] = float(mask.mean())
            stats[name]["dead_fraction"] = float(mask.all(axis=0).mean())

    def gradients(name, grad):
        stats[name]["gradient_std"] = float(np.asarray(grad, dtype=np.float64).std())

    network.forward(x, training=False, observe=activations)

    saved_grads = {name: grad.copy() for name, grad in network.grads.items()}
    saved_buffers = {name: buffer.copy() for name, buffer in network.buffers.items()}
    saved_rngs = network.rng_states()
    try:
        loss.forward(network.forward(x, training=True), y)
        network.backward(loss.backward(), observe=gradients)
        for key, param in network.params.items():
            node, _, kind = key.partition(".")
            if kind == "weight":
                stats[node]["weight_rms"] = _rms(param)
                stats[node]["weight_gradient_rms"] = _rms(network.grads[key])
    finally:
        for name, grad in network.grads.items():
            grad[...] = saved_grads[name]
        for name, buffer in network.buffers.items():
            buffer[...] = saved_buffers[name]
        network.set_rng_states(saved_rngs)
    return stats


def _rms(array: np.ndarray) -> float:
    values = array.astype(np.float64)
    return float(np.sqrt(np.mean(values * values)))


class LayerStatistics:
    """A training callback: :func:`layer_statistics` on a fixed sample after every epoch.

    Parameters
    ----------
    network, loss
        The network being trained and its loss (``model.network``, ``model.loss``).
    x, y : ndarray
        The sample measured every time; a few hundred to a thousand examples are plenty.
    at_start : bool
        Measure once now, before training, as epoch 0.
    path : path, optional
        Write :meth:`to_dict` there (atomically, as JSON) after every measurement, so that a run
        that diverges or is stopped keeps what was measured until then.

    Attributes
    ----------
    epochs : list of dict
        One ``{node: {statistic: value}}`` per measurement, in order.
    epoch_numbers : list of int
        The epoch each entry was measured after (0: before training).
    seconds : float
        Time spent measuring, in total.
    """

    def __init__(
        self, network, loss, x: np.ndarray, y: np.ndarray, at_start: bool = True, path=None
    ):
        self.network, self.loss, self.x, self.y, self.path = network, loss, x, y, path
        self.epochs: list[dict] = []
        self.epoch_numbers: list[int] = []
        self.seconds = 0.0
        if at_start:
            self.measure(0)

    def measure(self, epoch: int) -> None:
        """Measure now and record it as epoch ``epoch``, replacing entries from ``epoch`` on
        (those of a run that is resumed from an earlier checkpoint)."""
        started = time.perf_counter()
        stats = layer_statistics(self.network, self.loss, self.x, self.y)
        self.seconds += time.perf_counter() - started
        keep = [i for i, number in enumerate(self.epoch_numbers) if number < epoch]
        self.epochs = [self.epochs[i] for i in keep] + [stats]
        self.epoch_numbers = [self.epoch_numbers[i] for i in keep] + [epoch]
        if self.path is not None:
            write_json(self.path, self.to_dict())

    def on_epoch_end(self, epoch: int, record: dict) -> bool:
        self.measure(epoch)
        return False

    def restore(self, stored: dict) -> None:
        """Take over the entries of an earlier :meth:`to_dict` (a resumed run's file)."""
        epochs, numbers = stored.get("epochs"), stored.get("epoch_numbers")
        if not isinstance(epochs, list) or not isinstance(numbers, list):
            return
        if len(epochs) != len(numbers) or stored.get("nodes") != list(self.network.order):
            return
        self.epochs, self.epoch_numbers = list(epochs), [int(n) for n in numbers]
        self.seconds = float(stored.get("seconds") or 0.0)

    def to_dict(self) -> dict:
        """Plain JSON values (non-finite numbers as None), as ``layer_stats.json`` holds them::

        {"nodes": [node, ...], "types": {node: layer type}, "sample_size": n,
         "epoch_numbers": [0, 1, ...], "epochs": [{node: {statistic: value}}, ...],
         "seconds": time spent measuring}
        """
        nodes = list(self.network.order)
        return json_safe(
            {
                "nodes": nodes,
                "types": {name: self.network.nodes[name].layer.type_name for name in nodes},
                "sample_size": int(len(self.y)),
                "epoch_numbers": list(self.epoch_numbers),
                "epochs": self.epochs,
                "seconds": self.seconds,
            }
        )


def measurement_sample(x: np.ndarray, y: np.ndarray, size: int = 1000):
    """``size`` examples spread evenly over ``(x, y)`` (all of them if fewer): deterministic,
    and drawn from the whole set rather than its first part."""
    if len(y) <= size:
        return x, y
    index = np.linspace(0, len(y) - 1, size).round().astype(np.int64)
    return x[index], y[index]


__all__ = ["STATISTICS", "LayerStatistics", "layer_statistics", "measurement_sample"]
