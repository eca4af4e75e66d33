"""What a report says about each configuration of a results store, computed once for every table
and plot: its network shape, the settings that vary across the store, and its metrics over seeds.

Everything here reads :class:`~mlplab.experiments.store.Configuration` objects only (compute,
then present): no dataset, no run folder, no training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mlplab.engine.architecture import parse_architecture
from mlplab.errors import ConfigError
from mlplab.experiments.records import NON_RESULT_KEYS, SEED_KEYS, layer_order
from mlplab.experiments.stats import ACCURACY_BOUNDS, Summary, seed_summary

# The metrics a report can rank by (both are accuracies measured after training).
RANK_METRICS = ("test_accuracy", "val_accuracy")
METRIC_NAMES = {"test_accuracy": "test accuracy", "val_accuracy": "validation accuracy"}


@dataclass
class Shape:
    """The hidden part of a stack, read from its architecture string.

    ``widths`` are the hidden Dense layers' units ("depth = number of hidden layers");
    ``layer_steps`` what follows each Dense layer (``"sigmoid"``, ``"batchnorm:relu"``), so that
    ``3x32:sigmoid`` and ``3x32:relu`` are told apart; ``uniform`` when every hidden layer has the
    same width and the same steps (the shape a depth x width sweep varies).
    """

    architecture: str
    widths: list[int]
    layer_steps: list[str]
    prefix: str = ""  # steps before the first Dense layer, e.g. an input dropout

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def units(self) -> int:
        return sum(self.widths)

    @property
    def uniform(self) -> bool:
        return self.depth >= 1 and len(set(self.widths)) == 1 and len(set(self.layer_steps)) == 1

    @property
    def steps(self) -> str:
        """What every layer does besides its Dense part, e.g. ``"sigmoid"`` (``"mixed"`` if not
        the same in every layer)."""
        kinds = set(self.layer_steps)
        text = self.layer_steps[0] if len(kinds) == 1 else ("mixed" if kinds else "")
        return f"{self.prefix} {text}".strip() if self.prefix else text


def read_shape(config: dict) -> Shape | None:
    """The :class:`Shape` of a config's ``model.architecture``, or None for a graph spec."""
    model = config.get("model", {})
    architecture = model.get("architecture")
    if model.get("nodes") or not isinstance(architecture, str):
        return None
    try:
        layers = parse_architecture(architecture)
    except ConfigError:
        return None
    widths: list[int] = []
    steps: list[list[str]] = []
    prefix: list[str] = []
    for name, options in layers:
        text = name + "".join(f"({value:g})" for value in options.values())
        if name == "dense":
            widths.append(int(options["units"]))
            steps.append([])
        elif steps:
            steps[-1].append(text)
        else:
            prefix.append(text)
    return Shape(architecture, widths, [":".join(s) for s in steps], ":".join(prefix))


def _flatten(config: dict) -> dict[str, object]:
    """``{"table.key": value}`` of the settings that can change a result (no seeds, no paths)."""
    flat = {}
    for table, values in config.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if (table, key) in NON_RESULT_KEYS | SEED_KEYS:
                continue
            flat[f"{table}.{key}"] = value
    return flat


def varied_settings(configs: list[dict]) -> list[str]:
    """The dotted config keys whose values differ between ``configs`` (architecture excluded:
    depth, widths and units stand for it), in the order they first appear."""
    flats = [_flatten(config) for config in configs]
    keys: list[str] = []
    for flat in flats:
        keys.extend(key for key in flat if key not in keys)
    missing = object()
    return [
        key
        for key in keys
        if key != "model.architecture" and len({repr(flat.get(key, missing)) for flat in flats}) > 1
    ]


def setting_text(key: str, value) -> str:
    """``optimizer.learning_rate``, 0.01 -> ``learning_rate=0.01``."""
    name = key.split(".", 1)[-1]
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{name}={value}"


