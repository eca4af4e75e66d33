"""Declaring networks: the compact architecture string for stacks, and graph specs.

The architecture string
-----------------------
A comma-separated list of items describing the *hidden* part of a stack; the input size and the
output layer (one unit per class, producing logits) come from the data::

    950:relu,50:sigmoid          # the forum's 784-950-50-10 network
    100:sigmoid                  # the book's 784-100-10 network
    32:sigmoid,32:sigmoid        # depth 2 ("depth" = number of hidden layers)
    5x32:sigmoid                 # five 32:sigmoid layers (depth 5)
    3x64:batchnorm:relu,10:tanh  # a repeated item carries its steps along
    dropout(0.2),800:relu:dropout(0.5),800:relu:dropout(0.5)
    noise(0.3),1000:relu         # Gaussian noise of std 0.3 on the input while training
    256:layernorm:relu,256:batchnorm:tanh
    100:shifted-relu(-1),100:leaky-relu(0.1),100:elu
    ""                            # no hidden layer: softmax regression

Grammar::

    architecture := "" | "none" | item ("," item)*
    item         := [COUNT "x"] UNITS (":" step)*
                                         a Dense layer of UNITS units, then its steps in order;
                                         with COUNT, that layer and its steps COUNT times
                  | step                 a step on its own, e.g. dropout on the input
    step         := NAME [ "(" NUMBER ")" ]
    COUNT, UNITS := whole numbers >= 1
    NAME         := linear | sigmoid | tanh | relu | leaky-relu | shifted-relu | elu | softmax
                  | dropout | noise | layernorm | batchnorm

The number in parentheses is the step's one option: the slope of leaky-relu, the floor of
shifted-relu (default -1), alpha of elu, the rate of dropout, the standard deviation of the
Gaussian noise of noise (added while training only), the eps of layernorm, the momentum of
batchnorm. An item with units but no activation gets ``relu``; write ``linear`` for none.

Layers are named by type, counting each type on its own (``dense1, relu1, dropout1, dense2``), so
adding a dropout or changing an activation renames no Dense or normalization layer and leaves
its initial weights as they were (see :mod:`mlplab.engine.graph`).

Sizes are checked before anything is allocated: :func:`network_size` counts parameters and units
from the string or spec alone, and :func:`build_network` refuses a network whose parameters alone
would not fit in the available memory.

Graph specs
-----------
Any DAG is a dict (from Python, a TOML config file or a saved model's JSON)::

    {"input_size": 784, "output": "logits", "nodes": [
        {"name": "hidden", "type": "dense", "units": 100, "inputs": ["input"]},
        {"name": "relu", "type": "relu", "inputs": ["hidden"]},
        ...]}

``input_size`` and ``output`` may be left out (they come from the data and the last node).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Importing these modules registers their layer types.
from mlplab.engine import (
    activations,
    normalization,  # noqa: F401
    regularizers,  # noqa: F401
)
from mlplab.engine.graph import INPUT, Network, Node, default_names
from mlplab.engine.layers import LAYER_TYPES, Dense, make_layer
from mlplab.errors import ConfigError
from mlplab.resources import available_memory_bytes, format_bytes

STEP_OPTION = {  # the option a number in parentheses sets, per step name
    "leaky-relu": "slope",
    "shifted-relu": "floor",
    "elu": "alpha",
    "dropout": "rate",
    "noise": "std",
    "layernorm": "eps",
    "batchnorm": "momentum",
}
STEP_NAMES = [*activations.ACTIVATIONS, "dropout", "noise", "layernorm", "batchnorm"]
RELU_FAMILY = {"relu", "leaky-relu", "shifted-relu", "elu"}
_STEP = re.compile(r"^([a-z-]+)(?:\(\s*([-+0-9.eE]+)\s*\))?$")
_REPEAT = re.compile(r"^([0-9]+)\s*x\s*(-?[0-9]+)$")
# A bound on the layers one string may expand to, checked before the list is built, so that
# "99999999999x32" fails at once instead of filling the memory with layer descriptions.
MAX_LAYERS = 10_000


@dataclass(frozen=True)
class NetworkSize:
    """What a network costs, known from its description alone.

    Attributes
    ----------
    n_params : int
        Trainable parameters (what ``Network.n_params`` will say once built).
    n_units : int
        The sum over all layers (every node, the output included, the input not) of their
        output width: the number of activation values one example produces in a forward pass.
    """

    n_params: int
    n_units: int


def parse_architecture(text: str) -> list[tuple[str, dict]]:
    """Turn an architecture string into a list of ``(layer type, options)`` for the hidden part."""
    layers: list[tuple[str, dict]] = []
    text = text.strip()
    if text in ("", "none"):
        return layers
    for item in text.split(","):
        parts = [part.strip() for part in item.strip().split(":")]
        repeat = _REPEAT.match(parts[0])
        count, units_text = (int(repeat[1]), repeat[2]) if repeat else (1, parts[0])
        if re.fullmatch(r"-?[0-9]+", units_text):
            units = int(units_text)
            if units < 1:
                raise ConfigError(
                    f"impossible layer size {units} in architecture {text!r}; sizes must be >= 1"
                )
            if count < 1:
                raise ConfigError(
                    f"impossible repeat count {count} in {parts[0]!r} of architecture {text!r}; "
                    "write COUNTxUNITS with COUNT >= 1, e.g. 5x32:sigmoid"
                )
            steps = [_parse_step(part, text) for part in parts[1:]]
            if not any(name in activations.ACTIVATIONS for name, _ in steps):
                steps.append(("relu", {}))
            if len(layers) + count * (1 + len(steps)) > MAX_LAYERS:
                raise ConfigError(
                    f"architecture {text!r} has more than {MAX_LAYERS:,} layers; "
                    "use fewer or smaller repeats"
                )
            for _ in range(count):
                layers.append(("dense", {"units": units}))
                layers.extend((name, dict(options)) for name, options in steps)
        else:
            if len(parts) != 1:
                raise ConfigError(
                    f"item {item!r} in architecture {text!r} should start with a number of units"
                )
            layers.append(_parse_step(parts[0], text))
    return layers


def _parse_step(part: str, text: str) -> tuple[str, dict]:
    match = _STEP.match(part)
    if not match or match.group(1) not in STEP_NAMES:
        raise ConfigError(
            f"unknown step {part!r} in architecture {text!r}; choose a number of units or one "
            f"of: {', '.join(STEP_NAMES)}"
        )
    name, number = match.groups()
    if number is None:
        return name, {}
    if name not in STEP_OPTION:
        raise ConfigError(f"{name!r} takes no option, but architecture {text!r} gives it one")
    try:
        return name, {STEP_OPTION[name]: float(number)}
    except ValueError:
        raise ConfigError(f"bad number {number!r} in architecture {text!r}") from None


def network_from_string(
    text: str,
    input_size: int,
    n_classes: int,
    init: str = "auto",
    dtype=np.float32,
    seed: int = 0,
    dropout_seed: int | None = None,
) -> Network:
    """A stack from an architecture string, with a final Dense layer of ``n_classes`` logits.

    ``init="auto"`` uses He initialization before ReLU-like activations and Glorot elsewhere.
    ``seed`` seeds the initial weights, ``dropout_seed`` the dropout masks (see
    :class:`~mlplab.engine.graph.Network`). Refuses, before allocating, a network whose
    parameters would not fit in memory.
    """
    layers = _string_layers(text, n_classes, init)
    nodes = _chain(layers)
    _refuse_if_too_big(repr(text), network_size_of_nodes(input_size, nodes), dtype)
    return Network(input_size, nodes, dtype=dtype, seed=seed, dropout_seed=dropout_seed)


def _string_layers(text: str, n_classes: int, init: str) -> list:
    """The layer objects of an architecture string plus the output layer (nothing allocated)."""
    hidden = parse_architecture(text) + [("dense", {"units": n_classes})]
    layers = []
    for index, (type_name, options) in enumerate(hidden):
        if type_name == "dense":
            options = {**options, "init": _choose_init(init, hidden[index + 1 :])}
        layers.append(make_layer(type_name, **options))
    return layers


def _chain(layers: list) -> list[Node]:
    """The nodes of :meth:`Network.stack`: named by type, each reading the one before."""
    names = default_names([layer.type_name for layer in layers])
    return [
        Node(name, layer, [previous])
        for name, layer, previous in zip(names, layers, [INPUT, *names[:-1]])
    ]


def _choose_init(init: str, following: list[tuple[str, dict]]) -> str:
    if init != "auto":
        return init
    next_activation = next(
        (name for name, _ in following if name in activations.ACTIVATIONS or name == "dense"), None
    )
    return "he-normal" if next_activation in RELU_FAMILY else "glorot-uniform"


def _spec_nodes(spec: dict, input_size: int | None) -> tuple[list[Node], int | None]:
    """The nodes of a graph spec and its input size, checked against the data's."""
    if not isinstance(spec, dict) or not isinstance(spec.get("nodes"), list):
        raise ConfigError("a graph spec needs a list of nodes under the key 'nodes'")
    spec_input = spec.get("input_size")
    if spec_input is not None and input_size is not None and spec_input != input_size:
        raise ConfigError(
            f"the spec's input_size {spec_input} does not match the data's {input_size} features"
        )
    for index, entry in enumerate(spec["nodes"]):
        if not isinstance(entry, dict) or "type" not in entry:
            raise ConfigError(
                f"node #{index + 1} of the spec needs a 'type' "
                f"(one of: {', '.join(sorted(LAYER_TYPES))})"
            )
    # Unnamed nodes are named like a stack's layers: dense1, relu1, dense2, ...
    defaults = default_names([str(entry["type"]) for entry in spec["nodes"]])
    nodes = []
    for entry, default in zip(spec["nodes"], defaults):
        options = {k: v for k, v in entry.items() if k not in ("name", "type", "inputs")}
        name = entry.get("name", default)
        inputs = entry.get("inputs", [nodes[-1].name if nodes else INPUT])
        if isinstance(inputs, str):
            inputs = [inputs]
        try:
            layer = make_layer(entry["type"], **options)
        except ConfigError as error:
            raise ConfigError(f"node {name!r}: {error}") from None
        nodes.append(Node(name, layer, list(inputs)))
    return nodes, spec_input if spec_input is not None else input_size


