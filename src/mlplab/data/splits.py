"""Index splits: a stratified validation set, the test-set halves and named evaluation protocols.

Everything here returns sorted int64 index arrays into the official train or test arrays, so that
no image is copied to make a split.

Protocols
---------
``"holdout"`` (the default to prefer)
    Validation is a stratified, seeded part of the *training* set; the test set (all 10,000
    images) is touched only for the final figures.
``"book"``
    The protocol of Paolo Perrotta's *Programming Machine Learning*: train on all 60,000 training
    images, validate on the first 5,000 test images, test on the last 5,000. Choosing
    hyperparameters on test images makes the last-5,000 figure the only honest one, and the halves
    differ in difficulty (per the MNIST page, the first 5,000 come from NIST's training set and are
    cleaner and easier than the last 5,000), so report the full 10,000 too. Provided to reproduce
    the book.
``"none"``
    Train on everything, no validation, test on all 10,000.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlplab.errors import ConfigError

PROTOCOLS = ("holdout", "book", "none")
BOOK_PROTOCOL = "book"
# Validation images in the book protocol: the first half of MNIST's 10,000 test images.
BOOK_VALIDATION_SIZE = 5000


def _validation_count(validation: int | float, n: int) -> int:
    """Turn a count or a fraction into a count in ``1 .. n-1``, or explain why it cannot be."""
    if isinstance(validation, (bool, np.bool_)):
        raise ConfigError(f"validation must be a count or a fraction, not {validation!r}")
    if isinstance(validation, (int, np.integer)):
        count = int(validation)
    elif isinstance(validation, (float, np.floating)):
        if not 0.0 < validation < 1.0:
            raise ConfigError(
                f"validation fraction {validation} must lie strictly between 0 and 1"
                " (or give a count of images)"
            )
        count = int(round(float(validation) * n))
    else:
        raise ConfigError(f"validation must be a count or a fraction, not {validation!r}")
    if not 1 <= count <= n - 1:
        raise ConfigError(
            f"validation of {count} images is impossible with {n} labelled images; it must leave"
            " at least one image for each of validation and training"
        )
    return count


def validation_split(
    labels: np.ndarray, validation: int | float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into training and validation parts, stratified by class.

    Each class gives the validation set its share of ``validation`` images, rounded by largest
    remainder, so every class count is within 1 of ``validation * class_size / len(labels)`` and
    the total is exact. Which images of a class are taken is random but fixed by ``seed``.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer class labels, shape ``(N,)``.
    validation : int or float
        Number of validation images, or a fraction of ``N`` in ``(0, 1)``.
    seed : int
        Seed for :func:`numpy.random.default_rng`.

    Returns
    -------
    train_indices, validation_indices : numpy.ndarray
        Sorted, disjoint int64 arrays that together cover ``range(N)``.

    Raises
    ------
    ConfigError
        If the size is not a count or fraction, or leaves either part empty.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels must be a 1-D integer array, not {labels.dtype} {labels.shape}")
    n = len(labels)
    count = _validation_count(validation, n)
    _, class_of, class_sizes = np.unique(labels, return_inverse=True, return_counts=True)
    exact = count * class_sizes / n
    quota = np.floor(exact).astype(np.int64)
    # Largest remainder: the classes closest to their next image get the leftover images.
    leftover = count - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:leftover]] += 1

    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    # A stable sort by class keeps the random order inside each class.
    grouped = shuffled[np.argsort(class_of[shuffled], kind="stable")]
    starts = np.concatenate(([0], np.cumsum(class_sizes)[:-1]))
    chosen = np.concatenate([grouped[s : s + q] for s, q in zip(starts, quota)])
    in_validation = np.zeros(n, dtype=bool)
    in_validation[chosen] = True
    return np.flatnonzero(~in_validation), np.flatnonzero(in_validation)


def halve_test_set(n_test: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first and the last half of the test set (5,000 each for MNIST).

    Parameters
    ----------
    n_test : int
        Size of the test set; an odd size gives the extra image to the last half.

    Returns
    -------
    first_indices, last_indices : numpy.ndarray
        ``arange(n_test // 2)`` and ``arange(n_test // 2, n_test)``.
    """
    if n_test < 2:
        raise ConfigError(f"cannot halve a test set of {n_test} images")
    half = n_test // 2
    return np.arange(half), np.arange(half, n_test)


@dataclass(frozen=True)
class EvaluationSplit:
    """Which images a run trains, validates and tests on, as indices.

    Attributes
    ----------
    protocol : str
        One of :data:`PROTOCOLS`.
    train : numpy.ndarray
        Indices into the training set.
    validation : numpy.ndarray or None
        Indices into the set named by ``validation_set``; None when there is no validation.
    validation_set : str or None
        ``"train"`` or ``"test"``.
    test : numpy.ndarray
        Indices into the test set of the figures the protocol reports; the full test set is
        ``arange(n_test)`` whatever the protocol.
    """

    protocol: str
    train: np.ndarray
    validation: np.ndarray | None
    validation_set: str | None
    test: np.ndarray


def evaluation_split(
    protocol: str,
    train_labels: np.ndarray,
    n_test: int,
    validation: int | float = BOOK_VALIDATION_SIZE,
    seed: int = 0,
) -> EvaluationSplit:
    """The split a named protocol prescribes (see this module's docstring).

    Parameters
    ----------
    protocol : str
        ``"holdout"``, ``"book"`` or ``"none"``.
    train_labels : numpy.ndarray
        Labels of the training set (for stratifying the holdout).
    n_test : int
        Size of the test set.
    validation : int or float
        Holdout size, count or fraction; only for ``"holdout"``.
    seed : int
        Seed of the holdout.

    Returns
    -------
    EvaluationSplit
    """
    n_train = len(train_labels)
    if protocol == "holdout":
        train, held_out = validation_split(train_labels, validation, seed)
        return EvaluationSplit(protocol, train, held_out, "train", np.arange(n_test))
    if protocol == "book":
        first, last = halve_test_set(n_test)
        return EvaluationSplit(protocol, np.arange(n_train), first, "test", last)
    if protocol == "none":
        return EvaluationSplit(protocol, np.arange(n_train), None, None, np.arange(n_test))
    raise ConfigError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
