"""Assertions and fixtures shared by several test files (pytest puts this folder on the path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"


def one_line_error(err: str) -> str:
    """The single ``mlplab: error: ...`` line a user error prints on stderr (no traceback)."""
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("mlplab: error: ") and "Traceback" not in err
    return lines[0]


def resume_data():
    """600 training and 200 validation images of the fixture as float features, for the
    trainings that resume tests interrupt: ``(x_train, y_train, x_val, y_val)``."""
    from mlplab.data import load_dataset

    dataset = load_dataset(MNIST_SMALL)
    x = dataset.train_images.reshape(len(dataset.train_labels), -1).astype(np.float32) / 255
    y = dataset.train_labels
    return x[:600], y[:600], x[1800:], y[1800:]


class Crash(Exception):
    """Stands for the process dying between two epochs."""


class CrashAt:
    """A callback that raises :class:`Crash` at the end of ``epoch``, before its checkpoint."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, record):
        if epoch == self.epoch:
            raise Crash(epoch)  # raised before this epoch's checkpoint is written
