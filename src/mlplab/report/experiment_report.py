"""``mlplab report STORE``: a report folder drawn only from a results store.

::

    results-report/
        report.md              # what was run, the ranked table, significance, every plot
        configurations.csv     # one row per configuration: settings, seeds, metrics over seeds
        trials.csv             # one row per trial (failed ones too, with their error)
        significance.csv       # one row per pair of the top configurations
        accuracy_depth_width.png, two_layer_landscape.png, budget_by_depth.png,
        learning_curves.png, gaps.png, time_vs_accuracy.png, significance.png
        layer_magnitudes.png   # only when trials recorded per-layer statistics

Nothing is trained or read besides the store (compute, then present), so a report can be made
on any machine from a copied ``.db`` file, and read without mlplab: Markdown, CSV, PNG. Every
file is written atomically. A plot the results cannot support (a heatmap of two-layer splits in
a store without any) is left out with a sentence saying why, and an older report's file of that
name is removed so that it cannot be mistaken for this one's.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mlplab.errors import ConfigError, DataError
from mlplab.experiments.store import Store, seed_of
from mlplab.report.experiment_figures import (
    MAX_BARS,
    NotApplicable,
    budget_depth_figure,
    depth_width_figure,
    gaps_figure,
    layer_magnitudes_figure,
    learning_curves_figure,
    significance_figure,
    time_figure,
    two_layer_heatmap_figure,
)
from mlplab.report.experiment_significance import (
    Significance,
    best_sentence,
    mark,
    pairwise_tests,
)
from mlplab.report.experiment_summary import (
    METRIC_NAMES,
    RANK_METRICS,
    ConfigurationSummary,
    seed_counts,
    summarize,
)
from mlplab.report.plots import save_figure
from mlplab.saving import write_text

REPORT_FILE = "report.md"
# The most configurations tested against each other: MAX_TOP x MAX_TOP p-values still read.
MAX_TOP = 20
# The most configurations report.md lists; configurations.csv always has them all.
MAX_TABLE_ROWS = 50
# Metrics of trials.csv in this order first; any others a trial recorded follow, sorted.
TRIAL_METRICS = (
    "test_accuracy",
    "val_accuracy",
    "test_first_half",
    "test_last_half",
    "train_accuracy",
    "test_loss",
    "val_loss",
    "train_loss",
    "epochs_run",
    "best_epoch",
)


def write_report(
    store_path_or_store,
    out_folder,
    *,
    sweep: str | None = None,
    metric: str | None = None,
    top: int = 5,
) -> Path:
    """Write the report folder of a results store; return the path of its ``report.md``.

    Parameters
    ----------
    store_path_or_store : str, Path or Store
        A store path, an ``sqlite:///`` URL, or an open :class:`~mlplab.experiments.store.Store`.
        A path must name an existing store (none is created).
    out_folder : str or Path
        The report folder; made if missing, files of an older report in it replaced.
    sweep : str, optional
        Only this sweep's trials ("" for single ``mlplab train --store`` runs); all by default.
    metric : {"test_accuracy", "val_accuracy"}, optional
        What configurations are ranked and plotted by. By default the metric the sweep's file
        names (``metric = { name, goal }``, kept in the store; see :func:`ranking_metric`), else
        test accuracy.
    top : int
        How many of the best configurations are tested against each other (and drawn as
        learning curves), at least 2.

    Raises
    ------
    ConfigError
        An unknown metric or sweep, or ``top`` below 2.
    DataError
        The store is unreadable, not an mlplab store, or has no finished trial to report.
    """
    if metric is not None and metric not in RANK_METRICS:
        raise ConfigError(f"metric {metric!r}: choose one of {', '.join(RANK_METRICS)}")
    if isinstance(top, bool) or not isinstance(top, int) or not 2 <= top <= MAX_TOP:
        raise ConfigError(
            f"top {top!r}: test between 2 and {MAX_TOP} configurations against each other "
            "(a larger matrix cannot be read)"
        )
    if isinstance(store_path_or_store, Store):
        return _write(store_path_or_store, Path(out_folder), sweep, metric, top)
    with Store(store_path_or_store, create=False) as store:
        return _write(store, Path(out_folder), sweep, metric, top)


def ranking_metric(store: Store, sweep: str | None) -> tuple[str, str]:
    """The metric a report ranks by when none is asked for, and a sentence saying why.

    The sweep's own metric (its file's ``metric = { name, goal }``, which the store keeps) when
    it is one a report can rank by; for a loss, the accuracy on the same examples (a lower
    validation loss and a higher validation accuracy both pick the model that does best on the
    validation set, and the report's tables, plots and tests are of accuracies). Test accuracy
    when the store names no metric (single runs, stores from before metrics were kept) or its
    sweeps name different ones.
    """
    declared = store.metrics()
    scope = [sweep] if sweep is not None else store.sweeps()
    named = {(declared[s]["name"], declared[s]["goal"]) for s in scope if s in declared}
    if not named:
        return "test_accuracy", ""
    if len(named) > 1:
        listed = ", ".join(f"{name} ({goal})" for name, goal in sorted(named))
        return "test_accuracy", (
            f"The sweeps optimize different metrics ({listed}), so this report ranks by test "
            "accuracy; give `--sweep` to rank one sweep by its own metric."
        )
    ((name, goal),) = named
    owner = f"sweep `{sweep}`" if sweep is not None else "the sweep"
    if name in RANK_METRICS and goal == "maximize":
        return name, f"{METRIC_NAMES[name].capitalize()} is the metric {owner} maximizes."
    accuracy = {"val_loss": "val_accuracy", "test_loss": "test_accuracy"}.get(name)
    if accuracy is not None and goal == "minimize":
        return accuracy, (
            f"{owner.capitalize()} minimizes {name}; reports rank by accuracies, so this one "
            f"ranks by {METRIC_NAMES[accuracy]}, measured on the same examples."
        )
    return "test_accuracy", (
        f"{owner.capitalize()} optimizes {name} ({goal}), which reports cannot rank by; this one "
        "ranks by test accuracy."
    )


def _write(store: Store, out: Path, sweep: str | None, metric: str | None, top: int) -> Path:
    sweeps = store.sweeps()
    if sweep is not None and sweep not in sweeps:
        known = ", ".join(repr(name) for name in sweeps) or "none"
        raise ConfigError(f"{store.path}: no sweep {sweep!r}; the store has: {known}")
    configurations = store.configurations(sweep)
    if not configurations:
        raise DataError(
            f"{store.path}: no finished trials{f' in sweep {sweep!r}' if sweep else ''}; "
            "nothing to report"
        )
    why = ""
    if metric is None:
        metric, why = ranking_metric(store, sweep)
        if metric != "test_accuracy" and summarize(configurations, metric)[0].mean(metric) is None:
            why += f" No trial recorded {metric}, so this report ranks by test accuracy."
            metric = "test_accuracy"
    summaries = summarize(configurations, metric)
    if summaries[0].mean(metric) is None:
        other = next(m for m in RANK_METRICS if m != metric)
        raise DataError(
            f"{store.path}: no trial recorded {metric} (runs without validation data?); "
            f"use --metric {other}"
        )
    all_trials = store.trials(sweep, status=None)
    significance = pairwise_tests(summaries, metric, top)
    _make_folder(out)
    write_text(out / "configurations.csv", configurations_csv(summaries))
    write_text(out / "trials.csv", trials_csv(all_trials))
    write_text(out / "significance.csv", significance_csv(significance))
    plots = _draw_plots(summaries, significance, metric, top, out)
    text = report_markdown(
        store, sweep, sweeps, summaries, all_trials, significance, plots, metric, why.strip()
    )
    return write_text(out / REPORT_FILE, text)


def _make_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; give a folder for the report with --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"{out}: cannot make the report folder ({error.strerror or error})"
        ) from None


# -- CSV tables -----------------------------------------------------------------------------------


def _csv(header: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, header, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(value) for key, value in row.items()})
    return buffer.getvalue()


def _cell(value):
    """CSV cells: full precision for numbers (``repr``), "" for missing, lists joined by ``;``."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    return value


def configuration_rows(summaries: list[ConfigurationSummary]) -> tuple[list[str], list[dict]]:
    """The header and rows of ``configurations.csv`` (best first; accuracies as fractions)."""
    settings = list(summaries[0].settings) if summaries else []
    header = [
        "rank",
        "label",
        "config_hash",
        "architecture",
        "depth",
        "hidden_widths",
        "hidden_units",
        "layer_steps",
        *settings,
        "n_seeds",
        "seeds",
    ]
    statistics = {
        "test_accuracy": ("mean", "sd", "ci_low", "ci_high"),
        "val_accuracy": ("mean", "sd", "ci_low", "ci_high"),
        "test_first_half": ("mean", "sd"),
        "test_last_half": ("mean", "sd"),
        "half_gap": ("mean", "sd"),
        "train_accuracy": ("mean", "sd"),
        "train_test_gap": ("mean", "sd"),
        "train_seconds": ("mean", "sd"),
        "epochs_run": ("mean",),
    }
    for quantity, kinds in statistics.items():
        header.extend(f"{quantity}_{kind}" for kind in kinds)
    rows = []
    for rank, s in enumerate(summaries, 1):
        shape = s.shape
        row = {
            "rank": rank,
            "label": s.name,
            "config_hash": s.config_hash,
            "architecture": shape.architecture if shape else "graph",
            "depth": shape.depth if shape else None,
            "hidden_widths": "-".join(map(str, shape.widths)) if shape else None,
            "hidden_units": shape.units if shape else None,
            "layer_steps": shape.steps if shape else None,
            **s.settings,
            "n_seeds": len(s.seeds),
            "seeds": s.seeds,
        }
        for quantity, kinds in statistics.items():
            summary = s.summary(quantity)
            values = {
                "mean": summary and summary.mean,
                "sd": summary and summary.std,
                "ci_low": summary and summary.low,
                "ci_high": summary and summary.high,
            }
            for kind in kinds:
                row[f"{quantity}_{kind}"] = values[kind]
        rows.append(row)
    return header, rows


def configurations_csv(summaries: list[ConfigurationSummary]) -> str:
    return _csv(*configuration_rows(summaries))


def trials_csv(records: list) -> str:
    """One row per trial in store order, failed trials with their one-line error."""
    seen = set(TRIAL_METRICS)
    extra = sorted({key for r in records for key in r.metrics if key not in seen})
    header = [
        "sweep",
        "label",
        "config_hash",
        "trial_key",
        "seed",
        "status",
        *TRIAL_METRICS,
        *extra,
        "train_seconds",
        "total_seconds",
        "error",
    ]
    rows = []
    for record in records:
        rows.append(
            {
                "sweep": record.sweep,
                "label": record.label,
                "config_hash": record.config_hash,
                "trial_key": record.trial_key,
                "seed": seed_of(record),
                "status": record.status,
                **{key: record.metrics.get(key) for key in (*TRIAL_METRICS, *extra)},
                "train_seconds": record.timings.get("train_seconds"),
                "total_seconds": record.timings.get("total_seconds"),
                "error": record.error,
            }
        )
    return _csv(header, rows)


def significance_csv(significance: Significance) -> str:
    """One row per pair of the top configurations; differences are A minus B (A ranks higher)."""
    header = [
        "rank_a",
        "a",
        "rank_b",
        "b",
        "mean_difference",
        "mcnemar_seed_a",
        "mcnemar_seed_b",
        "a_only_right",
        "b_only_right",
        "mcnemar_p",
        "mcnemar_p_holm",
        "paired_seeds",
        "paired_mean_difference",
        "paired_p",
        "paired_p_holm",
        "decided_by",
        "p_value",
        "significant",
        "notes",
    ]
    rows = []
    for pair in significance.pairs:
        mcnemar, paired = pair.mcnemar, pair.paired
        seeds = pair.mcnemar_seeds or (None, None)
        p_value = pair.p_value
        rows.append(
            {
                "rank_a": pair.a + 1,
                "a": significance.names[pair.a],
                "rank_b": pair.b + 1,
                "b": significance.names[pair.b],
                "mean_difference": pair.mean_difference,
                "mcnemar_seed_a": seeds[0],
                "mcnemar_seed_b": seeds[1],
                "a_only_right": mcnemar and mcnemar.a_only,
                "b_only_right": mcnemar and mcnemar.b_only,
                "mcnemar_p": mcnemar and mcnemar.p_value,
                "mcnemar_p_holm": pair.mcnemar_holm,
                "paired_seeds": paired and paired.n,
                "paired_mean_difference": paired and -paired.mean_difference,
                "paired_p": paired and paired.p_value,
                "paired_p_holm": pair.paired_holm,
                "decided_by": pair.decided_by or "",
                "p_value": p_value,
                "significant": "" if p_value is None else str(p_value < 0.05).lower(),
                "notes": "; ".join(pair.notes),
            }
        )
    return _csv(header, rows)


# -- plots ----------------------------------------------------------------------------------------

PLOT_FILES = (
    "accuracy_depth_width.png",
    "two_layer_landscape.png",
    "budget_by_depth.png",
    "learning_curves.png",
    "gaps.png",
    "time_vs_accuracy.png",
    "significance.png",
)
# Drawn, and named in report.md, only when some trial recorded per-layer statistics
# (``[training] layer_stats = true``); a report of other stores does not mention it.
LAYER_PLOT_FILE = "layer_magnitudes.png"


def _draw_plots(summaries, significance, metric, top, out: Path) -> list[tuple[str, str, str]]:
    """Draw every plot that applies; ``(heading, sentence, file or "")`` for report.md."""
    name = METRIC_NAMES[metric]
    n = len(summaries)
    worst = " and the worst, dashed grey," if n > top else ""
    plots = [
        (
            "Accuracy against depth and width",
            f"Mean {name} of the stacks of equal-width hidden layers against their number "
            "(depth) and their width; lines join configurations that differ only in that, "
            "error bars are the standard deviation over seeds and dots the single seeds.",
            "accuracy_depth_width.png",
            lambda: depth_width_figure(summaries, metric),
        ),
        (
            "Two-layer landscape",
            f"Mean {name} of every network with exactly two hidden layers, by the width of the "
            "first (rows) and of the second (columns); the best cell is bold.",
            "two_layer_landscape.png",
            lambda: two_layer_heatmap_figure(summaries, metric),
        ),
        (
            "A fixed number of units, spread over depths",
            f"For each total of hidden units tried at several depths, the best mean {name} at "
            "each depth (its architecture named beside the point), with the sd over seeds.",
            "budget_by_depth.png",
            lambda: budget_depth_figure(summaries, metric),
        ),
        (
            "Learning curves",
            f"Validation accuracy and loss per epoch, averaged over seeds, of the "
            f"{min(top, n)} best configurations{worst} overlaid.",
            "learning_curves.png",
            lambda: learning_curves_figure(summaries, top),
        ),
        (
            "Train/test gap and first-half/last-half test gap",
            "Left: train accuracy minus test accuracy of each configuration (overfitting). "
            "Right: accuracy on the first half of the test set minus the last half (MNIST's "
            "two halves come from different groups of writers, and are not equally hard). "
            "Bars are means over seeds, with sd error bars and the seeds as dots"
            + (f"; only the best {MAX_BARS} are drawn." if n > MAX_BARS else "."),
            "gaps.png",
            lambda: gaps_figure(summaries),
        ),
        (
            "Time per configuration",
            f"Training seconds (mean over seeds) against mean {name}, one point per "
            "configuration, with sd error bars; the best three and the fastest are named.",
            "time_vs_accuracy.png",
            lambda: time_figure(summaries, metric),
        ),
        (
            "Significance matrix",
            "Holm-adjusted p-values of the top configurations against each other: McNemar's "
            "exact test on the test predictions below the diagonal, the paired t-test over seeds "
            "above it; darker means smaller, * significant at 5%.",
            "significance.png",
            lambda: significance_figure(significance),
        ),
    ]
    if any(s.has_layers for s in summaries):
        plots.append(
            (
                "Per-layer magnitudes",
                "Activation sd of each hidden layer and weight RMS of each Dense layer (the "
                "output layer as an open marker) after training, by position, mean over seeds; "
                "a family (same layers and settings, other depths) and its dropout twin (dashed) "
                "share a colour, the deepest member bold with its seeds' min–max band.",
                LAYER_PLOT_FILE,
                lambda: layer_magnitudes_figure(summaries),
            )
        )
    else:
        (out / LAYER_PLOT_FILE).unlink(missing_ok=True)  # an older report's plot
    drawn = []
    for heading, sentence, file_name, draw in plots:
        path = out / file_name
        try:
            figure = draw()
        except NotApplicable as reason:
            path.unlink(missing_ok=True)  # an older report's plot would contradict this one
            drawn.append((heading, str(reason), ""))
            continue
        save_figure(figure, path)
        drawn.append((heading, sentence, file_name))
    return drawn


# -- report.md ------------------------------------------------------------------------------------


def _accuracy(summary) -> str:
    if summary is None:
        return "n/a"
    if summary.std is None:
        return f"{100 * summary.mean:.2f}"
    return f"{100 * summary.mean:.2f} ± {100 * summary.std:.2f}"


def _interval(summary) -> str:
    if summary is None or summary.low is None:
        return "n/a"
    return f"{100 * summary.low:.2f} – {100 * summary.high:.2f}"


def _gap(summary) -> str:
    if summary is None:
        return "n/a"
    return f"{100 * summary.mean:+.2f}"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _sweeps_text(sweep, sweeps: list[str]) -> str:
    def name(s):
        return "single runs (`mlplab train --store`)" if s == "" else f"`{s}`"

    if sweep is not None:
        return name(sweep)
    return ", ".join(name(s) for s in sweeps) + (" (all of the store's)" if len(sweeps) > 1 else "")


def _seeds_text(summaries) -> str:
    fewest, most = seed_counts(summaries)
    every = sorted({str(seed) for s in summaries for seed in s.seeds}, key=_natural)
    listed = ", ".join(every[:12]) + (", …" if len(every) > 12 else "")
    count = (
        f"{fewest} seed{'s' if fewest != 1 else ''}" if fewest == most else f"{fewest}–{most} seeds"
    )
    return f"{count} per configuration (seeds {listed})"


def _natural(text: str):
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def configurations_table(summaries, metric: str) -> list[str]:
    other = "val_accuracy" if metric == "test_accuracy" else "test_accuracy"
    lines = [
        f"| rank | configuration | seeds | {METRIC_NAMES[metric]} % (mean ± sd) | 95% CI "
        f"| {METRIC_NAMES[other]} % | first − last half (pt) | train − test (pt) | train s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rank, s in enumerate(summaries[:MAX_TABLE_ROWS], 1):
        seconds = s.summary("train_seconds")
        lines.append(
            f"| {rank} | `{_escape(s.name)}` | {len(s.seeds)} | {_accuracy(s.summary(metric))} "
            f"| {_interval(s.summary(metric))} | {_accuracy(s.summary(other))} "
            f"| {_gap(s.summary('half_gap'))} | {_gap(s.summary('train_test_gap'))} "
            f"| {'n/a' if seconds is None else f'{seconds.mean:.1f}'} |"
        )
    if len(summaries) > MAX_TABLE_ROWS:
        lines.append("")
        lines.append(
            f"The best {MAX_TABLE_ROWS} of {len(summaries)} configurations; "
            "`configurations.csv` lists them all."
        )
    return lines


def significance_tables(significance: Significance) -> list[str]:
    """One Markdown matrix per test that could be run, p-values Holm-adjusted, ``*`` < 5%."""
    names = significance.names
    lines = []
    for test, title in (
        ("mcnemar", "McNemar's exact test on the test predictions of one shared seed"),
        ("paired", f"paired t-test of {METRIC_NAMES[significance.metric]} over shared seeds"),
    ):
        matrix = significance.matrix(test)
        if all(p is None for p in (getattr(pair, f"{test}_holm") for pair in significance.pairs)):
            continue
        lines += ["", f"Holm-adjusted p-values, {title}:", ""]
        lines.append("| | " + " | ".join(str(i + 1) for i in range(len(names))) + " |")
        lines.append("|---|" + "---:|" * len(names))
        for i, name in enumerate(names):
            cells = ["—" if i == j else mark(matrix[i, j]) for j in range(len(names))]
            lines.append(f"| {i + 1}. `{_escape(name)}` | " + " | ".join(cells) + " |")
    return lines


def _mcnemar_seed_note(significance: Significance) -> str:
    seeds = {pair.mcnemar_seeds for pair in significance.pairs if pair.mcnemar is not None}
    if not seeds:
        return ""
    if len(seeds) == 1:
        seed_a, seed_b = next(iter(seeds))
        if seed_a == seed_b:
            return (
                f"McNemar's test compares the predictions of seed {seed_a}, the first seed "
                "every pair shares."
            )
    return (
        "McNemar's test compares the predictions of the first seed each pair shares (or each "
        "one's only seed); `significance.csv` names them."
    )


def report_markdown(
    store, sweep, sweeps, summaries, all_trials, significance, plots, metric, why: str = ""
) -> str:
    name = METRIC_NAMES[metric]
    done = sum(len(s.records) for s in summaries)
    failed = sum(record.status == "failed" for record in all_trials)
    lines = [
        f"# Experiment report: `{store.path.name}`",
        "",
        f"- Store: `{store.path.resolve()}`",
        f"- Sweep{'s' if sweep is None and len(sweeps) > 1 else ''}: {_sweeps_text(sweep, sweeps)}",
        f"- {done} finished trial{'s' if done != 1 else ''} of {len(summaries)} "
        f"configuration{'s' if len(summaries) != 1 else ''}, {_seeds_text(summaries)}"
        + (
            f"; {failed} failed trial{'s' if failed != 1 else ''} left out (see `trials.csv`)"
            if failed
            else ""
        ),
        f"- Ranked by mean {name} over seeds.{' ' + why if why else ''} Accuracies in percent; ± "
        "is the standard deviation over seeds, CI the 95% t interval of the mean (n/a with one "
        "seed); gaps in points.",
        "- Tables: [`configurations.csv`](configurations.csv), [`trials.csv`](trials.csv), "
        "[`significance.csv`](significance.csv).",
        "",
        "## Configurations",
        "",
        *configurations_table(summaries, metric),
        "",
        f"## Significance of the top {len(significance.names)}",
        "",
    ]
    if len(significance.names) < 2:
        lines.append(best_sentence(significance))
    else:
        lines.append(best_sentence(significance))
        note = _mcnemar_seed_note(significance)
        if metric != "test_accuracy" and any(p.mcnemar for p in significance.pairs):
            note += f" McNemar's test scores test predictions even though the ranking uses {name}."
        if note:
            lines += ["", note.strip()]
        lines += significance_tables(significance)
        untested = [p for p in significance.pairs if p.decided_by is None]
        if untested:
            lines += [
                "",
                f"{len(untested)} pair(s) could not be tested; `significance.csv` says why.",
            ]
    lines += ["", "## Plots"]
    for heading, sentence, file_name in plots:
        lines += ["", f"### {heading}", "", sentence]
        if file_name:
            lines += ["", f"![{heading}]({file_name})"]
    return "\n".join(lines) + "\n"
