"""Generators: named sources of architecture strings for sweeps, pure functions.

No sweep tool has these, and they are the questions our users ask:

- ``depth-width``: every depth with every width, the same layer repeated
  (``[32]*k`` for k = 1..5; widths 32..2048);
- ``node-budget``: every way to spend N hidden units over 1..L layers in steps of S, optionally
  only non-increasing widths (does 1000 units do better as one layer, 950+50, or 500+300+200?);
- ``activation-mix``: per-layer activations on fixed widths, every combination or "switch"
  patterns (ReLU layers, then sigmoid layers from some depth on).

Each returns a list of architecture strings (:mod:`mlplab.engine.architecture`), in a stable
order, without duplicates. A layer is written ``WIDTH[:NORMALIZATION]:ACTIVATION[:dropout(P)]``.
In a sweep file a generator is a parameter source::

    [parameters."model.architecture"]
    generator = "node-budget"
    total = 1000
    max_layers = 3
    step = 50
    non_increasing = true
    activation = "relu"
"""

from __future__ import annotations

import itertools

from mlplab.errors import ConfigError


def layer(width: int, activation: str, normalization: str = "", dropout: float = 0.0) -> str:
    """One hidden layer as an architecture-string item, e.g. ``256:layernorm:relu:dropout(0.5)``."""
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be a rate in [0, 1), got {dropout!r}")
    parts = [str(width)] + ([normalization] if normalization else []) + [activation]
    if dropout:
        parts.append(f"dropout({dropout:g})")
    return ":".join(parts)


def stack(widths, activations, normalization: str = "", dropout: float = 0.0) -> str:
    """The architecture string of hidden layers ``widths`` with per-layer ``activations``."""
    return ",".join(layer(w, a, normalization, dropout) for w, a in zip(widths, activations))


def depth_width(
    depths,
    widths,
    activation: str = "relu",
    *,
    normalization: str = "",
    dropout: float = 0.0,
) -> list[str]:
    """Every depth with every width: ``[width] * depth``, width-major then depth.

    ``depth_width([1, 2], [32, 64], "sigmoid")`` gives ``32:sigmoid``, ``32:sigmoid,32:sigmoid``,
    ``64:sigmoid``, ``64:sigmoid,64:sigmoid``.
    """
    depths, widths = _positive_ints("depths", depths), _positive_ints("widths", widths)
    return _unique(
        stack([w] * d, [activation] * d, normalization, dropout) for w in widths for d in depths
    )


def budget_splits(
    total: int, layers: int, step: int, *, non_increasing: bool = False
) -> list[tuple[int, ...]]:
    """Every way to write ``total`` as ``layers`` positive multiples of ``step``, in order.

    A split is a tuple of widths, first hidden layer first; ``(950, 50)`` and ``(50, 950)`` are
    different networks. With ``non_increasing`` only splits whose widths never grow are kept.
    There are C(total/step - 1, layers - 1) splits (19 for 1000 over 2 layers in steps of 50).
    """
    for name, value in (("total", total), ("layers", layers), ("step", step)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"node budget: {name} must be a positive integer, got {value!r}")
    if total % step:
        raise ConfigError(
            f"node budget: total {total} is not a multiple of step {step}; "
            "choose a step that divides the total"
        )
    units = total // step  # the budget in steps
    splits = []
    # A composition of `units` into `layers` parts is a choice of layers-1 cut points among the
    # units-1 gaps; combinations() yields them in lexicographic order.
    for cuts in itertools.combinations(range(1, units), layers - 1):
        bounds = (0, *cuts, units)
        widths = tuple(step * (b - a) for a, b in itertools.pairwise(bounds))
        if non_increasing and any(a < b for a, b in itertools.pairwise(widths)):
            continue
        splits.append(widths)
    return splits


