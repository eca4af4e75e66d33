"""Where the IDX files of a dataset come from: the registry, the search order and downloads.

Search order for a named dataset (the first place holding all four files wins; with
``parts=("test",)`` the two test files are enough):

1. ``explicit``: the ``data_dir`` argument (CLI ``--data-dir``), the folder itself or its
   ``<dataset>/`` subfolder. It is authoritative: if the files are not there, that is an error.
2. ``env``: ``$MLPLAB_DATA``, its ``<dataset>/`` subfolder or the folder itself.
3. ``cache``: ``$XDG_CACHE_HOME/mlplab/<dataset>`` (default ``~/.cache/mlplab/<dataset>``).
4. ``system``: distribution packages, e.g. Debian's ``dataset-fashion-mnist`` in
   ``/usr/share/datasets/fashion-mnist``.
5. ``download``: the mirrors of :data:`MIRRORS` (or ``$MLPLAB_MIRRORS``), tried in order; the files
   go into the cache.

Every file is verified by the sha256 of its decompressed payload (:data:`CHECKSUMS`). A copy that
was found but fails is an error naming it, never skipped silently. A download is written to a
temporary file in the cache folder (``.<file>.<pid>.tmp``, removed by the next download once its
process is gone) and renamed into place only after it verifies, so the cache never holds a corrupt
or partial file. Nothing is decompressed past a known file's official size.

Hashing is not cached: sha256 of the 47 MB training images takes ~0.03 s, against ~0.2 s to
decompress them, so a verification cache would save little and could go stale.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlplab.data.idx import IdxPayload, check_images, check_labels, read_idx
from mlplab.errors import DataError
from mlplab.saving import describe_entry, remove_stale_temporaries, temporary_path

# The four files of an MNIST-style dataset, in the order they are reported. On disk each may be
# raw or end in ".gz".
FILE_STEMS: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

CLASS_NAMES: dict[str, list[str]] = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}

# (payload bytes, sha256) of each decompressed file. Upstream mirrors recompress the files now
# and then, so checksums of the .gz wrappers would not be stable; the payloads are.
CHECKSUMS: dict[str, dict[str, tuple[int, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte": (
            47040016,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        "train-labels-idx1-ubyte": (
            60008,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        "t10k-images-idx3-ubyte": (
            7840016,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        "t10k-labels-idx1-ubyte": (
            10008,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": (
            47040016,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        "train-labels-idx1-ubyte": (
            60008,
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        "t10k-images-idx3-ubyte": (
            7840016,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        "t10k-labels-idx1-ubyte": (
            10008,
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
}

# Base URLs, tried in order; each serves "<stem>.gz". Overridden by $MLPLAB_MIRRORS.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ],
}

# Folders where distribution packages install the datasets.
SYSTEM_DIRS: dict[str, list[str]] = {
    "mnist": ["/usr/share/datasets/mnist"],
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
}

# Seconds to wait for a mirror to connect or send the next block before trying the next one.
DOWNLOAD_TIMEOUT = 30.0

VERIFIED = "verified"
UNVERIFIED = "not verified (no known checksum)"


@dataclass(frozen=True)
class FileSource:
    """Where one file of a dataset came from.

    Attributes
    ----------
    file : str
        Standard name without ``.gz``, e.g. ``"train-images-idx3-ubyte"``.
    path : pathlib.Path
        The file that was read (after a download: its place in the cache).
    origin : str
        One of ``"explicit"``, ``"env"``, ``"cache"``, ``"system"``, ``"download"``.
    payload_bytes : int
        Length of the decompressed file, header included.
    checksum : str
        ``"verified"`` or ``"not verified (no known checksum)"``; a mismatch is an error instead.
    url : str or None
        The mirror URL the file was downloaded from, if it was.
    """

    file: str
    path: Path
    origin: str
    payload_bytes: int
    checksum: str
    url: str | None = None


@dataclass(frozen=True)
class LoadedFile:
    """A file that was found (or downloaded), read, checked and verified."""

    source: FileSource
    idx: IdxPayload


def known_datasets() -> list[str]:
    """Names accepted by :func:`~mlplab.data.load_dataset` besides folder paths."""
    return list(CLASS_NAMES)


def cache_dir(name: str) -> Path:
    """The user cache folder for dataset ``name``: ``$XDG_CACHE_HOME/mlplab/<name>``.

    Per the XDG spec an unset, empty or relative ``XDG_CACHE_HOME`` means ``~/.cache``.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "mlplab" / name


