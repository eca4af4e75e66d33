"""The :class:`Dataset` of train and test arrays, and the functions that load or fetch one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mlplab.data import sources
from mlplab.data.sources import CLASS_NAMES, FILE_STEMS, FileSource, LoadedFile
from mlplab.errors import ConfigError, DataError
from mlplab.saving import describe_entry

# The two parts of a dataset, in the order of Dataset's arrays.
PARTS: tuple[str, ...] = ("train", "test")
# Most classes a user's folder may have: 100 covers CIFAR-100 and EMNIST's 62; beyond that a
# label is far more likely a stray value than a class.
MAX_USER_CLASSES = 100


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
        For each standard file name read: the path, where it came from, payload size and
        checksum status.
    notes : list of str
        Places that were looked at and passed over before the files were found.
    parts : tuple of str
        The parts read, ``("train", "test")`` or one of them. The arrays of a part not read are
        empty (length 0, same image shape), and :meth:`class_counts` refuses it.
    """

    name: str
    class_names: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    sources: dict[str, FileSource]
    notes: list[str] = field(default_factory=list)
    parts: tuple[str, ...] = PARTS

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(height, width)`` of one image."""
        return tuple(self.test_images.shape[1:])

    @property
    def verified(self) -> bool:
        """Whether every file matched a known checksum."""
        return all(source.checksum == sources.VERIFIED for source in self.sources.values())

    def class_counts(self, split: str = "train") -> np.ndarray:
        """Number of images per class in ``split`` (``"train"`` or ``"test"``), shape ``(n_classes,)``."""
        if split not in PARTS:
            raise ConfigError(f"split must be 'train' or 'test', not {split!r}")
        if split not in self.parts:
            raise ConfigError(
                f"the {split} part of {self.name} was not read (parts={self.parts}); load it"
                f" with parts=('train', 'test')"
            )
        labels = self.train_labels if split == "train" else self.test_labels
        return np.bincount(labels, minlength=self.n_classes)


def _user_folder(
    path: Path, stems: tuple[str, ...]
) -> tuple[str, dict[str, LoadedFile], list[str]]:
    """Read a user's folder of IDX files; recognise it as a known dataset if all checksums match."""
    found = sources.find_files(path, stems)
    missing = [stem for stem in stems if stem not in found]
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
    name: str,
    class_names: list[str] | None,
    loaded: dict[str, LoadedFile],
    notes: list[str],
    parts: tuple[str, ...],
) -> Dataset:
    """Check that the files of ``parts`` belong together and build the :class:`Dataset`."""
    arrays = {stem: file.idx.array for stem, file in loaded.items()}
    paths = {stem: file.source.path for stem, file in loaded.items()}
    for part in parts:
        images, labels = _stems(part)
        if len(arrays[images]) != len(arrays[labels]):
            raise DataError(
                f"{paths[labels]}: {len(arrays[labels])} labels but {paths[images]} holds"
                f" {len(arrays[images])} images; the two files do not belong together"
            )
    if len(parts) == 2:
        train_shape = arrays["train-images-idx3-ubyte"].shape[1:]
        test_shape = arrays["t10k-images-idx3-ubyte"].shape[1:]
        if train_shape != test_shape:
            raise DataError(
                f"{paths['t10k-images-idx3-ubyte']}: test images are"
                f" {test_shape[0]}x{test_shape[1]} but training images are"
                f" {train_shape[0]}x{train_shape[1]}; use files of one dataset"
            )
    image_shape = arrays[_stems(parts[0])[0]].shape[1:]
    images, labels = {}, {}
    for part in PARTS:
        if part in parts:
            images[part] = arrays[_stems(part)[0]]
            labels[part] = arrays[_stems(part)[1]].astype(np.int64)
        else:  # not read: empty, with the image shape of the part that was
            images[part] = np.empty((0, *image_shape), dtype=np.uint8)
            images[part].flags.writeable = False
            labels[part] = np.empty(0, dtype=np.int64)
    if class_names is None:
        class_names = _user_classes(labels, parts, paths)
    return Dataset(
        name=name,
        class_names=list(class_names),
        train_images=images["train"],
        train_labels=labels["train"],
        test_images=images["test"],
        test_labels=labels["test"],
        sources={stem: file.source for stem, file in loaded.items()},
        notes=notes,
        parts=parts,
    )


