"""Architecture strings, graph specs and architecture files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from mlplab.engine import architecture
from mlplab.engine.architecture import (
    MAX_LAYERS,
    NetworkSize,
    build_network,
    network_from_spec,
    network_from_string,
    network_size,
    parse_architecture,
    read_architecture,
)
from mlplab.engine.gradcheck import SKIP_AND_CONCAT
from mlplab.engine.graph import Network
from mlplab.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def layer_types(network):
    return [network.nodes[name].layer.type_name for name in network.order]


# ----------------------------------------------------------------- parsing
def test_parses_the_forums_950_relu_50_sigmoid_network():
    assert parse_architecture("950:relu,50:sigmoid") == [
        ("dense", {"units": 950}),
        ("relu", {}),
        ("dense", {"units": 50}),
        ("sigmoid", {}),
    ]


def test_parses_dropout_on_the_input_and_after_an_activation():
    assert parse_architecture("dropout(0.2),800:relu:dropout(0.5)") == [
        ("dropout", {"rate": 0.2}),
        ("dense", {"units": 800}),
        ("relu", {}),
        ("dropout", {"rate": 0.5}),
    ]


def test_parses_steps_in_the_order_written():
    assert parse_architecture("100:layernorm:relu") == [
        ("dense", {"units": 100}),
        ("layernorm", {}),
        ("relu", {}),
    ]
    assert parse_architecture("16:batchnorm(0.8):tanh") == [
        ("dense", {"units": 16}),
        ("batchnorm", {"momentum": 0.8}),
        ("tanh", {}),
    ]


def test_shifted_relu_floor_defaults_to_minus_one_and_can_be_set():
    network = network_from_string("10:shifted-relu,10:shifted-relu(-2.5)", 4, 2)
    floors = [
        network.nodes[n].layer.floor
        for n in network.order
        if network.nodes[n].layer.type_name == "shifted-relu"
    ]
    assert floors == [-1.0, -2.5]
    assert parse_architecture("shifted-relu(-1)") == [("shifted-relu", {"floor": -1.0})]


def test_option_numbers_set_the_steps_option():
    assert parse_architecture("8:leaky-relu(0.1),8:elu(0.5),8:layernorm(1e-3)") == [
        ("dense", {"units": 8}),
        ("leaky-relu", {"slope": 0.1}),
        ("dense", {"units": 8}),
        ("elu", {"alpha": 0.5}),
        ("dense", {"units": 8}),
        ("layernorm", {"eps": 1e-3}),
        ("relu", {}),
    ]


def test_units_without_an_activation_get_relu_and_linear_means_none():
    assert parse_architecture("100") == [("dense", {"units": 100}), ("relu", {})]
    assert parse_architecture("100:linear") == [("dense", {"units": 100}), ("linear", {})]
    network = network_from_string("100:linear", 4, 2)
    assert layer_types(network) == ["dense", "linear", "dense"]


def test_empty_string_means_no_hidden_layer():
    for text in ("", "  ", "none"):
        assert parse_architecture(text) == []
    network = network_from_string("", 784, 10)
    assert layer_types(network) == ["dense"]
    assert network.n_params == 7850


def test_repeat_syntax_writes_count_copies_of_a_layer_and_its_steps():
    assert parse_architecture("5x32:sigmoid") == parse_architecture(",".join(["32:sigmoid"] * 5))
    assert parse_architecture("3x64:batchnorm:relu,10:tanh") == parse_architecture(
        "64:batchnorm:relu,64:batchnorm:relu,64:batchnorm:relu,10:tanh"
    )
    assert parse_architecture("dropout(0.2),2x8:relu:dropout(0.5)") == parse_architecture(
        "dropout(0.2),8:relu:dropout(0.5),8:relu:dropout(0.5)"
    )
    assert parse_architecture("1x100") == parse_architecture("100")
    assert parse_architecture(" 2 x 16 : tanh ") == parse_architecture("16:tanh,16:tanh")
    network = network_from_string("5x32:sigmoid", 784, 10)
    assert network.n_params == 784 * 32 + 32 + 4 * (32 * 32 + 32) + 32 * 10 + 10


def test_repeated_layers_are_separate_objects_with_their_own_weights():
    network = network_from_string("3x8:relu", 8, 2, seed=0)
    layers = [network.nodes[name].layer for name in ("dense1", "dense2", "dense3")]
    assert len({id(layer) for layer in layers}) == 3
    assert not np.array_equal(network.params["dense2.weight"], network.params["dense3.weight"])


def test_whitespace_around_items_is_ignored():
    assert parse_architecture(" 50 : tanh , 20 ") == parse_architecture("50:tanh,20")


def test_network_from_string_appends_the_output_layer_of_n_classes():
    network = network_from_string("950:relu,50:sigmoid", 784, 10)
    assert layer_types(network) == ["dense", "relu", "dense", "sigmoid", "dense"]
    assert network.sizes[network.output] == 10


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "text, message",
    [
        ("100:sigmod", "unknown step 'sigmod'.*sigmoid"),
        ("0:relu", "impossible layer size 0"),
        ("-5:relu", "impossible layer size -5"),
        ("12a:relu", "should start with a number of units"),
        ("1.5:relu", "should start with a number of units"),
        ("1e3", "unknown step '1e3'"),
        pytest.param("1\u00b2:relu", "1\u00b2", id="superscript-two-is-not-a-number"),
        ("100:relu,,10", "unknown step ''"),
        ("100:", "unknown step ''"),
        ("dropout(abc)", "unknown step 'dropout\\(abc\\)'"),
        ("dropout(1.2.3)", "bad number '1.2.3'"),
        ("relu(0.5)", "'relu' takes no option"),
        ("100:sigmoid(2)", "'sigmoid' takes no option"),
        ("0x32:relu", "impossible repeat count 0"),
        ("3x0:relu", "impossible layer size 0"),
        ("3x:relu", "should start with a number of units"),
        ("x32", "unknown step 'x32'"),
        ("2x3x4", "should start with a number of units|unknown step"),
        ("99999999999x32:relu", f"more than {MAX_LAYERS:,} layers"),
    ],
)
def test_bad_architecture_strings_are_config_errors_quoting_the_string(text, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_architecture(text)
    assert repr(text.strip()) in str(caught.value)  # names the architecture it rejects
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("dropout(1.5)", "dropout rate must be in"),
        ("10:leaky-relu(2)", "leaky-relu slope"),
        ("10:elu(-1)", "elu alpha must be positive"),
        ("10:batchnorm(1)", "batchnorm momentum"),
        ("10:layernorm(0)", "eps must be positive"),
    ],
)
def test_out_of_range_options_are_config_errors_when_building(text, message):
    with pytest.raises(ConfigError, match=message):
        network_from_string(text, 4, 2)


# ----------------------------------------------------------------- initialization
def test_auto_init_is_he_normal_before_relu_like_activations_and_glorot_otherwise():
    network = network_from_string("8:relu,8:sigmoid,8:layernorm:elu,8:tanh,8", 4, 2)
    inits = [
        network.nodes[n].layer.init
        for n in network.order
        if network.nodes[n].layer.type_name == "dense"
    ]
    assert inits == [
        "he-normal",
        "glorot-uniform",
        "he-normal",
        "glorot-uniform",
        "he-normal",
        "glorot-uniform",
    ]  # the last one is the output layer
    fixed = network_from_string("8:relu", 4, 2, init="lecun-normal")
    assert {fixed.nodes[n].layer.init for n in ("dense1", "dense2")} == {"lecun-normal"}


def test_he_and_glorot_weights_have_their_stated_variances():
    network = network_from_string("400:relu,400:sigmoid", 600, 10, dtype=np.float64, seed=3)
    he = network.params["dense1.weight"]  # he-normal: variance 2 / fan_in
    glorot = network.params["dense2.weight"]  # glorot-uniform: 2 / (fan_in + fan_out)
    assert he.var() == pytest.approx(2 / 600, rel=0.02)
    assert glorot.var() == pytest.approx(2 / 800, rel=0.02)
    assert np.abs(glorot).max() <= np.sqrt(6 / 800)


# ----------------------------------------------------------------- specs and files
def test_graph_spec_builds_the_skip_and_concat_network():
    network = network_from_spec(SKIP_AND_CONCAT, input_size=12, n_classes=5)
    assert network.output == "logits"
    assert network.sizes["branches"] == 32 and network.sizes["skip"] == 16
    assert network.nodes["skip"].inputs == ["project", "hidden"]


def test_graph_spec_without_names_or_inputs_is_the_chain_a_string_would_build():
    spec = {
        "nodes": [{"type": "dense", "units": 6}, {"type": "tanh"}, {"type": "dense", "units": 3}]
    }
    network = network_from_spec(spec, input_size=4, n_classes=3)
    assert network.architecture() == network_from_string("6:tanh", 4, 3).architecture()


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ({"layers": []}, {}, "list of nodes under the key 'nodes'"),
        ({"nodes": [{"units": 3}]}, {}, "node #1 of the spec needs a 'type'"),
        ({"nodes": [{"name": "a", "type": "conv99"}]}, {}, "node 'a': unknown layer type 'conv99'"),
        (
            {"nodes": [{"name": "a", "type": "dense", "units": 3, "slope": 1}]},
            {},
            "node 'a': bad options",
        ),
        (
            {"input_size": 10, "nodes": [{"type": "dense", "units": 3}]},
            {"input_size": 784},
            "input_size 10 does not match the data's 784",
        ),
        (
            {"nodes": [{"type": "dense", "units": 3}]},
            {"input_size": 4, "n_classes": 10},
            "has 3 units but the data has 10 classes",
        ),
    ],
)
def test_bad_graph_specs_are_config_errors(spec, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        network_from_spec(spec, **kwargs)


def test_build_network_accepts_a_string_or_a_spec():
    assert layer_types(build_network("5:tanh", 4, 3)) == ["dense", "tanh", "dense"]
    assert build_network(SKIP_AND_CONCAT, 12, 5).output == "logits"


def test_read_architecture_passes_strings_through():
    assert read_architecture("950:relu,50:sigmoid") == "950:relu,50:sigmoid"


def test_read_architecture_reads_the_example_toml_graph():
    spec = read_architecture(str(EXAMPLES / "skip_concat.toml"))
    assert isinstance(spec, dict) and spec["output"] == "logits"
    network = build_network(spec, 784, 10)
    assert network.sizes["branches"] == 128 and network.sizes["logits"] == 10


def test_read_architecture_reads_json_specs_and_model_tables(tmp_path):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(SKIP_AND_CONCAT))
    assert read_architecture(str(path)) == SKIP_AND_CONCAT
    wrapped = tmp_path / "config.json"
    wrapped.write_text(json.dumps({"model": {"architecture": "32:sigmoid"}}))
    assert read_architecture(str(wrapped)) == "32:sigmoid"
    toml = tmp_path / "config.toml"
    toml.write_text('[model]\narchitecture = "100:layernorm:relu"\n')
    assert read_architecture(str(toml)) == "100:layernorm:relu"


def test_toml_file_with_bad_syntax_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[model\narchitecture = "32:sigmoid"\n')
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        read_architecture(str(path))


def test_json_file_with_bad_syntax_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"nodes": [')
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON"):
        read_architecture(str(path))


def test_missing_architecture_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the architecture file"):
        read_architecture(str(tmp_path / "absent.toml"))


def test_architecture_file_without_nodes_or_architecture_is_a_config_error(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("[model]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="neither 'nodes' nor an 'architecture'"):
        read_architecture(str(path))


def test_json_file_holding_a_list_instead_of_an_object_is_a_config_error(tmp_path):
    path = tmp_path / "sizes.json"
    path.write_text("[784, 100, 10]")  # Nielsen's size list, a natural thing to try
    with pytest.raises(ConfigError, match="sizes.json"):
        read_architecture(str(path))


# ----------------------------------------------------------------- stable names and seeds
def initial_state(network):
    """Every parametrized layer's name with its initial weights and buffers."""
    return {**network.params, **network.buffers}


