"""A network is a directed acyclic graph of layers.

Each :class:`Node` names a layer and the nodes it reads from; the name ``"input"`` stands for the
data. The network sorts the nodes topologically once, infers every size from the input size,
then runs forward in that order and backward in reverse, summing the gradients that flow back
into a node read by several others (a fan-out, such as the start of a skip connection).

A plain stack is the common case and is one line::

    net = Network.stack(784, [Dense(100), Sigmoid(), Dense(10)])

and a graph is a list of nodes::

    net = Network(784, [
        Node("hidden", Dense(64), ["input"]),
        Node("relu", ReLU(), ["hidden"]),
        Node("tanh", Tanh(), ["hidden"]),
        Node("both", Concat(), ["relu", "tanh"]),
        Node("logits", Dense(10), ["both"]),
    ])

The network's output is the last node's output, the logits; the loss applies the output
activation (see :mod:`mlplab.engine.losses`). "Depth" in mlplab means the number of hidden layers,
that is of Dense layers before the output layer.

Names and seeds. :meth:`Network.stack` names each layer after its type, counting that type only
(``dense1, relu1, dropout1, dense2, ...``), so inserting a dropout or an activation renames no
parametrized layer. Each layer gets its own random generator derived from a seed and its node's
name: initializers from ``seed``, dropout masks from ``dropout_seed``. A layer's initial weights
therefore depend only on the seed, its name and its shape, never on the layers around it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from mlplab.engine.layers import Layer
from mlplab.errors import ConfigError

INPUT = "input"
INIT_STREAM, DROPOUT_STREAM = 0, 1  # keep the two seeds' random streams apart even when equal

# Speed devices, switched off only by benchmarks/epoch_speed.py --ablation to measure their gain.
INPLACE_ACTIVATIONS = True  # an activation may overwrite its input (see _plan_memory)
SKIP_DATA_GRADIENT = True  # the first layer does not compute dL/d(data), which nobody reads


def layer_rng(seed: int, stream: int, name: str) -> np.random.Generator:
    """The random generator of node ``name``: from ``seed``, the stream and the name's bytes."""
    name_key = int.from_bytes(name.encode("utf-8"), "little")
    return np.random.default_rng(np.random.SeedSequence([seed, stream, name_key]))


def default_names(type_names: list[str]) -> list[str]:
    """``<type><k>`` for the k-th layer of each type: ``dense1, relu1, dropout1, dense2, ...``."""
    seen: Counter[str] = Counter()
    names = []
    for type_name in type_names:
        seen[type_name] += 1
        names.append(f"{type_name}{seen[type_name]}")
    return names


