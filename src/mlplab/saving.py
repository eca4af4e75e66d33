"""Files mlplab writes: atomic, pickle-free, and checked when read.

Every file is first written to a temporary name in the same folder and then renamed over the
target with ``os.replace``, which is atomic: a killed process leaves either the old file or the
new one, never half of one.

Models and checkpoints are ``.npz`` archives of plain numeric arrays, loadable with
``np.load(path, allow_pickle=False)``. Besides the arrays they hold three string arrays:

``__format__``        ``"mlplab-model/1"`` or ``"mlplab-checkpoint/2"``
``__architecture__``  the network's graph as JSON (see :mod:`mlplab.engine.architecture`)
``__metadata__``      anything else as JSON (loss, preprocessing, class names, training state)

Arrays are named ``param/<node>.<param>``, ``buffer/<node>.<buffer>`` and, for anything else a
caller stores (optimizer state, preprocessing statistics), ``<group>/<name>``. Loading builds the
network from the JSON through the registry of known layer types, so no code from a file is ever
run; missing arrays, wrong shapes and unknown layer types are reported by name.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import zipfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlplab.errors import ConfigError, DataError
from mlplab.resources import available_memory_bytes, format_bytes

MODEL_FORMAT = "mlplab-model/1"
CHECKPOINT_FORMAT = "mlplab-checkpoint/2"


# ".<name>.<pid>.tmp": the temporaries of atomic_path, and whose writer they belong to.
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.tmp$")


def temporary_path(path: str | os.PathLike) -> Path:
    """The temporary file beside ``path`` that this process writes before renaming it into place.

    Named ``.<name>.<pid>.tmp``: hidden, recognisable, and carrying the writer's process id, so
    that :func:`remove_stale_temporaries` can tell a killed writer's leftovers from a live one's.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _process_is_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OSError, OverflowError):
        return False  # not a possible pid
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries in ``folder`` whose writer is no longer running.

    A process killed while writing leaves its ``.<name>.<pid>.tmp`` behind (see
    :func:`temporary_path`); those of running processes, this one included, are kept. A pid
    reused by an unrelated live process keeps its file until that process ends.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder to clean (a run folder, a data cache); a missing folder has nothing to clean.

    Returns
    -------
    list of pathlib.Path
        The files deleted, sorted.
    """
    removed = []
    try:
        entries = sorted(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        match = TEMPORARY_NAME.match(entry.name)
        if match is None or _process_is_alive(int(match["pid"])) or not entry.is_file():
            continue
        try:
            entry.unlink()
        except FileNotFoundError:
            continue  # another process cleaned it first
        removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The data is fsynced before the rename, so a crash leaves the old file or the new one. If
    anything fails (a full disk, a read-only folder), the temporary is deleted, ``path`` is left
    as it was, and an :class:`OSError` becomes a one-line :class:`DataError`.
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())  # the data is on disk before the name points at it
        os.replace(temporary, path)
    except OSError as error:
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        fix = "free some disk space or write to another folder" if full else "write elsewhere"
        raise DataError(
            f"{path}: cannot write ({error.strerror or error}); {kept}; {fix}"
        ) from None
    finally:
        with suppress(OSError):  # e.g. the folder itself could not be made
            temporary.unlink(missing_ok=True)


def describe_entry(path: Path) -> str | None:
    """What stands at ``path`` when it is not a readable regular file, or None when it is one.

    Lets an error say "is a directory" or "is a symlink loop" instead of the misleading
    "missing" that ``Path.is_file()`` alone would suggest.
    """
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            return f"a broken symbolic link (to {os.readlink(path)})"
        return "missing"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"unreadable ({error.strerror or error})"
    if stat.S_ISDIR(status.st_mode):
        return "a directory"
    if not stat.S_ISREG(status.st_mode):
        return "not a regular file (a device, pipe or socket)"
    return None


def write_text(path, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_json(path, value) -> Path:
    return write_text(path, json.dumps(value, indent=2) + "\n")


def write_archive(
    path, arrays: dict[str, np.ndarray], kind: str, metadata: dict, architecture: dict | None = None
) -> Path:
    """Write named arrays plus JSON as one ``.npz`` archive, atomically."""
    contents = {"__format__": np.array(kind), "__metadata__": np.array(json.dumps(metadata))}
    if architecture is not None:
        contents["__architecture__"] = np.array(json.dumps(architecture))
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype == object:
            raise TypeError(f"refusing to save object array {name!r}: it would need pickle")
        contents[name] = array
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, **contents)  # a file object: numpy does not append ".npz" to the name
    return Path(path)


@dataclass(frozen=True)
class MemberHeader:
    """What an ``.npy`` member of an archive declares, read before any of its data.

    Attributes
    ----------
    shape : tuple of int
        The array's shape.
    dtype : numpy.dtype
        Its element type.
    nbytes : int
        Bytes of array data the member holds.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int


