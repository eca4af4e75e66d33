"""Write the small real-data fixtures under tests/fixtures/ from full copies of the datasets.

Each fixture keeps the *first* N images and labels of each official file (no reordering, no
stratification: the first images of MNIST are already close to balanced) and writes them as IDX,
gzip-compressed with ``mtime=0`` so that the output is byte-for-byte reproducible. A README.md in
each folder records where the images came from and the sha256 of each decompressed payload.

Usage::

    python scripts/make_fixtures.py [SOURCE_DIR]

``SOURCE_DIR`` holds ``mnist/`` and ``fashion-mnist/`` with the official IDX files (default: the
shared copy at ``../shared/data`` beside the repository). Only this script reads it; the tests
read the fixtures.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import sys
from pathlib import Path

import numpy as np

from mlplab.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

# (dataset, fixture folder, training images kept, test images kept). Sizes keep all fixtures
# together near half a megabyte while leaving ~200 training images per class for split tests.
SUBSETS = [
    ("mnist", "mnist-small", 2000, 500),
    ("fashion-mnist", "fashion-small", 200, 100),
]


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialize a uint8 array as an IDX payload (magic 0x0000080D where D is the rank)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_subset(source: Path, name: str, folder: str, n_train: int, n_test: int) -> None:
    data = load_dataset(name, data_dir=source, download=False)
    assert data.verified, f"{source}: {name} is not the official data"
    target = FIXTURES / folder
    target.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": data.train_images[:n_train],
        "train-labels-idx1-ubyte": data.train_labels[:n_train].astype(np.uint8),
        "t10k-images-idx3-ubyte": data.test_images[:n_test],
        "t10k-labels-idx1-ubyte": data.test_labels[:n_test].astype(np.uint8),
    }
    rows = []
    for stem, array in arrays.items():
        payload = idx_bytes(array)
        (target / f"{stem}.gz").write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
        rows.append(f"| {stem} | {len(payload)} | {hashlib.sha256(payload).hexdigest()} |")
    counts = lambda labels: " ".join(str(c) for c in np.bincount(labels, minlength=10))  # noqa: E731
    (target / "README.md").write_text(
        f"# {folder}: a small real subset of {name}\n\n"
        f"The first {n_train} training and the first {n_test} test images (and their labels) of the\n"
        f"official {name} IDX files, in their original order, rewritten as gzip-compressed IDX\n"
        f"(`gzip` level 9, mtime 0). Made by `scripts/make_fixtures.py`; rerun it to reproduce.\n\n"
        f"Its checksums are not the official ones, so load it by path (`load_dataset(folder)`,\n"
        f'`mlplab data info --data-dir {folder}`): the status is "not verified (no known checksum)".\n\n'
        f"Label counts, train: {counts(arrays['train-labels-idx1-ubyte'])};"
        f" test: {counts(arrays['t10k-labels-idx1-ubyte'])}.\n\n"
        "| file (decompressed) | bytes | sha256 |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    size = sum(path.stat().st_size for path in target.glob("*.gz"))
    print(f"{target}: {n_train} + {n_test} images, {size} bytes compressed")


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else ROOT.parent / "shared" / "data"
    for name, folder, n_train, n_test in SUBSETS:
        write_subset(source, name, folder, n_train, n_test)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
