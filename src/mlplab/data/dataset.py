"""The :class:`Dataset` of train and test arrays, and the functions that load or fetch one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mlplab.data import sources
from mlplab.data.sources import CLASS_NAMES, FILE_STEMS, FileSource, LoadedFile
from mlplab.errors import ConfigError, DataError


@dataclass(eq=False)
class Dataset:
    """A dataset of images and labels, split into the official train and test sets.

    Image arrays are read-only, zero-copy views of the decompressed files; copy one before writing
    to it. Labels are int64 (a small copy) so that arithmetic on them cannot wrap around.

    Attributes
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"``, or a user folder's name.
    class_names : list of str
        Name of each class, indexed by label.
    train_images, test_images : numpy.ndarray
        uint8, shape ``(N, 28, 28)`` for MNIST-family data.
    train_labels, test_labels : numpy.ndarray
        int64, shape ``(N,)``, values in ``range(len(class_names))``.
    sources : dict of str to FileSource
        For each standard file name: the path read, where it came from, payload size and
        checksum status.
    notes : list of str
        Places that were looked at and passed over before the files were found.
    """

    name: str
    class_names: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    sources: dict[str, FileSource]
    notes: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(height, width)`` of one image."""
        return tuple(self.train_images.shape[1:])

    @property
    def verified(self) -> bool:
        """Whether every file matched a known checksum."""
        return all(source.checksum == sources.VERIFIED for source in self.sources.values())

    def class_counts(self, split: str = "train") -> np.ndarray:
        """Number of images per class in ``split`` (``"train"`` or ``"test"``), shape ``(n_classes,)``."""
        if split not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test', not {split!r}")
        labels = self.train_labels if split == "train" else self.test_labels
        return np.bincount(labels, minlength=self.n_classes)


def _user_folder(path: Path) -> tuple[str, dict[str, LoadedFile], list[str]]:
    """Read a user's folder of IDX files; recognise it as a known dataset if all checksums match."""
    found = sources.find_files(path)
    missing = [stem for stem in FILE_STEMS if stem not in found]
    if missing:
        raise DataError(
            f"{path}: missing {', '.join(f'{stem}[.gz]' for stem in missing)}; a dataset folder"
            " holds the four standard IDX files"
        )
    loaded = sources.read_files(found, "explicit", None)
    name = sources.identify(loaded)
    if name is None:
        return path.resolve().name, loaded, []
    verified = {
        stem: replace(file, source=replace(file.source, checksum=sources.VERIFIED))
        for stem, file in loaded.items()
    }
    return name, verified, [f"{path}: checksums match the official {name} files"]


def _assemble(
    name: str, class_names: list[str] | None, loaded: dict[str, LoadedFile], notes: list[str]
) -> Dataset:
    """Check that the four files belong together and build the :class:`Dataset`."""
    arrays = {stem: file.idx.array for stem, file in loaded.items()}
    paths = {stem: file.source.path for stem, file in loaded.items()}
    for split in ("train", "t10k"):
        images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        if len(arrays[images]) != len(arrays[labels]):
            raise DataError(
                f"{paths[labels]}: {len(arrays[labels])} labels but {paths[images]} holds"
                f" {len(arrays[images])} images; the two files do not belong together"
            )
    train_shape = arrays["train-images-idx3-ubyte"].shape[1:]
    test_shape = arrays["t10k-images-idx3-ubyte"].shape[1:]
    if train_shape != test_shape:
        raise DataError(
            f"{paths['t10k-images-idx3-ubyte']}: test images are {test_shape[0]}x{test_shape[1]}"
            f" but training images are {train_shape[0]}x{train_shape[1]}; use files of one dataset"
        )
    train_labels = arrays["train-labels-idx1-ubyte"].astype(np.int64)
    test_labels = arrays["t10k-labels-idx1-ubyte"].astype(np.int64)
    if class_names is None:
        # A user's own data: as many classes as the largest label says.
        top = max(train_labels.max(initial=0), test_labels.max(initial=0))
        class_names = [str(label) for label in range(int(top) + 1)]
    return Dataset(
        name=name,
        class_names=list(class_names),
        train_images=arrays["train-images-idx3-ubyte"],
        train_labels=train_labels,
        test_images=arrays["t10k-images-idx3-ubyte"],
        test_labels=test_labels,
        sources={stem: file.source for stem, file in loaded.items()},
        notes=notes,
    )


