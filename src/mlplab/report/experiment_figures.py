"""The plots of an experiment report, each a matplotlib ``Figure`` drawn from stored results.

Each ``*_figure`` function takes the configuration summaries of
:mod:`mlplab.report.experiment_summary` (best first) and returns a ``Figure`` (Agg, no pyplot,
as in :mod:`mlplab.report.plots`), or raises :class:`NotApplicable` with the sentence the report
prints instead when the store holds nothing the plot could show (one configuration has no
learning curve to overlay with, a depth sweep has no two-layer splits for a heatmap).

Accuracies are drawn in percent; every spread over seeds is a standard deviation (error bar) with
the seeds themselves as small dots, so a reader sees how many seeds stand behind a mean.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mlplab.engine.activations import ACTIVATIONS
from mlplab.report.experiment_significance import ALPHA, Significance
from mlplab.report.experiment_summary import (
    METRIC_NAMES,
    ConfigurationSummary,
    setting_text,
    spread,
)
from mlplab.report.plots import new_figure

# Beyond this many configurations a per-configuration bar chart shows only the best ones.
MAX_BARS = 30
LABEL_CHARACTERS = 40
SEED_DOT = {"s": 12, "alpha": 0.5, "zorder": 3, "linewidths": 0}


class NotApplicable(Exception):
    """A plot the store's results do not support; the message is the report's sentence."""


def short(text: str, limit: int = LABEL_CHARACTERS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _percent(values) -> np.ndarray:
    return 100 * np.asarray(list(values), dtype=np.float64)


def _jitter(n: int, width: float) -> np.ndarray:
    """Evenly spread horizontal offsets so that seed dots at one x do not hide each other."""
    return np.zeros(n) if n < 2 else np.linspace(-width, width, n)


def _finish(figure: Figure, title: str) -> Figure:
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


# -- 1. accuracy against depth and against width --------------------------------------------------


def depth_width_figure(summaries: list[ConfigurationSummary], metric: str) -> Figure:
    """Accuracy against depth (one line per width) and against width (one line per depth).

    Only stacks whose hidden layers all have the same width and steps take part (``3x64:relu``,
    ``64:relu,64:relu``); lines are also split by what follows each layer and by the other
    settings that vary in the store. A panel is drawn when its axis takes at least two values.
    """
    stacks = [s for s in summaries if s.shape and s.shape.uniform and s.mean(metric) is not None]
    widths = {s.shape.widths[0] for s in stacks}
    panels = []
    if _lines(stacks, "width"):
        panels.append(("depth", "hidden layers (depth)", lambda s: s.shape.depth, "width"))
    if _lines(stacks, "depth"):
        panels.append(
            ("width", "units per hidden layer (width)", lambda s: s.shape.widths[0], "depth")
        )
    if not panels:
        raise NotApplicable(
            "Accuracy against depth and width is not drawn: no two stacks of equal-width layers "
            "differ in depth or in width."
        )
    figure = new_figure(6.2 * len(panels), 4.6)
    axes_list = np.atleast_1d(figure.subplots(1, len(panels)))
    for axes, (kind, xlabel, x_of, line_name) in zip(axes_list, panels):
        # Widths usually double from one to the next (32, 64, ..., 2048): a log axis spaces them.
        log_x = kind == "width" and _spans(widths, 8)
        lines = _lines(stacks, line_name)
        for number, (key, members) in enumerate(sorted(lines.items(), key=_line_order)):
            members.sort(key=x_of)
            x = np.array([x_of(s) for s in members], dtype=float)
            means = _percent(s.mean(metric) for s in members)
            errors = _percent(spread(s.summary(metric)) for s in members)
            colour = f"C{number % 10}"
            label = " ".join(part for part in key if part)
            axes.errorbar(
                x,
                means,
                yerr=errors,
                color=colour,
                marker="o",
                ms=5,
                capsize=3,
                label=short(label, 45),
                zorder=2,
            )
            for xi, s in zip(x, members):
                seeds = _percent(s.values[metric].values())
                offsets = _jitter(len(seeds), 0.06)
                xs = xi * 2**offsets if log_x else xi + offsets
                axes.scatter(xs, seeds, color=colour, **SEED_DOT)
        if log_x:
            axes.set_xscale("log", base=2)
            axes.set_xticks(sorted(widths), labels=[str(w) for w in sorted(widths)])
            axes.minorticks_off()
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel(xlabel)
        axes.set_ylabel(f"{METRIC_NAMES[metric]} (%)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        axes.set_title(f"against {kind}", fontsize=10)
    return _finish(figure, f"{METRIC_NAMES[metric]}: mean ± sd over seeds, dots = single seeds")


def _lines(stacks: list[ConfigurationSummary], fixed: str) -> dict[tuple, list]:
    """Stacks grouped into lines that keep ``fixed`` ("width" or "depth"), the layers' steps and
    the other settings; only lines with two or more points (a single point shows no trend)."""
    lines = defaultdict(list)
    for s in stacks:
        value = s.shape.widths[0] if fixed == "width" else s.shape.depth
        lines[(f"{fixed} {value}", s.shape.steps, s.others)].append(s)
    return {key: members for key, members in lines.items() if len(members) >= 2}


def _line_order(item):
    (fixed, steps, others), _ = item
    name, _, number = fixed.partition(" ")
    return (steps, others, int(number) if number.isdigit() else 0)


def _spans(values, ratio: float) -> bool:
    values = [v for v in values if v > 0]
    return bool(values) and max(values) / min(values) >= ratio


# -- 2. the node-budget landscape ----------------------------------------------------------------


# The most heatmaps one landscape figure holds (one per activation and other settings).
MAX_HEATMAPS = 4


def two_layer_groups(summaries: list[ConfigurationSummary], metric: str) -> list[tuple]:
    """Networks with exactly two hidden Dense layers, grouped by what else they have (the layers'
    steps and the other varied settings): ``[(group name, {(first, second): summary})]``, groups
    with at least two cells only, the largest first."""
    groups: dict[tuple, dict] = defaultdict(dict)
    for s in summaries:
        if s.shape and s.shape.depth == 2 and s.mean(metric) is not None:
            key = (s.shape.steps, s.others)
            # Summaries come best first, so a cell two configurations share shows the better.
            groups[key].setdefault((s.shape.widths[0], s.shape.widths[1]), s)
    found = [(" ".join(p for p in key if p), cells) for key, cells in groups.items()]
    found = [(name, cells) for name, cells in found if _comparable(cells)]
    return sorted(found, key=lambda item: -len(item[1]))


def _comparable(cells: dict) -> bool:
    """Whether some two splits differ in one width only, or spend the same total of units: a
    diagonal of 32+32 and 64+64 alone is a width sweep, not a landscape."""
    firsts = [a for a, _ in cells]
    seconds = [b for _, b in cells]
    totals = [a + b for a, b in cells]
    return any(len(v) > len(set(v)) for v in (firsts, seconds, totals))


def two_layer_heatmap_figure(summaries: list[ConfigurationSummary], metric: str) -> Figure:
    """Heatmaps of mean accuracy over (first hidden width, second hidden width) of the networks
    with exactly two hidden Dense layers, each cell annotated with its mean, the best in bold.

    One heatmap per group of :func:`two_layer_groups` (``relu`` and ``sigmoid`` splits apart),
    at most :data:`MAX_HEATMAPS`. Rows = first width (smallest at the top), columns = second.
    """
    groups = two_layer_groups(summaries, metric)
    if not groups:
        raise NotApplicable(
            "The two-layer landscape is not drawn: no two networks with exactly two hidden layers "
            "and otherwise equal settings share a layer width or a total of units."
        )
    left_out = len(groups) - MAX_HEATMAPS
    groups = groups[:MAX_HEATMAPS]
    largest = max(len({b for _, b in cells}) for _, cells in groups)
    tallest = max(len({a for a, _ in cells}) for _, cells in groups)
    width = max(5.5, 0.75 * largest + 3.2)
    figure = new_figure(width * len(groups), max(4.2, 0.5 * tallest + 2.4))
    axes_list = np.atleast_1d(figure.subplots(1, len(groups)))
    for axes, (name, cells) in zip(axes_list, groups):
        _heatmap(figure, axes, name, cells, metric)
    more = f" ({left_out} more groups in configurations.csv)" if left_out > 0 else ""
    return _finish(figure, f"two hidden layers: mean over seeds, bold = best{more}")


def _heatmap(figure: Figure, axes, name: str, cells: dict, metric: str) -> None:
    firsts = sorted({a for a, _ in cells})
    seconds = sorted({b for _, b in cells})
    grid = np.full((len(firsts), len(seconds)), np.nan)
    for (a, b), s in cells.items():
        grid[firsts.index(a), seconds.index(b)] = 100 * s.mean(metric)
    axes.set_facecolor("0.92")  # grey: a split that was not run
    image = axes.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2
    best = np.unravel_index(np.nanargmax(grid), grid.shape)
    fontsize = 8 if len(seconds) <= 12 else 6
    for (i, j), value in np.ndenumerate(grid):
        if not math.isnan(value):
            axes.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                color="black" if value > middle else "white",
                fontsize=fontsize,
                weight="bold" if (i, j) == best else "normal",
            )
    axes.set_xticks(range(len(seconds)), labels=[str(b) for b in seconds], rotation=45)
    axes.set_yticks(range(len(firsts)), labels=[str(a) for a in firsts])
    axes.set_xlabel("units in the second hidden layer")
    axes.set_ylabel("units in the first hidden layer")
    colour_bar = figure.colorbar(image, ax=axes, shrink=0.85)
    colour_bar.set_label(f"mean {METRIC_NAMES[metric]} (%)")
    totals = {a + b for a, b in cells}
    budget = f", {totals.pop()} units in all" if len(totals) == 1 else ""
    axes.set_title(short(f"{name}{budget}", 50), fontsize=10)


def budget_depth_figure(summaries: list[ConfigurationSummary], metric: str) -> Figure:
    """For each total of hidden units reached by at least two depths: the best configuration of
    each depth (mean ± sd over seeds), one line per total. Does a fixed budget do better in one
    layer or spread over several?"""
    by_total: dict[int, dict[int, ConfigurationSummary]] = defaultdict(dict)
    for s in summaries:  # best first: the first of a (total, depth) is its best
        if s.shape and s.shape.depth >= 1 and s.mean(metric) is not None:
            by_total[s.shape.units].setdefault(s.shape.depth, s)
    totals = {t: d for t, d in by_total.items() if len(d) >= 2}
    if not totals:
        raise NotApplicable(
            "Best accuracy per depth at a fixed number of units is not drawn: no total of "
            "hidden units was spent over two or more depths."
        )
    figure = new_figure(7, 4.6)
    axes = figure.subplots()
    for number, (total, depths) in enumerate(sorted(totals.items())):
        colour = f"C{number % 10}"
        ds = sorted(depths)
        means = _percent(depths[d].mean(metric) for d in ds)
        errors = _percent(spread(depths[d].summary(metric)) for d in ds)
        axes.errorbar(
            ds, means, yerr=errors, color=colour, marker="o", capsize=3, label=f"{total} units"
        )
        for d in ds:
            seeds = _percent(depths[d].values[metric].values())
            axes.scatter(d + _jitter(len(seeds), 0.08), seeds, color=colour, **SEED_DOT)
            axes.annotate(
                short(depths[d].shape.architecture, 28),
                (d, 100 * depths[d].mean(metric)),
                textcoords="offset points",
                xytext=(5, 6),
                fontsize=7,
                color=colour,
            )
    axes.set_xlabel("hidden layers (depth)")
    axes.set_ylabel(f"best mean {METRIC_NAMES[metric]} (%)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, title="hidden units in all", title_fontsize=8)
    return _finish(figure, "the best split of a fixed number of units, per depth")


# -- 3. learning curves ----------------------------------------------------------------------------


def curve_selection(summaries: list[ConfigurationSummary], top: int) -> list[ConfigurationSummary]:
    """The best ``top`` configurations and the worst one (for contrast), best first."""
    chosen = list(summaries[:top])
    if len(summaries) > top:
        chosen.append(summaries[-1])
    return chosen


def mean_curve(summary: ConfigurationSummary, column: str) -> np.ndarray | None:
    """Per-epoch mean over seeds of a history column (epochs some seeds did not reach, after
    early stopping, average over the seeds that did)."""
    curves = []
    for record in summary.records:
        values = record.history.get(column) or []
        curves.append([math.nan if v is None else float(v) for v in values])
    length = max((len(c) for c in curves), default=0)
    if length == 0:
        return None
    padded = np.full((len(curves), length), np.nan)
    for row, curve in zip(padded, curves):
        row[: len(curve)] = curve
    if np.all(np.isnan(padded)):
        return None
    with np.errstate(all="ignore"):
        counts = np.sum(np.isfinite(padded), axis=0)
        sums = np.nansum(padded, axis=0)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def learning_curves_figure(summaries: list[ConfigurationSummary], top: int) -> Figure:
    """Validation accuracy per epoch, mean over seeds, of the top configurations and the worst,
    overlaid; the validation loss beside it."""
    chosen = curve_selection(summaries, top)
    curves = [(s, mean_curve(s, "val_accuracy"), mean_curve(s, "val_loss")) for s in chosen]
    curves = [(s, acc, loss) for s, acc, loss in curves if acc is not None]
    if len(curves) < 1 or max(np.sum(np.isfinite(acc)) for _, acc, _ in curves) < 2:
        raise NotApplicable(
            "Learning curves are not drawn: no configuration has validation accuracy recorded "
            "over two or more epochs."
        )
    figure = new_figure(12, 4.8)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    worst = summaries[-1] if len(summaries) > top else None
    for number, (s, accuracy, loss) in enumerate(curves):
        epochs = np.arange(1, len(accuracy) + 1)
        is_worst = s is worst
        style = dict(
            color="grey" if is_worst else f"C{number % 10}",
            lw=1.5,
            ls="--" if is_worst else "-",
            marker="o",
            ms=2.5,
        )
        rank = summaries.index(s) + 1
        label = short(f"{rank}. {s.name}" + (" (worst)" if is_worst else ""), 45)
        accuracy_axes.plot(epochs, 100 * accuracy, label=label, **style)
        if loss is not None:
            loss_axes.plot(np.arange(1, len(loss) + 1), loss, label=label, **style)
    accuracy_axes.set_ylabel("validation accuracy (%)")
    # Zoom on the later epochs, where configurations part ways; the first epochs may fall below.
    low = np.nanmin([np.nanmin(acc[len(acc) // 2 :]) for _, acc, _ in curves])
    high = np.nanmax([np.nanmax(acc) for _, acc, _ in curves])
    accuracy_axes.set_ylim(
        max(0.0, math.floor(100 * low - 1)), min(100.0, math.ceil(100 * high + 0.5))
    )
    loss_axes.set_ylabel("validation loss")
    loss_axes.set_ylim(bottom=0)
    for axes in (accuracy_axes, loss_axes):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    accuracy_axes.legend(fontsize=7)
    if not loss_axes.has_data():
        loss_axes.text(
            0.5,
            0.5,
            "no validation loss recorded",
            ha="center",
            va="center",
            transform=loss_axes.transAxes,
        )
    return _finish(figure, "learning curves: mean over seeds (rank. configuration)")


# -- 4. the two gaps -------------------------------------------------------------------------------


def gaps_figure(summaries: list[ConfigurationSummary]) -> Figure:
    """Two horizontal bar charts, one bar per configuration (best at the top): train minus test
    accuracy (overfitting), and first-half minus last-half test accuracy (MNIST's two halves
    come from different groups of writers). Bars are means over seeds with sd error
    bars, dots the seeds."""
    shown = summaries[:MAX_BARS]
    panels = [
        ("train_test_gap", "train − test accuracy (points)"),
        ("half_gap", "first-half − last-half test accuracy (points)"),
    ]
    panels = [(q, t) for q, t in panels if any(s.values[q] for s in shown)]
    if not panels:
        raise NotApplicable(
            "The train/test and half/half gaps are not drawn: no trial recorded train accuracy or "
            "the test halves."
        )
    height = max(3.0, 0.32 * len(shown) + 1.6)
    figure = new_figure(6 * len(panels) + 2.5, height)
    axes_list = np.atleast_1d(figure.subplots(1, len(panels), sharey=True))
    positions = np.arange(len(shown))[::-1]  # best at the top
    for axes, (quantity, title) in zip(axes_list, panels):
        for y, s in zip(positions, shown):
            values = s.values[quantity]
            if not values:
                continue
            summary = s.summary(quantity)
            axes.barh(
                y,
                100 * summary.mean,
                xerr=100 * spread(summary),
                color="tab:blue",
                alpha=0.6,
                capsize=2,
                height=0.7,
            )
            seeds = _percent(values.values())
            axes.scatter(
                seeds,
                y + _jitter(len(seeds), 0.2),
                color="black",
                s=8,
                alpha=0.6,
                zorder=3,
                linewidths=0,
            )
        axes.axvline(0, color="black", lw=0.8)
        axes.set_xlabel(title)
        axes.grid(axis="x", alpha=0.3)
    axes_list[0].set_yticks(
        positions, labels=[short(f"{i + 1}. {s.name}") for i, s in enumerate(shown)], fontsize=7
    )
    more = f" (best {MAX_BARS} of {len(summaries)})" if len(summaries) > MAX_BARS else ""
    return _finish(figure, f"gaps per configuration, mean ± sd over seeds{more}")


# -- 5. time against accuracy ----------------------------------------------------------------------


def time_figure(summaries: list[ConfigurationSummary], metric: str) -> Figure:
    """Training seconds (mean over seeds) against accuracy, one point per configuration, sd error
    bars on both; the best few and the fastest are named."""
    timed = [s for s in summaries if s.values["train_seconds"] and s.mean(metric) is not None]
    if not timed:
        raise NotApplicable(
            "Time per configuration is not drawn: no trial recorded its training time."
        )
    figure = new_figure(7.5, 5)
    axes = figure.subplots()
    seconds = np.array([s.mean("train_seconds") for s in timed])
    accuracy = _percent(s.mean(metric) for s in timed)
    axes.errorbar(
        seconds,
        accuracy,
        xerr=[spread(s.summary("train_seconds")) for s in timed],
        yerr=_percent(spread(s.summary(metric)) for s in timed),
        fmt="o",
        color="tab:blue",
        ecolor="lightsteelblue",
        capsize=2,
        ms=5,
    )
    log_x = bool(seconds.min() > 0 and seconds.max() / seconds.min() > 20)
    if log_x:
        axes.set_xscale("log")
    named = sorted(set(range(min(3, len(timed)))) | {int(np.argmin(seconds))})
    _name_points(axes, [(seconds[i], accuracy[i], timed[i], summaries) for i in named], log_x)
    axes.set_xlabel("training time (s, mean over seeds)")
    axes.set_ylabel(f"mean {METRIC_NAMES[metric]} (%)")
    axes.grid(alpha=0.3)
    return _finish(figure, "time per configuration against accuracy")


def _name_points(axes, points: list[tuple], log_x: bool) -> None:
    """Label points with "rank. name": to the left of points in the right part of the plot (so
    the text stays inside), stacked downwards where points lie close together."""
    xs = np.array([p[0] for p in points], dtype=float)
    scale_x = np.log10(np.maximum(xs, 1e-12)) if log_x else xs
    low_x, high_x = axes.dataLim.x0, axes.dataLim.x1
    if log_x:
        low_x, high_x = np.log10(max(low_x, 1e-12)), np.log10(max(high_x, 1e-12))
    span_x = max(high_x - low_x, 1e-12)
    span_y = max(axes.dataLim.y1 - axes.dataLim.y0, 1e-12)
    placed: list[tuple[float, float, int]] = []
    for (x, y, summary, summaries), fx in zip(points, scale_x):
        nx, ny = (fx - low_x) / span_x, (y - axes.dataLim.y0) / span_y
        near = [k for px, py, k in placed if abs(px - nx) < 0.25 and abs(py - ny) < 0.08]
        level = max(near) + 1 if near else 0
        placed.append((nx, ny, level))
        right = nx > 0.6
        axes.annotate(
            short(f"{summaries.index(summary) + 1}. {summary.name}", 30),
            (x, y),
            textcoords="offset points",
            xytext=(-6 if right else 6, 4 - 10 * level),
            ha="right" if right else "left",
            fontsize=7,
        )


# -- 6. significance -------------------------------------------------------------------------------


def significance_figure(significance: Significance) -> Figure:
    """N x N Holm-adjusted p-values of the top configurations: McNemar's test below the diagonal,
    the paired t-test over seeds above it; darker = smaller p, ``*`` = below 5%."""
    n = len(significance.names)
    if n < 2:
        raise NotApplicable("The significance matrix is not drawn: it needs two configurations.")
    mcnemar, paired = significance.matrix("mcnemar"), significance.matrix("paired")
    if np.all(np.isnan(mcnemar)) and np.all(np.isnan(paired)):
        raise NotApplicable(
            "The significance matrix is not drawn: no pair could be tested (no shared test "
            "predictions, and fewer than two shared seeds)."
        )
    grid = np.where(np.tril(np.ones((n, n), dtype=bool), -1), mcnemar, paired)
    np.fill_diagonal(grid, np.nan)
    strength = -np.log10(np.clip(grid, 1e-6, 1.0))
    figure = new_figure(max(6.0, 0.85 * n + 4.8), max(4.0, 0.7 * n + 2.0))
    axes = figure.subplots()
    axes.set_facecolor("0.92")  # grey: the diagonal and pairs no test could compare
    image = axes.imshow(np.ma.masked_invalid(strength), cmap="Blues", vmin=0, vmax=4)
    for (i, j), p in np.ndenumerate(grid):
        if i == j:
            axes.text(j, i, "—", ha="center", va="center", color="grey")
            continue
        text = "n/a" if math.isnan(p) else (f"{p:.2g}" if p >= 0.001 else "<0.001")
        if not math.isnan(p) and p < ALPHA:
            text += " *"
        colour = "white" if not math.isnan(p) and -math.log10(max(p, 1e-6)) > 2.5 else "black"
        axes.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    names = [short(f"{i + 1}. {name}", 30) for i, name in enumerate(significance.names)]
    axes.set_xticks(range(n), labels=[str(i + 1) for i in range(n)])
    axes.set_yticks(range(n), labels=names, fontsize=8)
    axes.set_xlabel("configuration (rank)")
    colour_bar = figure.colorbar(image, ax=axes, shrink=0.8)
    colour_bar.set_label("−log10 p (Holm-adjusted)")
    axes.set_title(
        "Holm-adjusted p-values, * = significant at 5%\n"
        "below the diagonal: McNemar (test predictions, one seed); "
        "above: paired t-test over seeds",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


# -- 7. per-layer magnitudes -----------------------------------------------------------------------

# Hidden activation nodes (the output's softmax, if any, is a probability, not a hidden layer).
HIDDEN_ACTIVATIONS = frozenset(ACTIVATIONS) - {"softmax"}
# The most families one magnitudes figure draws (tab10 has ten distinct colours).
MAX_FAMILIES = 10


def layer_families(summaries: list[ConfigurationSummary]) -> list[tuple[str, list]]:
    """The configurations that recorded per-layer statistics, grouped into families that differ
    only in depth and widths: the same steps after each Dense layer and the same other settings
    (a graph network is a family of its own). ``[(family label, members)]``, members best first,
    families in the order of their best member.

    A setting that some trials lack and the others all give one value (a setting added to
    mlplab after the older trials ran, at its default) does not split a family.
    """
    layered = [s for s in summaries if s.has_layers]
    keys = [
        key
        for key in (layered[0].settings if layered else {})
        if len({repr(s.settings.get(key)) for s in layered if s.settings.get(key) is not None}) > 1
    ]
    families: dict[tuple, list] = {}
    for s in layered:
        others = " ".join(setting_text(key, s.settings.get(key)) for key in keys)
        key = (s.shape.steps, others) if s.shape else (s.name, "")
        families.setdefault(key, []).append(s)
    return [(" ".join(part for part in key if part), members) for key, members in families.items()]


def layer_magnitudes_figure(summaries: list[ConfigurationSummary]) -> Figure:
    """How big each layer's signal and weights are, from the first layer to the last.

    Left: the standard deviation of each hidden activation node's output (in inference mode, as
    :mod:`mlplab.training.diagnostics` measures it after the last epoch); right: the root mean
    square of each Dense layer's weights, the output layer apart as an open marker (it is no
    hidden layer, and joined to the line it would hide the hidden layers' trend). Both against
    the layer's position in the network (1, 2, ...); dropout and noise nodes, which copy their
    input in inference mode, and normalization nodes are left out. A layer with more inputs
    starts with smaller weights (initial sd proportional to 1/sqrt(inputs)), so on MNIST's 784
    inputs the first Dense layer's RMS sits below its 100-input neighbours' by construction.

    Readable with many configurations: each family of :func:`layer_families` (say
    ``relu:dropout(0.2)`` at depths 2 to 6) is one colour, shared with its twin without dropout
    (``relu``), and dashed when it has dropout. Its
    deepest member, which shows the most of the layer-to-layer trend, is drawn bold with markers
    and its seeds' min-max band; the shallower members are thin lines without a legend entry.
    Lines are means over seeds. At most :data:`MAX_FAMILIES` families, those with the best
    configurations; a y axis is logarithmic when its values span more than a factor of 20.
    """
    families = layer_families(summaries)
    if not families:
        raise NotApplicable(
            "Per-layer magnitudes are not drawn: no trial recorded them "
            "(`[training] layer_stats = true`)."
        )
    left_out = len(families) - MAX_FAMILIES
    # A family beside its dropout twin, in the legend as in the colours.
    families = sorted(
        families[:MAX_FAMILIES], key=lambda family: (_without_dropout(family[0]), family[0])
    )
    panels = [
        ("activation_std", HIDDEN_ACTIVATIONS, "hidden layer", "activation sd"),
        ("weight_rms", {"dense"}, "Dense layer (open marker: the output layer)", "weight RMS"),
    ]
    # A family and its dropout twin share a colour (solid and dashed): ReLU against shifted ReLU
    # reads from the colours, with and without dropout from the line style.
    colours: dict[str, str] = {}
    for label, _ in families:
        colours.setdefault(_without_dropout(label), f"C{len(colours) % 10}")
    columns = min(4, len(families))
    legend_rows = math.ceil(len(families) / columns)
    legend_height = 0.25 + 0.2 * legend_rows  # inches, below both panels
    figure = new_figure(13, 5 + legend_height)
    axes_list = figure.subplots(1, 2)
    drawn = 0
    for axes, (statistic, kinds, xlabel, ylabel) in zip(axes_list, panels):
        output_apart = kinds == {"dense"}
        for label, members in families:
            colour = colours[_without_dropout(label)]
            style = "--" if _without_dropout(label) != label else "-"
            series = [(s, *s.layer_values(statistic, kinds)) for s in members]
            series = [(s, values) for s, nodes, values in series if np.isfinite(values).any()]
            if not series:
                continue
            # The deepest member (the best of equally deep ones: members come best first).
            deepest = max(series, key=lambda item: item[1].shape[1])[0]
            for s, values in series:
                bold = s is deepest
                line = dict(color=colour, ls=style, gid=s.name)
                _layer_line(axes, values, line, bold and short(label, 50), output_apart)
                drawn += 1
        axes.set_xlabel(xlabel)
        axes.set_ylabel(f"{ylabel} (mean over seeds)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        values = [v for line in axes.get_lines() for v in line.get_ydata()]
        if _spans(values, 20) and min(values) > 0:
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
        if not axes.has_data():
            axes.text(
                0.5,
                0.5,
                f"no {ylabel} recorded",
                ha="center",
                va="center",
                transform=axes.transAxes,
            )
        axes.set_title(f"{ylabel} per layer", fontsize=10)
    if not drawn:
        raise NotApplicable(
            "Per-layer magnitudes are not drawn: the trials' layer statistics hold neither "
            "activation sd nor weight RMS."
        )
    # One legend for both panels, below them, where it hides no line.
    handles = max((axes.get_legend_handles_labels() for axes in axes_list), key=lambda h: len(h[0]))
    figure.legend(
        *handles,
        loc="lower center",
        ncol=columns,
        fontsize=8,
        frameon=False,
        title="colour: a family and its dropout twin (dashed); bold: the family's deepest member",
        title_fontsize=8,
    )
    more = f"; {left_out} more families not drawn" if left_out > 0 else ""
    figure.suptitle(
        "per-layer magnitudes after training: mean over seeds, band = seeds' min–max, "
        f"thin = shallower members of a family{more}",
        fontsize=11,
    )
    figure.tight_layout(rect=(0, legend_height / figure.get_figheight(), 1, 1))
    return figure


def _without_dropout(label: str) -> str:
    """A family's label without its dropout steps: ``relu:dropout(0.2)`` -> ``relu``."""
    return re.sub(r":?(?<![\w-])dropout(\([^)]*\))?", "", label).strip(": ") or label