@pytest.mark.parametrize(
    "variant",
    [
        "dropout(0.1),32:relu,16:layernorm:tanh,8:batchnorm:sigmoid",  # before the first layer
        "32:relu:dropout(0.1),16:layernorm:tanh,8:batchnorm:sigmoid",  # after a layer
        "32:relu,dropout(0.1),16:layernorm:tanh:dropout(0.1),8:batchnorm:sigmoid",  # two
        "32:leaky-relu(0.1),16:layernorm:sigmoid,8:batchnorm:tanh",  # same initializers
    ],
)
def test_inserting_dropout_keeps_every_parametrized_layers_name_and_initial_weights(variant):
    base = build_network("32:relu,16:layernorm:tanh,8:batchnorm:sigmoid", 20, 5, seed=3)
    other = build_network(variant, 20, 5, seed=3)
    expected = initial_state(base)
    got = initial_state(other)
    assert list(got) == list(expected)  # dense1.weight, ..., layernorm1.gamma, batchnorm1.beta
    for name, array in expected.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def test_parametrized_layers_are_numbered_per_kind():
    network = build_network("dropout(0.2),8:layernorm:relu,2x8:batchnorm:tanh", 4, 3)
    assert [name for name in network.order if network.nodes[name].layer.params] == [
        "dense1",
        "layernorm1",
        "dense2",
        "batchnorm1",
        "dense3",
        "batchnorm2",
        "dense4",
    ]


