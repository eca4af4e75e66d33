"""Plots as PNG files: training curves, a confusion matrix, a grid of misclassified images, and
per-layer statistics.

Each plot is drawn in two steps: a ``*_figure`` function takes results that were already computed
(a history dict, a confusion matrix, predictions) and returns a matplotlib ``Figure``, which tests
can inspect; a ``plot_*`` function saves that figure as one PNG and returns its path. Figures are
drawn with matplotlib's Agg renderer on ``Figure`` objects, never through ``pyplot``: no window
can open, no global figure list grows in long sessions, and an interactive backend the user chose
elsewhere is left alone. Files are written to a temporary name and renamed into place, so a crash
never leaves half a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mlplab.saving import atomic_path

# Colours of the two splits and of the markers, the same in every panel.
TRAIN_COLOUR, VAL_COLOUR, BEST_COLOUR = "tab:blue", "tab:orange", "tab:green"
# The zoomed accuracy panel never spans less than this: a curve that moves by 0.1 percentage
# point must look flat, not like learning.
_MIN_ZOOM_SPAN = 0.05


def new_figure(width: float, height: float) -> Figure:
    """A ``Figure`` of ``width`` x ``height`` inches with the Agg canvas attached."""
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)  # attaches the Agg canvas that savefig will render with
    return figure


def save_figure(figure: Figure, path) -> Path:
    """Write ``figure`` to ``path`` as PNG atomically; return the path."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        figure.savefig(file, format="png")
    return Path(path)


def _series(history: dict, key: str, length: int) -> np.ndarray | None:
    """History values for ``key`` as floats (None -> NaN, a gap in the line), or None if absent."""
    values = history.get(key)
    if not values or all(v is None for v in values):
        return None
    return np.array([math.nan if v is None else float(v) for v in values[:length]])


def _series_kinds(history: dict, dropout: bool) -> list[tuple[str, str, str, str]]:
    """(loss column, accuracy column, legend label, line style) of each series to draw.

    Training writes two kinds of training figures (see :class:`mlplab.training.loop.History`):
    ``train_loss``/``train_accuracy`` measured after the epoch in inference mode, comparable
    with validation, and ``train_loss_running``/``train_accuracy_running``, the mean over the
    epoch's batches as they were trained, with dropout on and the weights changing. A history
    written before the running columns existed has only ``train_*``, and those were running.
    """
    running = "train (running, dropout on)" if dropout else "train (running, during the epoch)"
    if any(key in history for key in ("train_loss_running", "train_accuracy_running")):
        kinds = [
            ("train_loss", "train_accuracy", "train (end of epoch, inference mode)", "-"),
            ("train_loss_running", "train_accuracy_running", running, ":"),
        ]
    else:
        kinds = [("train_loss", "train_accuracy", running, "-")]
    return [*kinds, ("val_loss", "val_accuracy", "validation", "--")]