def mirrors_for(name: str) -> list[str]:
    """Base URLs to download ``name`` from, in order.

    ``$MLPLAB_MIRRORS``, when set, replaces the built-in list: whitespace-separated base URLs in
    which ``{dataset}`` stands for the dataset name, e.g. ``http://127.0.0.1:8000/{dataset}/``.
    """
    override = os.environ.get("MLPLAB_MIRRORS")
    if override is not None:
        return [url.replace("{dataset}", name) for url in override.split()]
    return list(MIRRORS.get(name, []))


def find_files(directory: Path, stems: tuple[str, ...] = FILE_STEMS) -> dict[str, Path]:
    """The standard files present in ``directory``, preferring raw over ``.gz`` (no decompressing).

    Raises
    ------
    DataError
        If a directory, a symbolic link loop or anything but a regular file stands where one of
        ``stems`` should be: saying "missing" would send the user looking in the wrong place.
    """
    found = {}
    for stem in stems:
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            what = describe_entry(candidate)
            if what is None:
                found[stem] = candidate
                break
            if what != "missing":
                raise DataError(
                    f"{candidate}: is {what}, not an IDX file; remove it or put the {stem} file"
                    " there"
                )
    return found


def fix_hint(name: str) -> str:
    """How to get a good copy of dataset ``name``, for the end of error messages."""
    return (
        f"set MLPLAB_DATA or pass --data-dir to a folder holding the four IDX files,"
        f" or run `mlplab data fetch --dataset {name}`"
    )


def n_classes_of(name: str | None) -> int | None:
    """Number of classes of a known dataset; None for a user's folder (labels are not bounded)."""
    return len(CLASS_NAMES[name]) if name in CLASS_NAMES else None


def check_role(stem: str, idx: IdxPayload, label: str, name: str | None) -> None:
    """Check that file ``stem`` holds what its name says: uint8 images, or labels in range."""
    if "images" in stem:
        check_images(idx.array, label)
    else:
        check_labels(idx.array, label, n_classes_of(name))


def verify(name: str | None, stem: str, idx: IdxPayload, label: str, fix: str) -> str:
    """Check a payload against the known checksum of ``name``'s file ``stem``.

    Returns
    -------
    str
        :data:`VERIFIED`, or :data:`UNVERIFIED` when no checksum is known (``name`` is None).

    Raises
    ------
    DataError
        If the payload length or sha256 differs from the known one.
    """
    if name is None or stem not in CHECKSUMS.get(name, {}):
        return UNVERIFIED
    size, sha256 = CHECKSUMS[name][stem]
    if idx.payload_bytes != size or idx.sha256 != sha256:
        raise DataError(
            f"{label}: checksum mismatch, not the official {name} {stem} (payload"
            f" {idx.payload_bytes} bytes, sha256 {idx.sha256[:16]}...; expected {size} bytes,"
            f" sha256 {sha256[:16]}...); {fix}"
        )
    return VERIFIED


def identify(loaded: dict[str, LoadedFile]) -> str | None:
    """The known dataset whose checksums all match the files of ``loaded`` (one or more), if any."""
    for name, table in CHECKSUMS.items():
        if loaded and all(
            (file.idx.payload_bytes, file.idx.sha256) == table[stem]
            for stem, file in loaded.items()
        ):
            return name
    return None


def read_files(files: dict[str, Path], origin: str, name: str | None) -> dict[str, LoadedFile]:
    """Read, check and verify ``files`` (standard name -> path), which may be fewer than four.

    ``name`` selects the checksums to verify against; None reads unverified (a user's own data).
    """
    if name is None:
        fix = "replace it with a good copy"
    elif origin == "cache":
        fix = f"delete it and run `mlplab data fetch --dataset {name}`"
    else:
        fix = f"replace it with an official copy, or {fix_hint(name)}"
    # A known dataset's files are never read past their official size (a gzip bomb stops there).
    sizes = {stem: size for stem, (size, _) in CHECKSUMS.get(name, {}).items()}
    loaded = {}
    for stem in FILE_STEMS:
        if stem in files:
            try:
                idx = read_idx(files[stem], max_bytes=sizes.get(stem))
                # Structure before checksum: "truncated" or "label 12 out of range" says more
                # than "checksum mismatch" does.
                check_role(stem, idx, str(files[stem]), name)
            except DataError as error:
                raise DataError(f"{error}; {fix}") from error
            status = verify(name, stem, idx, str(files[stem]), fix)
            source = FileSource(stem, files[stem], origin, idx.payload_bytes, status)
            loaded[stem] = LoadedFile(source, idx)
    return loaded


