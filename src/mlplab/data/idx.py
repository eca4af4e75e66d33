"""Reading IDX files, the format of MNIST and Fashion-MNIST, with every field checked.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (``TT`` the element type, ``DD`` the number of
dimensions), ``DD`` big-endian uint32 sizes, then the elements in C order. The files are usually
gzip-compressed; the *payload* is the decompressed file, header included, and is what checksums are
computed over (the gzip wrapper differs between mirrors, the payload does not).

Arrays are zero-copy, read-only views of the payload (``np.frombuffer``): a training set stays a
single 47 MB buffer, and nothing can modify it by accident. Copy an array if you need to write to it.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlplab.errors import DataError

# Element types of the IDX format (third byte of the magic number). Multi-byte types are big-endian.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class IdxPayload:
    """The decompressed contents of one IDX file and the array it holds.

    Attributes
    ----------
    array : numpy.ndarray
        Read-only view of the elements, shaped as the header says.
    payload_bytes : int
        Length of the decompressed file, header included.
    sha256 : str
        Hex sha256 of the decompressed file.
    """

    array: np.ndarray
    payload_bytes: int
    sha256: str


def read_payload(path: str | Path, label: str | None = None) -> bytes:
    """Return the decompressed bytes of an IDX file, gzip-compressed or raw.

    Compression is recognised by the gzip magic bytes, not by the file name, so a raw file named
    ``.gz`` (or the reverse) still reads.

    Parameters
    ----------
    path : str or pathlib.Path
        The file to read.
    label : str, optional
        How to name the file in error messages (defaults to ``path``).

    Raises
    ------
    DataError
        If the file cannot be read or its gzip stream is truncated or corrupt.
    """
    label = label or str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"{label}: cannot read ({error.strerror or error})") from error
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as error:
        raise DataError(
            f"{label}: truncated gzip file ({len(raw)} bytes end before the end-of-stream marker)"
        ) from error
    except (zlib.error, gzip.BadGzipFile, OSError) as error:
        raise DataError(f"{label}: corrupt gzip data ({error})") from error


def parse_idx(payload: bytes, label: str) -> np.ndarray:
    """Check an IDX header against the payload length and return the elements without copying.

    Parameters
    ----------
    payload : bytes
        A decompressed IDX file.
    label : str
        How to name the file in error messages.

    Returns
    -------
    numpy.ndarray
        Read-only view into ``payload`` with the header's shape and element type.

    Raises
    ------
    DataError
        On a wrong magic number, an unknown element type, a header or payload shorter than the
        header promises, or bytes left over after the data.
    """
    if len(payload) < 4:
        raise DataError(f"{label}: truncated, {len(payload)} bytes is too short for an IDX header")
    magic = int.from_bytes(payload[:4], "big")
    type_code, ndim = payload[2], payload[3]
    if payload[:2] != b"\0\0" or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{label}: not an IDX file (magic number 0x{magic:08x}; expected 0x00000801 for labels"
            " or 0x00000803 for images)"
        )
    header_bytes = 4 + 4 * ndim
    if len(payload) < header_bytes:
        raise DataError(
            f"{label}: truncated, expected a {header_bytes}-byte header for {ndim} dimensions,"
            f" found {len(payload)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", payload[4:header_bytes])
    dtype = IDX_DTYPES[type_code]
    count = math.prod(shape)
    expected = header_bytes + count * dtype.itemsize
    if len(payload) < expected:
        raise DataError(
            f"{label}: truncated, expected {expected} bytes of payload for shape {shape},"
            f" found {len(payload)}"
        )
    if len(payload) > expected:
        raise DataError(
            f"{label}: {len(payload) - expected} extra bytes after the data (expected {expected}"
            f" bytes of payload for shape {shape}, found {len(payload)})"
        )
    return np.frombuffer(payload, dtype=dtype, count=count, offset=header_bytes).reshape(shape)


def read_idx(path: str | Path, label: str | None = None) -> IdxPayload:
    """Read and check any IDX file, gzip-compressed or raw.

    Parameters
    ----------
    path : str or pathlib.Path
        The file to read.
    label : str, optional
        How to name the file in error messages (defaults to ``path``).

    Returns
    -------
    IdxPayload
        The array (a read-only view of the payload), the payload length and its sha256.

    Examples
    --------
    >>> read_idx("t10k-labels-idx1-ubyte.gz").array.shape  # doctest: +SKIP
    (10000,)
    """
    label = label or str(path)
    payload = read_payload(path, label)
    array = parse_idx(payload, label)
    return IdxPayload(array, len(payload), hashlib.sha256(payload).hexdigest())


def check_images(array: np.ndarray, label: str) -> np.ndarray:
    """Check that an IDX array is a stack of uint8 images, shape ``(N, height, width)``."""
    if array.dtype != np.uint8 or array.ndim != 3:
        raise DataError(
            f"{label}: expected uint8 images of shape (N, height, width), found {array.dtype}"
            f" with shape {array.shape}; is this a labels file?"
        )
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise DataError(f"{label}: images of size {array.shape[1]}x{array.shape[2]} are empty")
    return array


def check_labels(array: np.ndarray, label: str, n_classes: int | None = None) -> np.ndarray:
    """Check that an IDX array is a vector of uint8 labels below ``n_classes`` (when given)."""
    if array.dtype != np.uint8 or array.ndim != 1:
        raise DataError(
            f"{label}: expected uint8 labels of shape (N,), found {array.dtype} with shape"
            f" {array.shape}; is this an images file?"
        )
    if n_classes is not None and array.size:
        bad = np.flatnonzero(array >= n_classes)
        if bad.size:
            raise DataError(
                f"{label}: label {int(array[bad[0]])} at index {int(bad[0])} is out of range for"
                f" {n_classes} classes ({bad.size} labels out of range)"
            )
    return array
