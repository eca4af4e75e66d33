import json

import numpy as np
import pytest
from PIL import Image

from mlplab.errors import DataError
from mlplab.report import (
    confusion_figure,
    curves_figure,
    misclassified_figure,
    plot_confusion_matrix,
    plot_curves,
    plot_misclassified,
    plot_run,
    read_run,
)

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


# ------------------------------------------------------------------ figures, inspected
def lines_labelled(axes, label):
    return [line for line in axes.get_lines() if line.get_label() == label]


def best_epoch_lines(axes):
    return lines_labelled(axes, "best epoch (weights kept)")


def test_curves_figure_has_loss_accuracy_zoom_and_learning_rate_panels():
    figure = curves_figure(HISTORY, best_epoch=2, title="mnist, 100:relu", n_classes=10)
    loss, accuracy, zoom, rate, batch = figure.axes  # batch size varies: a twin axis
    assert loss.get_title() == "loss"
    assert accuracy.get_title() == "accuracy (whole range)" and accuracy.get_ylim() == (0, 1)
    assert zoom.get_title().startswith("accuracy (high end")
    assert rate.get_title() == "learning rate and batch size"
    (rate_line,) = lines_labelled(rate, "learning rate")
    np.testing.assert_allclose(rate_line.get_ydata(), HISTORY["learning_rate"])
    np.testing.assert_allclose(batch.get_lines()[0].get_ydata(), HISTORY["batch_size"])
    assert figure.get_suptitle() == "mnist, 100:relu"
    (chance,) = lines_labelled(accuracy, "chance")
    assert chance.get_ydata()[0] == pytest.approx(0.1)


def test_best_epoch_is_marked_in_every_panel_and_starred_on_validation():
    figure = curves_figure(HISTORY, best_epoch=2)
    for axes in figure.axes[:4]:
        (line,) = best_epoch_lines(axes)
        assert list(line.get_xdata()) == [2, 2]
    loss, accuracy = figure.axes[:2]
    (star,) = lines_labelled(loss, "_best")
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (2, HISTORY["val_loss"][1])
    (star,) = lines_labelled(accuracy, "_best")
    assert star.get_ydata()[0] == HISTORY["val_accuracy"][1]


def test_without_a_best_epoch_nothing_is_marked_and_a_fixed_batch_has_no_twin_axis():
    figure = curves_figure(dict(HISTORY, batch_size=[32, 32, 32]))
    assert len(figure.axes) == 4
    assert not any(best_epoch_lines(axes) for axes in figure.axes)
    assert figure.axes[3].get_title() == "learning rate"


def test_a_flat_accuracy_curve_stays_flat_on_the_zoomed_axis():
    # 98.00% -> 98.05%: autoscaling would stretch this 0.05-point wobble over the whole panel.
    flat = {"epoch": [1, 2, 3, 4], "val_accuracy": [0.98, 0.9802, 0.9805, 0.9803]}
    low, high = curves_figure(flat).axes[2].get_ylim()
    assert high == 1.0 and high - low >= 0.05 and low <= 0.98 - 0.005


def test_zoom_never_goes_below_chance_and_the_whole_range_axis_stays_0_to_1():
    poor = {"epoch": [1, 2], "train_accuracy": [0.05, 0.08], "val_accuracy": [0.06, 0.07]}
    figure = curves_figure(poor, n_classes=10)
    assert figure.axes[1].get_ylim() == (0, 1)
    assert figure.axes[2].get_ylim() == (0.1, 1.0)


RUNNING = {"train_loss_running": [1.0, 0.5, 0.35], "train_accuracy_running": [0.75, 0.88, 0.92]}


