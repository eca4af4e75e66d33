"""Bad data files and bad model files: each is refused with one line naming it, before anything
large is allocated, and nothing already on disk is changed."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from mlplab.data import Preprocessing, fetch_dataset, load_dataset, read_idx, sources
from mlplab.data import idx as idx_module
from mlplab.engine.architecture import network_from_string
from mlplab.errors import DataError
from mlplab.saving import (
    MODEL_FORMAT,
    load_model,
    remove_stale_temporaries,
    save_model,
    temporary_path,
    write_json,
    write_text,
)
from mlplab.training.model import Model

pytestmark = pytest.mark.usefixtures("isolated_data_env")

LABELS = "train-labels-idx1-ubyte.gz"


def idx_header(type_code: int, shape: tuple[int, ...]) -> bytes:
    return struct.pack(">BBBB", 0, 0, type_code, len(shape)) + struct.pack(
        f">{len(shape)}I", *shape
    )


def gzip_of_zeros_after(prefix: bytes, n_zeros: int) -> bytes:
    """A gzip stream of ``prefix`` then ``n_zeros`` zero bytes, built without holding them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip wrapper
    parts = [compressor.compress(prefix)]
    block = bytes(1 << 20)
    for start in range(0, n_zeros, len(block)):
        parts.append(compressor.compress(block[: min(len(block), n_zeros - start)]))
    parts.append(compressor.flush())
    return b"".join(parts)