def test_named_graph_nodes_keep_their_weights_when_a_dropout_node_is_inserted():
    plain = {
        "nodes": [
            {"name": "hidden", "type": "dense", "units": 6},
            {"name": "act", "type": "tanh"},
            {"name": "logits", "type": "dense", "units": 3},
        ]
    }
    with_dropout = {"nodes": [*plain["nodes"][:2], {"name": "drop", "type": "dropout"}]}
    with_dropout["nodes"].append({**plain["nodes"][2], "inputs": ["drop"]})
    first = build_network(plain, 4, 3, seed=2).params
    second = build_network(with_dropout, 4, 3, seed=2).params
    assert list(first) == list(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


# ----------------------------------------------------------------- sizes before allocation
@pytest.mark.parametrize(
    "architecture",
    [
        "",
        "32:sigmoid",
        "5x32:sigmoid",
        "950:relu,50:sigmoid",
        "dropout(0.2),16:layernorm:relu:dropout(0.5),3x8:batchnorm:tanh",
        SKIP_AND_CONCAT,
    ],
    ids=str,
)
def test_network_size_matches_the_built_network(architecture):
    input_size, n_classes = (12, 5) if isinstance(architecture, dict) else (784, 10)
    size = network_size(architecture, input_size, n_classes)
    network = build_network(architecture, input_size, n_classes)
    assert size == NetworkSize(
        n_params=network.n_params,
        n_units=sum(network.sizes[name] for name in network.order),
    )


def test_network_size_counts_units_of_every_layer_per_example():
    # dense 32, sigmoid 32, dense 10: what one example's activations cost
    assert network_size("32:sigmoid", 784, 10) == NetworkSize(n_params=25_450, n_units=74)
    assert network_size("dropout(0.5),4x100:relu", 784, 10).n_units == 784 + 8 * 100 + 10


def test_network_size_of_impossible_architectures_is_computed_without_building(monkeypatch):
    def no_building(*args, **kwargs):
        raise AssertionError("network_size built a layer")

    monkeypatch.setattr(Network, "_build", no_building)
    size = network_size("99999999999:relu", 784, 10)
    assert size.n_params == 784 * 99999999999 + 99999999999 + 99999999999 * 10 + 10
    assert size.n_units == 2 * 99999999999 + 10
    spec = {"nodes": [{"type": "dense", "units": 10**9}, {"type": "dense", "units": 10}]}
    assert network_size(spec, 784, 10).n_units == 10**9 + 10


def test_network_size_checks_the_spec_like_building_does():
    with pytest.raises(ConfigError, match="unknown step 'sigmod'"):
        network_size("10:sigmod", 784, 10)
    with pytest.raises(ConfigError, match="has 3 units but the data has 10 classes"):
        network_size({"nodes": [{"type": "dense", "units": 3}]}, 784, 10)


@pytest.mark.parametrize(
    "architecture",
    [
        "99999999999:relu",
        {
            "nodes": [
                {"name": "huge", "type": "dense", "units": 10**9},
                {"type": "dense", "units": 10},
            ]
        },
        {
            "nodes": [
                {"type": "dense", "units": 10**9},
                {"type": "relu"},
                {"type": "dense", "units": 10},
            ]
        },
    ],
    ids=["string", "spec", "spec-with-activation"],
)
def test_impossible_sizes_fail_fast_with_one_line(architecture):
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"needs .*iB for its .* parameters alone") as caught:
        build_network(architecture, 784, 10)
    assert time.perf_counter() - started < 0.5
    assert "\n" not in str(caught.value)


def test_a_saved_graph_claiming_a_billion_units_fails_fast_through_network_from_spec():
    spec = {"input_size": 784, "nodes": [{"type": "dense", "units": 10**9}]}
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="graph spec"):
        network_from_spec(spec, dtype=np.float32)
    assert time.perf_counter() - started < 0.5


def test_build_network_refuses_parameters_that_exceed_the_available_memory(monkeypatch):
    # 784-1000-10 in float32: 795,010 parameters, 3,180,040 bytes
    monkeypatch.setattr(architecture, "available_memory_bytes", lambda: 3_000_000)
    with pytest.raises(ConfigError) as caught:
        build_network("1000:relu", 784, 10)
    message = str(caught.value)
    assert "'1000:relu'" in message and "795,010 parameters" in message
    assert "3.0 MiB" in message and "2.9 MiB of memory is available" in message
    assert "use fewer or smaller layers" in message
    monkeypatch.setattr(architecture, "available_memory_bytes", lambda: 3_200_000)
    assert build_network("1000:relu", 784, 10).n_params == 795_010
    with pytest.raises(ConfigError, match="6.1 MiB"):  # float64 doubles the bytes
        build_network("1000:relu", 784, 10, dtype=np.float64)
