"""Reading IDX files and datasets: the fixture's contents, every kind of bad file, and where
files are looked for."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from mlplab.data import load_dataset, read_idx, sources
from mlplab.data.idx import parse_idx
from mlplab.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_data_env")


def idx_payload(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.tobytes()


def write_gz(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload, mtime=0))


@pytest.fixture
def mnist_copy(fixtures_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the mnist-small fixture."""
    return Path(shutil.copytree(fixtures_dir / "mnist-small", tmp_path / "mnist-copy"))


# --- the fixture itself -------------------------------------------------------------------------


def test_fixture_reads_with_expected_shapes_dtypes_and_counts(fixtures_dir):
    data = load_dataset(str(fixtures_dir / "mnist-small"))
    assert data.name == "mnist-small"
    assert data.train_images.shape == (2000, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (500, 28, 28) and data.test_images.dtype == np.uint8
    assert data.train_labels.shape == (2000,) and data.train_labels.dtype == np.int64
    assert data.test_labels.shape == (500,)
    assert data.class_names == [str(digit) for digit in range(10)]
    assert data.train_labels.min() >= 0 and data.train_labels.max() == 9
    assert data.class_counts("train").sum() == 2000 and (data.class_counts("test") > 0).all()
    # The first MNIST training labels, per the shared data README.
    assert data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_user_folder_is_reported_not_verified(fixtures_dir):
    data = load_dataset(str(fixtures_dir / "mnist-small"))
    assert not data.verified
    assert {source.checksum for source in data.sources.values()} == {sources.UNVERIFIED}
    assert {source.origin for source in data.sources.values()} == {"explicit"}
    assert [source.payload_bytes for source in data.sources.values()] == [
        1568016,
        2008,
        392016,
        508,
    ]


def test_fashion_fixture_reads(fixtures_dir):
    data = load_dataset(str(fixtures_dir / "fashion-small"))
    assert data.train_images.shape == (200, 28, 28) and data.test_images.shape == (100, 28, 28)


def test_images_are_read_only_views_not_copies(fixtures_dir):
    data = load_dataset(str(fixtures_dir / "mnist-small"))
    assert not data.train_images.flags.writeable
    assert data.train_images.base is not None  # a view of the decompressed bytes


def test_raw_uncompressed_files_read_like_gzipped_ones(mnist_copy):
    for path in mnist_copy.glob("*.gz"):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    data = load_dataset(str(mnist_copy))
    assert data.train_images.shape == (2000, 28, 28)
    assert data.sources["train-images-idx3-ubyte"].path.name == "train-images-idx3-ubyte"


def test_folder_that_is_byte_identical_to_a_known_dataset_is_recognised(
    fixtures_dir, fixture_is_mnist
):
    data = load_dataset(str(fixtures_dir / "mnist-small"))
    assert data.name == "mnist" and data.verified


# --- bad files: each is a DataError naming the file ---------------------------------------------


def test_truncated_gzip_names_the_file(mnist_copy):
    path = mnist_copy / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50000])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated gzip"):
        load_dataset(str(mnist_copy))


def test_corrupt_gzip_stream_names_the_file(mnist_copy):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[20:40] = bytes(20)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: corrupt gzip"):
        load_dataset(str(mnist_copy))


def test_wrong_magic_number_names_the_file(mnist_copy):
    write_gz(mnist_copy / "train-labels-idx1-ubyte.gz", b"\x12\x34\x08\x01" + bytes(100))
    with pytest.raises(
        DataError, match=r"train-labels-idx1-ubyte\.gz: not an IDX file \(magic number 0x12340801"
    ):
        load_dataset(str(mnist_copy))


def test_unknown_element_type_is_not_an_idx_file():
    with pytest.raises(DataError, match="x.idx: not an IDX file"):
        parse_idx(b"\0\0\x07\x01" + struct.pack(">I", 0), "x.idx")