@dataclass
class Archive:
    """An archive's format, JSON and arrays; ``headers`` describe every array before it is read."""

    kind: str
    metadata: dict
    architecture: dict | None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    headers: dict[str, MemberHeader] = field(default_factory=dict)

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays named ``<prefix>/<name>``, by ``name``."""
        start = len(prefix) + 1
        return {name[start:]: a for name, a in self.arrays.items() if name.startswith(prefix + "/")}


# The JSON members (__format__, __metadata__, __architecture__) of any archive are a few kB.
MAX_JSON_BYTES = 16 << 20
# mlplab stores members uncompressed; a deflated member expanding more than this is a zip bomb
# (deflate tops out near 1000:1, which only long runs of one byte reach).
MAX_COMPRESSION_RATIO = 100
# Members below this size are not checked for their ratio: tiny arrays of zeros compress well.
_RATIO_CHECKED_FROM = 1 << 20
_JSON_MEMBERS = ("__format__", "__metadata__", "__architecture__")


def inspect_archive(path: Path, label: str) -> dict[str, MemberHeader]:
    """Read the header of every array in an ``.npz`` archive, and refuse one that cannot be loaded.

    Only the zip directory and the ``.npy`` headers are read: a member whose header claims 2**40
    floats, a zip bomb or a pickled object is refused before any array is allocated.

    Raises
    ------
    DataError
        If a member is not an ``.npy`` array, is compressed suspiciously well, holds objects,
        holds more or fewer bytes than its header declares, or if all arrays together exceed the
        memory available.
    """
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                if name == info.filename:
                    raise DataError(
                        f"{label}: member {info.filename!r} is not a NumPy array; give a file"
                        " written by mlplab"
                    )
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size >= _RATIO_CHECKED_FROM and ratio > MAX_COMPRESSION_RATIO:
                    raise DataError(
                        f"{label}: member {info.filename!r} expands {ratio:.0f}-fold to"
                        f" {format_bytes(info.file_size)} (a zip bomb?); mlplab never writes"
                        " this, give a file written by mlplab"
                    )
                with archive.open(info) as member:
                    headers[name] = _read_npy_header(member, info, label)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise DataError(
            f"{label}: not a readable .npz archive ({error}); was it cut short?"
        ) from None
    except (NotImplementedError, RuntimeError) as error:  # an unknown compression or encryption
        raise DataError(f"{label}: not a readable .npz archive ({error})") from None
    total = sum(header.nbytes for header in headers.values())
    available = available_memory_bytes()
    if total > available:
        raise DataError(
            f"{label}: its arrays take {format_bytes(total)} but only {format_bytes(available)}"
            " of memory is available; free memory or load it on a larger machine"
        )
    return headers


def _read_npy_header(member, info: zipfile.ZipInfo, label: str) -> MemberHeader:
    """The header of one ``.npy`` member, checked against the bytes the member holds."""
    where = f"{label}: member {info.filename!r}"
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as error:
        raise DataError(f"{where} has a damaged array header ({error})") from None
    if dtype.hasobject:
        raise DataError(
            f"{where} holds pickled objects, which mlplab never writes; refusing to load it (it"
            " could run code). Re-save the model with mlplab"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    declared = info.file_size - member.tell()
    if nbytes != declared:
        raise DataError(
            f"{where} claims shape {shape} of {dtype} ({format_bytes(nbytes)}) but holds"
            f" {format_bytes(max(declared, 0))}; the file is damaged, re-save it with mlplab"
        )
    return MemberHeader(tuple(shape), dtype, nbytes)


def read_archive(path, kind: str, before_arrays=None) -> Archive:
    """Read an archive written by :func:`write_archive`, refusing anything else.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.
    kind : str
        :data:`MODEL_FORMAT` or :data:`CHECKPOINT_FORMAT`.
    before_arrays : callable, optional
        Called with the :class:`Archive` once its JSON and array headers are read and checked,
        before any array is: raise there to refuse arrays that do not fit the architecture.

    Raises
    ------
    DataError
        If the file is not an archive of this kind, is damaged, holds pickled objects, or any
        check of :func:`inspect_archive` fails.
    """
    path = Path(path)
    label = path.name
    what = describe_entry(path)
    if what == "missing":
        raise DataError(f"{path}: no such file; give the path of a saved model or run folder")
    if what is not None:
        raise DataError(f"{path}: is {what}, not a model file; give a saved model or run folder")
    with open(path, "rb") as file:
        if file.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise DataError(f"{label}: not an .npz archive; give a model file written by mlplab")
    headers = inspect_archive(path, label)
    for name in _JSON_MEMBERS:
        header = headers.get(name)
        if header is not None and (
            header.shape != () or header.dtype.kind != "U" or header.nbytes > MAX_JSON_BYTES
        ):
            raise DataError(
                f"{label}: {name} is not a JSON string ({header.dtype}, shape {header.shape});"
                " re-save it with mlplab"
            )
    try:
        with np.load(path, allow_pickle=False) as archive:
            found_kind = str(archive["__format__"]) if "__format__" in headers else ""
            if found_kind != kind:
                raise DataError(
                    f"{label}: is not an {kind} file (format {found_kind or 'unknown'!r})"
                )
            texts = {name: str(archive[name]) for name in _JSON_MEMBERS if name in headers}
            arrays_headers = {n: h for n, h in headers.items() if n not in _JSON_MEMBERS}
            result = Archive(
                found_kind,
                _json_object(texts.get("__metadata__"), "__metadata__", label),
                _json_object(texts.get("__architecture__"), "__architecture__", label, True),
                {},
                arrays_headers,
            )
            if before_arrays is not None:
                before_arrays(result)
            result.arrays = {name: archive[name] for name in arrays_headers}
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(
            f"{label}: not a readable .npz archive ({error}); was it cut short?"
        ) from None
    return result


def _json_object(text: str | None, name: str, label: str, optional: bool = False) -> dict | None:
    """The JSON object stored in member ``name``; refuses a list, a number or damaged JSON."""
    if text is None:
        if optional:
            return None
        raise DataError(f"{label}: damaged metadata (no {name}); re-save it with mlplab")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{label}: damaged metadata ({name}: {error}); re-save it with mlplab"
        ) from None
    if not isinstance(value, dict):
        raise DataError(
            f"{label}: damaged metadata ({name} is a JSON {type(value).__name__}, not an object);"
            " re-save it with mlplab"
        )
    return value


def network_arrays(network) -> dict[str, np.ndarray]:
    arrays = {f"param/{name}": p for name, p in network.params.items()}
    arrays.update({f"buffer/{name}": b for name, b in network.buffers.items()})
    return arrays


def build_saved_network(archive: Archive, label: str, dtype=None):
    """Build (without filling) the archive's network, and check its array headers against it.

    Runs before any array is read: the architecture's size is checked by
    :func:`~mlplab.engine.architecture.build_network`, then every ``param/`` and ``buffer/``
    array must exist with the shape the architecture implies.
    """
    # Imported here: the engine imports this module.
    from mlplab.engine.architecture import build_network

    if archive.architecture is None:
        raise DataError(f"{label}: has no architecture; it is not a saved network")
    try:
        dtype = np.dtype(dtype or archive.metadata.get("dtype", "float32"))
        if dtype.kind != "f":
            raise TypeError(f"dtype {dtype} is not floating")
    except TypeError as error:
        raise DataError(f"{label}: damaged metadata ({error}); re-save it with mlplab") from None
    try:
        network = build_network(
            archive.architecture, archive.architecture.get("input_size"), None, dtype=dtype
        )
    except ConfigError as error:
        raise DataError(f"{label}: {error}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        # JSON of the wrong types where the engine expects others, e.g. "inputs": 5.
        raise DataError(
            f"{label}: damaged architecture ({type(error).__name__}: {error}); re-save it with"
            " mlplab"
        ) from None
    headers = archive.headers
    for group, expected in (("param", network.params), ("buffer", network.buffers)):
        stored = {n[len(group) + 1 :] for n in headers if n.startswith(group + "/")}
        missing = sorted(set(expected) - stored)
        extra = sorted(stored - set(expected))
        if missing or extra:
            raise DataError(
                f"{label}: arrays do not match the architecture "
                f"(missing {missing or 'none'}, unexpected {extra or 'none'})"
            )
        for name, target in expected.items():
            header = headers[f"{group}/{name}"]
            if header.shape != target.shape:
                raise DataError(
                    f"{label}: array {group}/{name} has shape {header.shape}, the "
                    f"architecture needs {target.shape}"
                )
            if header.dtype.kind != "f":
                raise DataError(f"{label}: array {group}/{name} is {header.dtype}, not floating")
    return network


def fill_network(network, archive: Archive, label: str) -> None:
    """Copy the archive's arrays into ``network``, refusing NaN or infinite values."""
    for group, expected in (("param", network.params), ("buffer", network.buffers)):
        for name, target in expected.items():
            array = archive.arrays[f"{group}/{name}"]
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            if bad:
                raise DataError(
                    f"{label}: array {group}/{name} holds {bad} NaN or infinite values; the run"
                    " that saved it diverged or the file is damaged: retrain, or load an earlier"
                    " checkpoint"
                )
            target[...] = array


