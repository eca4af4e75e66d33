"""Run folders on disk: unique default names, one process at a time, stale temporaries removed,
and one-line errors for folders that cannot take a run."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlplab.errors import ConfigError
from mlplab.training import run_folder
from mlplab.training.run_folder import check_run_folder, locked_run_folder, new_run_folder

HOLD_LOCK = """
import sys, time
from mlplab.training.run_folder import locked_run_folder
with locked_run_folder(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def lock_holder(tmp_path):
    """A separate process holding the lock of ``tmp_path / "held"``: (folder, process)."""
    folder = tmp_path / "held"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "locked"
        yield folder, process
    finally:
        process.kill()
        process.wait()


def test_runs_started_in_the_same_second_get_different_default_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder.time, "strftime", lambda _: "20260101-120000")
    folders = [new_run_folder(tmp_path / "runs") for _ in range(3)]
    assert [folder.name for folder in folders] == [
        "20260101-120000",
        "20260101-120000-2",
        "20260101-120000-3",
    ]
    assert all(folder.is_dir() for folder in folders)


def test_a_second_process_is_refused_a_locked_folder_naming_the_holder(lock_holder):
    folder, process = lock_holder
    with pytest.raises(ConfigError) as error, locked_run_folder(folder):
        pytest.fail("the lock of a folder in use was granted")
    message = str(error.value)
    assert f"process {process.pid}" in message and str(folder) in message and "\n" not in message


def test_the_lock_is_released_when_the_holder_dies(lock_holder):
    folder, process = lock_holder
    process.kill()
    process.wait()
    with locked_run_folder(folder) as opened:
        assert opened == folder
        assert (folder / ".lock").read_text().strip() == str(os.getpid())


def test_the_lock_is_released_at_the_end_of_the_block(tmp_path):
    with locked_run_folder(tmp_path / "run"):
        pass
    with locked_run_folder(tmp_path / "run"):
        pass


def test_stale_temporaries_of_killed_writes_are_removed_when_the_folder_is_opened(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    # A pid that cannot be running: above the kernel's pid_max.
    stale = folder / ".model.npz.99999999.tmp"
    stale.write_bytes(b"half a model")
    with locked_run_folder(folder):
        assert not stale.exists()


def test_out_naming_an_existing_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file"):
        check_run_folder(path, resume=False)
    with pytest.raises(ConfigError, match="is a file"), locked_run_folder(path):
        pass
    assert path.read_text() == "not a folder"


def test_a_folder_that_cannot_be_written_is_a_one_line_error(tmp_path, monkeypatch):
    # chmod cannot make a folder read-only for root, so the refusal itself is simulated.
    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(run_folder.os, "open", refuse)
    with pytest.raises(ConfigError) as error, locked_run_folder(tmp_path / "run"):
        pytest.fail("a folder that cannot be written was opened")
    assert "cannot write there (Permission denied)" in str(error.value)


def test_a_folder_under_a_file_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="file"), locked_run_folder(blocker / "run"):
        pass


def test_a_folder_holding_a_run_is_refused_unless_resuming(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.npz").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--resume"):
        check_run_folder(folder, resume=False)
    with pytest.raises(ConfigError, match="checkpoint.npz"):
        check_run_folder(folder, resume=True)


def test_default_folder_names_sort_by_time(tmp_path):
    first = new_run_folder(tmp_path)
    time.sleep(1.05)
    second = new_run_folder(tmp_path)
    assert sorted([second.name, first.name]) == [first.name, second.name]
    assert Path(first).parent == tmp_path
