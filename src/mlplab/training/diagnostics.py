"""Per-layer statistics that explain training: how big the activations, the gradients and the
weights of each layer are.

They are what shows why a stack of sigmoid layers collapses under plain SGD (the gradient
shrinks by a factor of about four per layer on its way back, so the first layers never move),
and why ReLU stacks grow layer by layer while the shifted ReLU ``max(-1, x)`` stays level.

For each node of the network, measured on a fixed sample:

- ``activation_mean``, ``activation_std``: of its output, in inference mode;
- ``gradient_std``: of ``dL/d(output)`` during a training-mode forward and backward pass;
- for layers with weights, ``weight_rms`` (root mean square of the weight matrix) and
  ``weight_gradient_rms`` (of its gradient).

Measuring changes nothing: the dropout generators and the batch-norm running statistics a
training-mode pass would move are put back, and the parameter gradients are restored.

>>> stats = layer_statistics(network, loss, x_sample, y_sample)     # doctest: +SKIP
>>> stats["dense1"]["weight_rms"], stats["sigmoid3"]["gradient_std"]  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

STATISTICS = (
    "activation_mean",
    "activation_std",
    "gradient_std",
    "weight_rms",
    "weight_gradient_rms",
)


def layer_statistics(network, loss, x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    """``{node name: {statistic: value}}`` for the nodes of ``network`` on the sample ``(x, y)``."""
    stats: dict[str, dict[str, float]] = {name: {} for name in network.order}

    def activations(name, output):
        values = output.astype(np.float64)
        stats[name]["activation_mean"] = float(values.mean())
        stats[name]["activation_std"] = float(values.std())

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
    """A training callback: :func:`layer_statistics` at the end of every epoch.

    ``epochs`` holds one ``{node: {statistic: value}}`` per epoch, in order; with
    ``at_start=True`` the first entry is measured before training (epoch 0).
    """

    def __init__(self, network, loss, x: np.ndarray, y: np.ndarray, at_start: bool = True):
        self.network, self.loss, self.x, self.y = network, loss, x, y
        self.epochs: list[dict] = []
        if at_start:
            self.epochs.append(layer_statistics(network, loss, x, y))

    def on_epoch_end(self, epoch: int, record: dict) -> bool:
        self.epochs.append(layer_statistics(self.network, self.loss, self.x, self.y))
        return False

    def to_dict(self) -> dict:
        """Plain values: ``{"epochs": [...], "nodes": [...]}`` (for ``layer_stats.json``)."""
        return {"nodes": list(self.network.order), "epochs": self.epochs}


__all__ = ["STATISTICS", "LayerStatistics", "layer_statistics"]
