import numpy as np
import pytest
from PIL import Image

from mlplab.report import plot_confusion_matrix, plot_curves, plot_misclassified

DIGITS = [str(d) for d in range(10)]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
FASHION += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

HISTORY = {
    "epoch": [1, 2, 3],
    "train_loss": [0.9, 0.4, 0.3],
    "train_accuracy": [0.8, 0.9, 0.93],
    "val_loss": [1.0, 0.5, 0.45],
    "val_accuracy": [0.78, 0.88, 0.9],
    "learning_rate": [0.1, 0.1, 0.05],
    "batch_size": [20, 40, 80],
    "seconds": [1.0, 0.8, 0.7],
}


def assert_is_png(path, min_side=200):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side and max(image.size) <= 3000
    # Only the finished PNG is left: the temporary file was renamed, not copied.
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_curves_png_is_written_and_returned(tmp_path):
    path = plot_curves(HISTORY, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png"
    assert_is_png(path)


def test_curves_tolerate_a_run_without_validation_or_epoch_numbers(tmp_path):
    history = {"train_loss": [0.9, 0.4], "train_accuracy": [0.8, 0.9]}
    assert_is_png(plot_curves(history, tmp_path / "curves.png"))


def test_curves_tolerate_missing_values_and_an_empty_history(tmp_path):
    history = dict(HISTORY, val_loss=[None, 0.5, 0.45])
    assert_is_png(plot_curves(history, tmp_path / "a" / "curves.png"))
    assert_is_png(plot_curves({}, tmp_path / "b" / "curves.png"))


def test_plot_overwrites_an_existing_file(tmp_path):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    assert_is_png(plot_curves(HISTORY, path))


@pytest.mark.parametrize("class_names", [DIGITS, FASHION])
def test_confusion_matrix_png_for_digit_and_fashion_names(tmp_path, class_names):
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 20, (10, 10)) + np.diag(rng.integers(900, 1000, 10))
    path = plot_confusion_matrix(confusion, class_names, tmp_path / "confusion.png", title="test")
    assert_is_png(path, min_side=400)


@pytest.mark.parametrize("class_names, dtype", [(DIGITS, np.uint8), (FASHION, np.float32)])
def test_misclassified_grid_png_for_uint8_and_float_images(tmp_path, class_names, dtype):
    rng = np.random.default_rng(1)
    images = rng.random((50, 28, 28))
    images = (images * 255).astype(np.uint8) if dtype == np.uint8 else images.astype(dtype)
    labels = rng.integers(0, 10, 50)
    predicted = np.where(rng.random(50) < 0.5, labels, (labels + 1) % 10)
    path = tmp_path / "wrong.png"
    path = plot_misclassified(images, labels, predicted, class_names, path, max_images=9)
    assert_is_png(path)


def test_misclassified_accepts_flattened_images(tmp_path):
    images = np.zeros((4, 784), dtype=np.float32)
    path = plot_misclassified(images, [1, 2, 3, 4], [1, 2, 0, 0], DIGITS, tmp_path / "wrong.png")
    assert_is_png(path, min_side=100)


def test_misclassified_with_no_mistakes_still_writes_a_png(tmp_path):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    path = plot_misclassified(images, [1, 2, 3], [1, 2, 3], DIGITS, tmp_path / "wrong.png")
    assert_is_png(path, min_side=100)
