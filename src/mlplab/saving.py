"""Files mlplab writes: atomic, pickle-free, and checked when read.

Every file is first written to a temporary name in the same folder and then renamed over the
target with ``os.replace``, which is atomic: a killed process leaves either the old file or the
new one, never half of one.

Models and checkpoints are ``.npz`` archives of plain numeric arrays, loadable with
``np.load(path, allow_pickle=False)``. Besides the arrays they hold three string arrays:

``__format__``        ``"mlplab-model/1"`` or ``"mlplab-checkpoint/1"``
``__architecture__``  the network's graph as JSON (see :mod:`mlplab.engine.architecture`)
``__metadata__``      anything else as JSON (loss, preprocessing, class names, training state)

Arrays are named ``param/<node>.<param>``, ``buffer/<node>.<buffer>`` and, for anything else a
caller stores (optimizer state, preprocessing statistics), ``<group>/<name>``. Loading builds the
network from the JSON through the registry of known layer types, so no code from a file is ever
run; missing arrays, wrong shapes and unknown layer types are reported by name.
"""

from __future__ import annotations

import json
import os
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlplab.errors import ConfigError, DataError

MODEL_FORMAT = "mlplab-model/1"
CHECKPOINT_FORMAT = "mlplab-checkpoint/1"


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())  # the data is on disk before the name points at it
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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


@dataclass
class Archive:
    kind: str
    metadata: dict
    architecture: dict | None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays named ``<prefix>/<name>``, by ``name``."""
        start = len(prefix) + 1
        return {name[start:]: a for name, a in self.arrays.items() if name.startswith(prefix + "/")}


def read_archive(path, kind: str) -> Archive:
    """Read an archive written by :func:`write_archive`, refusing anything else."""
    path = Path(path)
    label = path.name
    if not path.is_file():
        raise DataError(f"{path}: no such file; give the path of a saved model or run folder")
    with open(path, "rb") as file:
        if file.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise DataError(f"{label}: not an .npz archive; give a model file written by mlplab")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as error:
        if "allow_pickle" in str(error) or "Object arrays" in str(error):
            raise DataError(
                f"{label}: holds a pickled object, which mlplab never writes; refusing "
                "to load it (it could run code). Re-save the model with mlplab"
            ) from None
        raise DataError(f"{label}: not a readable .npz archive ({error})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(
            f"{label}: not a readable .npz archive ({error}); was it cut short?"
        ) from None
    found_kind = str(arrays.pop("__format__", ""))
    if found_kind != kind:
        raise DataError(f"{label}: is not an {kind} file (format {found_kind or 'unknown'!r})")
    try:
        metadata = json.loads(str(arrays.pop("__metadata__")))
        architecture = arrays.pop("__architecture__", None)
        architecture = json.loads(str(architecture)) if architecture is not None else None
    except (KeyError, json.JSONDecodeError) as error:
        raise DataError(f"{label}: damaged metadata ({error}); re-save it with mlplab") from None
    return Archive(found_kind, metadata, architecture, arrays)


def network_arrays(network) -> dict[str, np.ndarray]:
    arrays = {f"param/{name}": p for name, p in network.params.items()}
    arrays.update({f"buffer/{name}": b for name, b in network.buffers.items()})
    return arrays


def restore_network(archive: Archive, label: str, dtype=None):
    """Build the archive's network from its JSON and fill in its arrays, checking each one."""
    from mlplab.engine.architecture import (
        network_from_spec,
    )  # imported here: architecture imports us

    if archive.architecture is None:
        raise DataError(f"{label}: has no architecture; it is not a saved network")
    dtype = np.dtype(dtype or archive.metadata.get("dtype", "float32"))
    try:
        network = network_from_spec(archive.architecture, dtype=dtype)
    except ConfigError as error:
        raise DataError(f"{label}: {error}") from None
    for group, expected in (("param", network.params), ("buffer", network.buffers)):
        stored = archive.group(group)
        missing = sorted(set(expected) - set(stored))
        extra = sorted(set(stored) - set(expected))
        if missing or extra:
            raise DataError(
                f"{label}: arrays do not match the architecture "
                f"(missing {missing or 'none'}, unexpected {extra or 'none'})"
            )
        for name, target in expected.items():
            array = stored[name]
            if array.shape != target.shape:
                raise DataError(
                    f"{label}: array {group}/{name} has shape {array.shape}, the "
                    f"architecture needs {target.shape}"
                )
            if not np.issubdtype(array.dtype, np.floating):
                raise DataError(f"{label}: array {group}/{name} is {array.dtype}, not floating")
            target[...] = array
    return network


def save_model(
    path, network, metadata: dict | None = None, extra_arrays: dict[str, np.ndarray] | None = None
) -> Path:
    """Save a network (and e.g. its preprocessing statistics) as a model file."""
    arrays = network_arrays(network)
    arrays.update(extra_arrays or {})
    metadata = {"dtype": network.dtype.name, **(metadata or {})}
    return write_archive(path, arrays, MODEL_FORMAT, metadata, network.architecture())


def load_model(path, dtype=None):
    """Load a model file: returns ``(network, metadata, archive)``."""
    archive = read_archive(path, MODEL_FORMAT)
    network = restore_network(archive, Path(path).name, dtype)
    return network, archive.metadata, archive