def _describe_spec(spec: dict) -> str:
    return f"graph spec ({len(spec['nodes'])} nodes)"


def network_from_spec(
    spec: dict,
    input_size: int | None = None,
    n_classes: int | None = None,
    dtype=np.float32,
    seed: int = 0,
    dropout_seed: int | None = None,
) -> Network:
    """A network from a graph spec (see the module docstring); checks sizes against the data.

    Unnamed nodes get the names of :func:`~mlplab.engine.graph.default_names`. Refuses, before
    allocating, a network whose parameters would not fit in memory.
    """
    nodes, input_size = _spec_nodes(spec, input_size)
    output = spec.get("output")
    size = network_size_of_nodes(input_size, nodes, output)
    _refuse_if_too_big(_describe_spec(spec), size, dtype)
    network = Network(
        input_size, nodes, output=output, dtype=dtype, seed=seed, dropout_seed=dropout_seed
    )
    out_size = network.sizes[network.output]
    if n_classes is not None and out_size != n_classes:
        raise ConfigError(
            f"the output node {network.output!r} has {out_size} units but the data "
            f"has {n_classes} classes; make the last Dense layer {n_classes} wide"
        )
    return network


def build_network(
    architecture: str | dict,
    input_size: int,
    n_classes: int,
    *,
    init: str = "auto",
    dtype=np.float32,
    seed: int = 0,
    dropout_seed: int | None = None,
) -> Network:
    """An architecture string or a graph spec, whichever ``architecture`` is.

    Parameters
    ----------
    architecture : str or dict
        An architecture string (the hidden part) or a graph spec.
    input_size, n_classes : int
        From the data.
    init : str
        Initializer of the Dense layers of a string (``"auto"``: He before ReLU-like
        activations, Glorot elsewhere); a graph spec names its own.
    dtype : numpy dtype
        ``float32`` for training, ``float64`` for gradient checks.
    seed : int
        Seeds the initial weights, per layer from ``(seed, layer name)``.
    dropout_seed : int, optional
        Seeds the dropout masks, per layer from ``(dropout_seed, layer name)``; by default
        derived from ``seed``.

    Raises
    ------
    ConfigError
        For an invalid architecture, or one whose parameters alone would not fit in the
        available memory (checked before anything is allocated).
    """
    if isinstance(architecture, dict):
        return network_from_spec(
            architecture,
            input_size,
            n_classes,
            dtype=dtype,
            seed=seed,
            dropout_seed=dropout_seed,
        )
    return network_from_string(
        architecture,
        input_size,
        n_classes,
        init=init,
        dtype=dtype,
        seed=seed,
        dropout_seed=dropout_seed,
    )