def test_labels_file_in_place_of_images_is_refused(mnist_copy):
    shutil.copy(mnist_copy / "t10k-labels-idx1-ubyte.gz", mnist_copy / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: expected uint8 images"):
        load_dataset(str(mnist_copy))


def test_truncated_payload_gives_expected_and_found_sizes(mnist_copy):
    path = mnist_copy / "t10k-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    write_gz(path, payload[:100000])
    message = (
        r"t10k-images-idx3-ubyte\.gz: truncated, expected 392016 bytes of payload .*found 100000"
    )
    with pytest.raises(DataError, match=message):
        load_dataset(str(mnist_copy))


def test_truncated_header_is_refused():
    with pytest.raises(DataError, match="f: truncated, expected a 16-byte header"):
        parse_idx(b"\0\0\x08\x03\0\0\0\x01", "f")


def test_extra_bytes_after_the_data_are_refused(mnist_copy):
    path = mnist_copy / "train-labels-idx1-ubyte.gz"
    write_gz(path, gzip.decompress(path.read_bytes()) + b"\0\0\0")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: 3 extra bytes"):
        load_dataset(str(mnist_copy))


def test_image_and_label_counts_must_agree(mnist_copy):
    labels = read_idx(mnist_copy / "t10k-labels-idx1-ubyte.gz").array
    write_gz(mnist_copy / "t10k-labels-idx1-ubyte.gz", idx_payload(labels[:499]))
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte\.gz: 499 labels but .*t10k-images-idx3-ubyte\.gz holds 500 images",
    ):
        load_dataset(str(mnist_copy))


def test_labels_out_of_range_name_the_file(mnist_copy, fixture_is_mnist):
    labels = read_idx(mnist_copy / "t10k-labels-idx1-ubyte.gz").array.copy()
    labels[7] = 12
    write_gz(mnist_copy / "t10k-labels-idx1-ubyte.gz", idx_payload(labels))
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte\.gz: label 12 at index 7 is out of range for 10 classes",
    ):
        load_dataset("mnist", data_dir=mnist_copy)


def test_checksum_mismatch_names_the_file(mnist_copy):
    # The fixture is valid IDX, but it is not the official mnist: checksums refuse it.
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: checksum mismatch"):
        load_dataset("mnist", data_dir=mnist_copy)