def _zoom_limits(values: list[np.ndarray], chance: float) -> tuple[float, float]:
    """Accuracy axis for the high end: from a multiple of 5% below the later epochs' lowest value
    up to 1, never narrower than ``_MIN_ZOOM_SPAN``, never below chance."""
    later = [v[len(v) // 2 :] for v in values]
    finite = np.concatenate(later) if later else np.array([])
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return max(chance, 0.9), 1.0
    low = math.floor((float(finite.min()) - 0.005) * 20) / 20  # a multiple of 0.05 below it
    return max(chance, min(low, 1.0 - _MIN_ZOOM_SPAN)), 1.0


def curves_figure(
    history: dict[str, list],
    *,
    best_epoch: int | None = None,
    title: str | None = None,
    n_classes: int | None = None,
    dropout: bool = False,
) -> Figure:
    """Four panels: loss; accuracy from 0 to 1; accuracy at the high end; learning rate.

    Parameters
    ----------
    history : dict of str to list
        Columns as written by training: ``epoch``, ``train_loss``, ``train_accuracy``,
        ``train_loss_running``, ``train_accuracy_running`` (see :func:`_series_kinds`),
        ``val_loss``, ``val_accuracy``, ``learning_rate``, ``batch_size``; others are ignored.
        Missing columns, such as validation of a run without a validation set, are not drawn.
    best_epoch : int, optional
        1-based epoch whose weights the model kept; marked by a vertical line in every panel.
    title : str, optional
        What was trained, shown above the panels.
    n_classes : int, optional
        Draws chance accuracy (``1 / n_classes``) as a dotted line.
    dropout : bool
        The network has dropout: running training figures were measured with it on, and their
        legend says so.

    Returns
    -------
    Figure
        Axes in order: loss, accuracy, accuracy (high end), learning rate; plus a twin axis for the
        batch size when it changes.
    """
    series_keys = [k for k, v in history.items() if k.endswith(("_loss", "_accuracy")) and v]
    n_points = max((len(history[k]) for k in series_keys), default=0)
    epochs = np.asarray(history.get("epoch") or range(1, n_points + 1), dtype=float)
    chance = 1.0 / n_classes if n_classes else 0.0
    kinds = _series_kinds(history, dropout)

    figure = new_figure(11, 7.5)
    loss_axes, accuracy_axes, zoom_axes, rate_axes = figure.subplots(2, 2).ravel()
    accuracies = []
    for axes, quantity in ((loss_axes, 0), (accuracy_axes, 1), (zoom_axes, 1)):
        for *columns, label, style in kinds:
            values = _series(history, columns[quantity], len(epochs))
            if values is None:
                continue
            colour = VAL_COLOUR if columns[0].startswith("val") else TRAIN_COLOUR
            x = epochs[: len(values)]
            axes.plot(x, values, style, color=colour, marker="o", ms=3, label=label)
            if axes is accuracy_axes:
                accuracies.append(values)
    loss_axes.set_title("loss")
    loss_axes.set_ylabel("loss")
    loss_axes.set_ylim(bottom=0)
    accuracy_axes.set_title("accuracy (whole range)")
    accuracy_axes.set_ylim(0, 1)
    zoom_axes.set_title("accuracy (high end, fixed scale)")
    zoom_axes.set_ylim(*_zoom_limits(accuracies, chance))
    if chance:
        accuracy_axes.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    for axes in (accuracy_axes, zoom_axes):
        axes.set_ylabel("accuracy")

    rate = _series(history, "learning_rate", len(epochs))
    if rate is not None:
        rate_axes.plot(
            epochs[: len(rate)],
            rate,
            "-",
            color="tab:purple",
            marker="o",
            ms=3,
            label="learning rate",
        )
        rate_axes.set_ylim(bottom=0)
    rate_axes.set_title("learning rate" + (" and batch size" if _varies(history) else ""))
    rate_axes.set_ylabel("learning rate")
    if _varies(history):
        batch = _series(history, "batch_size", len(epochs))
        twin = rate_axes.twinx()
        twin.step(epochs[: len(batch)], batch, where="mid", color="tab:brown", label="batch size")
        twin.set_ylabel("batch size", color="tab:brown")
        twin.set_ylim(bottom=0)

    for axes in (loss_axes, accuracy_axes, zoom_axes, rate_axes):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 2.5" ticks
        axes.grid(alpha=0.3)
        if best_epoch:
            axes.axvline(
                best_epoch, color=BEST_COLOUR, ls="-.", lw=1.2, label="best epoch (weights kept)"
            )
        if not axes.has_data():
            message = "no learning rate recorded" if axes is rate_axes else "nothing recorded"
            axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes)
        elif axes is not rate_axes:
            axes.legend(fontsize=8)
    if best_epoch:
        _mark_best(history, epochs, best_epoch, (loss_axes, accuracy_axes, zoom_axes))
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def _varies(history: dict) -> bool:
    values = [v for v in history.get("batch_size") or [] if v is not None]
    return len(set(values)) > 1


def _mark_best(history, epochs, best_epoch, axes_list) -> None:
    """A star on the validation point (or training point) of the kept epoch."""
    index = np.flatnonzero(epochs == best_epoch)
    if index.size == 0:
        return
    for axes, quantity in zip(axes_list, ("loss", "accuracy", "accuracy")):
        for prefix in ("val", "train"):
            values = _series(history, f"{prefix}_{quantity}", len(epochs))
            if values is not None and index[0] < len(values) and np.isfinite(values[index[0]]):
                value = values[index[0]]
                axes.plot(
                    [best_epoch], [value], "*", color=BEST_COLOUR, ms=12, zorder=5, label="_best"
                )
                break


def plot_curves(history: dict[str, list], path, **options) -> Path:
    """Write :func:`curves_figure` of ``history`` to ``path`` (PNG); return the path."""
    return save_figure(curves_figure(history, **options), path)


def confusion_figure(confusion, class_names, title: str | None = None) -> Figure:
    """Confusion matrix (rows true, columns predicted) with errors on their own colour scale.

    The diagonal (correct predictions, ~1000 per class on MNIST) is drawn in one pale colour with
    bold counts; the off-diagonal errors (~1-20) are shaded in red from 0 to the largest error,
    so that the few confusions that matter stand out instead of washing out next to the diagonal.
    Zero errors are left blank. Each row's label carries the class's recall.

    Returns
    -------
    Figure
        The matrix axes first, then the colour bar of the error counts.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    n = len(class_names)
    diagonal = np.eye(n, dtype=bool)
    errors = np.where(diagonal, 0, confusion)
    largest_error = max(int(errors.max(initial=0)), 1)

    side = max(4.5, 0.6 * n + 3)
    figure = new_figure(side + 1.2, side)
    axes = figure.subplots()
    axes.imshow(np.ma.masked_where(~diagonal, np.ones((n, n))), cmap="Blues", vmin=0, vmax=4)
    image = axes.imshow(
        np.ma.masked_where(diagonal | (confusion == 0), errors),
        cmap="Reds",
        vmin=0,
        vmax=largest_error,
    )
    for (i, j), count in np.ndenumerate(confusion):
        if i == j:
            axes.text(j, i, str(count), ha="center", va="center", fontsize=8, weight="bold")
        elif count:
            colour = "white" if count > 0.6 * largest_error else "black"
            axes.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)
    row_totals = confusion.sum(axis=1)
    recall = [
        f"{name} ({100 * confusion[i, i] / row_totals[i]:.1f}%)" if row_totals[i] else str(name)
        for i, name in enumerate(class_names)
    ]
    axes.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    axes.set_yticks(range(n), labels=recall)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class (recall)")
    total, wrong = int(confusion.sum()), int(errors.sum())
    heading = title or "confusion matrix"
    axes.set_title(
        f"{heading}\n{wrong} errors in {total} examples; errors shaded on their own scale"
    )
    colour_bar = figure.colorbar(image, ax=axes, shrink=0.8)
    colour_bar.set_label("misclassified examples (off-diagonal count)")
    colour_bar.locator = MaxNLocator(integer=True)  # no "2.5 errors" ticks
    colour_bar.update_ticks()
    figure.tight_layout()
    return figure


def plot_confusion_matrix(confusion, class_names, path, title: str | None = None) -> Path:
    """Write :func:`confusion_figure` to ``path`` (PNG); return the path."""
    return save_figure(confusion_figure(confusion, class_names, title), path)


def misclassified_figure(
    images,
    labels,
    predicted,
    class_names,
    probabilities=None,
    max_images: int = 36,
    title: str | None = None,
) -> Figure:
    """Grid of misclassified images, each titled "true → predicted" (and the probability).

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H*W) with square images
        Pixel values in 0..255 or in 0..1 (a maximum above 1 means the former).
    labels, predicted : array_like of int, shape (N,)
    class_names : sequence of str
    probabilities : ndarray, shape (N, n_classes), optional
        With them, the most confident mistakes come first and each tile shows ``p``, the
        probability the network gave its (wrong) answer; without them, the first mistakes in
        test-set order.
    max_images : int
    title : str, optional

    Returns
    -------
    Figure
        One axes per image shown; a single text when nothing was misclassified.
    """
    images = np.asarray(images)
    if images.ndim == 2:  # flattened vectors, as the network sees them
        side = math.isqrt(images.shape[1])
        images = images.reshape(len(images), side, side)
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    wrong = np.flatnonzero(labels != predicted)
    confidence = None
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        confidence = probabilities[np.arange(len(predicted)), predicted]
        wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]  # most confident first
    shown = wrong[:max_images]

    if shown.size == 0:
        figure = new_figure(4, 2)
        figure.text(0.5, 0.5, "no misclassified images", ha="center", va="center", fontsize=12)
        return figure

    which = "most confident" if confidence is not None else "first"
    lines = [title] if title else []
    lines.append(f"misclassified: {which} {shown.size} of {wrong.size}")
    lines.append(
        "true → predicted"
        + (", p = probability given to the prediction" if confidence is not None else "")
    )
    # Inches: tiles 1.6 wide and 1.75 tall (image plus a two-line caption), the heading's lines
    # above them. Fixed spacing instead of tight_layout, which would measure all 36 tiles' titles
    # and take seconds.
    columns = math.ceil(math.sqrt(shown.size))
    rows = math.ceil(shown.size / columns)
    heading, tile_width, tile_height = 0.22 * len(lines) + 0.45, 1.6, 1.75
    width = max(tile_width * columns, 5.5)
    height = tile_height * rows + heading
    figure = new_figure(width, height)
    side_margin = (width - tile_width * columns) / 2 / width + 0.01
    figure.subplots_adjust(
        left=side_margin,
        right=1 - side_margin,
        bottom=0.1 / height,
        top=1 - heading / height,
        wspace=0.15,
        hspace=0.45,
    )
    brightest = 255 if images.max() > 1 else 1  # 0..255 pixels or 0..1 floats
    for slot, index in enumerate(shown):
        axes = figure.add_subplot(rows, columns, slot + 1)
        axes.imshow(images[index], cmap="gray", vmin=0, vmax=brightest)
        true, guess = class_names[labels[index]], class_names[predicted[index]]
        caption = f"{true} → {guess}"
        if confidence is not None:
            caption += f"\np={confidence[index]:.3f}"
        axes.set_title(caption, fontsize=8)
        axes.axis("off")
    figure.suptitle("\n".join(lines), fontsize=9, y=1 - 0.08 / height, va="top")
    return figure


def plot_misclassified(
    images,
    labels,
    predicted,
    class_names,
    path,
    max_images: int = 36,
    probabilities=None,
    title: str | None = None,
) -> Path:
    """Write :func:`misclassified_figure` to ``path`` (PNG), even when there are no mistakes."""
    figure = misclassified_figure(
        images, labels, predicted, class_names, probabilities, max_images, title
    )
    return save_figure(figure, path)


# Colours of the first and last measured epochs in the per-layer plot; the epochs between them are
# drawn thin, in shades of grey going darker with time.
FIRST_COLOUR, LAST_COLOUR = "tab:blue", "tab:red"
# The log-scale panels span at least this many powers of ten: a gradient that varies by 30% from
# layer to layer must look level, not like a collapse.
_MIN_LOG_DECADES = 3


def _layer_values(entry: dict, nodes: list[str], statistic: str) -> np.ndarray:
    """One statistic of every node in ``nodes`` from one epoch's entry; missing or None -> NaN."""
    values = []
    for name in nodes:
        value = (entry.get(name) or {}).get(statistic)
        values.append(math.nan if value is None else float(value))
    return np.array(values)


