"""Architecture strings, graph specs and architecture files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlplab.engine.architecture import (
    build_network,
    network_from_spec,
    network_from_string,
    parse_architecture,
    read_architecture,
)
from mlplab.engine.gradcheck import SKIP_AND_CONCAT
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
    assert {fixed.nodes[n].layer.init for n in ("dense1", "dense3")} == {"lecun-normal"}


def test_he_and_glorot_weights_have_their_stated_variances():
    network = network_from_string("400:relu,400:sigmoid", 600, 10, dtype=np.float64, seed=3)
    he = network.params["dense1.weight"]  # he-normal: variance 2 / fan_in
    glorot = network.params["dense3.weight"]  # glorot-uniform: 2 / (fan_in + fan_out)
    assert he.var() == pytest.approx(2 / 600, rel=0.02)
    assert glorot.var() == pytest.approx(2 / 800, rel=0.02)
    assert np.abs(glorot).max() <= np.sqrt(6 / 800)


# ----------------------------------------------------------------- specs and files
def test_graph_spec_builds_the_skip_and_concat_network():
    network = network_from_spec(SKIP_AND_CONCAT, input_size=12, n_classes=5)
    assert network.output == "logits"
    assert network.sizes["branches"] == 32 and network.sizes["skip"] == 16
    assert network.nodes["skip"].inputs == ["project", "hidden"]


def test_graph_spec_defaults_names_and_inputs_to_a_chain():
    spec = {
        "nodes": [{"type": "dense", "units": 6}, {"type": "tanh"}, {"type": "dense", "units": 3}]
    }
    network = network_from_spec(spec, input_size=4, n_classes=3)
    assert network.order == ["dense1", "tanh2", "dense3"]
    assert network.nodes["tanh2"].inputs == ["dense1"]


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