def test_missing_file_in_a_folder_is_named(mnist_copy):
    (mnist_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"mnist-copy: missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load_dataset(str(mnist_copy))


def test_missing_file_in_explicit_data_dir_is_named(mnist_copy):
    (mnist_copy / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="mnist-copy lacks train-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=mnist_copy)


def test_error_messages_are_one_line(mnist_copy):
    path = mnist_copy / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError) as caught:
        load_dataset(str(mnist_copy))
    assert "\n" not in str(caught.value)


def test_unknown_dataset_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown dataset 'emnist'"):
        load_dataset("emnist")


def test_nonexistent_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(str(tmp_path / "nowhere"))


# --- where files are looked for ---------------------------------------------------------------


def test_explicit_dir_may_hold_a_dataset_subfolder(fixtures_dir, tmp_path, fixture_is_mnist):
    shutil.copytree(fixtures_dir / "mnist-small", tmp_path / "data" / "mnist")
    data = load_dataset("mnist", data_dir=tmp_path / "data")
    assert data.verified and data.sources["train-images-idx3-ubyte"].origin == "explicit"


def test_env_var_with_dataset_subfolders_is_used(
    fixtures_dir, tmp_path, monkeypatch, fixture_is_mnist
):
    shutil.copytree(fixtures_dir / "mnist-small", tmp_path / "data" / "mnist")
    monkeypatch.setenv("MLPLAB_DATA", str(tmp_path / "data"))
    data = load_dataset("mnist", download=False)
    assert {source.origin for source in data.sources.values()} == {"env"}


def test_env_var_holding_the_files_directly_is_used(fixtures_dir, monkeypatch, fixture_is_mnist):
    monkeypatch.setenv("MLPLAB_DATA", str(fixtures_dir / "mnist-small"))
    assert load_dataset("mnist", download=False).sources["t10k-labels-idx1-ubyte"].origin == "env"


def test_env_var_pointing_nowhere_is_noted_and_search_goes_on(
    fixtures_dir, isolated_data_env, monkeypatch, fixture_is_mnist
):
    shutil.copytree(fixtures_dir / "mnist-small", isolated_data_env / "mlplab" / "mnist")
    monkeypatch.setenv("MLPLAB_DATA", "/nonexistent/mlplab-data")
    data = load_dataset("mnist", download=False)
    assert data.sources["train-images-idx3-ubyte"].origin == "cache"
    assert any("MLPLAB_DATA=/nonexistent/mlplab-data does not exist" in note for note in data.notes)


def test_env_copy_wins_over_cache(
    fixtures_dir, isolated_data_env, tmp_path, monkeypatch, fixture_is_mnist
):
    shutil.copytree(fixtures_dir / "mnist-small", isolated_data_env / "mlplab" / "mnist")
    monkeypatch.setenv("MLPLAB_DATA", str(fixtures_dir / "mnist-small"))
    assert load_dataset("mnist", download=False).sources["train-images-idx3-ubyte"].origin == "env"


def test_corrupt_env_copy_is_an_error_even_with_a_good_cache(
    mnist_copy, isolated_data_env, fixtures_dir, monkeypatch, fixture_is_mnist
):
    shutil.copytree(fixtures_dir / "mnist-small", isolated_data_env / "mlplab" / "mnist")
    path = mnist_copy / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    monkeypatch.setenv("MLPLAB_DATA", str(mnist_copy))
    with pytest.raises(DataError, match=str(path)):
        load_dataset("mnist", download=False)


def test_system_copy_is_used_after_the_cache(fixtures_dir, monkeypatch, fixture_is_mnist):
    monkeypatch.setitem(
        sources.SYSTEM_DIRS, "mnist", ["/nonexistent/system", str(fixtures_dir / "mnist-small")]
    )
    data = load_dataset("mnist", download=False)
    assert data.sources["train-images-idx3-ubyte"].origin == "system"
    assert any("/nonexistent/system" in note for note in data.notes)


def test_nothing_found_gives_one_message_listing_every_place(isolated_data_env):
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", download=False)
    message = str(caught.value)
    assert "\n" not in message
    for expected in (
        "MLPLAB_DATA not set",
        str(isolated_data_env / "mlplab" / "mnist"),
        "downloading disabled",
        "set MLPLAB_DATA",
        "--data-dir",
        "mlplab data fetch",
    ):
        assert expected in message


def test_env_folder_holding_another_known_dataset_is_passed_over(
    fixtures_dir, isolated_data_env, monkeypatch, fixture_is_mnist
):
    fashion = {
        stem: (
            read_idx(fixtures_dir / "fashion-small" / f"{stem}.gz").payload_bytes,
            read_idx(fixtures_dir / "fashion-small" / f"{stem}.gz").sha256,
        )
        for stem in sources.FILE_STEMS
    }
    monkeypatch.setitem(sources.CHECKSUMS, "fashion-mnist", fashion)
    shutil.copytree(fixtures_dir / "mnist-small", isolated_data_env / "mlplab" / "mnist")
    monkeypatch.setenv("MLPLAB_DATA", str(fixtures_dir / "fashion-small"))
    data = load_dataset("mnist", download=False)
    assert data.sources["train-images-idx3-ubyte"].origin == "cache"
    assert any("holds fashion-mnist, not mnist" in note for note in data.notes)
    with pytest.raises(
        DataError, match="holds fashion-mnist, not mnist; use --dataset fashion-mnist"
    ):
        load_dataset("mnist", data_dir=fixtures_dir / "fashion-small")
