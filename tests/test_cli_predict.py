"""``mlplab predict``: its help, --save-input, and images it refuses."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error
from PIL import Image

from mlplab.cli import build_parser, main
from mlplab.cli.predict import input_image_paths
from mlplab.data import load_dataset
from mlplab.data.images import load_image

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A small model trained on the fixture (two epochs of a 32-unit network)."""
    out = tmp_path_factory.mktemp("predict") / "run"
    arguments = ["train", "--dataset", str(MNIST_SMALL), "--validation", "200", "--threads", "1"]
    arguments += ["--arch", "32:relu", "--epochs", "2", "--batch-size", "32", "--quiet"]
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        patch.delenv("MLPLAB_DATA", raising=False)
        assert main([*arguments, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset(MNIST_SMALL)
    return dataset.test_images, dataset.test_labels


def predicted_labels(stdout: str) -> list[str]:
    return [line.split(": ", 1)[1].split(" ", 1)[0] for line in stdout.strip().splitlines()]


def photo_of(digit: np.ndarray, lighting=None, scale: int = 10) -> np.ndarray:
    """An MNIST digit as dark ink on white paper, enlarged, under ``lighting(x, y)`` in 0..1."""
    # A white frame as wide as the digit's margin, as around a digit on a sheet of paper.
    paper = np.pad(
        255 - np.kron(digit.astype(np.float32), np.ones((scale, scale))),
        6 * scale,
        constant_values=255,
    )
    if lighting is not None:
        rows, columns = np.indices(paper.shape)
        paper = paper * lighting(columns / paper.shape[1], rows / paper.shape[0])
    return np.clip(paper, 0, 255)


def save(pixels, path) -> str:
    Image.fromarray(np.asarray(pixels).astype(np.uint8)).save(path)
    return str(path)


def test_predict_help_describes_the_command_and_every_option():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    predict = subparsers.choices["predict"]
    assert "Classify your own" in predict.description and "refused" in predict.description
    for action in predict._actions:
        assert action.help, f"{action.dest} has no help"
    assert "--save-input" in predict.format_help()


def test_save_input_writes_what_the_network_receives(model_folder, digits, tmp_path, capsys):
    images, _ = digits
    source = save(photo_of(images[0]), tmp_path / "seven.png")
    inputs = tmp_path / "inputs"
    assert main(["predict", str(model_folder), source, "--save-input", str(inputs)]) == 0
    assert [p.name for p in inputs.iterdir()] == ["seven.input.png"]
    with Image.open(inputs / "seven.input.png") as image:
        assert image.format == "PNG" and image.mode == "L" and image.size == (28, 28)
        saved = np.asarray(image, dtype=np.float32) / 255
    np.testing.assert_allclose(saved.ravel(), load_image(source), atol=0.5 / 255 + 1e-6)
    assert capsys.readouterr().out.startswith(f"{source}: ")


def test_input_names_of_images_with_the_same_stem_do_not_collide(tmp_path):
    paths = input_image_paths(["a/1.png", "b/1.jpg", "c/2.png", "d/1.png"], tmp_path)
    names = [p.name for p in paths]
    assert names == ["1.input.png", "1-2.input.png", "2.input.png", "1-3.input.png"]


def test_save_input_into_a_file_exits_2_naming_it(model_folder, digits, tmp_path, capsys):
    images, _ = digits
    source = save(photo_of(images[0]), tmp_path / "digit.png")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    assert main(["predict", str(model_folder), source, "--save-input", str(blocker)]) == 2
    assert "not-a-folder" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda path: Image.new("L", (60, 60), 255).save(path), "has no ink"),
        (lambda path: Image.new("L", (1, 1), 0).save(path), "is only 1x1 pixels"),
        (lambda path: Image.new("RGBA", (60, 60), (0, 0, 0, 0)).save(path), "fully transparent"),
    ],
    ids=["blank", "1x1", "transparent"],
)
def test_predict_refuses_images_without_a_digit(model_folder, tmp_path, capsys, make, reason):
    path = tmp_path / "bad.png"
    make(path)
    assert main(["predict", str(model_folder), str(path)]) == 2
    captured = capsys.readouterr()
    message = one_line_error(captured.err)
    assert "bad.png" in message and reason in message
    assert captured.out == ""  # no confident-looking prediction was printed


def test_predict_of_a_decompression_bomb_exits_2_without_a_warning(
    model_folder, digits, tmp_path, capsys, monkeypatch, recwarn
):
    images, _ = digits
    path = save(photo_of(images[0]), tmp_path / "bomb.png")
    monkeypatch.setattr("mlplab.data.images.MAX_PIXELS", 10**12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the image now declares 160 times that
    assert main(["predict", str(model_folder), path]) == 2
    assert "too large to decode safely" in one_line_error(capsys.readouterr().err)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_photo_under_uneven_light_is_predicted_like_an_evenly_lit_one(
    model_folder, digits, tmp_path, capsys
):
    images, labels = digits

    def shadow(x, y):  # full light at the top left, a third of it at the bottom right
        return 1.0 - 0.67 * (0.5 * x + 0.5 * y)

    even, shaded = [], []
    for i in range(20):
        even.append(save(photo_of(images[i]), tmp_path / f"even{i}.png"))
        shaded.append(save(photo_of(images[i], shadow), tmp_path / f"shaded{i}.png"))
    inputs = tmp_path / "inputs"
    assert main(["predict", str(model_folder), *even, *shaded, "--save-input", str(inputs)]) == 0
    predictions = predicted_labels(capsys.readouterr().out)
    assert predictions[:20] == predictions[20:]
    for i in range(20):
        with (
            Image.open(inputs / f"even{i}.input.png") as a,
            Image.open(inputs / f"shaded{i}.input.png") as b,
        ):
            difference = np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) / 255
        assert difference.mean() < 0.02, f"image {i}: mean difference {difference.mean():.3f}"
