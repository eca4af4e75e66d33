"""The full official MNIST, only where ``MLPLAB_DATA`` holds it (CI sets it); skipped elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mlplab.data import load_dataset, sources

# Read at import, before any fixture hides the variable.
FULL_DATA = os.environ.get("MLPLAB_DATA")


def _holds_full_mnist() -> bool:
    if not FULL_DATA:
        return False
    root = Path(FULL_DATA)
    return any(len(sources.find_files(folder)) == 4 for folder in (root / "mnist", root))


pytestmark = pytest.mark.skipif(
    not _holds_full_mnist(), reason="MLPLAB_DATA does not point at the full MNIST"
)


def test_full_mnist_verifies_and_has_the_published_label_counts():
    data = load_dataset("mnist", data_dir=FULL_DATA, download=False)
    assert data.verified
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert data.class_counts("train").tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert data.class_counts("test").tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.mean(data.train_images) == pytest.approx(33.318, abs=1e-3)
