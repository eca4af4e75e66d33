"""The data layer: MNIST-family datasets in IDX format, found, verified, split and preprocessed.

>>> from mlplab.data import load_dataset, validation_split, Preprocessing  # doctest: +SKIP
>>> data = load_dataset("mnist")  # doctest: +SKIP
>>> train, valid = validation_split(data.train_labels, 5000, seed=0)  # doctest: +SKIP
>>> fitted = Preprocessing(standardize="global").fit(data.train_images[train])  # doctest: +SKIP
>>> x_valid = fitted.transform(data.train_images[valid])  # doctest: +SKIP

Modules: :mod:`~mlplab.data.idx` (the file format), :mod:`~mlplab.data.sources` (where files are
looked for, downloads, checksums), :mod:`~mlplab.data.dataset` (:class:`Dataset`),
:mod:`~mlplab.data.splits` (validation and evaluation protocols),
:mod:`~mlplab.data.preprocessing` (features).
"""

from mlplab.data.dataset import PARTS, Dataset, fetch_dataset, load_dataset
from mlplab.data.idx import IdxPayload, read_idx
from mlplab.data.preprocessing import FittedPreprocessing, Preprocessing
from mlplab.data.sources import (
    CHECKSUMS,
    CLASS_NAMES,
    FILE_STEMS,
    MIRRORS,
    SYSTEM_DIRS,
    FileSource,
    cache_dir,
    known_datasets,
)
from mlplab.data.splits import (
    BOOK_PROTOCOL,
    BOOK_VALIDATION_SIZE,
    PROTOCOLS,
    EvaluationSplit,
    evaluation_split,
    halve_test_set,
    validation_split,
)

__all__ = [
    "BOOK_PROTOCOL",
    "BOOK_VALIDATION_SIZE",
    "CHECKSUMS",
    "CLASS_NAMES",
    "FILE_STEMS",
    "MIRRORS",
    "PARTS",
    "PROTOCOLS",
    "SYSTEM_DIRS",
    "Dataset",
    "EvaluationSplit",
    "FileSource",
    "FittedPreprocessing",
    "IdxPayload",
    "Preprocessing",
    "cache_dir",
    "evaluation_split",
    "fetch_dataset",
    "halve_test_set",
    "known_datasets",
    "load_dataset",
    "read_idx",
    "validation_split",
]
