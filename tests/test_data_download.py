"""Downloads, for real, from HTTP servers on 127.0.0.1 that serve the fixture (or broken copies).

Nothing here reaches beyond 127.0.0.1: ``isolated_data_env`` empties every mirror list and moves
the cache into tmp_path, and each test names its own local mirrors.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest

from mlplab.data import fetch_dataset, load_dataset, sources
from mlplab.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_data_env")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass


@pytest.fixture
def serve():
    """Start a static HTTP server on an ephemeral port for a folder; returns its base URL."""
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # A short poll interval makes shutdown() at teardown quick.
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def corrupt_mirror(fixtures_dir: Path, tmp_path: Path) -> Path:
    """A mirror folder whose training images are valid gzip and IDX but have one pixel changed."""
    folder = Path(shutil.copytree(fixtures_dir / "mnist-small", tmp_path / "corrupt-mirror"))
    path = folder / "train-images-idx3-ubyte.gz"
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[1000] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(payload), compresslevel=1, mtime=0))
    return folder


def cache_entries(cache_root: Path) -> list[str]:
    folder = cache_root / "mlplab" / "mnist"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_download_is_verified_cached_and_reused(
    serve, fixtures_dir, isolated_data_env, monkeypatch, fixture_is_mnist
):
    url = serve(fixtures_dir / "mnist-small")
    monkeypatch.setitem(sources.MIRRORS, "mnist", [url])
    data = load_dataset("mnist", progress=False)
    assert data.verified and data.train_images.shape == (2000, 28, 28)
    source = data.sources["train-images-idx3-ubyte"]
    assert source.origin == "download" and source.url == url + "train-images-idx3-ubyte.gz"
    assert cache_entries(isolated_data_env) == sorted(f"{stem}.gz" for stem in sources.FILE_STEMS)

    monkeypatch.setitem(sources.MIRRORS, "mnist", [])  # a second load must not need the network
    again = load_dataset("mnist", progress=False)
    assert {s.origin for s in again.sources.values()} == {"cache"} and again.verified
    assert (again.train_images == data.train_images).all()


def test_corrupt_download_is_refused_and_nothing_is_cached(
    serve, corrupt_mirror, isolated_data_env, monkeypatch, fixture_is_mnist
):
    monkeypatch.setitem(sources.MIRRORS, "mnist", [serve(corrupt_mirror)])
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte\.gz: checksum mismatch"
    ) as caught:
        load_dataset("mnist", progress=False)
    assert "\n" not in str(caught.value)
    assert cache_entries(isolated_data_env) == []  # no file, no temporary file


def test_truncated_download_is_refused_and_nothing_is_cached(
    serve, fixtures_dir, tmp_path, isolated_data_env, monkeypatch, fixture_is_mnist
):
    folder = Path(shutil.copytree(fixtures_dir / "mnist-small", tmp_path / "mirror"))
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30000])
    monkeypatch.setitem(sources.MIRRORS, "mnist", [serve(folder)])
    with pytest.raises(DataError, match="truncated gzip"):
        load_dataset("mnist", progress=False)
    assert cache_entries(isolated_data_env) == []


def test_unreachable_mirror_falls_through_to_the_next(
    serve, closed_port_url, fixtures_dir, monkeypatch, fixture_is_mnist
):
    good = serve(fixtures_dir / "mnist-small")
    monkeypatch.setitem(sources.MIRRORS, "mnist", [closed_port_url, good])
    data = load_dataset("mnist", progress=False)
    assert all(source.url.startswith(good) for source in data.sources.values())


def test_mirror_serving_a_corrupt_file_falls_through_to_the_next(
    serve, corrupt_mirror, fixtures_dir, isolated_data_env, monkeypatch, fixture_is_mnist
):
    bad, good = serve(corrupt_mirror), serve(fixtures_dir / "mnist-small")
    monkeypatch.setitem(sources.MIRRORS, "mnist", [bad, good])
    data = load_dataset("mnist", progress=False)
    assert data.sources["train-images-idx3-ubyte"].url.startswith(good)
    assert not any(name.endswith(".part") for name in cache_entries(isolated_data_env))


def test_missing_file_on_a_mirror_falls_through_to_the_next(
    serve, tmp_path, fixtures_dir, monkeypatch, fixture_is_mnist
):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    good = serve(fixtures_dir / "mnist-small")
    monkeypatch.setitem(sources.MIRRORS, "mnist", [serve(empty), good])
    assert load_dataset("mnist", progress=False).verified


def test_no_copy_and_no_reachable_mirror_gives_one_message(closed_port_url, monkeypatch):
    monkeypatch.setitem(sources.MIRRORS, "mnist", [closed_port_url])
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", progress=False)
    message = str(caught.value)
    assert "\n" not in message
    for expected in ("MLPLAB_DATA not set", "cache", closed_port_url, "mlplab data fetch"):
        assert expected in message


def test_mirrors_env_var_replaces_the_table(
    serve, fixtures_dir, tmp_path, monkeypatch, fixture_is_mnist
):
    (tmp_path / "site").mkdir()
    shutil.copytree(fixtures_dir / "mnist-small", tmp_path / "site" / "mnist")
    monkeypatch.setitem(sources.MIRRORS, "mnist", ["http://127.0.0.1:9/never-used/"])
    monkeypatch.setenv("MLPLAB_MIRRORS", serve(tmp_path / "site") + "{dataset}/")
    assert load_dataset("mnist", progress=False).verified


def test_fetch_fills_the_cache_once(
    serve, fixtures_dir, isolated_data_env, monkeypatch, fixture_is_mnist
):
    monkeypatch.setitem(sources.MIRRORS, "mnist", [serve(fixtures_dir / "mnist-small")])
    folder, fetched = fetch_dataset("mnist", progress=False)
    assert folder == isolated_data_env / "mlplab" / "mnist"
    assert {source.origin for source in fetched.values()} == {"download"}
    _, again = fetch_dataset("mnist", progress=False)
    assert {source.origin for source in again.values()} == {"cache"}


def test_fetch_into_data_dir_makes_a_dataset_subfolder(
    serve, fixtures_dir, tmp_path, isolated_data_env, monkeypatch, fixture_is_mnist
):
    monkeypatch.setitem(sources.MIRRORS, "mnist", [serve(fixtures_dir / "mnist-small")])
    folder, _ = fetch_dataset("mnist", data_dir=tmp_path / "mine", progress=False)
    assert folder == tmp_path / "mine" / "mnist"
    assert load_dataset("mnist", data_dir=tmp_path / "mine").verified
    assert cache_entries(isolated_data_env) == []