def network_size(architecture: str | dict, input_size: int, n_classes: int) -> NetworkSize:
    """Parameters and units per example of ``architecture``, without building the network.

    Validates the architecture as :func:`build_network` does (so a bad one raises the same
    :class:`ConfigError`), but allocates no arrays: fast even for impossible sizes.
    """
    if isinstance(architecture, dict):
        nodes, input_size = _spec_nodes(architecture, input_size)
        output = architecture.get("output")
        sizes, param_counts = Network.planned_sizes(input_size, nodes, output)
        out_node = output if output is not None else nodes[-1].name
        if sizes[out_node] != n_classes:
            raise ConfigError(
                f"the output node {out_node!r} has {sizes[out_node]} units but the data "
                f"has {n_classes} classes; make the last Dense layer {n_classes} wide"
            )
        return _size(sizes, param_counts)
    return network_size_of_nodes(
        input_size, _chain(_string_layers(architecture, n_classes, "auto"))
    )


def network_size_of_nodes(
    input_size: int | None, nodes: list[Node], output: str | None = None
) -> NetworkSize:
    """:class:`NetworkSize` of a list of nodes whose layers are not built yet."""
    return _size(*Network.planned_sizes(input_size, nodes, output))


def _size(sizes: dict[str, int], param_counts: dict[str, int]) -> NetworkSize:
    return NetworkSize(
        n_params=sum(param_counts.values()),
        n_units=sum(size for name, size in sizes.items() if name != INPUT),
    )


