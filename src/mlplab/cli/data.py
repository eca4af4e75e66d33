"""``mlplab data info`` and ``mlplab data fetch``: where the data is, and getting it there."""

from __future__ import annotations

import argparse

from mlplab.data import fetch_dataset, known_datasets, load_dataset

DEFAULT_DATASET = "mnist"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its subcommands."""
    data = subparsers.add_parser(
        "data",
        help="find, verify and download datasets",
        description="Find, verify and download the MNIST-family datasets. Files are looked for"
        " in --data-dir, then $MLPLAB_DATA (the folder or its <dataset>/ subfolder), the user"
        " cache and system copies, and every file is checked against the official checksums."
        " `info` shows where each file was found; `fetch` downloads what is missing.",
    )
    data.set_defaults(func=lambda args: data.print_help() or 0)
    commands = data.add_subparsers(title="subcommands", metavar="SUBCOMMAND")

    info = commands.add_parser(
        "info",
        help="show where each file of a dataset is, whether it verified, and class counts",
        description="Show where each file of a dataset was found, its size and checksum status,"
        " and the image and class counts. Never downloads.",
    )
    info.add_argument(
        "--dataset",
        metavar="NAME",
        help=f"{' or '.join(known_datasets())} (default {DEFAULT_DATASET}), or a folder of IDX files;"
        " with only --data-dir, that folder is read as is",
    )
    info.add_argument("--data-dir", metavar="DIR", help="folder holding the four IDX files")
    info.set_defaults(func=run_info)

    fetch = commands.add_parser(
        "fetch",
        help="download a dataset into the cache (or --data-dir) and verify it",
        description="Make sure the verified files of a dataset are on disk, downloading the"
        " missing ones from the mirrors ($MLPLAB_MIRRORS overrides them) into the user cache,"
        " or into DIR/NAME/ with --data-dir. Verified files already in $MLPLAB_DATA, the cache"
        " or a system copy are used as they are.",
    )
    fetch.add_argument(
        "--dataset",
        metavar="NAME",
        default=DEFAULT_DATASET,
        choices=known_datasets(),
        help=f"default {DEFAULT_DATASET}",
    )
    fetch.add_argument(
        "--data-dir", metavar="DIR", help="put the files in DIR/NAME/ instead of the user cache"
    )
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=run_fetch)


def run_info(args: argparse.Namespace) -> int:
    """Print a dataset's files, checksum status, sizes and class counts."""
    if args.dataset is None and args.data_dir is not None:
        # A folder on its own: recognised by checksum if it is a known dataset, else unverified.
        data = load_dataset(args.data_dir, download=False)
    else:
        data = load_dataset(args.dataset or DEFAULT_DATASET, data_dir=args.data_dir, download=False)
    height, width = data.image_shape
    print(f"dataset: {data.name} ({data.n_classes} classes, {height}x{width} images)")
    for note in data.notes:
        print(f"  note: {note}")
    print(f"{'file':<25} {'origin':<8} {'payload bytes':>13}  {'checksum':<32} path")
    for source in data.sources.values():
        print(
            f"{source.file:<25} {source.origin:<8} {source.payload_bytes:>13,}  "
            f"{source.checksum:<32} {source.path}"
        )
    print(
        f"train: {len(data.train_images)} images, test: {len(data.test_images)} images,"
        f" checksums {'verified' if data.verified else 'NOT verified'}"
    )
    width_name = max(len("class"), *(len(name) for name in data.class_names))
    print(f"{'label':>5}  {'class':<{width_name}} {'train':>7} {'test':>7}")
    for label, (name, n_train, n_test) in enumerate(
        zip(data.class_names, data.class_counts("train"), data.class_counts("test"))
    ):
        print(f"{label:>5}  {name:<{width_name}} {n_train:>7} {n_test:>7}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    """Fill the cache (or ``--data-dir``) with a dataset's verified files."""
    folder, sources = fetch_dataset(args.dataset, args.data_dir, progress=not args.no_progress)
    downloaded = sum(source.origin == "download" for source in sources.values())
    print(
        f"{args.dataset}: {len(sources)} verified files in {folder}"
        f" ({downloaded} downloaded, {len(sources) - downloaded} already there)"
    )
    return 0
