"""``mlplab predict``: classify the user's own images with a saved model."""

from __future__ import annotations

import numpy as np

from mlplab.cli.train import model_path


def register(subparsers) -> None:
    predict = subparsers.add_parser("predict", help="classify PNG/JPEG images with a saved model")
    predict.add_argument("model", help="a model file (.npz) or a run folder")
    predict.add_argument(
        "images",
        nargs="+",
        help="image files (any size; dark-on-light is inverted to MNIST's light-on-dark)",
    )
    predict.add_argument(
        "--no-crop", action="store_true", help="don't crop to the digit and re-centre it"
    )
    predict.set_defaults(func=run_predict)


def run_predict(args) -> int:
    from mlplab.data.images import load_images
    from mlplab.training.model import Model

    model = Model.load(model_path(args.model))
    shape = model.preprocessing.image_shape if model.preprocessing else (28, 28)
    pixels = load_images(args.images, size=tuple(shape), crop=not args.no_crop)
    images = (pixels * 255.0).reshape(len(args.images), *shape)  # back to MNIST's 0..255 scale
    probabilities = model.predict_proba(model.features(images))
    for path, row in zip(args.images, probabilities):
        best = int(np.argmax(row))
        ranked = np.argsort(row)[::-1][:3]
        others = ", ".join(f"{model.class_names[i]} {row[i]:.3f}" for i in ranked)
        print(f"{path}: {model.class_names[best]} (p={row[best]:.3f}; top: {others})")
    return 0
