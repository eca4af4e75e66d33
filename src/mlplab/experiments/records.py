"""What one finished trial leaves behind: the unit the results store keeps and the reports read.

A trial is one training run of one resolved configuration with one master seed. Two hashes
identify it:

- ``config_hash``: the configuration without its seeds (and without settings that cannot change
  the result, such as the thread count or the data folder), so that the seeds of one
  configuration group together for statistics;
- ``trial_key``: ``config_hash`` plus the seeds, so that re-running a sweep skips finished trials.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

# Config keys that never change what a trial computes, left out of both hashes.
NON_RESULT_KEYS = {("data", "data_dir"), ("training", "threads")}
# Config keys that are seeds: left out of config_hash, kept in trial_key.
SEED_KEYS = {
    ("training", "seed"),
    ("training", "split_seed"),
    ("training", "init_seed"),
    ("training", "order_seed"),
    ("training", "dropout_seed"),
    ("training", "augment_seed"),
}
# Settings added after results stores existed, with the value that means "not used". At that
# value they are left out of both hashes, so a trial stored before the setting existed keeps its
# identity (a rerun sweep or reproduction recognises it instead of training it again); at any
# other value they count as usual. A setting added later belongs here, never a changed default.
ADDED_LATER = {
    ("model", "label_smoothing"): 0.0,
    ("training", "augment_seed"): -1,
    ("augmentation", "shift"): 0.0,
    ("augmentation", "rotation"): 0.0,
    ("augmentation", "scale"): 0.0,
    ("augmentation", "shear"): 0.0,
    ("augmentation", "elastic_alpha"): 0.0,
    ("augmentation", "elastic_sigma"): 4.0,
    ("augmentation", "hflip"): False,
    ("regularization", "adversarial"): 0.0,
    ("regularization", "adversarial_weight"): 0.5,
}


def _canonical(config: dict, drop: set[tuple[str, str]]) -> str:
    kept = {}
    for table, values in config.items():
        kept_values = {
            key: value
            for key, value in values.items()
            if (table, key) not in drop
            and not ((table, key) in ADDED_LATER and value == ADDED_LATER[table, key])
        }
        if kept_values or not any(t == table for t, _ in ADDED_LATER):
            kept[table] = kept_values  # a table added later, all at "not used", is left out
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


def config_hash(config: dict) -> str:
    """Identity of a configuration across seeds (16 hex digits of a sha256)."""
    text = _canonical(config, NON_RESULT_KEYS | SEED_KEYS)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trial_key(config: dict) -> str:
    """Identity of one trial: the configuration and its seeds."""
    text = _canonical(config, NON_RESULT_KEYS)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class TrialRecord:
    """One finished (or failed) trial, as the store keeps it.

    ``config`` is ``RunConfig.to_dict()`` of the fully resolved run config (plain TOML-able
    values). ``metrics`` holds at least ``test_accuracy``, ``test_first_half``,
    ``test_last_half``, ``test_loss``, and, when the run had validation data, ``val_accuracy``
    and ``val_loss`` of the weights kept; also ``train_loss``/``train_accuracy`` of that epoch.
    ``history`` is the per-epoch columns (``History.columns``). ``predictions`` is the predicted
    class of every test image, one byte each (``uint8``), in test-set order, for paired tests.
    """

    config: dict
    sweep: str = ""  # the sweep's name, or "" for a single `mlplab train --store` run
    label: str = ""  # a short human name of the configuration, e.g. "950:relu,50:sigmoid lr=0.001"
    status: str = "done"  # "done" or "failed"
    error: str = ""  # the one-line error of a failed trial
    seeds: dict = field(default_factory=dict)  # {"seed": 0, "split": .., "init": .., ...}
    metrics: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)  # {"train_seconds": .., "total_seconds": ..}
    machine: dict = field(default_factory=dict)  # {"hostname": .., "platform": .., "cpus": ..}
    versions: dict = field(default_factory=dict)  # {"mlplab": .., "numpy": .., "python": ..}
    predictions: np.ndarray | None = None  # uint8, one per test image
    labels_sha256: str = ""  # of the test labels the predictions refer to (paired tests check it)
    # The test labels themselves (uint8), optional: the store keeps one copy per labels_sha256 so
    # that McNemar's test can score stored predictions without the dataset at hand.
    labels: np.ndarray | None = None

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def trial_key(self) -> str:
        return trial_key(self.config)


# -- per-layer statistics -------------------------------------------------------------------------


def node_number(name: str) -> tuple[str, int]:
    """``"relu12"`` -> ``("relu", 12)``: a generated node name's layer type and number."""
    stem = name.rstrip("0123456789")
    return stem, int(name[len(stem) :] or 0)


def layer_order(metrics: dict) -> list[tuple[str, str]]:
    """``(node, layer type)`` of a trial's ``metrics["layers"]``, in the network's order.

    The store keeps JSON keys sorted as text (``relu10`` before ``relu2``), so the order comes
    from ``metrics["layer_order"]`` (pairs of node and type, recorded since 2026-11-23); for older
    trials it is each generated name's type and number (``relu2`` before ``relu10``), exact for
    networks of one activation type.
    """
    recorded = metrics.get("layer_order")
    if recorded:
        return [(str(node), str(kind)) for node, kind in recorded]
    nodes = sorted(metrics.get("layers") or {}, key=node_number)
    return [(node, node_number(node)[0]) for node in nodes]


def mean_layers(records) -> tuple[dict, dict] | tuple[None, None]:
    """Per-layer statistics averaged over seeds, in the network's order (:func:`layer_order`),
    and each node's layer type; (None, None) when the trials did not measure them."""
    measured = [r.metrics for r in records if r.metrics.get("layers")]
    if not measured:
        return None, None
    pairs = layer_order(measured[0])
    per_seed = [metrics["layers"] for metrics in measured]
    mean = {}
    for layer, _ in pairs:
        if layer in per_seed[0]:
            mean[layer] = {
                key: float(np.mean([seed[layer][key] for seed in per_seed if layer in seed]))
                for key in per_seed[0][layer]
            }
    return mean, {node: kind for node, kind in pairs}