def restore_network(archive: Archive, label: str, dtype=None):
    """Build the archive's network from its JSON and fill in its arrays, checking each one."""
    network = build_saved_network(archive, label, dtype)
    fill_network(network, archive, label)
    return network


def save_model(
    path, network, metadata: dict | None = None, extra_arrays: dict[str, np.ndarray] | None = None
) -> Path:
    """Save a network (and e.g. its preprocessing statistics) as a model file."""
    arrays = network_arrays(network)
    arrays.update(extra_arrays or {})
    metadata = {"dtype": network.dtype.name, **(metadata or {})}
    return write_archive(path, arrays, MODEL_FORMAT, metadata, network.architecture())


def check_model_metadata(metadata: dict, network, label: str) -> None:
    """Check what a model file says besides its network: loss and class names.

    Raises
    ------
    DataError
        If ``loss`` is not an object naming a known loss, or ``class_names`` is not a list of
        strings with one name per output of the network.
    """
    from mlplab.engine.losses import make_loss  # imported here, as the engine imports us

    n_outputs = network.sizes[network.output]
    names = metadata.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise DataError(
                f"{label}: damaged metadata (class_names is not a list of strings);"
                " re-save it with mlplab"
            )
        if len(names) != n_outputs:
            raise DataError(
                f"{label}: metadata names {len(names)} classes but the network has {n_outputs}"
                " outputs; re-save the model with one class name per output"
            )
    loss = metadata.get("loss")
    if loss is not None:
        if not isinstance(loss, dict) or not isinstance(loss.get("name"), str):
            raise DataError(
                f"{label}: damaged metadata (loss is not an object with a name);"
                " re-save it with mlplab"
            )
        options = {key: value for key, value in loss.items() if key != "name"}
        try:
            make_loss(loss["name"], **options)
        except (ConfigError, TypeError) as error:
            raise DataError(
                f"{label}: damaged metadata (loss: {error}); re-save it with mlplab"
            ) from None