def peak_bytes_of(function) -> tuple[int, DataError]:
    """Largest Python-heap size reached while ``function`` runs, and the DataError it raises."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            function()
        return tracemalloc.get_traced_memory()[1], info.value
    finally:
        tracemalloc.stop()


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, message
    return message


@pytest.fixture
def mnist_copy(fixtures_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(fixtures_dir / "mnist-small", tmp_path / "mnist-copy"))


# --- 1. sizes are checked before anything is allocated ------------------------------------------


def test_gzip_bomb_posing_as_an_idx_file_stops_at_its_header_size(mnist_copy):
    # 256 MiB of zeros in ~250 kB, behind a header that promises 2,000 labels.
    bomb = gzip_of_zeros_after(idx_header(0x08, (2000,)), 256 << 20)
    assert len(bomb) < 1 << 20
    (mnist_copy / LABELS).write_bytes(bomb)
    peak, error = peak_bytes_of(lambda: load_dataset(str(mnist_copy)))
    assert f"{LABELS}: decompresses to more than" in one_line(error)
    assert "gzip bomb" in str(error)
    assert peak < 16 << 20, f"decompressing the bomb took {peak / 2**20:.0f} MiB"


def test_gzip_bomb_without_an_idx_header_stops_at_the_first_chunk(mnist_copy):
    (mnist_copy / LABELS).write_bytes(gzip_of_zeros_after(b"", 64 << 20))
    peak, error = peak_bytes_of(lambda: load_dataset(str(mnist_copy)))
    assert "not an IDX file" in one_line(error) and peak < 16 << 20


def test_header_claiming_more_than_a_known_files_official_size_is_refused_before_reading(
    mnist_copy, fixture_is_mnist
):
    # A header claiming 2**32-1 images of 28x28: refused from the header, nothing allocated.
    path = mnist_copy / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, (2**32 - 1, 28, 28)) + bytes(1000)))
    peak, error = peak_bytes_of(lambda: load_dataset("mnist", data_dir=mnist_copy))
    assert "header claims shape (4294967295, 28, 28)" in one_line(error)
    assert peak < 16 << 20


def test_raw_idx_file_larger_than_the_cap_is_refused_from_its_size(mnist_copy, monkeypatch):
    monkeypatch.setattr(idx_module, "MAX_PAYLOAD_BYTES", 100)
    raw = mnist_copy / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress((mnist_copy / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: 508 B is more than the 100 B"):
        read_idx(raw)


def test_gzip_streams_of_several_members_still_read(mnist_copy):
    path = mnist_copy / LABELS
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[:1000]) + gzip.compress(payload[1000:]))
    assert read_idx(path).payload_bytes == len(payload)


# --- 2. labels that are not classes -------------------------------------------------------------


def write_labels(folder: Path, stem: str, labels: np.ndarray) -> None:
    payload = idx_header(0x08, labels.shape) + labels.astype(np.uint8).tobytes()
    (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))


def test_one_stray_255_in_a_users_labels_is_named_not_made_256_classes(mnist_copy):
    labels = read_idx(mnist_copy / LABELS).array.copy()
    labels[17] = 255
    write_labels(mnist_copy, "train-labels-idx1-ubyte", labels)
    with pytest.raises(DataError) as info:
        load_dataset(str(mnist_copy))
    message = one_line(info.value)
    assert f"{LABELS}: label 255 (1 label) lies beyond class 10, which has no images" in message
    assert "fix or remove" in message


def test_test_label_outside_the_training_classes_is_named(mnist_copy):
    labels = read_idx(mnist_copy / "t10k-labels-idx1-ubyte.gz").array.copy()
    labels[:3] = 12
    write_labels(mnist_copy, "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte\.gz: label 12 \(3 labels\) is not"
    ):
        load_dataset(str(mnist_copy))


def test_more_than_a_hundred_classes_are_refused(mnist_copy):
    labels = np.arange(2000) % 150
    write_labels(mnist_copy, "train-labels-idx1-ubyte", labels)
    with pytest.raises(DataError, match=r"label 100 \(13 labels\) is beyond the 100 classes"):
        load_dataset(str(mnist_copy))


def test_a_known_datasets_labels_must_be_below_ten(mnist_copy, fixture_is_mnist):
    labels = read_idx(mnist_copy / LABELS).array.copy()
    labels[5] = 255
    write_labels(mnist_copy, "train-labels-idx1-ubyte", labels)
    with pytest.raises(DataError, match=r"label 255 at index 5 is out of range for 10 classes"):
        load_dataset("mnist", data_dir=mnist_copy)


# --- 5. data locations --------------------------------------------------------------------------


def test_directory_where_a_data_file_should_be_is_named_as_such(mnist_copy):
    (mnist_copy / LABELS).unlink()
    (mnist_copy / LABELS).mkdir()
    with pytest.raises(DataError) as info:
        load_dataset(str(mnist_copy))
    assert f"{LABELS}: is a directory, not an IDX file" in one_line(info.value)
    assert "missing" not in str(info.value)


def test_symlink_loop_where_a_data_file_should_be_is_named_as_such(mnist_copy):
    (mnist_copy / LABELS).unlink()
    (mnist_copy / LABELS).symlink_to(mnist_copy / LABELS)
    with pytest.raises(DataError, match=f"{LABELS}: is a symbolic link loop, not an IDX file"):
        load_dataset(str(mnist_copy))


def test_symlink_loop_given_as_data_dir_is_named_as_such(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="--data-dir .*loop: is a symbolic link loop"):
        load_dataset("mnist", data_dir=loop)


def test_test_part_alone_reads_only_the_test_files(mnist_copy, fixture_is_mnist):
    # Training files gone (or corrupt): evaluation must not need them.
    (mnist_copy / "train-images-idx3-ubyte.gz").unlink()
    (mnist_copy / LABELS).write_bytes(b"garbage")
    data = load_dataset("mnist", data_dir=mnist_copy, parts=("test",))
    assert data.parts == ("test",) and data.verified
    assert len(data.test_images) == 500 and data.image_shape == (28, 28)
    assert data.train_images.shape == (0, 28, 28) and data.train_labels.shape == (0,)
    assert set(data.sources) == {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    with pytest.raises(Exception, match="the train part of mnist was not read"):
        data.class_counts("train")


def test_test_part_of_a_users_folder(mnist_copy):
    (mnist_copy / "train-images-idx3-ubyte.gz").unlink()
    data = load_dataset(str(mnist_copy), parts=("test",))
    assert data.n_classes == 10 and data.class_counts("test").sum() == 500


def test_parts_must_be_train_and_or_test(mnist_copy):
    with pytest.raises(Exception, match="parts must be"):
        load_dataset(str(mnist_copy), parts=("validation",))


def test_fetch_uses_verified_files_already_in_mlplab_data(
    mnist_copy, fixture_is_mnist, monkeypatch, isolated_data_env, capsys
):
    from mlplab.cli import main

    monkeypatch.setenv("MLPLAB_DATA", str(mnist_copy))  # no mirrors: a download would fail
    folder, found = fetch_dataset("mnist", progress=False)
    assert folder == mnist_copy and {source.origin for source in found.values()} == {"env"}
    assert main(["data", "fetch", "--no-progress"]) == 0
    assert "(0 downloaded, 4 already there)" in capsys.readouterr().out
    assert not isolated_data_env.exists()  # nothing was copied into the cache


def test_fetch_into_a_data_dir_that_already_holds_the_files(mnist_copy, fixture_is_mnist):
    folder, found = fetch_dataset("mnist", data_dir=mnist_copy, progress=False)
    assert folder == mnist_copy and all(s.origin == "explicit" for s in found.values())


def test_data_help_describes_the_group(capsys):
    from mlplab.cli import main

    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert "Find, verify and download" in out and "$MLPLAB_DATA" in out


# --- 3. model files -----------------------------------------------------------------------------


@pytest.fixture
def model_file(fixtures_dir, tmp_path) -> Path:
    """A small model with standardization and a pixel subset, as `mlplab train` saves one."""
    data = load_dataset(str(fixtures_dir / "mnist-small"))
    fitted = Preprocessing(standardize="per-pixel", crop_border=2, pixel_subset=100).fit(
        data.train_images
    )
    model = Model.build("8:relu", 100, data.class_names, preprocessing=fitted)
    return model.save(tmp_path / "model.npz")


def rewrite(path: Path, change) -> None:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def refused(path: Path) -> str:
    with pytest.raises(DataError) as info:
        Model.load(path)
    message = one_line(info.value)
    assert message.startswith(f"{path.name}: ") or message.startswith(f"{path}: "), message
    return message


def set_metadata(arrays, **changes):
    metadata = json.loads(str(arrays["__metadata__"]))
    metadata.update(changes)
    arrays["__metadata__"] = np.array(json.dumps(metadata))


def test_model_loads_when_nothing_is_wrong(model_file):
    assert Model.load(model_file).preprocessing.n_features == 100


@pytest.mark.parametrize("value", ["[1, 2]", "3", '"text"', "null"])
def test_metadata_that_is_not_a_json_object_is_refused(model_file, value):
    rewrite(model_file, lambda arrays: arrays.update(__metadata__=np.array(value)))
    assert "__metadata__ is a JSON" in refused(model_file)


def test_architecture_that_is_not_a_json_object_is_refused(model_file):
    rewrite(model_file, lambda arrays: arrays.update(__architecture__=np.array("[]")))
    assert "__architecture__ is a JSON list, not an object" in refused(model_file)


@pytest.mark.parametrize("names", [list("012345678"), list("0123456789AB")])
def test_class_names_not_one_per_output_are_refused(model_file, names):
    rewrite(model_file, lambda arrays: set_metadata(arrays, class_names=names))
    message = refused(model_file)
    assert f"metadata names {len(names)} classes but the network has 10 outputs" in message


def test_class_names_that_are_not_strings_are_refused(model_file):
    rewrite(model_file, lambda arrays: set_metadata(arrays, class_names="0123456789"))
    assert "class_names is not a list of strings" in refused(model_file)


def test_unknown_loss_is_refused_by_name(model_file):
    rewrite(model_file, lambda arrays: set_metadata(arrays, loss="cross-entropy"))
    assert "loss is not an object with a name" in refused(model_file)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("preprocessing/mean"), "saved preprocessing lacks 'mean'"),
        (
            lambda a: a.update({"preprocessing/std": np.ones(7, np.float32)}),
            r"std is float32 of shape (7,)",
        ),
        (
            lambda a: a["preprocessing/mean"].__setitem__(3, np.nan),
            "mean holds NaN or infinite values",
        ),
        (
            lambda a: a.update({"preprocessing/image_shape": np.array([3, 3])}),
            "crop_border 2 leaves nothing of 3x3 images",
        ),
    ],
)
def test_damaged_preprocessing_record_is_refused(model_file, change, message):
    rewrite(model_file, change)
    text = refused(model_file)
    assert message in text and "re-save the model" in text


def test_preprocessing_that_does_not_fit_the_network_input_is_refused(model_file, tmp_path):
    def fewer_pixels(arrays):
        config = json.loads(str(arrays["preprocessing/config"]))
        config["pixel_subset"] = 50
        arrays["preprocessing/config"] = np.array(json.dumps(config))
        arrays["preprocessing/pixel_indices"] = arrays["preprocessing/pixel_indices"][:50]
        arrays["preprocessing/mean"] = arrays["preprocessing/mean"][:50]
        arrays["preprocessing/std"] = arrays["preprocessing/std"][:50]

    rewrite(model_file, fewer_pixels)
    assert "makes 50 features but the network takes 100" in refused(model_file)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_weight_is_refused_not_evaluated(model_file, bad):
    def poison(arrays):
        name = next(n for n in arrays if n.startswith("param/"))
        arrays[name].flat[0] = bad

    rewrite(model_file, poison)
    assert "holds 1 NaN or infinite values" in refused(model_file)


def test_file_that_is_not_an_npz_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    path.write_text("not a model\n")
    assert "not an .npz archive" in refused(path)


def test_directory_given_as_a_model_file_is_named_as_such(tmp_path):
    (tmp_path / "model.npz").mkdir()
    with pytest.raises(DataError, match="model.npz: is a directory, not a model file"):
        load_model(tmp_path / "model.npz")


def add_member(path: Path, name: str, data: bytes, compress: int = zipfile.ZIP_STORED) -> None:
    """Replace (or add) member ``name`` of the archive at ``path`` with raw bytes ``data``."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content, compress_type=compress if member == name else 0)