def _layer_line(axes, values: np.ndarray, line: dict, label, output_apart: bool) -> None:
    """One configuration's per-layer means (``values``: seeds x layers) at positions 1, 2, ...

    With a ``label`` the line is bold, in the legend, and drawn over its seeds' min-max band.
    With ``output_apart`` the last layer is an open marker off the line. The lines keep
    ``line["gid"]``, the configuration's name, so that a test can find them.
    """
    positions = np.arange(1, values.shape[1] + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer no seed measured: NaN, a gap
        mean = np.nanmean(values, axis=0)
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    hidden = slice(0, -1) if output_apart else slice(None)
    if label:
        axes.plot(positions[hidden], mean[hidden], lw=2, marker="o", ms=4, label=label, **line)
        if values.shape[0] > 1:
            band = dict(color=line["color"], alpha=0.15, lw=0)
            axes.fill_between(positions[hidden], low[hidden], high[hidden], **band)
    else:
        axes.plot(positions[hidden], mean[hidden], lw=0.9, alpha=0.5, **line)
    if output_apart:
        axes.plot(
            positions[-1:],
            mean[-1:],
            ls="none",
            marker="o",
            mfc="none",
            ms=7 if label else 5,
            alpha=1 if label else 0.6,
            color=line["color"],
            gid=f"{line['gid']} (output)",
        )
