"""Plots as PNG files: training curves, a confusion matrix, a grid of misclassified images.

Each function takes results that were already computed (a history dict, a confusion matrix,
predictions), writes one PNG and returns its path. Figures are drawn with matplotlib's Agg
renderer on ``Figure`` objects, never through ``pyplot``: no window can open, no global figure
list grows in long sessions, and an interactive backend the user chose elsewhere is left alone.
Files are written to a temporary name and renamed into place, so a crash never leaves half a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mlplab.saving import atomic_path


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)  # attaches the Agg canvas that savefig will render with
    return figure


def _save(figure: Figure, path) -> Path:
    """Write ``figure`` to ``path`` as PNG atomically; return the path."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        figure.savefig(file, format="png")
    return Path(path)


def _series(history: dict, key: str, length: int) -> np.ndarray | None:
    """History values for ``key`` as floats (None -> NaN, a gap in the line), or None if absent."""
    values = history.get(key)
    if not values:
        return None
    return np.array([math.nan if v is None else float(v) for v in values[:length]])


def plot_curves(history: dict[str, list[float]], path) -> Path:
    """Loss and accuracy per epoch, training against validation, side by side.

    Parameters
    ----------
    history : dict of str to list of float
        Keys as written by training: ``epoch``, ``train_loss``, ``train_accuracy``, ``val_loss``,
        ``val_accuracy`` (others are ignored). Missing keys, such as validation curves of a run
        without a validation set, are simply not drawn.
    path : str or Path
        Where to write the PNG.

    Returns
    -------
    Path
    """
    lengths = [len(v) for k, v in history.items() if k.endswith(("_loss", "_accuracy")) and v]
    n_points = max(lengths, default=0)
    epochs = np.asarray(history.get("epoch") or range(1, n_points + 1), dtype=float)

    figure = _new_figure(10, 4)
    for axes, quantity in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        drawn = False
        for split, style in (("train", "-"), ("val", "--")):
            values = _series(history, f"{split}_{quantity}", len(epochs))
            if values is not None:
                label = "training" if split == "train" else "validation"
                axes.plot(epochs[: len(values)], values, style, marker="o", ms=3, label=label)
                drawn = True
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 2.5" ticks
        axes.set_ylabel(quantity)
        axes.set_title(quantity)
        axes.grid(alpha=0.3)
        if drawn:
            axes.legend()
        else:
            message = f"no {quantity} recorded"
            axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    return _save(figure, path)


def plot_confusion_matrix(confusion, class_names, path, title: str | None = None) -> Path:
    """Heat map of a confusion matrix (rows true, columns predicted) with every count written in.

    Colour follows ``log(1 + count)``: on a linear scale the diagonal (~1000) would wash out the
    errors (~1-20) that the plot is for.
    """
    confusion = np.asarray(confusion)
    n = len(class_names)
    side = max(4.0, 0.6 * n + 2.5)
    figure = _new_figure(side + 0.5, side)
    axes = figure.subplots()
    shade = np.log1p(confusion)
    axes.imshow(shade, cmap="Blues", vmin=0)
    threshold = shade.max() / 2
    for (i, j), count in np.ndenumerate(confusion):
        colour = "white" if shade[i, j] > threshold else "black"
        axes.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=8)
    axes.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    axes.set_yticks(range(n), labels=class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title or f"confusion matrix ({confusion.sum()} examples)")
    figure.tight_layout()
    return _save(figure, path)


def plot_misclassified(images, labels, predicted, class_names, path, max_images: int = 36) -> Path:
    """Grid of the first ``max_images`` misclassified images, each titled "true → predicted".

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H*W) with square images
        Pixel values in 0..255 or in 0..1 (a maximum above 1 means the former).
    labels, predicted : array_like of int, shape (N,)
    class_names : sequence of str
    path : str or Path
    max_images : int

    Returns
    -------
    Path
        Written even when nothing was misclassified (the PNG then says so).
    """
    images = np.asarray(images)
    if images.ndim == 2:  # flattened vectors, as the network sees them
        side = math.isqrt(images.shape[1])
        images = images.reshape(len(images), side, side)
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    wrong = np.flatnonzero(labels != predicted)[:max_images]

    if wrong.size == 0:
        figure = _new_figure(4, 2)
        figure.text(0.5, 0.5, "no misclassified images", ha="center", va="center", fontsize=12)
        return _save(figure, path)

    columns = math.ceil(math.sqrt(wrong.size))
    rows = math.ceil(wrong.size / columns)
    figure = _new_figure(1.6 * columns, 1.7 * rows + 0.4)
    brightest = 255 if images.max() > 1 else 1  # 0..255 pixels or 0..1 floats
    for slot, index in enumerate(wrong):
        axes = figure.add_subplot(rows, columns, slot + 1)
        axes.imshow(images[index], cmap="gray", vmin=0, vmax=brightest)
        true, guess = class_names[labels[index]], class_names[predicted[index]]
        axes.set_title(f"{true} → {guess}", fontsize=7)
        axes.axis("off")
    n_wrong = int(np.sum(labels != predicted))
    figure.suptitle(f"misclassified: first {wrong.size} of {n_wrong} (true → predicted)")
    figure.tight_layout()
    return _save(figure, path)