def _describe_error(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _download_to_temp(url: str, directory: Path, stem: str, progress: bool) -> Path:
    """Stream ``url`` into a new temporary file in ``directory``; the caller renames or deletes it."""
    # Imported here so that merely importing mlplab.data does not pay for tqdm.
    from tqdm.auto import tqdm

    from mlplab import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"mlplab/{__version__}"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
        length = response.headers.get("Content-Length")
        # Named with our pid, so that remove_stale_temporaries can tell a killed download's.
        temp = temporary_path(directory / f"{stem}.gz")
        try:
            with (
                open(temp, "wb") as out,
                tqdm(
                    total=int(length) if length and length.isdigit() else None,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=f"{stem}.gz",
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    return temp


def download_file(
    name: str,
    stem: str,
    directory: Path,
    progress: bool,
    failures: list[str],
    dead_mirrors: set[str],
) -> LoadedFile | None:
    """Download ``stem`` of dataset ``name`` into ``directory``, trying each mirror in order.

    A download is verified before it is renamed into place; a mirror that serves a bad file is
    passed over. Mirrors that cannot be reached at all go into ``dead_mirrors`` so the remaining
    files do not wait for them again. Each failure is appended to ``failures``.

    Returns
    -------
    LoadedFile or None
        The verified file, or None when every mirror failed.
    """
    for base in mirrors_for(name):
        if base in dead_mirrors:
            continue
        url = base.rstrip("/") + f"/{stem}.gz"
        try:
            temp = _download_to_temp(url, directory, stem, progress)
        except urllib.error.HTTPError as error:
            failures.append(f"{url}: {_describe_error(error)}")
            continue
        except (OSError, http.client.HTTPException, ValueError) as error:
            # Unreachable, refused, timed out or cut off: skip this mirror for the other files too.
            failures.append(f"{url}: {_describe_error(error)}")
            dead_mirrors.add(base)
            continue
        final = directory / f"{stem}.gz"
        installed = False
        try:
            idx = read_idx(temp, label=url, max_bytes=CHECKSUMS.get(name, {}).get(stem, (None,))[0])
            check_role(stem, idx, url, name)
            verify(name, stem, idx, url, "this mirror serves another file")
            os.replace(temp, final)  # atomic: the cache holds the old state or the verified file
            installed = True
        except DataError as error:
            failures.append(str(error))
            continue
        except OSError as error:
            raise DataError(
                f"{final}: cannot write into the data folder ({error.strerror or error}); set"
                " XDG_CACHE_HOME to a writable folder or pass --data-dir"
            ) from error
        finally:
            if not installed:  # refused, or interrupted: never leave a partial file behind
                temp.unlink(missing_ok=True)
        source = FileSource(stem, final, "download", idx.payload_bytes, VERIFIED, url)
        return LoadedFile(source, idx)
    return None


def fill_folder(
    name: str,
    directory: Path,
    origin: str,
    progress: bool,
    notes: list[str],
    stems: tuple[str, ...] = FILE_STEMS,
) -> dict[str, LoadedFile] | None:
    """Use the verified files of ``stems`` already in ``directory``; download the missing ones.

    Returns None (with the reasons in ``notes``) when a file could not be downloaded.
    """
    loaded = read_files(find_files(directory, stems), origin, name)
    missing = [stem for stem in stems if stem not in loaded]
    if not missing:
        return loaded
    if not mirrors_for(name):
        notes.append("download: no mirrors configured (MLPLAB_MIRRORS is empty)")
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"{directory}: cannot create the data folder ({error.strerror or error});"
            " set XDG_CACHE_HOME to a writable folder or pass --data-dir"
        ) from error
    if not os.access(directory, os.W_OK):
        raise DataError(
            f"{directory}: folder is not writable; set XDG_CACHE_HOME to a writable folder"
            " or pass --data-dir"
        )
    remove_stale_temporaries(directory)  # what killed downloads left behind
    failures: list[str] = []
    dead_mirrors: set[str] = set()
    for stem in missing:
        file = download_file(name, stem, directory, progress, failures, dead_mirrors)
        if file is None:
            notes.append(f"download of {stem}.gz failed ({'; '.join(failures)})")
            return None
        loaded[stem] = file
    return {stem: loaded[stem] for stem in stems}


def complete_folder(directory: Path, name: str, stems: tuple[str, ...]) -> tuple[Path | None, str]:
    """The first of ``directory/name`` and ``directory`` that holds all ``stems``, or why none."""
    checked = []
    for candidate in (directory / name, directory):
        found = find_files(candidate, stems)
        if len(found) == len(stems):
            return candidate, ""
        if found:
            missing = [stem for stem in stems if stem not in found]
            checked.append(f"{candidate} lacks {', '.join(missing)}")
    return None, "; ".join(checked) or f"no {name} IDX files in {directory / name} or {directory}"


def _read_known(
    folder: Path, origin: str, name: str, notes: list[str], stems: tuple[str, ...]
) -> dict[str, LoadedFile] | None:
    """Read a complete folder as dataset ``name``; None (noted) if it is another known dataset.

    ``MLPLAB_DATA`` may hold one dataset's files directly, so finding Fashion-MNIST there while
    looking for MNIST is no corruption: note it and search on. Anything else that fails is an error.
    """
    files = find_files(folder, stems)
    try:
        return read_files(files, origin, name)
    except DataError as error:
        mismatch = error
    try:
        other = identify(read_files(files, origin, None))
    except DataError:
        other = None
    if other is None or other == name:
        raise mismatch
    if origin == "explicit":
        raise DataError(f"--data-dir {folder}: holds {other}, not {name}; use --dataset {other}")
    notes.append(f"{folder} holds {other}, not {name}")
    return None


def describe_folder(directory: Path) -> str | None:
    """What stands at ``directory`` when it is not a folder (None when it is one)."""
    what = describe_entry(directory)
    if what is None:
        return "a file, not a folder"
    return None if what == "a directory" else what


def search(
    name: str, data_dir: str | Path | None, stems: tuple[str, ...], notes: list[str]
) -> dict[str, LoadedFile] | None:
    """Find, read and verify the files ``stems`` of the known dataset ``name`` without downloading.

    Follows steps 1 to 4 of this module's docstring; places passed over go into ``notes``.

    Returns
    -------
    dict of str to LoadedFile or None
        By standard file name, in ``stems`` order; None when no place holds them all.

    Raises
    ------
    DataError
        If a file that was found is corrupt, or ``data_dir`` lacks the files.
    """
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        if (what := describe_folder(directory)) is not None:
            if what == "missing":
                raise DataError(f"--data-dir {directory}: no such folder; {fix_hint(name)}")
            raise DataError(f"--data-dir {directory}: is {what}; give a folder of IDX files")
        folder, why = complete_folder(directory, name, stems)
        if folder is None:
            expected = ", ".join(f"{stem}[.gz]" for stem in stems)
            raise DataError(f"--data-dir {directory}: {why}; expected {expected}")
        return _read_known(folder, "explicit", name, notes, stems)

    env = os.environ.get("MLPLAB_DATA")
    if not env:
        notes.append("MLPLAB_DATA not set")
    elif (what := describe_folder(Path(env).expanduser())) is not None:
        notes.append(f"MLPLAB_DATA={env} {'does not exist' if what == 'missing' else 'is ' + what}")
    else:
        folder, why = complete_folder(Path(env).expanduser(), name, stems)
        if folder is None:
            notes.append(f"MLPLAB_DATA: {why}")
        elif (loaded := _read_known(folder, "env", name, notes, stems)) is not None:
            return loaded

    cache = cache_dir(name)
    cached = find_files(cache, stems)
    if len(cached) == len(stems):
        return read_files(cached, "cache", name)
    notes.append(f"cache {cache}: {'incomplete' if cached else 'empty'}")

    for system in SYSTEM_DIRS.get(name, []):
        if len(find_files(Path(system), stems)) != len(stems):
            notes.append(
                f"system copy {system}: {'incomplete' if Path(system).is_dir() else 'absent'}"
            )
        elif (loaded := _read_known(Path(system), "system", name, notes, stems)) is not None:
            return loaded
    return None


def locate(
    name: str,
    data_dir: str | Path | None,
    download: bool,
    progress: bool,
    stems: tuple[str, ...] = FILE_STEMS,
) -> tuple[dict[str, LoadedFile], list[str]]:
    """Find, read and verify the files ``stems`` (all four by default) of the known dataset ``name``.

    Follows the search order of this module's docstring.

    Returns
    -------
    files : dict of str to LoadedFile
        By standard file name, in ``stems`` order.
    notes : list of str
        Places that were looked at and passed over, and why (e.g. ``MLPLAB_DATA`` pointing nowhere).

    Raises
    ------
    DataError
        If a file that was found is corrupt, if ``data_dir`` lacks the files, or if no place had
        them and they could not be downloaded: one message listing every place looked at.
    """
    notes: list[str] = []
    loaded = search(name, data_dir, stems, notes)
    if loaded is not None:
        return loaded, notes
    if download:
        loaded = fill_folder(name, cache_dir(name), "cache", progress, notes, stems)
        if loaded is not None:
            return loaded, notes
    else:
        notes.append("downloading disabled")
    raise DataError(
        f"{name}: IDX files not found; looked at: {'; '.join(notes)}; to provide them, {fix_hint(name)}"
    )