def node_budget(
    total: int,
    max_layers: int,
    step: int,
    activation: str = "relu",
    *,
    min_layers: int = 1,
    non_increasing: bool = False,
    last_activation: str = "",
    normalization: str = "",
    dropout: float = 0.0,
) -> list[str]:
    """Every way to spend ``total`` hidden units over ``min_layers..max_layers`` layers.

    Widths are multiples of ``step``. Every layer gets ``activation``, except the last hidden
    layer when ``last_activation`` is given (the forum's ``950:relu,50:sigmoid`` is the split
    (950, 50) with ``last_activation = "sigmoid"``).
    """
    if not isinstance(min_layers, int) or not isinstance(max_layers, int):
        raise ConfigError("node budget: min_layers and max_layers must be integers")
    if not 1 <= min_layers <= max_layers:
        raise ConfigError(
            f"node budget: need 1 <= min_layers <= max_layers, got {min_layers} and {max_layers}"
        )
    result = []
    for layers in range(min_layers, max_layers + 1):
        for widths in budget_splits(total, layers, step, non_increasing=non_increasing):
            activations = [activation] * layers
            if last_activation:
                activations[-1] = last_activation
            result.append(stack(widths, activations, normalization, dropout))
    return _unique(result)


def activation_mix(
    widths,
    activations,
    *,
    mode: str = "all",
    normalization: str = "",
    dropout: float = 0.0,
) -> list[str]:
    """Per-layer activations on fixed hidden ``widths``.

    ``mode = "all"``: every assignment of ``activations`` to the layers (len(activations) ** depth
    networks). ``mode = "switch"``: for two activations (a, b), the first j layers use a and the
    rest b, for j = depth, depth-1, .., 0 (``[100]*3`` with relu then sigmoid gives
    ``relu,relu,relu``, ``relu,relu,sigmoid``, ``relu,sigmoid,sigmoid``,
    ``sigmoid,sigmoid,sigmoid``).
    """
    widths = _positive_ints("widths", widths)
    if isinstance(activations, str):
        activations = [activations]
    if not activations or not all(isinstance(a, str) and a for a in activations):
        raise ConfigError(
            f"activation mix: activations must be a list of names, got {activations!r}"
        )
    depth = len(widths)
    if mode == "all":
        choices = itertools.product(activations, repeat=depth)
    elif mode == "switch":
        if len(activations) != 2:
            raise ConfigError(
                f"activation mix: mode 'switch' takes two activations (first, then), "
                f"got {activations!r}"
            )
        first, then = activations
        choices = ([first] * j + [then] * (depth - j) for j in range(depth, -1, -1))
    else:
        raise ConfigError(f"activation mix: mode must be 'all' or 'switch', not {mode!r}")
    return _unique(stack(widths, chosen, normalization, dropout) for chosen in choices)


def _positive_ints(name: str, values) -> list[int]:
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    if (
        not isinstance(values, list | tuple | range)
        or not values
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    ):
        raise ConfigError(f"{name} must be a list of positive integers, got {values!r}")
    return list(values)


def _unique(strings) -> list[str]:
    return list(dict.fromkeys(strings))


# Generator name -> (function, the options a sweep file may give it, the required ones).
GENERATORS = {
    "depth-width": (
        depth_width,
        {"depths", "widths", "activation", "normalization", "dropout"},
        {"depths", "widths"},
    ),
    "node-budget": (
        node_budget,
        {
            "total",
            "max_layers",
            "step",
            "activation",
            "min_layers",
            "non_increasing",
            "last_activation",
            "normalization",
            "dropout",
        },
        {"total", "max_layers", "step"},
    ),
    "activation-mix": (
        activation_mix,
        {"widths", "activations", "mode", "normalization", "dropout"},
        {"widths", "activations"},
    ),
}


def generate(name: str, options: dict) -> list[str]:
    """Run the generator ``name`` with the options of a sweep file's parameter table."""
    if name not in GENERATORS:
        raise ConfigError(f"unknown generator {name!r}; known: {', '.join(GENERATORS)}")
    function, allowed, required = GENERATORS[name]
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(
            f"generator {name!r}: unknown option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    missing = required - set(options)
    if missing:
        raise ConfigError(f"generator {name!r}: missing option(s) {', '.join(sorted(missing))}")
    try:
        return function(**options)
    except TypeError as error:  # a wrong type the function's arithmetic tripped on
        raise ConfigError(f"generator {name!r}: {error}") from None


__all__ = [
    "GENERATORS",
    "activation_mix",
    "budget_splits",
    "depth_width",
    "generate",
    "layer",
    "node_budget",
    "stack",
]
