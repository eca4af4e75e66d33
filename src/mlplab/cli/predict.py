"""``mlplab predict``: classify the user's own images with a saved model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mlplab.cli.train import model_path
from mlplab.errors import ConfigError

DESCRIPTION = """\
Classify your own digit (or clothing) images with a trained model and print, for each image, the
predicted class, its probability and the top three classes.

Each image is prepared to look like the training data: made grayscale, inverted when it is dark
ink on light paper, evened out where the lighting is uneven, cropped to the ink and centred in a
square with MNIST's margin, and shrunk to the model's input size. Images that no prediction
should be made for are refused with a one-line error naming the file: blank ones (no ink), ones
smaller than 8x8 pixels, fully transparent ones, and ones too large to decode safely.
"""


def register(subparsers) -> None:
    predict = subparsers.add_parser(
        "predict",
        help="classify PNG/JPEG images with a saved model",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument(
        "model", help="a model file (.npz) or a run folder holding model.npz (from mlplab train)"
    )
    predict.add_argument(
        "images",
        nargs="+",
        help="image files (PNG, JPEG, ...; any size; dark-on-light is inverted to MNIST's "
        "light-on-dark)",
    )
    predict.add_argument(
        "--no-crop",
        action="store_true",
        help="don't crop to the digit and re-centre it: for images already framed like MNIST's "
        "(the whole image is padded to a square and resized)",
    )
    predict.add_argument(
        "--save-input",
        metavar="DIR",
        help="also write the image the network receives (before the model's own "
        "standardisation), as DIR/<name>.input.png, light digit on black",
    )
    predict.set_defaults(func=run_predict)


def input_image_paths(images: list[str], folder: Path) -> list[Path]:
    """``folder/<stem>.input.png`` per image; stems that repeat get ``-2``, ``-3``... appended,
    so that ``a/1.png`` and ``b/1.png`` do not overwrite each other's input."""
    seen: dict[str, int] = {}
    paths = []
    for image in images:
        stem = Path(image).stem
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
        paths.append(folder / f"{name}.input.png")
    return paths


def _input_folder(value: str) -> Path:
    """The --save-input folder, made if absent; ConfigError if it cannot be."""
    folder = Path(value)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(f"--save-input {folder}: cannot make the folder ({reason})") from None
    return folder


def run_predict(args) -> int:
    from mlplab.data.images import load_images, save_input_image
    from mlplab.training.model import Model

    model = Model.load(model_path(args.model))
    shape = tuple(model.preprocessing.image_shape) if model.preprocessing else (28, 28)
    pixels = load_images(args.images, size=shape, crop=not args.no_crop)
    if args.save_input:
        folder = _input_folder(args.save_input)
        for vector, path in zip(pixels, input_image_paths(args.images, folder)):
            save_input_image(vector.reshape(shape), path)
    images = (pixels * 255.0).reshape(len(args.images), *shape)  # back to MNIST's 0..255 scale
    probabilities = model.predict_proba(model.features(images))
    for path, row in zip(args.images, probabilities):
        best = int(np.argmax(row))
        ranked = np.argsort(row)[::-1][:3]
        others = ", ".join(f"{model.class_names[i]} {row[i]:.3f}" for i in ranked)
        print(f"{path}: {model.class_names[best]} (p={row[best]:.3f}; top: {others})")
    return 0
