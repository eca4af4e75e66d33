"""Model files: pickle-free .npz, atomic writes, clear errors for anything damaged or foreign."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from mlplab.engine.architecture import network_from_spec, network_from_string
from mlplab.errors import DataError
from mlplab.saving import (
    CHECKPOINT_FORMAT,
    MODEL_FORMAT,
    load_model,
    network_arrays,
    read_archive,
    save_model,
    write_archive,
    write_json,
    write_text,
)

GRAPH_WITH_BATCHNORM = {
    "nodes": [
        {"name": "hidden", "type": "dense", "units": 12, "inputs": ["input"]},
        {"name": "norm", "type": "batchnorm", "inputs": ["hidden"]},
        {"name": "act", "type": "relu", "inputs": ["norm"]},
        {"name": "drop", "type": "dropout", "rate": 0.3, "inputs": ["act"]},
        {"name": "side", "type": "tanh", "inputs": ["hidden"]},
        {"name": "both", "type": "concat", "inputs": ["drop", "side"]},
        {"name": "logits", "type": "dense", "units": 4, "inputs": ["both"]},
    ]
}


def data(n=20, size=6, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, size)).astype(dtype)


def trained_graph(seed=0):
    """A graph net whose BatchNorm buffers have moved away from their initial values."""
    network = network_from_spec(GRAPH_WITH_BATCHNORM, input_size=6, seed=seed)
    for step in range(3):
        network.forward(data(seed=step) * 3 + 1, training=True)
    assert not np.allclose(network.buffers["norm.running_mean"], 0.0)
    return network


def saved_model(tmp_path, name="model.npz"):
    network = network_from_string("16:relu,8:sigmoid", 6, 3, seed=1)
    return save_model(tmp_path / name, network), network


def rewrite(path, change):
    """Load every array of an archive, let ``change`` edit the dict, write it back."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


# ----------------------------------------------------------------- round trips
def test_round_trip_gives_identical_float32_predictions(tmp_path):
    path, network = saved_model(tmp_path)
    loaded, metadata, _ = load_model(path)
    assert loaded.dtype == np.float32 and metadata["dtype"] == "float32"
    x = data()
    np.testing.assert_array_equal(loaded.predict_logits(x), network.predict_logits(x))
    for name, array in network.params.items():
        np.testing.assert_array_equal(loaded.params[name], array)
        assert loaded.params[name].dtype == np.float32


def test_round_trip_of_a_graph_with_batchnorm_buffers_and_dropout(tmp_path):
    network = trained_graph()
    path = save_model(tmp_path / "graph.npz", network, metadata={"classes": ["a", "b", "c", "d"]})
    loaded, metadata, _ = load_model(path)
    assert metadata["classes"] == ["a", "b", "c", "d"]
    assert loaded.architecture() == network.architecture()
    for name, array in network.buffers.items():
        np.testing.assert_array_equal(loaded.buffers[name], array)
    x = data(seed=9)
    np.testing.assert_array_equal(loaded.predict_logits(x), network.predict_logits(x))
    assert loaded.nodes["drop"].layer.rate == 0.3


def test_round_trip_of_a_float64_network_keeps_float64(tmp_path):
    network = network_from_string("5:layernorm:tanh", 6, 3, dtype=np.float64)
    loaded = load_model(save_model(tmp_path / "m.npz", network))[0]
    assert loaded.dtype == np.float64
    x = data(dtype=np.float64)
    np.testing.assert_array_equal(loaded.forward(x), network.forward(x))


def test_extra_arrays_are_stored_under_their_group(tmp_path):
    network = network_from_string("4", 6, 3)
    mean = np.arange(6, dtype=np.float32)
    path = save_model(tmp_path / "m.npz", network, extra_arrays={"preprocess/mean": mean})
    archive = load_model(path)[2]
    np.testing.assert_array_equal(archive.group("preprocess")["mean"], mean)


def test_model_file_loads_with_plain_numpy_and_no_pickle(tmp_path):
    path, network = saved_model(tmp_path)
    with np.load(path, allow_pickle=False) as archive:
        names = set(archive.files)
        assert str(archive["__format__"]) == MODEL_FORMAT
        architecture = json.loads(str(archive["__architecture__"]))
        json.loads(str(archive["__metadata__"]))
        assert all(archive[name].dtype != object for name in names)
    assert {f"param/{n}" for n in network.params} <= names
    assert [node["type"] for node in architecture["nodes"]] == [
        "dense",
        "relu",
        "dense",
        "sigmoid",
        "dense",
    ]


def test_network_arrays_names_params_and_buffers_by_group():
    names = set(network_arrays(trained_graph()))
    assert {
        "param/hidden.weight",
        "param/norm.gamma",
        "buffer/norm.running_mean",
        "buffer/norm.running_var",
    } <= names


# ----------------------------------------------------------------- refusing bad files
def test_file_with_a_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    with open(path, "wb") as file:
        np.savez(
            file,
            __format__=np.array(MODEL_FORMAT),
            __metadata__=np.array("{}"),
            x=np.array([{}], dtype=object),
        )
    with pytest.raises(DataError, match=r"evil\.npz.*pickle"):
        load_model(path)


def test_writing_an_object_array_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match="pickle"):
        write_archive(tmp_path / "m.npz", {"x": np.array([{}], dtype=object)}, MODEL_FORMAT, {})
    assert list(tmp_path.iterdir()) == []