def check_preprocessing_headers(archive: Archive, input_size: int, label: str) -> None:
    """Refuse preprocessing arrays larger than the network's input implies, before reading them."""
    for name in archive.headers:
        if not name.startswith("preprocessing/"):
            continue
        header = archive.headers[name]
        largest = max(input_size, 2) * 8 if name != "preprocessing/config" else MAX_JSON_BYTES
        if header.nbytes > largest:
            raise DataError(
                f"{label}: array {name} holds {format_bytes(header.nbytes)}, more than a"
                f" network of {input_size} inputs needs; the file is damaged, re-save it"
            )


def check_preprocessing(archive: Archive, input_size: int, label: str):
    """The model's :class:`~mlplab.data.preprocessing.FittedPreprocessing`, checked, or None."""
    from mlplab.data.preprocessing import FittedPreprocessing

    state = archive.group("preprocessing")
    if not state:
        return None
    try:
        fitted = FittedPreprocessing.from_state(state)
    except DataError as error:
        raise DataError(f"{label}: {error}; re-save the model with mlplab") from None
    if fitted.n_features != input_size:
        raise DataError(
            f"{label}: the preprocessing makes {fitted.n_features} features but the network"
            f" takes {input_size}; the file is damaged, re-save the model with mlplab"
        )
    return fitted


def load_model(path, dtype=None):
    """Load a model file: returns ``(network, metadata, archive)``.

    Everything is checked before use, and the architecture, metadata and array headers before
    any array is read: a file that claims a billion units, names more classes than its network
    has outputs, holds NaN weights or a damaged preprocessing record is refused with a
    :class:`DataError` naming it.
    """
    label = Path(path).name
    built = []

    def check_before_reading(archive: Archive) -> None:
        network = build_saved_network(archive, label, dtype)
        check_model_metadata(archive.metadata, network, label)
        check_preprocessing_headers(archive, network.input_size, label)
        built.append(network)

    archive = read_archive(path, MODEL_FORMAT, check_before_reading)
    network = built[0]
    fill_network(network, archive, label)
    check_preprocessing(archive, network.input_size, label)
    return network, archive.metadata, archive