def _unknown_name(name: str) -> ConfigError:
    return ConfigError(
        f"unknown dataset {name!r}; use one of {', '.join(sources.known_datasets())} or the path"
        " of a folder holding the four IDX files"
    )


def load_dataset(
    name: str | os.PathLike = "mnist",
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> Dataset:
    """Find, read, check and verify a dataset.

    Parameters
    ----------
    name : str or os.PathLike
        ``"mnist"``, ``"fashion-mnist"``, or the path of a folder holding the four standard IDX
        files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``). A folder's files have
        no known checksum unless they are byte-for-byte a known dataset, which is then recognised.
        Names win over folders: write ``./mnist`` for a folder called ``mnist``.
    data_dir : str or pathlib.Path, optional
        Folder holding the files of the named dataset (or a ``<name>/`` subfolder with them).
        When given, it is the only place looked at.
    download : bool
        Whether to download from the mirrors when no copy is found.
    progress : bool
        Whether to show a progress bar while downloading.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If a file is missing, corrupt, truncated, fails its checksum, or the files disagree.
    ConfigError
        If ``name`` is neither a known dataset nor a folder.

    Examples
    --------
    >>> data = load_dataset("mnist")  # doctest: +SKIP
    >>> data.train_images.shape, data.sources["train-images-idx3-ubyte"].checksum  # doctest: +SKIP
    ((60000, 28, 28), 'verified')
    """
    name = os.fspath(name)
    if name in CLASS_NAMES:
        loaded, notes = sources.locate(name, data_dir, download, progress)
        return _assemble(name, CLASS_NAMES[name], loaded, notes)
    path = Path(name).expanduser()
    if path.is_dir():
        if data_dir is not None:
            raise ConfigError(
                f"dataset {name!r} is already a folder; give either a folder or --data-dir, not both"
            )
        folder_name, loaded, notes = _user_folder(path)
        return _assemble(folder_name, CLASS_NAMES.get(folder_name), loaded, notes)
    if path.exists() or "/" in name or name.startswith("."):
        raise DataError(f"{name}: no such folder; give a folder holding the four IDX files")
    raise _unknown_name(name)


def fetch_dataset(
    name: str, data_dir: str | Path | None = None, progress: bool = True
) -> tuple[Path, dict[str, FileSource]]:
    """Make sure the verified files of a named dataset are on disk, downloading what is missing.

    Parameters
    ----------
    name : str
        ``"mnist"`` or ``"fashion-mnist"``.
    data_dir : str or pathlib.Path, optional
        Put the files in ``data_dir/<name>/`` (usable later through ``--data-dir data_dir`` or
        ``MLPLAB_DATA=data_dir``) instead of the user cache.
    progress : bool
        Whether to show a progress bar while downloading.

    Returns
    -------
    folder : pathlib.Path
        Where the files are.
    sources : dict of str to FileSource
        Origin ``"download"`` for files fetched now, ``"cache"``/``"explicit"`` for those already there.
    """
    if name not in CLASS_NAMES:
        raise ConfigError(
            f"cannot fetch {name!r}: only {', '.join(sources.known_datasets())} have download mirrors"
        )
    folder = Path(data_dir).expanduser() / name if data_dir is not None else sources.cache_dir(name)
    origin = "explicit" if data_dir is not None else "cache"
    notes: list[str] = []
    loaded = sources.fill_folder(name, folder, origin, progress, notes)
    if loaded is None:
        raise DataError(
            f"{name}: could not download into {folder}: {'; '.join(notes)}; check the network"
            f" or MLPLAB_MIRRORS, or copy the four IDX files there by hand"
        )
    return folder, {stem: file.source for stem, file in loaded.items()}