@pytest.mark.parametrize(
    "extra, dropout, labels",
    [
        # Histories from before the running columns: train_* were the running figures.
        ({}, False, ["train (running, during the epoch)"]),
        ({}, True, ["train (running, dropout on)"]),
        (RUNNING, True, ["train (end of epoch, inference mode)", "train (running, dropout on)"]),
        (
            RUNNING,
            False,
            ["train (end of epoch, inference mode)", "train (running, during the epoch)"],
        ),
    ],
)
def test_training_curves_say_how_they_were_measured(extra, dropout, labels):
    figure = curves_figure(dict(HISTORY, **extra), dropout=dropout)
    for axes in figure.axes[:3]:
        drawn = [line.get_label() for line in axes.get_lines()]
        assert drawn[: len(labels)] == labels and "validation" in drawn


def test_running_training_figures_are_dotted_beside_the_end_of_epoch_ones():
    figure = curves_figure(dict(HISTORY, **RUNNING), dropout=True)
    loss = figure.axes[0]
    (after,) = lines_labelled(loss, "train (end of epoch, inference mode)")
    (running,) = lines_labelled(loss, "train (running, dropout on)")
    np.testing.assert_allclose(running.get_ydata(), RUNNING["train_loss_running"])
    np.testing.assert_allclose(after.get_ydata(), HISTORY["train_loss"])
    assert running.get_linestyle() == ":" and after.get_linestyle() == "-"


def test_confusion_errors_have_their_own_colour_scale_and_zeros_stay_blank():
    confusion = np.diag([980, 1130, 1020]) + np.array([[0, 3, 0], [1, 0, 7], [0, 0, 0]])
    figure = confusion_figure(confusion, ["a", "b", "c"], title="test set")
    axes = figure.axes[0]
    diagonal_image, error_image = axes.get_images()
    assert error_image.get_clim() == (0, 7)  # the largest error, not the diagonal's 1130
    assert error_image.get_array().mask[0, 0] and not error_image.get_array().mask[1, 2]
    texts = {(t.get_position(), t.get_text()): t for t in axes.texts}
    assert texts[((2, 1), "7")].get_color() == "white"  # the darkest error cell
    assert texts[((0, 0), "980")].get_fontweight() == "bold"
    assert not any(position == (2, 0) for position, _ in texts)  # a zero: no "0" printed
    assert [t.get_text() for t in axes.get_yticklabels()][0] == "a (99.7%)"
    assert "11 errors in 3141 examples" in axes.get_title()


def test_misclassified_shows_the_most_confident_mistakes_first_with_their_probability():
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3])
    predicted = np.array([1, 1, 3, 0])  # three mistakes
    probabilities = np.full((4, 4), 0.1, dtype=np.float32)
    probabilities[0, 1], probabilities[2, 3], probabilities[3, 0] = 0.55, 0.97, 0.70
    figure = misclassified_figure(images, labels, predicted, DIGITS, probabilities)
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == ["2 → 3\np=0.970", "3 → 0\np=0.700", "0 → 1\np=0.550"]
    assert "most confident 3 of 3" in figure.get_suptitle()


