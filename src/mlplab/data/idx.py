"""Reading IDX files, the format of MNIST and Fashion-MNIST, with every field checked.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (``TT`` the element type, ``DD`` the number of
dimensions), ``DD`` big-endian uint32 sizes, then the elements in C order. The files are usually
gzip-compressed; the *payload* is the decompressed file, header included, and is what checksums are
computed over (the gzip wrapper differs between mirrors, the payload does not).

Arrays are zero-copy, read-only views of the payload (``np.frombuffer``): a training set stays a
single 47 MB buffer, and nothing can modify it by accident. Copy an array if you need to write to it.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlplab.errors import DataError
from mlplab.resources import available_memory_bytes, format_bytes
from mlplab.saving import describe_entry

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

# No IDX file is read past this size, whatever its header says: 2 GiB is four times EMNIST's
# largest file (ByClass training images, ~550 MB), and MNIST's largest is 47 MB.
MAX_PAYLOAD_BYTES = 2 << 30
# Bytes decompressed per step: the most a gzip bomb can make us hold beyond the header's size.
_CHUNK = 1 << 20
# Extra bytes past the header's size that are still decompressed, to report their exact count.
_EXTRA_COUNTED = 1 << 16


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


def read_payload(
    path: str | Path, label: str | None = None, max_bytes: int | None = None
) -> bytes | bytearray:
    """Return the decompressed bytes of an IDX file, gzip-compressed or raw, reading at most what
    its header promises.

    Compression is recognised by the gzip magic bytes, not by the file name, so a raw file named
    ``.gz`` (or the reverse) still reads. A gzip stream is decompressed in chunks of 1 MiB: once
    the IDX header is in, its shape fixes the payload size, which must fit ``max_bytes``; and
    decompression stops a little past that size, so a gzip bomb (gigabytes of zeros in a few
    megabytes) costs no more memory than the file it poses as.

    Parameters
    ----------
    path : str or pathlib.Path
        The file to read.
    label : str, optional
        How to name the file in error messages (defaults to ``path``).
    max_bytes : int, optional
        Largest acceptable payload, e.g. the official size of a known dataset's file; at most
        :data:`MAX_PAYLOAD_BYTES` and the memory available, whatever is given.

    Raises
    ------
    DataError
        If the file cannot be read, is not a regular file, its gzip stream is truncated or
        corrupt, or its header or data exceed the size allowed.
    """
    path = Path(path)
    label = label or str(path)
    what = describe_entry(path)
    if what is not None:
        fix = "" if what == "missing" else "; replace it with the IDX file"
        raise DataError(f"{label}: cannot read, {what} stands where an IDX file should be{fix}")
    limit = payload_limit(max_bytes)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if file.read(2) != GZIP_MAGIC:
                if size > limit:
                    raise DataError(
                        f"{label}: {format_bytes(size)} is more than the {format_bytes(limit)}"
                        " an IDX file may hold here; give the right file"
                    )
                file.seek(0)
                return file.read()
            file.seek(0)
            return _gunzip_bounded(file, size, label, limit)
    except OSError as error:
        raise DataError(f"{label}: cannot read ({error.strerror or error})") from error


def payload_limit(max_bytes: int | None = None) -> int:
    """The most payload bytes a file may decompress to: ``max_bytes`` capped by
    :data:`MAX_PAYLOAD_BYTES` and by half the memory available now."""
    limit = min(MAX_PAYLOAD_BYTES, available_memory_bytes() // 2)
    return limit if max_bytes is None else min(limit, max_bytes)


def _gunzip_bounded(file, compressed_bytes: int, label: str, limit: int) -> bytearray:
    """Decompress a (possibly multi-member) gzip stream, stopping once it outgrows its header."""
    payload = bytearray()
    stop_after = limit  # tightened to the header's size (plus a margin) once the header is in
    declared = None
    decompressor = zlib.decompressobj(wbits=31)  # 31: gzip wrapper, CRC and length checked
    pending = b""
    try:
        while True:
            if not pending:
                pending = file.read(_CHUNK)
                if not pending:
                    break
            if decompressor.eof:
                # Another gzip member follows (gzip allows several), or zero padding, or junk.
                if pending.strip(b"\0") == b"":
                    pending = b""
                    continue
                if pending[:2] != GZIP_MAGIC:
                    raise DataError(
                        f"{label}: corrupt gzip data (junk after the end of the stream)"
                    )
                decompressor = zlib.decompressobj(wbits=31)
            payload += decompressor.decompress(pending, _CHUNK)
            pending = decompressor.unconsumed_tail or decompressor.unused_data
            if declared is None and (header := parse_header(payload, label)) is not None:
                declared = header[-1]
                if declared > limit:
                    shape = header[1]
                    raise DataError(
                        f"{label}: header claims shape {shape} ({format_bytes(declared)}), more than"
                        f" the {format_bytes(limit)} an IDX file may hold here; give the right file"
                    )
                stop_after = declared + _EXTRA_COUNTED
            if len(payload) > stop_after:
                if declared is None:
                    raise DataError(
                        f"{label}: decompresses to more than {format_bytes(limit)} without an IDX"
                        " header;"
                        " give the right file"
                    )
                raise DataError(
                    f"{label}: decompresses to more than {stop_after} bytes, more than the"
                    f" {declared} bytes its header promises (a damaged file or a gzip bomb);"
                    " give the right file"
                )
    except zlib.error as error:
        raise DataError(f"{label}: corrupt gzip data ({error})") from error
    if not decompressor.eof:
        raise DataError(
            f"{label}: truncated gzip file ({compressed_bytes} bytes end before the end-of-stream"
            " marker)"
        )
    return payload  # a bytearray: converting it to bytes would copy it


def parse_header(payload: bytes, label: str) -> tuple[int, tuple[int, ...], np.dtype, int] | None:
    """Read an IDX header: ``(header bytes, shape, dtype, payload bytes it promises)``.

    Returns None when ``payload`` is still too short to hold the whole header.

    Raises
    ------
    DataError
        On a wrong magic number or an unknown element type.
    """
    if len(payload) < 4:
        return None
    magic = int.from_bytes(payload[:4], "big")
    type_code, ndim = payload[2], payload[3]
    if payload[:2] != b"\0\0" or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{label}: not an IDX file (magic number 0x{magic:08x}; expected 0x00000801 for labels"
            " or 0x00000803 for images)"
        )
    header_bytes = 4 + 4 * ndim
    if len(payload) < header_bytes:
        return None
    shape = struct.unpack(f">{ndim}I", payload[4:header_bytes])
    dtype = IDX_DTYPES[type_code]
    return header_bytes, shape, dtype, header_bytes + math.prod(shape) * dtype.itemsize


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
    header = parse_header(payload, label)
    if header is None:
        header_bytes = 4 + 4 * payload[3]
        raise DataError(
            f"{label}: truncated, expected a {header_bytes}-byte header for {payload[3]} dimensions,"
            f" found {len(payload)} bytes"
        )
    header_bytes, shape, dtype, expected = header
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
    array = np.frombuffer(payload, dtype=dtype, count=math.prod(shape), offset=header_bytes)
    array.flags.writeable = False  # a bytearray payload would give a writable view
    return array.reshape(shape)


def read_idx(
    path: str | Path, label: str | None = None, max_bytes: int | None = None
) -> IdxPayload:
    """Read and check any IDX file, gzip-compressed or raw.

    Parameters
    ----------
    path : str or pathlib.Path
        The file to read.
    label : str, optional
        How to name the file in error messages (defaults to ``path``).
    max_bytes : int, optional
        Largest acceptable payload (see :func:`read_payload`).

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
    payload = read_payload(path, label, max_bytes)
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
