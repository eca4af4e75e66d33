"""Architecture generators for sweeps: depth x width grids, node budgets, activation mixes."""

from __future__ import annotations

import math

import pytest

from mlplab.engine.architecture import parse_architecture
from mlplab.errors import ConfigError
from mlplab.experiments.generators import (
    activation_mix,
    budget_splits,
    depth_width,
    generate,
    node_budget,
)


def widths_of(architecture: str) -> list[int]:
    return [int(item.split(":")[0]) for item in architecture.split(",")]


def test_budget_of_1000_over_2_layers_in_steps_of_50_has_19_splits_50_to_950():
    splits = budget_splits(1000, 2, 50)
    assert splits == [(w, 1000 - w) for w in range(50, 1000, 50)]
    assert len(splits) == 19


def test_budget_split_counts_are_binomial_and_every_split_spends_the_budget_exactly():
    for layers in (1, 2, 3, 4):
        splits = budget_splits(1000, layers, 50)
        assert len(splits) == math.comb(19, layers - 1)
        assert len(set(splits)) == len(splits)
        for split in splits:
            assert sum(split) == 1000 and all(w > 0 and w % 50 == 0 for w in split)


def test_node_budget_up_to_3_layers_counts_191_networks_and_44_non_increasing():
    # 1 + C(19, 1) + C(19, 2) = 191; partitions of 20 steps into at most 3 parts: 1 + 10 + 33.
    assert len(node_budget(1000, 3, 50)) == 191
    shrinking = node_budget(1000, 3, 50, non_increasing=True)
    assert len(shrinking) == 44
    for architecture in shrinking:
        widths = widths_of(architecture)
        assert widths == sorted(widths, reverse=True) and sum(widths) == 1000


def test_non_increasing_two_layer_splits_keep_the_first_layer_at_least_as_wide():
    splits = budget_splits(1000, 2, 50, non_increasing=True)
    assert splits == [(w, 1000 - w) for w in range(500, 1000, 50)]


def test_node_budget_last_activation_gives_the_forum_network():
    architectures = node_budget(1000, 2, 50, last_activation="sigmoid", min_layers=2)
    assert "950:relu,50:sigmoid" in architectures
    assert all(a.endswith(":sigmoid") and a.count(":relu") == 1 for a in architectures)


def test_node_budget_refuses_a_total_that_the_step_does_not_divide():
    with pytest.raises(ConfigError, match="not a multiple of step 300"):
        budget_splits(1000, 2, 300)


def test_node_budget_refuses_min_layers_above_max_layers():
    with pytest.raises(ConfigError, match="min_layers <= max_layers"):
        node_budget(1000, 2, 50, min_layers=3)


def test_depth_width_repeats_one_layer_k_times_for_every_width():
    architectures = depth_width(range(1, 6), [32, 2048], "sigmoid")
    assert len(architectures) == 10
    assert architectures[0] == "32:sigmoid"
    assert architectures[4] == ",".join(["32:sigmoid"] * 5)
    assert architectures[9] == ",".join(["2048:sigmoid"] * 5)


def test_depth_width_options_put_normalization_before_and_dropout_after_the_activation():
    (architecture,) = depth_width([2], [64], "relu", normalization="layernorm", dropout=0.5)
    assert architecture == "64:layernorm:relu:dropout(0.5),64:layernorm:relu:dropout(0.5)"
    assert len(parse_architecture(architecture)) == 8


def test_activation_mix_all_gives_every_assignment_once():
    architectures = activation_mix([100, 100, 100], ["relu", "sigmoid"])
    assert len(architectures) == 8 == len(set(architectures))


def test_activation_mix_switch_puts_relu_layers_before_sigmoid_layers():
    assert activation_mix([100, 100, 10], ["relu", "sigmoid"], mode="switch") == [
        "100:relu,100:relu,10:relu",
        "100:relu,100:relu,10:sigmoid",
        "100:relu,100:sigmoid,10:sigmoid",
        "100:sigmoid,100:sigmoid,10:sigmoid",
    ]


def test_every_generated_architecture_parses():
    for architecture in (
        node_budget(300, 3, 100, "tanh", last_activation="sigmoid")
        + depth_width([1, 3], [16], "shifted-relu(-1)")
        + activation_mix([8, 8], ["elu", "leaky-relu(0.1)"])
    ):
        parse_architecture(architecture)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("grid-of-things", {}, "unknown generator 'grid-of-things'"),
        ("node-budget", {"total": 1000, "step": 50}, "missing option.*max_layers"),
        ("depth-width", {"depths": [1], "widths": [32], "width": 3}, "unknown option.*width"),
        ("depth-width", {"depths": [0], "widths": [32]}, "depths must be a list of positive"),
        ("depth-width", {"depths": [1], "widths": ["32"]}, "widths must be a list of positive"),
        ("activation-mix", {"widths": [8], "activations": []}, "activations must be a list"),
        ("activation-mix", {"widths": [8], "activations": ["relu"], "mode": "x"}, "mode must"),
        ("node-budget", {"total": 100, "max_layers": 2, "step": 0.5}, "step must be a positive"),
        ("depth-width", {"depths": [1], "widths": [8], "dropout": 1.5}, "dropout must be a rate"),
    ],
)
def test_generate_refuses_bad_options_with_a_config_error(name, options, message):
    with pytest.raises(ConfigError, match=message):
        generate(name, options)
