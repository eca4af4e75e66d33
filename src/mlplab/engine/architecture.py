"""Declaring networks: the compact architecture string for stacks, and graph specs.

The architecture string
-----------------------
A comma-separated list of items describing the *hidden* part of a stack; the input size and the
output layer (one unit per class, producing logits) come from the data::

    950:relu,50:sigmoid          # the forum's 784-950-50-10 network
    100:sigmoid                  # the book's 784-100-10 network
    32:sigmoid,32:sigmoid        # depth 2 ("depth" = number of hidden layers)
    dropout(0.2),800:relu:dropout(0.5),800:relu:dropout(0.5)
    256:layernorm:relu,256:batchnorm:tanh
    100:shifted-relu(-1),100:leaky-relu(0.1),100:elu
    ""                            # no hidden layer: softmax regression

Grammar::

    architecture := "" | item ("," item)*
    item         := UNITS (":" step)*    a Dense layer of UNITS units, then its steps in order
                  | step                 a step on its own, e.g. dropout on the input
    step         := NAME [ "(" NUMBER ")" ]
    NAME         := linear | sigmoid | tanh | relu | leaky-relu | shifted-relu | elu | softmax
                  | dropout | layernorm | batchnorm

The number in parentheses is the step's one option: the slope of leaky-relu, the floor of
shifted-relu (default -1), alpha of elu, the rate of dropout, the eps of layernorm, the momentum
of batchnorm. An item with units but no activation gets ``relu``; write ``linear`` for none.

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
from pathlib import Path

import numpy as np

# Importing these modules registers their layer types.
from mlplab.engine import (
    activations,
    normalization,  # noqa: F401
)
from mlplab.engine.graph import INPUT, Network, Node
from mlplab.engine.layers import LAYER_TYPES, Dense, make_layer
from mlplab.errors import ConfigError

STEP_OPTION = {  # the option a number in parentheses sets, per step name
    "leaky-relu": "slope",
    "shifted-relu": "floor",
    "elu": "alpha",
    "dropout": "rate",
    "layernorm": "eps",
    "batchnorm": "momentum",
}
STEP_NAMES = [*activations.ACTIVATIONS, "dropout", "layernorm", "batchnorm"]
RELU_FAMILY = {"relu", "leaky-relu", "shifted-relu", "elu"}
_STEP = re.compile(r"^([a-z-]+)(?:\(\s*([-+0-9.eE]+)\s*\))?$")


def parse_architecture(text: str) -> list[tuple[str, dict]]:
    """Turn an architecture string into a list of ``(layer type, options)`` for the hidden part."""
    layers: list[tuple[str, dict]] = []
    text = text.strip()
    if text in ("", "none"):
        return layers
    for item in text.split(","):
        parts = [part.strip() for part in item.strip().split(":")]
        if re.fullmatch(r"-?[0-9]+", parts[0]):
            units = int(parts[0])
            if units < 1:
                raise ConfigError(
                    f"impossible layer size {units} in architecture {text!r}; sizes must be >= 1"
                )
            steps = [_parse_step(part, text) for part in parts[1:]]
            if not any(name in activations.ACTIVATIONS for name, _ in steps):
                steps.append(("relu", {}))
            layers.append(("dense", {"units": units}))
            layers.extend(steps)
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
    text: str, input_size: int, n_classes: int, init: str = "auto", dtype=np.float32, seed: int = 0
) -> Network:
    """A stack from an architecture string, with a final Dense layer of ``n_classes`` logits.

    ``init="auto"`` uses He initialization before ReLU-like activations and Glorot elsewhere.
    """
    hidden = parse_architecture(text) + [("dense", {"units": n_classes})]
    layers = []
    for index, (type_name, options) in enumerate(hidden):
        if type_name == "dense":
            options = {**options, "init": _choose_init(init, hidden[index + 1 :])}
        layers.append(make_layer(type_name, **options))
    return Network.stack(input_size, layers, dtype=dtype, seed=seed)


def _choose_init(init: str, following: list[tuple[str, dict]]) -> str:
    if init != "auto":
        return init
    next_activation = next(
        (name for name, _ in following if name in activations.ACTIVATIONS or name == "dense"), None
    )
    return "he-normal" if next_activation in RELU_FAMILY else "glorot-uniform"


def network_from_spec(
    spec: dict,
    input_size: int | None = None,
    n_classes: int | None = None,
    dtype=np.float32,
    seed: int = 0,
) -> Network:
    """A network from a graph spec (see the module docstring); checks sizes against the data."""
    if not isinstance(spec, dict) or not isinstance(spec.get("nodes"), list):
        raise ConfigError("a graph spec needs a list of nodes under the key 'nodes'")
    spec_input = spec.get("input_size")
    if spec_input is not None and input_size is not None and spec_input != input_size:
        raise ConfigError(
            f"the spec's input_size {spec_input} does not match the data's {input_size} features"
        )
    nodes = []
    for index, entry in enumerate(spec["nodes"]):
        if not isinstance(entry, dict) or "type" not in entry:
            raise ConfigError(
                f"node #{index + 1} of the spec needs a 'type' "
                f"(one of: {', '.join(sorted(LAYER_TYPES))})"
            )
        options = {k: v for k, v in entry.items() if k not in ("name", "type", "inputs")}
        name = entry.get("name", f"{entry['type']}{index + 1}")
        inputs = entry.get("inputs", [nodes[-1].name if nodes else INPUT])
        if isinstance(inputs, str):
            inputs = [inputs]
        try:
            layer = make_layer(entry["type"], **options)
        except ConfigError as error:
            raise ConfigError(f"node {name!r}: {error}") from None
        nodes.append(Node(name, layer, list(inputs)))
    network = Network(
        spec_input or input_size, nodes, output=spec.get("output"), dtype=dtype, seed=seed
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
    init: str = "auto",
    dtype=np.float32,
    seed: int = 0,
) -> Network:
    """An architecture string or a graph spec, whichever ``architecture`` is."""
    if isinstance(architecture, dict):
        return network_from_spec(architecture, input_size, n_classes, dtype=dtype, seed=seed)
    return network_from_string(
        architecture, input_size, n_classes, init=init, dtype=dtype, seed=seed
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
    "build_network",
    "network_from_spec",
    "network_from_string",
    "parse_architecture",
    "read_architecture",
]