def test_array_of_the_wrong_shape_is_a_data_error_naming_it(tmp_path):
    path, _ = saved_model(tmp_path)
    rewrite(path, lambda a: a.__setitem__("param/dense1.weight", np.zeros((16, 5), np.float32)))
    with pytest.raises(
        DataError,
        match=r"model\.npz: array param/dense1\.weight has shape "
        r"\(16, 5\), the architecture needs \(16, 6\)",
    ):
        load_model(path)


def test_missing_array_is_a_data_error_naming_it(tmp_path):
    path, _ = saved_model(tmp_path)
    rewrite(path, lambda a: a.pop("param/dense3.bias"))
    with pytest.raises(DataError, match=r"model\.npz: .*missing \['dense3\.bias'\]"):
        load_model(path)


def test_unexpected_array_is_a_data_error_naming_it(tmp_path):
    path, _ = saved_model(tmp_path)
    rewrite(path, lambda a: a.__setitem__("param/ghost.weight", np.zeros(3, np.float32)))
    with pytest.raises(DataError, match=r"model\.npz: .*unexpected \['ghost\.weight'\]"):
        load_model(path)


def test_integer_parameter_array_is_a_data_error(tmp_path):
    path, _ = saved_model(tmp_path)
    rewrite(path, lambda a: a.__setitem__("param/dense1.bias", np.zeros(16, np.int64)))
    with pytest.raises(DataError, match=r"model\.npz: array param/dense1\.bias is int64"):
        load_model(path)


def test_unknown_layer_type_in_the_architecture_json_is_a_data_error(tmp_path):
    path, _ = saved_model(tmp_path)

    def conv99(arrays):
        architecture = json.loads(str(arrays["__architecture__"]))
        architecture["nodes"][1]["type"] = "conv99"
        arrays["__architecture__"] = np.array(json.dumps(architecture))

    rewrite(path, conv99)
    with pytest.raises(DataError, match=r"model\.npz: .*unknown layer type 'conv99'"):
        load_model(path)


def test_damaged_metadata_json_is_a_data_error(tmp_path):
    path, _ = saved_model(tmp_path)
    rewrite(path, lambda a: a.__setitem__("__metadata__", np.array("{not json")))
    with pytest.raises(DataError, match=r"model\.npz: damaged metadata"):
        load_model(path)


def test_truncated_file_is_a_data_error_naming_it(tmp_path):
    path, _ = saved_model(tmp_path)
    content = path.read_bytes()
    for keep in (len(content) // 2, len(content) - 10, 0):
        path.write_bytes(content[:keep])
        with pytest.raises(DataError, match=r"model\.npz"):
            load_model(path)


def test_file_that_is_not_an_npz_archive_is_a_data_error_naming_it(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("these are not the weights you are looking for\n")
    with pytest.raises(DataError, match=r"notes\.npz"):
        load_model(text)


def test_plain_npy_array_file_is_a_data_error_naming_it(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(DataError, match=r"weights\.npy"):
        load_model(path)


def test_missing_file_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"absent\.npz: no such file"):
        load_model(tmp_path / "absent.npz")


def test_checkpoint_passed_where_a_model_is_expected_is_a_data_error(tmp_path):
    network = network_from_string("4", 6, 3)
    path = write_archive(
        tmp_path / "ckpt.npz",
        network_arrays(network),
        CHECKPOINT_FORMAT,
        {"epoch": 3},
        network.architecture(),
    )
    with pytest.raises(
        DataError,
        match=r"ckpt\.npz: is not an mlplab-model/1 file "
        r"\(format 'mlplab-checkpoint/2'\)",
    ):
        load_model(path)
    assert read_archive(path, CHECKPOINT_FORMAT).metadata == {"epoch": 3}


def test_foreign_npz_without_a_format_is_a_data_error(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, w=np.zeros(3))
    with pytest.raises(DataError, match=r"other\.npz: is not an mlplab-model/1 file"):
        load_model(path)


# ----------------------------------------------------------------- atomic writes
def test_writing_leaves_only_the_target_file(tmp_path):
    save_model(tmp_path / "a.npz", network_from_string("4", 6, 3))
    save_model(tmp_path / "a.npz", network_from_string("4", 6, 3, seed=5))  # overwrite
    write_text(tmp_path / "b.txt", "hello\n")
    write_json(tmp_path / "sub" / "c.json", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.txt", "sub"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["c.json"]
    assert json.loads((tmp_path / "sub" / "c.json").read_text()) == {"x": 1}


def test_a_failure_while_writing_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path, network = saved_model(tmp_path)
    original_bytes = path.read_bytes()
    real_savez = np.savez

    def savez_that_dies_midway(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", savez_that_dies_midway)
    with pytest.raises(
        DataError, match="model.npz: cannot write .No space left on device."
    ) as info:
        save_model(path, network_from_string("16:relu,8:sigmoid", 6, 3, seed=99))
    assert "\n" not in str(info.value) and "previous file is unchanged" in str(info.value)
    monkeypatch.setattr(np, "savez", real_savez)
    assert path.read_bytes() == original_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left behind
    loaded = load_model(path)[0]
    x = data()
    np.testing.assert_array_equal(loaded.predict_logits(x), network.predict_logits(x))