def _refuse_if_too_big(description: str, size: NetworkSize, dtype) -> None:
    """ConfigError when the parameters alone would exceed the memory available right now."""
    needed = size.n_params * np.dtype(dtype).itemsize
    available = available_memory_bytes()
    if needed > available:
        raise ConfigError(
            f"architecture {description} needs {format_bytes(needed)} for its "
            f"{size.n_params:,} parameters alone, but only {format_bytes(available)} of memory "
            "is available; use fewer or smaller layers"
        )


def read_architecture(value: str) -> str | dict:
    """An architecture string as given, or the architecture in a ``.toml`` / ``.json`` file.

    A file may hold the graph spec itself, or a ``[model]`` table with either an
    ``architecture`` string or ``nodes`` (the form ``mlplab train --config`` reads).
    """
    if not value.endswith((".toml", ".json")):
        return value
    path = Path(value)
    try:
        text = path.read_text()
        spec = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except OSError as error:
        raise ConfigError(
            f"{value}: cannot read the architecture file ({error.strerror})"
        ) from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{value}: not valid {path.suffix[1:].upper()} ({error})") from None
    if isinstance(spec, dict):
        spec = spec.get("model", spec)
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{value}: expected a table/object with 'nodes' or 'architecture', "
            f"found a {type(spec).__name__}"
        )
    if "nodes" in spec:
        return spec
    if isinstance(spec.get("architecture"), str):
        return spec["architecture"]
    raise ConfigError(f"{value}: found neither 'nodes' nor an 'architecture' string in it")


__all__ = [
    "Dense",
    "NetworkSize",
    "build_network",
    "network_size",
    "network_from_spec",
    "network_from_string",
    "parse_architecture",
    "read_architecture",
]