def test_member_whose_header_claims_2_to_the_40_floats_is_refused_unread(model_file):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    )
    add_member(model_file, "param/dense1.weight.npy", buffer.getvalue() + bytes(64))
    peak, error = peak_bytes_of(lambda: Model.load(model_file))
    assert "claims shape (1099511627776,) of float32 (4.0 TiB) but holds 64 B" in one_line(error)
    assert peak < 16 << 20


def test_zip_bomb_member_is_refused_before_it_is_inflated(model_file):
    buffer = io.BytesIO()
    n = 64 << 20
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (n // 4,)}
    )
    add_member(model_file, "extra/zeros.npy", buffer.getvalue() + bytes(n), zipfile.ZIP_DEFLATED)
    assert model_file.stat().st_size < 1 << 20
    peak, error = peak_bytes_of(lambda: Model.load(model_file))
    assert "expands" in one_line(error) and "zip bomb" in str(error)
    assert peak < 16 << 20


def test_arrays_larger_than_the_memory_available_are_refused(model_file, monkeypatch):
    from mlplab import saving

    monkeypatch.setattr(saving, "available_memory_bytes", lambda: 1000)
    assert "of memory is available" in refused(model_file)


def test_arrays_of_another_shape_than_the_architecture_says_are_refused_unread(model_file):
    rewrite(model_file, lambda arrays: arrays.update({"param/dense1.weight": np.zeros((3, 3))}))
    assert "array param/dense1.weight has shape (3, 3), the architecture needs (8, 100)" in refused(
        model_file
    )


