"""The run folder on disk: picking a unique default name, locking it while a process trains in
it, and refusing to mix two runs in one folder.

A run folder belongs to one process at a time. :func:`locked_run_folder` takes an exclusive
``fcntl.flock`` on ``<folder>/.lock`` (the kernel drops it when the process dies, so a killed run
never leaves a stale lock) and writes its pid there so that a second process can say who holds it.
Opening a folder also removes the ``.<name>.<pid>.tmp`` files that killed writes left there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlplab.errors import ConfigError
from mlplab.saving import remove_stale_temporaries

MODEL_FILE, CHECKPOINT_FILE, CONFIG_FILE = "model.npz", "checkpoint.npz", "config.toml"
LOCK_FILE = ".lock"
DEFAULT_ROOT = Path("runs")


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse an ``out`` that cannot take this run, without creating or changing anything.

    Raises
    ------
    ConfigError
        ``out`` is a file; ``resume`` and no checkpoint to resume from; not ``resume`` and the
        folder already holds a run.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a run folder; give --out a folder path")
    if resume:
        if not (out / CHECKPOINT_FILE).is_file():
            raise ConfigError(f"{out}: no {CHECKPOINT_FILE} to resume from; train without --resume")
        if not (out / CONFIG_FILE).is_file():
            raise ConfigError(
                f"{out}: no {CONFIG_FILE} beside the checkpoint, so the run's settings are unknown"
                "; train into a new folder"
            )
    elif (out / CHECKPOINT_FILE).exists() or (out / MODEL_FILE).exists():
        raise ConfigError(
            f"{out} already holds a run; add --resume to continue it or choose "
            "another --out (nothing was overwritten)"
        )


def new_run_folder(root: Path = DEFAULT_ROOT) -> Path:
    """Create and return a new, empty folder ``root/<date>-<time>``, made unique.

    Two runs started in the same second get ``...-153000`` and ``...-153000-2``: the folder is
    made with an exclusive ``mkdir``, which only one process can win.
    """
    root = Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    _make_folder(root)
    for attempt in range(1, 10_000):
        folder = root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise _cannot_write(root, error) from None
        return folder
    raise ConfigError(f"{root}: could not find a free run folder name for {stamp}; give --out")


@contextmanager
def locked_run_folder(out: Path, resume: bool = False) -> Iterator[Path]:
    """Create ``out`` if needed, hold its lock while the block runs, and check it can take the run.

    Raises
    ------
    ConfigError
        ``out`` is a file or cannot be written; another process trains in it (named by pid); or
        :func:`check_run_folder` refuses it.
    """
    out = Path(out)
    check_run_folder(out, resume)
    _make_folder(out)
    try:
        descriptor = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise _cannot_write(out, error) from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(
                f"{out} is in use: process {holder} is training in it; wait for it to finish "
                "or choose another --out"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        # Checked again under the lock: another process may have finished a run here meanwhile.
        check_run_folder(out, resume)
        remove_stale_temporaries(out)  # no other process writes here while the lock is held
        yield out
    finally:
        os.close(descriptor)  # closing drops the flock


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{path} is a file, not a folder; give --out a folder path") from None
    except OSError as error:
        raise _cannot_write(path, error) from None


def _cannot_write(path: Path, error: OSError) -> ConfigError:
    reason = error.strerror or str(error)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConfigError(f"{path}: cannot write there ({reason}); choose another --out")
    return ConfigError(f"{path}: cannot create the run folder ({reason})")


__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "MODEL_FILE",
    "check_run_folder",
    "locked_run_folder",
    "new_run_folder",
]