# ------------------------------------------------------------------ plot_run
def write_run_folder(folder, n=60, n_classes=10, seed=0):
    """A run folder as training writes it: config, history, evaluation, predictions."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(
        '[data]\ndataset = "mnist"\nprotocol = "holdout"\n'
        '[model]\narchitecture = "100:relu:dropout(0.2)"\n'
        '[optimizer]\nname = "sgd"\nlearning_rate = 0.1\n'
        '[schedule]\nname = "cosine"\n[training]\nepochs = 5\nbatch_size = 128\n'
    )
    (folder / "history.json").write_text(
        json.dumps({"columns": HISTORY, "best_epoch": 2, "stopped_early": True})
    )
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n).astype(np.uint8)
    predicted = np.where(rng.random(n) < 0.8, labels, (labels + 1) % n_classes).astype(np.uint8)
    probabilities = rng.dirichlet(np.ones(n_classes), n).astype(np.float32)
    np.savez(
        folder / "predictions.npz", predicted=predicted, probabilities=probabilities, labels=labels
    )
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    evaluation = {"accuracy": float(np.mean(labels == predicted)), "dataset": "mnist"}
    evaluation.update(confusion_matrix=confusion.tolist(), class_names=DIGITS[:n_classes])
    (folder / "evaluation.json").write_text(json.dumps(evaluation))
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)


def png_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".png")


def test_plot_run_draws_all_three_plots_from_the_stored_files(tmp_path):
    images = write_run_folder(tmp_path / "run")
    written = plot_run(tmp_path / "run", images)
    names = ["curves.png", "confusion.png", "misclassified.png"]
    assert written == [tmp_path / "run" / name for name in names]
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 200
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_plot_run_title_says_what_was_trained(tmp_path):
    write_run_folder(tmp_path / "run")
    title = read_run(tmp_path / "run").title()
    for part in ("mnist", "100:relu:dropout(0.2)", "sgd lr=0.1", "cosine", "3 of 5 epochs"):
        assert part in title, title
    assert "stopped early" in title


def test_plot_run_without_test_images_skips_only_the_misclassified_grid(tmp_path):
    write_run_folder(tmp_path / "run")
    assert [p.name for p in plot_run(tmp_path / "run")] == ["curves.png", "confusion.png"]


def test_plot_run_tolerates_missing_optional_files(tmp_path):
    folder = tmp_path / "run"
    images = write_run_folder(folder)
    (folder / "config.toml").unlink()
    (folder / "evaluation.json").unlink()  # the confusion matrix comes from the predictions
    written = plot_run(folder, images)
    assert [p.name for p in written] == ["curves.png", "confusion.png", "misclassified.png"]
    assert sorted(p.name for p in written) == png_files(folder)
    for name in ("predictions.npz", "history.json", *png_files(folder)):
        (folder / name).unlink()
    assert plot_run(folder, images) == []


def test_plot_run_reads_history_csv_when_there_is_no_json(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "history.csv").write_text("epoch,train_loss,val_loss\n1,0.9,1.0\n2,0.5,\n")
    (written,) = plot_run(folder)
    assert written.name == "curves.png"
    assert read_run(folder).history == {
        "epoch": [1.0, 2.0],
        "train_loss": [0.9, 0.5],
        "val_loss": [1.0, None],
    }


def test_plot_run_errors_are_one_line_and_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        plot_run(tmp_path / "absent")
    folder = tmp_path / "run"
    images = write_run_folder(folder)
    with pytest.raises(DataError, match="59 test images given for 60 stored predictions"):
        plot_run(folder, images[:59])
    (folder / "history.json").write_text("{not json")
    with pytest.raises(DataError, match="history.json") as caught:
        plot_run(folder)
    assert "\n" not in str(caught.value)


def test_plot_run_on_a_folder_written_by_mlplab_train(tmp_path, fixtures_dir, monkeypatch):
    from mlplab.cli import main
    from mlplab.data import load_dataset

    monkeypatch.delenv("MLPLAB_DATA", raising=False)
    data = fixtures_dir / "mnist-small"
    out = tmp_path / "run"
    arguments = ["train", "--dataset", str(data), "--validation", "200", "--threads", "1"]
    arguments += ["--arch", "16:relu", "--epochs", "2", "--batch-size", "64", "--quiet"]
    assert main([*arguments, "--out", str(out)]) == 0
    for png in out.glob("*.png"):
        png.unlink()
    test_images = load_dataset(data).test_images
    written = plot_run(out, test_images)
    expected = ["curves.png", "confusion.png"]
    if (out / "predictions.npz").exists():  # written by training once it stores predictions
        expected.append("misclassified.png")
    assert [path.name for path in written] == expected
    assert png_files(out) == sorted(expected)
    run = read_run(out)
    assert run.history["epoch"] == [1, 2] and run.best_epoch in (None, 1, 2)
    assert "16:relu" in run.title()
    figure = curves_figure(run.history, best_epoch=run.best_epoch)
    labels = {line.get_label() for line in figure.axes[0].get_lines()}
    assert {"train (end of epoch, inference mode)", "validation"} <= labels