def test_architecture_claiming_a_billion_units_is_refused_before_any_array_is_read(model_file):
    def huge(arrays):
        spec = json.loads(str(arrays["__architecture__"]))
        dense = next(node for node in spec["nodes"] if node["type"] == "dense")
        dense["units"] = 10**9
        arrays["__architecture__"] = np.array(json.dumps(spec))

    rewrite(model_file, huge)
    peak, error = peak_bytes_of(lambda: Model.load(model_file))
    assert "parameters alone" in one_line(error) and peak < 16 << 20


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda dense: dense.update(units=-5), "positive whole number of units, got -5"),
        (lambda dense: dense.update(inputs=5), "damaged architecture"),
        (lambda dense: dense.update(type="warp"), "unknown layer type 'warp'"),
    ],
)
def test_damaged_architecture_json_is_one_line_naming_the_file(model_file, change, message):
    def damage(arrays):
        spec = json.loads(str(arrays["__architecture__"]))
        change(next(node for node in spec["nodes"] if node["type"] == "dense"))
        arrays["__architecture__"] = np.array(json.dumps(spec))

    rewrite(model_file, damage)
    assert message in refused(model_file)


def test_pickled_object_member_is_refused(model_file):
    rewrite(model_file, lambda arrays: None)
    with zipfile.ZipFile(model_file, "a") as archive:
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        archive.writestr("extra/evil.npy", buffer.getvalue())
    assert "holds pickled objects" in refused(model_file)