def _check_seed(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(f"{what} must be a whole number >= 0, got {value!r}")


@dataclass
class Node:
    name: str
    layer: Layer
    inputs: list[str] = field(default_factory=lambda: [INPUT])


class Network:
    """A DAG of layers with named parameters ``"<node>.<param>"``.

    Parameters
    ----------
    input_size : int
        Number of input features (784 for MNIST).
    nodes : list of Node
        In any order; the output is ``output`` or, by default, the last node listed.
    output : str, optional
        Name of the output node.
    dtype : numpy dtype
        ``float32`` (the default) for training, ``float64`` for gradient checks.
    seed : int
        Seeds the initializers: each parametrized layer's generator comes from
        ``(seed, its node name)``.
    dropout_seed : int, optional
        Seeds the dropout masks, per layer from ``(dropout_seed, its node name)``; by default
        derived from ``seed`` (on a separate stream, so masks and weights stay independent).
    """

    def __init__(
        self,
        input_size: int,
        nodes: list[Node],
        output: str | None = None,
        dtype=np.float32,
        seed: int = 0,
        dropout_seed: int | None = None,
    ):
        _check_seed(seed, "seed")
        if dropout_seed is not None:
            _check_seed(dropout_seed, "dropout_seed")
        self._plan(input_size, nodes, output)
        self.dtype = np.dtype(dtype)
        self.seed = int(seed)
        self.dropout_seed = self.seed if dropout_seed is None else int(dropout_seed)
        self._build()
        self._plan_memory()
        self._compile()
        self._pack_parameters()

    @classmethod
    def stack(cls, input_size: int, layers: list[Layer], **options) -> Network:
        """A plain chain of layers, named by :func:`default_names` (``dense1, relu1, dense2``).

        ``options`` are those of the constructor (``dtype``, ``seed``, ``dropout_seed``).
        """
        nodes, previous = [], INPUT
        for name, layer in zip(default_names([layer.type_name for layer in layers]), layers):
            nodes.append(Node(name, layer, [previous]))
            previous = name
        return cls(input_size, nodes, **options)

    @classmethod
    def planned_sizes(
        cls, input_size: int, nodes: list[Node], output: str | None = None
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Each node's output width and parameter count, checking the graph, allocating nothing.

        What :func:`mlplab.engine.architecture.network_size` uses to refuse impossible sizes
        before any array exists.
        """
        plan = cls.__new__(cls)  # validated and sized, never built
        plan._plan(input_size, nodes, output)
        return plan.sizes, plan.param_counts

    # ----------------------------------------------------------------- structure
    def _plan(self, input_size: int, nodes: list[Node], output: str | None) -> None:
        """Validate the nodes, order them and infer every size; nothing is allocated here."""
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise ConfigError(f"input size must be a positive whole number, got {input_size!r}")
        if not nodes:
            raise ConfigError("a network needs at least one layer")
        self.input_size = input_size
        self.nodes = {}
        owner: dict[int, str] = {}  # id(layer) -> the node that already holds it
        for node in nodes:
            if node.name == INPUT or node.name in self.nodes:
                raise ConfigError(f"node name {node.name!r} is used twice or reserved; rename it")
            if id(node.layer) in owner:
                # A layer caches its forward input for backward and owns one gradient array:
                # a second use overwrites both, and the gradients come out silently wrong.
                raise ConfigError(
                    f"nodes {owner[id(node.layer)]!r} and {node.name!r} use the same "
                    f"{node.layer!r} object; give each node its own layer (weight sharing "
                    "is not supported)"
                )
            owner[id(node.layer)] = node.name
            self.nodes[node.name] = node
        self.output = output if output is not None else nodes[-1].name
        if self.output not in self.nodes:
            raise ConfigError(f"output node {self.output!r} is not among the nodes")
        self.order = self._topological_order()
        self.sizes = {INPUT: self.input_size}
        self.param_counts = {}
        for name in self.order:
            node = self.nodes[name]
            input_sizes = [self.sizes[i] for i in node.inputs]
            try:
                self.sizes[name] = node.layer.output_size(input_sizes)
                self.param_counts[name] = node.layer.count_params(input_sizes)
            except ConfigError as error:
                raise ConfigError(f"node {name!r}: {error}") from None

    def _topological_order(self) -> list[str]:
        """Kahn's algorithm over the nodes the output depends on, in declaration order."""
        for node in self.nodes.values():
            for name in node.inputs:
                if name != INPUT and name not in self.nodes:
                    raise ConfigError(
                        f"node {node.name!r} reads from {name!r}, which is not a node "
                        f"(known: input, {', '.join(self.nodes)})"
                    )
            arity = node.layer.n_inputs
            if (arity and len(node.inputs) != arity) or (not arity and len(node.inputs) < 2):
                wanted = arity or "at least 2"
                raise ConfigError(
                    f"node {node.name!r} ({node.layer.type_name}) takes {wanted} input(s), "
                    f"got {len(node.inputs)}"
                )
        # Only nodes the output depends on take part; anything else is a dangling branch.
        needed, stack = set(), [self.output]
        while stack:
            name = stack.pop()
            if name != INPUT and name not in needed:
                needed.add(name)
                stack.extend(self.nodes[name].inputs)
        unused = [name for name in self.nodes if name not in needed]
        if unused:
            raise ConfigError(
                f"node(s) {', '.join(unused)} do not lead to the output {self.output!r}; "
                "connect or remove them"
            )
        waiting = {name: len(set(self.nodes[name].inputs) - {INPUT}) for name in self.nodes}
        readers: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for name in set(node.inputs) - {INPUT}:
                readers[name].append(node.name)
        ready = [name for name, count in waiting.items() if count == 0]
        order = []
        while ready:
            name = ready.pop(0)
            order.append(name)
            for reader in readers[name]:
                waiting[reader] -= 1
                if waiting[reader] == 0:
                    ready.append(reader)
        if len(order) != len(self.nodes):
            cycle = [name for name in self.nodes if name not in order]
            raise ConfigError(f"the graph has a cycle through node(s) {', '.join(cycle)}")
        self.readers = readers
        return order

    def _build(self) -> None:
        """Allocate every layer's arrays, each from its own generator (see the module notes)."""
        for name in self.order:
            node = self.nodes[name]
            if node.layer.draws_random_numbers:
                rng = layer_rng(self.dropout_seed, DROPOUT_STREAM, name)
            else:
                rng = layer_rng(self.seed, INIT_STREAM, name)
            node.layer.build([self.sizes[i] for i in node.inputs], rng, self.dtype)

    def _plan_memory(self) -> None:
        """Decide which activations may work in place and which layers skip the input gradient.

        An activation may overwrite its input when that input has exactly one reader, and its
        producer made that array itself (not a pass-through of its own input) and does not read
        it again in backward (Dense and normalizations don't).
        """
        for name in self.order:
            layer = self.nodes[name].layer
            inputs = self.nodes[name].inputs
            source = inputs[0]
            layer.inplace = (
                INPLACE_ACTIVATIONS
                and len(inputs) == 1
                and source != INPUT
                and len(self.readers[source]) == 1
                and not self.nodes[source].layer.caches_output
                and not self.nodes[source].layer.may_return_input
            )
            layer.input_grad_needed = not SKIP_DATA_GRADIENT or any(i != INPUT for i in inputs)

    def _compile(self) -> None:
        """Work out once what every forward and backward pass would otherwise look up again.

        The graph walk runs at every batch, so what does not depend on the batch is worked out
        here: per node in topological order, its layer, its inputs and the values it is the
        last reader of (freed after it). The ``"<node>.<key>"`` names of the
        parameters and gradients are joined here too (joining them at every call took four
        times as long as the lookups); the arrays are still looked up at every call, so a
        layer may put a new array in its dict.
        """
        last_reader = {}
        for name in self.order:
            for source in self.nodes[name].inputs:
                if source != INPUT:
                    last_reader[source] = name
        self._steps = [
            (
                name,
                self.nodes[name].layer,
                tuple(self.nodes[name].inputs),
                tuple(source for source, reader in last_reader.items() if reader == name),
            )
            for name in self.order
        ]
        self._param_keys = self._named_keys("params")
        self._grad_keys = self._named_keys("grads")

    def _pack_parameters(self) -> None:
        """Move every parameter into one flat array, and every gradient into another.

        Each layer's ``params`` and ``grads`` then hold views (their pieces, in the order of
        :attr:`params`), so nothing changes for the layers, but an element-wise optimizer can
        update all of them in one pass instead of one per tensor: on a small network the
        per-call overhead of a dozen tensors costs more than the arithmetic (see
        :meth:`mlplab.engine.optimizers.Optimizer.update`). Loading weights writes into these
        arrays (``target[...] = saved``); a layer that puts a new array in its dict still
        trains, on the slower per-tensor path.
        """
        keys = self._param_keys
        layers = {id(layer): layer for _, layer, _ in keys}.values()
        if not keys or any(
            layer.grads.keys() != layer.params.keys()
            or any(layer.grads[k].shape != p.shape for k, p in layer.params.items())
            for layer in layers
        ):
            return  # no parameters, or not one gradient per parameter: leave them as they are
        total = sum(layer.params[key].size for _, layer, key in keys)
        flat_params = np.empty(total, dtype=self.dtype)
        flat_grads = np.zeros(total, dtype=self.dtype)
        offset = 0
        for _, layer, key in keys:
            param, grad = layer.params[key], layer.grads[key]
            end = offset + param.size
            layer.params[key] = flat_params[offset:end].reshape(param.shape)
            layer.params[key][...] = param
            layer.grads[key] = flat_grads[offset:end].reshape(grad.shape)
            layer.grads[key][...] = grad
            offset = end
        self._grad_keys = keys  # gradients in the parameters' order, piece for piece

    def _named_keys(self, group: str) -> list[tuple[str, Layer, str]]:
        """``("<node>.<key>", layer, key)`` for one dict of every layer, in topological order."""
        return [
            (f"{name}.{key}", self.nodes[name].layer, key)
            for name in self.order
            for key in getattr(self.nodes[name].layer, group)
        ]

    # ----------------------------------------------------------------- parameters
    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every trainable array, by ``"<node>.<param>"`` name, in topological order."""
        return {name: layer.params[key] for name, layer, key in self._param_keys}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The gradient arrays, named as :attr:`params` and filled by :meth:`backward`."""
        return {name: layer.grads[key] for name, layer, key in self._grad_keys}

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Saved state that is not trained, such as BatchNorm's running statistics."""
        return {
            f"{name}.{key}": array
            for name in self.order
            for key, array in self.nodes[name].layer.buffers.items()
        }

    def rng_states(self) -> dict[str, dict]:
        """The state of every layer's own random generator (dropout), for exact resumption."""
        return {
            name: self.nodes[name].layer.rng.bit_generator.state
            for name in self.order
            if hasattr(self.nodes[name].layer, "rng")
        }

    def set_rng_states(self, states: dict[str, dict]) -> None:
        for name, state in states.items():
            self.nodes[name].layer.rng.bit_generator.state = state

    @property
    def n_params(self) -> int:
        return sum(p.size for p in self.params.values())

    # ----------------------------------------------------------------- computing
    def forward(self, x: np.ndarray, training: bool = False, observe=None) -> np.ndarray:
        """The logits for a batch ``x`` of shape ``(N, input_size)``.

        Layers write their outputs into arrays they keep from batch to batch (see
        :meth:`~mlplab.engine.layers.Layer.work_array`), so the returned array is overwritten by the
        next call with the same batch size: copy it to keep it. :meth:`predict_logits` does.

        ``observe(name, output)``, if given, sees each node's output as soon as it is computed;
        a later layer may overwrite it in place, so summarize or copy it there and then
        (:mod:`mlplab.training.diagnostics` does).
        """
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ConfigError(
                f"the network expects inputs of shape (N, {self.input_size}), got {x.shape}"
            )
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        values = {INPUT: x}
        for name, layer, inputs, last_read_here in self._steps:
            if len(inputs) == 1:
                output = layer.forward(values[inputs[0]], training=training)
            else:
                output = layer.forward(*[values[i] for i in inputs], training=training)
            values[name] = output
            if observe is not None:
                observe(name, output)
            for source in last_read_here:  # free what no later node reads
                del values[source]
        return values[self.output]

    def backward(self, grad_output: np.ndarray, input_grad: bool = False, observe=None):
        """Backpropagate ``dL/d(logits)``; fills every layer's ``grads``.

        Returns ``dL/dx`` when ``input_grad`` is true (the gradient checker wants it), else None.
        ``observe(name, grad)``, if given, sees ``dL/d(output)`` of each node before the node's
        backward pass uses it.
        """
        if input_grad:
            for name in self.order:
                self.nodes[name].layer.input_grad_needed = True
        grads = {self.output: grad_output}
        for name, layer, inputs, _ in reversed(self._steps):
            grad_out = grads.pop(name)
            if observe is not None:
                observe(name, grad_out)
            grad_in = layer.backward(grad_out)
            if layer.n_inputs == 1:
                grad_in = (grad_in,)
            for source, grad in zip(inputs, grad_in):
                if grad is None or (source == INPUT and not input_grad):
                    continue
                if source in grads:  # a fan-out: gradients from all readers add up
                    grads[source] = grads[source] + grad
                else:
                    grads[source] = grad
        if input_grad:
            self._plan_memory()
            return grads.get(INPUT)
        return None

    def predict_logits(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Logits for any number of examples, computed in batches (inference mode)."""
        n_out = self.sizes[self.output]
        logits = np.empty((x.shape[0], n_out), dtype=self.dtype)
        for start in range(0, x.shape[0], batch_size):
            logits[start : start + batch_size] = self.forward(x[start : start + batch_size])
        return logits

    # ----------------------------------------------------------------- description
    def architecture(self) -> dict:
        """The graph as plain JSON values; :func:`mlplab.engine.architecture.network_from_spec` reads it."""
        return {
            "input_size": self.input_size,
            "output": self.output,
            "nodes": [
                {
                    "name": name,
                    "type": self.nodes[name].layer.type_name,
                    "inputs": list(self.nodes[name].inputs),
                    **self.nodes[name].layer.config(),
                }
                for name in self.order
            ],
        }

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts, like Keras's ``summary()``."""
        rows = [("Layer (type)", "Inputs", "Output shape", "Param #")]
        for name in self.order:
            node = self.nodes[name]
            count = sum(p.size for p in node.layer.params.values())
            rows.append(
                (
                    f"{name} ({node.layer.type_name})",
                    ", ".join(node.inputs),
                    f"(None, {self.sizes[name]})",
                    f"{count:,}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        line = "-" * (sum(widths) + 6)

        def fmt(row):
            return "  ".join(
                [
                    row[0].ljust(widths[0]),
                    row[1].ljust(widths[1]),
                    row[2].ljust(widths[2]),
                    row[3].rjust(widths[3]),
                ]
            )

        body = [fmt(rows[0]), line.replace("-", "=")] + [fmt(row) for row in rows[1:]]
        n_buffers = sum(b.size for b in self.buffers.values())
        footer = [line, f"Total params: {self.n_params:,}", f"Trainable params: {self.n_params:,}"]
        if n_buffers:
            footer.append(f"Non-trainable buffers: {n_buffers:,}")
        footer.append(f"Input size: {self.input_size}, dtype: {self.dtype.name}")
        return "\n".join(body + footer)