def _user_classes(
    labels: dict[str, np.ndarray], parts: tuple[str, ...], paths: dict[str, Path]
) -> list[str]:
    """Class names ``"0" .. "K-1"`` of a user's folder, refusing labels that cannot be classes.

    The classes are the labels of the training set, which must be 0..K-1 with each one present:
    a gap means a stray label (one 255 among 0..9 would otherwise make 256 classes, 246 of them
    empty, and a confusion matrix 25 times too large). A test label must be one of those classes.
    """
    reference = "train" if "train" in parts else "test"
    path = paths[_stems(reference)[1]]
    counts = np.bincount(labels[reference], minlength=1)
    n_classes = len(counts)
    absent = np.flatnonzero(counts == 0)
    if absent.size:
        first_gap = int(absent[0])
        stray = [int(label) for label in np.flatnonzero(counts[first_gap:]) + first_gap]
        found = ", ".join(f"{label} ({_count(counts[label], 'label')})" for label in stray[:3])
        raise DataError(
            f"{path}: label {found}{' ...' if len(stray) > 3 else ''} lies beyond class"
            f" {first_gap}, which has no images; labels must be 0..K-1 with every class"
            f" present: fix or remove the stray labels"
        )
    if n_classes > MAX_USER_CLASSES:
        stray = np.flatnonzero(counts[MAX_USER_CLASSES:]) + MAX_USER_CLASSES
        raise DataError(
            f"{path}: label {int(stray[0])} ({_count(counts[stray[0]], 'label')}) is beyond the"
            f" {MAX_USER_CLASSES} classes mlplab handles; labels must be 0..K-1 with"
            f" K <= {MAX_USER_CLASSES}: fix or remove those labels"
        )
    if reference == "train" and "test" in parts:
        outside = labels["test"] >= n_classes
        if outside.any():
            label = int(labels["test"][outside][0])
            how_many = _count((labels["test"] == label).sum(), "label")
            raise DataError(
                f"{paths[_stems('test')[1]]}: label {label} ({how_many}) is not one of the"
                f" {n_classes} classes of the training labels {path}; fix or remove those labels"
            )
    return [str(label) for label in range(n_classes)]


def _count(n, noun: str) -> str:
    return f"{int(n)} {noun}{'' if n == 1 else 's'}"


def _stems(part: str) -> tuple[str, str]:
    """The images and labels files of ``part`` (``"train"`` or ``"test"``)."""
    prefix = "train" if part == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _check_parts(parts) -> tuple[str, ...]:
    if isinstance(parts, str):
        parts = (parts,)
    parts = tuple(parts)
    if not parts or len(set(parts)) != len(parts) or not set(parts) <= set(PARTS):
        raise ConfigError(
            f"parts must be ('train', 'test'), ('train',) or ('test',), not {parts!r}"
        )
    return tuple(part for part in PARTS if part in parts)


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
    *,
    parts: tuple[str, ...] = PARTS,
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
    parts : tuple of str
        Which parts to read and verify: ``("train", "test")``, ``("train",)`` or ``("test",)``.
        Evaluating a model needs only ``("test",)``, which reads only the two test files; the
        train arrays are then empty (see :attr:`Dataset.parts`).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If a file is missing, corrupt, truncated, fails its checksum, or the files disagree.
    ConfigError
        If ``name`` is neither a known dataset nor a folder, or ``parts`` is not one of the above.

    Notes
    -----
    Re-entrant and free of global state: it may run in several threads or worker processes at
    once (downloads go through per-process temporary files).

    Examples
    --------
    >>> data = load_dataset("mnist")  # doctest: +SKIP
    >>> data.train_images.shape, data.sources["train-images-idx3-ubyte"].checksum  # doctest: +SKIP
    ((60000, 28, 28), 'verified')
    """
    name = os.fspath(name)
    parts = _check_parts(parts)
    stems = tuple(stem for part in parts for stem in _stems(part))
    if name in CLASS_NAMES:
        loaded, notes = sources.locate(name, data_dir, download, progress, stems)
        return _assemble(name, CLASS_NAMES[name], loaded, notes, parts)
    path = Path(name).expanduser()
    if path.is_dir():
        if data_dir is not None:
            raise ConfigError(
                f"dataset {name!r} is already a folder; give either a folder or --data-dir, not both"
            )
        folder_name, loaded, notes = _user_folder(path, stems)
        return _assemble(folder_name, CLASS_NAMES.get(folder_name), loaded, notes, parts)
    what = describe_entry(path)
    if what not in (None, "missing"):
        raise DataError(f"{name}: is {what}, not a folder; give a folder holding the IDX files")
    if what is None or "/" in name or name.startswith("."):
        kind = "no such folder" if what == "missing" else "is a file, not a folder"
        raise DataError(f"{name}: {kind}; give a folder holding the four IDX files")
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
        Origin ``"download"`` for files fetched now; ``"env"``, ``"cache"``, ``"system"`` or
        ``"explicit"`` for those already there. Without ``data_dir``, verified files already
        found by :func:`load_dataset`'s search (e.g. in ``$MLPLAB_DATA``) are used as they are.
    """
    if name not in CLASS_NAMES:
        raise ConfigError(
            f"cannot fetch {name!r}: only {', '.join(sources.known_datasets())} have download mirrors"
        )
    notes: list[str] = []
    if data_dir is None:
        # Verified files already at hand (MLPLAB_DATA, the cache, a system copy) need no download.
        found = sources.search(name, None, FILE_STEMS, notes)
        folder, origin = sources.cache_dir(name), "cache"
    else:
        directory = Path(data_dir).expanduser()
        complete, _ = sources.complete_folder(directory, name, FILE_STEMS)
        found = sources.search(name, directory, FILE_STEMS, notes) if complete else None
        folder, origin = directory / name, "explicit"
    if found is not None:
        return found[FILE_STEMS[0]].source.path.parent, {s: f.source for s, f in found.items()}
    loaded = sources.fill_folder(name, folder, origin, progress, notes)
    if loaded is None:
        raise DataError(
            f"{name}: could not download into {folder}: {'; '.join(notes)}; check the network"
            f" or MLPLAB_MIRRORS, or copy the four IDX files there by hand"
        )
    return folder, {stem: file.source for stem, file in loaded.items()}