def _positive(values: np.ndarray) -> np.ndarray:
    """``values`` with zeros (and negatives) as NaN, gaps on a log scale instead of errors."""
    return np.where(values > 0, values, math.nan)


def layer_stats_figure(stats: dict, title: str | None = None) -> Figure:
    """Per-layer statistics of a training run, layers in order along the x axis.

    Four panels: the activations' mean ± sd (first and last measured epochs); the sd of the
    gradient ``dL/d(output)`` of every node on a log scale, one line per measured epoch; the RMS
    of each weighted layer's weights; and the RMS of their gradients (log scale). A stack of
    sigmoid layers trained with SGD shows its vanishing gradient as a line that falls by orders of
    magnitude from the last layer back to the first; the note in the gradient panel gives the
    factor between the first and last weighted layers.

    Parameters
    ----------
    stats : dict
        As :meth:`mlplab.training.diagnostics.LayerStatistics.to_dict` returns it and
        ``layer_stats.json`` holds it: ``nodes``, ``epochs`` and optionally ``types``,
        ``epoch_numbers`` and ``sample_size``.
    title : str, optional
        What was trained, shown above the panels.

    Returns
    -------
    Figure
        Axes in order: activations, gradient sd, weight RMS, weight-gradient RMS.
    """
    nodes = [str(name) for name in stats.get("nodes") or []]
    entries = list(stats.get("epochs") or [])
    numbers = list(stats.get("epoch_numbers") or range(len(entries)))
    types = stats.get("types") or {}
    weighted = [
        name for name in nodes if any((e.get(name) or {}).get("weight_rms") for e in entries)
    ]
    position = {name: i for i, name in enumerate(nodes)}

    figure = new_figure(max(11.0, 0.45 * len(nodes) + 4), 8.5)
    activation_axes, gradient_axes, weight_axes, weight_gradient_axes = figure.subplots(
        2, 2
    ).ravel()
    x_all = np.arange(len(nodes), dtype=float)
    x_weighted = np.array([position[name] for name in weighted], dtype=float)

    last = len(entries) - 1
    for index, (entry, number) in enumerate(zip(entries, numbers)):
        is_end = index in (0, last)
        if index == 0:
            colour, label = FIRST_COLOUR, f"epoch {number}" + (" (start)" if number == 0 else "")
        elif index == last:
            colour, label = LAST_COLOUR, f"epoch {number} (last)"
        else:
            shade = 0.8 - 0.5 * index / max(last, 1)
            colour, label = str(shade), "_between"
        style = {"color": colour, "lw": 1.8 if is_end else 0.8, "zorder": 3 if is_end else 2}
        marker = {"marker": "o", "ms": 4} if is_end else {}
        gradient = _positive(_layer_values(entry, nodes, "gradient_std"))
        gradient_axes.plot(x_all, gradient, label=label, **style, **marker)
        if weighted:
            weight_axes.plot(
                x_weighted,
                _layer_values(entry, weighted, "weight_rms"),
                label=label,
                **style,
                **marker,
            )
            weight_gradient_axes.plot(
                x_weighted,
                _positive(_layer_values(entry, weighted, "weight_gradient_rms")),
                label=label,
                **style,
                **marker,
            )
        if is_end:  # first and last only, side by side: more error bars would hide each other
            offset = 0.0 if last == 0 else (-0.12 if index == 0 else 0.12)
            activation_axes.errorbar(
                x_all + offset,
                _layer_values(entry, nodes, "activation_mean"),
                yerr=_layer_values(entry, nodes, "activation_std"),
                fmt="o",
                ms=4,
                capsize=3,
                color=colour,
                label=label,
            )

    activation_axes.set_title("activations: mean ± sd (inference mode)")
    activation_axes.axhline(0, color="grey", lw=0.8)
    activation_axes.set_ylabel("output value")
    gradient_axes.set_title("gradient dL/d(output): sd (log scale)")
    gradient_axes.set_yscale("log")
    gradient_axes.set_ylabel("sd over the sample")
    weight_axes.set_title("weights: RMS")
    weight_axes.set_ylim(bottom=0)
    weight_axes.set_ylabel("RMS")
    weight_gradient_axes.set_title("weight gradients: RMS (log scale)")
    weight_gradient_axes.set_yscale("log")
    weight_gradient_axes.set_ylabel("RMS")
    for axes in (gradient_axes, weight_gradient_axes):
        _at_least_decades(axes, _MIN_LOG_DECADES)

    def labelled(name):
        kind = str(types.get(name, ""))
        return name if not kind or name.startswith(kind) else f"{name} ({kind})"

    for axes, names, x in (
        (activation_axes, nodes, x_all),
        (gradient_axes, nodes, x_all),
        (weight_axes, weighted, x_weighted),
        (weight_gradient_axes, weighted, x_weighted),
    ):
        axes.set_xticks(x, labels=[labelled(name) for name in names], rotation=45, ha="right")
        axes.set_xlim(-0.6, len(nodes) - 0.4)
        axes.tick_params(axis="x", labelsize=8)
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=8)
        else:
            axes.text(
                0.5, 0.5, "nothing recorded", ha="center", va="center", transform=axes.transAxes
            )
    note = _vanishing_note(entries[last] if entries else {}, weighted)
    if note:
        gradient_axes.text(
            0.98,
            0.03,
            note,
            transform=gradient_axes.transAxes,
            fontsize=8,
            ha="right",
            va="bottom",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    heading = [title] if title else []
    sample = stats.get("sample_size")
    heading.append(
        "per-layer statistics"
        + (f" on {sample} fixed examples" if sample else "")
        + "; layers in the order the input flows through them"
        + ("; grey lines: the epochs between" if len(entries) > 2 else "")
    )
    figure.suptitle("\n".join(heading), fontsize=10)
    figure.tight_layout()
    return figure


def _at_least_decades(axes, decades: float) -> None:
    """Widen a log-scale y axis to span at least ``decades`` powers of ten around its lines, so
    that a level line (a ReLU stack's gradients) looks level beside a falling one."""
    values = [np.asarray(line.get_ydata(), dtype=float) for line in axes.get_lines()]
    values = np.concatenate(values) if values else np.array([])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    if math.log10(high / low) < decades:
        middle = math.sqrt(low * high)
        axes.set_ylim(middle / 10 ** (decades / 2), middle * 10 ** (decades / 2))


def _vanishing_note(entry: dict, weighted: list[str]) -> str:
    """How much smaller the output-gradient sd of the first weighted layer is than the last's."""
    if len(weighted) < 2:
        return ""
    first = (entry.get(weighted[0]) or {}).get("gradient_std")
    last = (entry.get(weighted[-1]) or {}).get("gradient_std")
    if not first or not last or first <= 0 or last <= 0:
        return ""
    ratio = first / last
    return f"last epoch: sd at {weighted[0]} = {ratio:.2g} × sd at {weighted[-1]}"


def plot_layer_stats(stats: dict, path, title: str | None = None) -> Path:
    """Write :func:`layer_stats_figure` to ``path`` (PNG); return the path."""
    return save_figure(layer_stats_figure(stats, title), path)
