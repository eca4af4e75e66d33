"""Validation splits, test-set halves and evaluation protocols."""

from __future__ import annotations

import numpy as np
import pytest

from mlplab import data
from mlplab.errors import ConfigError


@pytest.fixture
def labels(fixtures_dir) -> np.ndarray:
    """Real, slightly unbalanced labels: the first 2000 MNIST training labels."""
    return data.read_idx(fixtures_dir / "mnist-small" / "train-labels-idx1-ubyte.gz").array


@pytest.mark.parametrize("validation", [500, 0.25, 37, 1999])
def test_validation_split_keeps_every_class_within_one_of_its_share(labels, validation):
    train, held_out = data.validation_split(labels, validation, seed=3)
    size = validation if isinstance(validation, int) else round(validation * len(labels))
    assert len(held_out) == size
    expected = size * np.bincount(labels) / len(labels)
    assert np.all(np.abs(np.bincount(labels[held_out], minlength=10) - expected) < 1)


def test_validation_split_parts_are_sorted_disjoint_and_cover_everything(labels):
    train, held_out = data.validation_split(labels, 0.1, seed=0)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held_out) > 0)
    assert np.intersect1d(train, held_out).size == 0
    assert np.array_equal(np.union1d(train, held_out), np.arange(len(labels)))


def test_validation_split_is_determined_by_the_seed(labels):
    first = data.validation_split(labels, 300, seed=7)
    again = data.validation_split(labels, 300, seed=7)
    other = data.validation_split(labels, 300, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize(
    "validation", [0, 2000, 5000, -3, 0.0, 1.0, 1.5, 0.0001, True, "10%", None]
)
def test_impossible_validation_sizes_are_config_errors(labels, validation):
    with pytest.raises(ConfigError):
        data.validation_split(labels, validation, seed=0)


def test_halving_the_test_set_gives_the_first_and_last_5000():
    first, last = data.halve_test_set()
    assert np.array_equal(first, np.arange(5000)) and np.array_equal(last, np.arange(5000, 10000))
    first, last = data.halve_test_set(7)
    assert len(first) == 3 and len(last) == 4


def test_book_protocol_validates_on_first_test_half_and_tests_on_the_last(labels):
    split = data.evaluation_split(data.BOOK_PROTOCOL, labels, n_test=10000)
    assert split.validation_set == "test"
    assert np.array_equal(split.train, np.arange(len(labels)))
    assert np.array_equal(split.validation, np.arange(data.BOOK_VALIDATION_SIZE))
    assert np.array_equal(split.test, np.arange(5000, 10000))


def test_holdout_protocol_validates_on_training_images_and_tests_on_all(labels):
    split = data.evaluation_split("holdout", labels, n_test=500, validation=200, seed=1)
    assert split.validation_set == "train" and len(split.validation) == 200
    assert np.intersect1d(split.train, split.validation).size == 0
    assert np.array_equal(split.test, np.arange(500))


def test_unknown_protocol_is_a_config_error(labels):
    with pytest.raises(ConfigError, match="unknown protocol"):
        data.evaluation_split("kfold", labels, n_test=10)