# --- 4. writes ----------------------------------------------------------------------------------


def test_full_disk_while_writing_text_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = write_text(tmp_path / "notes.txt", "old\n")

    def full_disk(self, text, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(DataError) as info:
        write_json(path, {"new": True})
    assert "notes.txt: cannot write (No space left on device)" in one_line(info.value)
    monkeypatch.undo()
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt"
    ]


def test_write_into_a_folder_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="cannot write"):
        write_text(tmp_path / "file" / "sub" / "x.txt", "x")


def test_temporaries_carry_the_writers_pid():
    assert temporary_path("/runs/a/model.npz").name == f".model.npz.{os.getpid()}.tmp"


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    stale = tmp_path / f".model.npz.{dead_pid()}.tmp"
    mine = temporary_path(tmp_path / "history.json")
    parent = tmp_path / f".curves.png.{os.getppid()}.tmp"  # a live process that is not us
    for path in (stale, mine, parent, tmp_path / "model.npz", tmp_path / ".hidden.tmp"):
        path.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and parent.exists()
    assert (tmp_path / "model.npz").exists() and (tmp_path / ".hidden.tmp").exists()
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_model_saved_over_an_old_one_after_a_failure_leaves_it_loadable(tmp_path, monkeypatch):
    network = network_from_string("4:relu", 6, 3, seed=1)
    path = save_model(tmp_path / "model.npz", network)
    before = path.read_bytes()

    def replace_fails(source, target):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(DataError, match="previous file is unchanged"):
        save_model(path, network_from_string("4:relu", 6, 3, seed=2))
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    assert load_model(path)[2].kind == MODEL_FORMAT


def test_download_temporaries_use_the_pid_naming(monkeypatch, tmp_path, isolated_data_env):
    seen = []
    real_open = open

    def watching_open(file, mode="r", *args, **kwargs):
        if "w" in mode:
            seen.append(Path(file).name)
        return real_open(file, mode, *args, **kwargs)

    class Response(io.BytesIO):
        headers = {"Content-Length": None}

    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda *a, **k: Response(b"junk"))
    monkeypatch.setattr("builtins.open", watching_open)
    temp = sources._download_to_temp("http://x/a.gz", tmp_path, "t10k-labels-idx1-ubyte", False)
    monkeypatch.undo()
    assert temp.name == f".t10k-labels-idx1-ubyte.gz.{os.getpid()}.tmp" and temp.name in seen