@dataclass
class ConfigurationSummary:
    """One configuration of the store as the report presents it."""

    name: str  # unique display name: the label, with a hash prefix when two labels collide
    configuration: object  # mlplab.experiments.store.Configuration
    shape: Shape | None
    settings: dict[str, object]  # the varied settings' values (see varied_settings)
    values: dict[str, dict] = field(default_factory=dict)  # metric -> {seed: value}

    @property
    def config_hash(self) -> str:
        return self.configuration.config_hash

    @property
    def seeds(self) -> list:
        return self.configuration.seeds

    @property
    def records(self) -> list:
        return self.configuration.records

    @property
    def others(self) -> str:
        """The varied settings as text, e.g. ``"learning_rate=0.01"`` ("" when none vary)."""
        return " ".join(setting_text(key, value) for key, value in self.settings.items())

    def summary(self, metric: str) -> Summary | None:
        """Mean, sd and t interval of ``metric`` over seeds, or None when no trial has it."""
        values = [v for v in self.values.get(metric, {}).values() if _finite(v)]
        if not values:
            return None
        is_accuracy = metric.endswith("accuracy") or metric in ("test_first_half", "test_last_half")
        return seed_summary(values, bounds=ACCURACY_BOUNDS if is_accuracy else None)

    def mean(self, metric: str) -> float | None:
        summary = self.summary(metric)
        return None if summary is None else summary.mean

    @property
    def has_layers(self) -> bool:
        """Whether some trial recorded per-layer statistics (``[training] layer_stats``)."""
        return any(record.metrics.get("layers") for record in self.records)

    def layer_values(self, statistic: str, kinds) -> tuple[list[str], np.ndarray]:
        """One per-layer statistic of every seed, for the nodes whose layer type is in ``kinds``.

        Returns the nodes in network order (see :func:`layer_order`) and a (seeds, nodes) array,
        one row per trial that recorded layers, NaN where a trial lacks the value.
        """
        measured = [r.metrics for r in self.records if r.metrics.get("layers")]
        if not measured:
            return [], np.empty((0, 0))
        nodes = [node for node, kind in layer_order(measured[0]) if kind in kinds]
        values = np.full((len(measured), len(nodes)), np.nan)
        for row, metrics in zip(values, measured):
            for column, node in enumerate(nodes):
                value = metrics["layers"].get(node, {}).get(statistic)
                if _finite(value):
                    row[column] = value
        return nodes, values


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _per_seed(configuration, name: str) -> dict:
    """``{seed: value}`` of a metric, a derived gap, or a timing (None-valued seeds left out)."""
    out = {}
    for seed, record in zip(configuration.seeds, configuration.records):
        metrics, timings = record.metrics, record.timings
        if name == "train_test_gap":
            value = _difference(metrics.get("train_accuracy"), metrics.get("test_accuracy"))
        elif name == "half_gap":
            value = _difference(metrics.get("test_first_half"), metrics.get("test_last_half"))
        elif name in ("train_seconds", "total_seconds"):
            value = timings.get(name)
        else:
            value = metrics.get(name)
        if _finite(value):
            out[seed] = float(value)
    return out


def _difference(a, b):
    return a - b if _finite(a) and _finite(b) else None


# Per-seed quantities every summary carries: metrics, two derived gaps, the time.
QUANTITIES = (
    "test_accuracy",
    "val_accuracy",
    "test_first_half",
    "test_last_half",
    "half_gap",
    "train_accuracy",
    "train_test_gap",
    "test_loss",
    "epochs_run",
    "train_seconds",
    "total_seconds",
)


def summarize(configurations: list, metric: str = "test_accuracy") -> list[ConfigurationSummary]:
    """Summaries of ``configurations``, best mean ``metric`` first.

    Configurations without any value of ``metric`` (say, no validation set when ranking by
    ``val_accuracy``) come last, in store order; ties keep store order.
    """
    settings_keys = varied_settings([c.config for c in configurations])
    counts: dict[str, int] = {}
    for configuration in configurations:
        label = configuration.label or _fallback_label(configuration.config)
        counts[label] = counts.get(label, 0) + 1
    summaries = []
    for configuration in configurations:
        label = configuration.label or _fallback_label(configuration.config)
        name = f"{label} [{configuration.config_hash[:6]}]" if counts[label] > 1 else label
        flat = _flatten(configuration.config)
        summary = ConfigurationSummary(
            name=name,
            configuration=configuration,
            shape=read_shape(configuration.config),
            settings={key: flat.get(key) for key in settings_keys},
        )
        summary.values = {q: _per_seed(configuration, q) for q in QUANTITIES}
        summaries.append(summary)

    def rank(item):
        position, summary = item
        mean = summary.mean(metric)
        return (mean is None, -(mean if mean is not None else 0.0), position)

    return [summary for _, summary in sorted(enumerate(summaries), key=rank)]


def _fallback_label(config: dict) -> str:
    architecture = config.get("model", {}).get("architecture")
    if isinstance(architecture, str):
        return architecture or '""'
    return "graph network"


def seed_counts(summaries: list[ConfigurationSummary]) -> tuple[int, int]:
    """Fewest and most seeds of any configuration."""
    counts = [len(s.seeds) for s in summaries] or [0]
    return min(counts), max(counts)


def spread(summary: Summary | None) -> float:
    """The sd of a summary for an error bar (0 for one seed: the bar is simply not drawn)."""
    return 0.0 if summary is None or summary.std is None else summary.std
