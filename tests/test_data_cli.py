"""``mlplab data info`` and ``mlplab data fetch``: output, exit status and one-line errors."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlplab.cli import main
from mlplab.data import read_idx, sources

pytestmark = pytest.mark.usefixtures("isolated_data_env")


def test_info_on_a_folder_prints_files_counts_and_class_counts(fixtures_dir, capsys):
    assert main(["data", "info", "--data-dir", str(fixtures_dir / "mnist-small")]) == 0
    out = capsys.readouterr().out
    assert "train: 2000 images, test: 500 images" in out
    assert "not verified (no known checksum)" in out
    assert "train-images-idx3-ubyte.gz" in out and "1,568,016" in out
    # One row per class with its train and test counts (first MNIST images: 191 zeros, 42 in test).
    assert any(line.split() == ["0", "0", "191", "42"] for line in out.splitlines())


def test_info_on_fashion_names_the_classes(fixtures_dir, capsys, monkeypatch):
    table = {
        stem: (
            read_idx(fixtures_dir / "fashion-small" / f"{stem}.gz").payload_bytes,
            read_idx(fixtures_dir / "fashion-small" / f"{stem}.gz").sha256,
        )
        for stem in sources.FILE_STEMS
    }
    monkeypatch.setitem(sources.CHECKSUMS, "fashion-mnist", table)
    code = main(
        [
            "data",
            "info",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(fixtures_dir / "fashion-small"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "Ankle boot" in out and "T-shirt/top" in out
    assert "checksums verified" in out


def test_info_on_a_corrupt_file_fails_with_one_line_naming_it(fixtures_dir, tmp_path, capsys):
    folder = Path(shutil.copytree(fixtures_dir / "mnist-small", tmp_path / "bad"))
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    assert main(["data", "info", "--data-dir", str(folder)]) != 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and str(path) in captured.err
    assert "Traceback" not in captured.err


def test_cli_subprocess_error_has_no_traceback(fixtures_dir, tmp_path):
    folder = Path(shutil.copytree(fixtures_dir / "mnist-small", tmp_path / "bad"))
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    env = {key: value for key, value in os.environ.items() if key != "MLPLAB_DATA"}
    result = subprocess.run(
        [sys.executable, "-m", "mlplab", "data", "info", "--data-dir", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.startswith("mlplab: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and str(path) in result.stderr


def test_info_never_downloads_and_says_how_to_get_the_data(capsys):
    assert main(["data", "info", "--dataset", "mnist"]) != 0
    err = capsys.readouterr().err
    assert "mlplab data fetch --dataset mnist" in err and "MLPLAB_DATA" in err


def test_fetch_downloads_into_the_cache_and_says_where(
    fixtures_dir, isolated_data_env, capsys, monkeypatch
):
    table = {}
    for stem in sources.FILE_STEMS:
        idx = read_idx(fixtures_dir / "mnist-small" / f"{stem}.gz")
        table[stem] = (idx.payload_bytes, idx.sha256)
    monkeypatch.setitem(sources.CHECKSUMS, "mnist", table)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(fixtures_dir / "mnist-small"))
    )
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        monkeypatch.setitem(sources.MIRRORS, "mnist", [f"http://127.0.0.1:{server.server_port}/"])
        assert main(["data", "fetch", "--dataset", "mnist"]) == 0  # with a progress bar
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert str(isolated_data_env / "mlplab" / "mnist") in out and "4 downloaded" in out
    assert main(["data", "info", "--dataset", "mnist"]) == 0
    assert "cache" in capsys.readouterr().out


def test_fetch_rejects_a_folder_as_dataset(capsys):
    with pytest.raises(SystemExit):
        main(["data", "fetch", "--dataset", "/tmp/somewhere"])
