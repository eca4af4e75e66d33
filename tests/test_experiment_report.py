"""Tests for ``mlplab report STORE``: the report folder drawn only from a results store.

Stores are built from synthetic trials whose predictions are made to a chosen accuracy, so every
number in the report is known in advance: the metrics are computed from those predictions.
"""

from __future__ import annotations

import copy
import csv
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from mlplab.cli import main
from mlplab.errors import ConfigError, DataError
from mlplab.experiments.records import TrialRecord
from mlplab.experiments.store import Store
from mlplab.report.experiment_figures import (
    NotApplicable,
    budget_depth_figure,
    depth_width_figure,
    gaps_figure,
    learning_curves_figure,
    significance_figure,
    two_layer_heatmap_figure,
)
from mlplab.report.experiment_report import PLOT_FILES, write_report
from mlplab.report.experiment_significance import best_sentence, pairwise_tests
from mlplab.report.experiment_summary import read_shape, summarize
from mlplab.training.config import RunConfig

N_TEST = 2000
LABELS = np.random.default_rng(123).integers(0, 10, N_TEST).astype(np.uint8)


def predictions_with_accuracy(accuracy: float, seed: int) -> np.ndarray:
    """Predictions right on a random ``accuracy`` share of the images, wrong on the rest."""
    rng = np.random.default_rng(seed)
    right = rng.random(N_TEST) < accuracy
    return np.where(right, LABELS, (LABELS + 1) % 10).astype(np.uint8)


def make_trial(
    architecture: str,
    seed: int,
    accuracy: float,
    *,
    sweep: str = "s",
    learning_rate: float = 0.001,
    prediction_seed: int | None = None,
    epochs: int = 4,
    train_seconds: float | None = None,
) -> TrialRecord:
    """A finished trial whose metrics follow from its predictions (made to ``accuracy``)."""
    config = RunConfig().to_dict()
    config["model"]["architecture"] = architecture
    config["optimizer"]["learning_rate"] = learning_rate
    config["training"]["seed"] = seed
    if prediction_seed is None:
        prediction_seed = zlib.crc32(f"{architecture} {seed}".encode())
    predictions = predictions_with_accuracy(accuracy, prediction_seed)
    right = predictions == LABELS
    test = float(right.mean())
    half = N_TEST // 2
    val = test - 0.01
    history = {
        "epoch": list(range(1, epochs + 1)),
        "val_accuracy": [val - 0.1 * (epochs - e) / epochs for e in range(1, epochs + 1)],
        "val_loss": [1.0 / e for e in range(1, epochs + 1)],
        "train_loss": [1.0 / e for e in range(1, epochs + 1)],
    }
    label = architecture + (f" lr={learning_rate:g}" if learning_rate != 0.001 else "")
    units = sum(int(part.split(":")[0].split("x")[-1]) for part in architecture.split(","))
    return TrialRecord(
        config=config,
        sweep=sweep,
        label=label,
        seeds={"seed": seed},
        metrics={
            "test_accuracy": test,
            "test_first_half": float(right[:half].mean()),
            "test_last_half": float(right[half:].mean()),
            "test_loss": 0.3,
            "val_accuracy": val,
            "val_loss": 0.25,
            "train_accuracy": min(test + 0.02, 1.0),
            "train_loss": 0.1,
            "epochs_run": epochs,
            "best_epoch": epochs,
        },
        history=history,
        timings={
            "train_seconds": train_seconds if train_seconds is not None else units / 100 + seed,
            "total_seconds": 99.0,
        },
        predictions=predictions,
        labels=LABELS,
    )


# Five splits of 1000 units over two layers and one layer: the best is clearly 500+500.
BUDGET = {
    "1000:relu": 0.90,
    "500:relu,500:relu": 0.97,
    "800:relu,200:relu": 0.90,
    "200:relu,800:relu": 0.89,
    "600:relu,400:relu": 0.91,
}
DEPTHS = {"32:sigmoid": 0.85, "2x32:sigmoid": 0.86, "3x32:sigmoid": 0.84, "2x64:sigmoid": 0.87}


def build_store(path: Path, seeds=(0, 1, 2)) -> Path:
    with Store(path) as store:
        for architecture, accuracy in {**BUDGET, **DEPTHS}.items():
            for seed in seeds:
                store.add(make_trial(architecture, seed, accuracy))
        # A configuration identical in results to 600+400 (same predictions, another rate):
        for seed in seeds:
            store.add(
                make_trial(
                    "600:relu,400:relu",
                    seed,
                    0.91,
                    learning_rate=0.01,
                    prediction_seed=zlib.crc32(f"600:relu,400:relu {seed}".encode()),
                )
            )
        failed = make_trial("2x64:sigmoid", 9, 0.5)
        failed.status, failed.error, failed.metrics = "failed", "diverged at epoch 2", {}
        failed.predictions, failed.history = None, {}
        store.add(failed)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    """The synthetic store, built once: the tests only read it."""
    return build_store(tmp_path_factory.mktemp("store") / "results.db")


@pytest.fixture(scope="module")
def report_folder(store_path: Path, tmp_path_factory) -> Path:
    """One report of the synthetic store with all ten configurations tested (45 pairs)."""
    out = tmp_path_factory.mktemp("report") / "report"
    assert write_report(store_path, out, top=10) == out / "report.md"
    return out


def test_report_writes_every_file_and_names_each_plot(report_folder: Path):
    out = report_folder
    report = out / "report.md"
    for name in ("configurations.csv", "trials.csv", "significance.csv", *PLOT_FILES):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    text = report.read_text()
    for name in PLOT_FILES:
        assert f"]({name})" in text, f"{name} is not embedded in report.md"
    assert "30 finished trials of 10 configurations, 3 seeds per configuration" in text
    assert "1 failed trial left out" in text
    assert not list(out.glob("*.tmp")), "temporary files left behind"


def test_configurations_csv_has_one_row_per_configuration_best_first(report_folder: Path):
    rows = read_csv(report_folder / "configurations.csv")
    assert len(rows) == 10
    assert rows[0]["label"] == "500:relu,500:relu"
    means = [float(row["test_accuracy_mean"]) for row in rows]
    assert means == sorted(means, reverse=True)
    # The mean is that of the three trials' accuracies, computed from their predictions.
    expected = np.mean(
        [make_trial("500:relu,500:relu", seed, 0.97).metrics["test_accuracy"] for seed in (0, 1, 2)]
    )
    assert float(rows[0]["test_accuracy_mean"]) == pytest.approx(expected, abs=1e-12)
    first = rows[0]
    assert first["depth"] == "2" and first["hidden_widths"] == "500-500"
    assert first["hidden_units"] == "1000" and first["n_seeds"] == "3"
    assert float(first["test_accuracy_ci_low"]) < expected < float(first["test_accuracy_ci_high"])
    # Train accuracy was stored as test + 0.02: the gap column says so.
    assert float(first["train_test_gap_mean"]) == pytest.approx(0.02, abs=1e-9)
    gap = float(first["test_first_half_mean"]) - float(first["test_last_half_mean"])
    assert float(first["half_gap_mean"]) == pytest.approx(gap, abs=1e-12)
    # The learning rate varies in the store, so it is a column; unvarying settings are not.
    assert "optimizer.learning_rate" in first
    assert "optimizer.name" not in first
    depth3 = next(row for row in rows if row["architecture"] == "3x32:sigmoid")
    assert depth3["depth"] == "3" and depth3["hidden_widths"] == "32-32-32"
    assert depth3["layer_steps"] == "sigmoid"


def test_trials_csv_lists_every_trial_failed_ones_with_their_error(report_folder: Path):
    rows = read_csv(report_folder / "trials.csv")
    assert len(rows) == 31
    failed = [row for row in rows if row["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"] == "diverged at epoch 2"
    assert failed[0]["test_accuracy"] == ""
    assert {row["seed"] for row in rows if row["status"] == "done"} == {"0", "1", "2"}


def test_clearly_better_configuration_is_significant_and_identical_ones_are_not(
    store_path: Path, report_folder: Path
):
    with Store(store_path, create=False) as store:
        summaries = summarize(store.configurations())
    significance = pairwise_tests(summaries, top=10)
    names = significance.names
    best = names.index("500:relu,500:relu")
    twin_a, twin_b = names.index("600:relu,400:relu"), names.index("600:relu,400:relu lr=0.01")
    mcnemar = significance.matrix("mcnemar")
    assert np.all(mcnemar[best, np.arange(len(names)) != best] < 0.05)
    assert mcnemar[twin_a, twin_b] == 1.0  # the same predictions: no discordant image
    assert significance.matrix("paired")[twin_a, twin_b] == 1.0
    pair = significance.pair(twin_a, twin_b)
    assert pair.mcnemar_seeds == (0, 0)  # the first seed both have
    # Ten configurations make 45 pairs: three seeds cannot beat that correction, 2,000 test
    # images can, and the sentence says both.
    sentence = best_sentence(significance)
    assert sentence.startswith("`500:relu,500:relu` ranks above `600:relu,400:relu")
    assert "on the test images significant at 5% (p < 0.001, McNemar's exact test on seed 0" in (
        sentence
    )
    assert "over seeds within noise" in sentence
    # Among the top four (6 pairs) both tests agree.
    sentence = best_sentence(pairwise_tests(summaries, top=4))
    assert sentence.startswith("`500:relu,500:relu` is better than `600:relu,400:relu` by ")
    assert "(paired t-test over 3 seeds, Holm-adjusted over 6 pairs), significant at 5%." in (
        sentence
    )

    rows = read_csv(report_folder / "significance.csv")
    assert len(rows) == 45
    twins = next(row for row in rows if {row["a"], row["b"]} == {names[twin_a], names[twin_b]})
    assert twins["significant"] == "false" and float(twins["mcnemar_p"]) == 1.0
    text = (report_folder / "report.md").read_text()
    assert "* |" in text  # the significant cells are marked
    assert "seed 0, the first seed every pair shares" in text


def test_holm_adjustment_is_never_below_the_raw_p_value(store_path: Path):
    with Store(store_path, create=False) as store:
        significance = pairwise_tests(summarize(store.configurations()), top=5)
    for pair in significance.pairs:
        assert pair.mcnemar_holm >= pair.mcnemar.p_value
        assert pair.paired_holm >= pair.paired.p_value


def test_two_layer_heatmap_has_one_cell_per_split(store_path: Path):
    with Store(store_path, create=False) as store:
        summaries = summarize(store.configurations())
    figure = two_layer_heatmap_figure(summaries, "test_accuracy")
    # One heatmap: the relu splits of 1000 units at lr 0.001. 600+400 at lr=0.01 is a cell on its
    # own, and 32+32 with 64+64 (sigmoid) share no width and no total, so neither is drawn.
    (heat_axes,) = (axes for axes in figure.axes if axes.get_images())
    image = heat_axes.get_images()[0]
    # First widths 200, 500, 600, 800 by second widths 200, 400, 500, 800; four splits filled.
    assert image.get_array().shape == (4, 4)
    assert [t.get_text() for t in heat_axes.get_yticklabels()] == ["200", "500", "600", "800"]
    assert [t.get_text() for t in heat_axes.get_xticklabels()] == ["200", "400", "500", "800"]
    assert int(np.sum(~np.ma.getmaskarray(image.get_array()))) == 4
    assert "1000 units in all" in heat_axes.get_title()
    best = [t for t in heat_axes.texts if t.get_weight() == "bold"]
    assert [t.get_text() for t in best] == [f"{100 * summaries[0].mean('test_accuracy'):.2f}"]


def test_depth_width_figure_draws_both_panels_with_seed_dots(store_path: Path):
    with Store(store_path, create=False) as store:
        summaries = summarize(store.configurations())
    figure = depth_width_figure(summaries, "test_accuracy")
    depth_axes, width_axes = figure.axes[:2]
    assert depth_axes.get_xlabel().startswith("hidden layers")
    assert width_axes.get_xlabel().startswith("units per hidden layer")
    # The 32-wide sigmoid stacks at depths 1, 2, 3 form the one line of the depth panel (a width
    # tried at one depth shows no trend); depth 2 at widths 32 and 64 the one of the width panel.
    labels = [text.get_text() for text in depth_axes.get_legend().get_texts()]
    assert labels == ["width 32 sigmoid learning_rate=0.001"]  # the rate varies in the store
    dots = sum(
        len(c.get_offsets()) for c in depth_axes.collections if isinstance(c, PathCollection)
    )
    assert dots == 3 * 3  # three seeds at each of three depths
    labels = [text.get_text() for text in width_axes.get_legend().get_texts()]
    assert labels == ["depth 2 sigmoid learning_rate=0.001"]


def test_budget_and_curves_and_gaps_figures_show_what_the_store_holds(store_path: Path):
    with Store(store_path, create=False) as store:
        summaries = summarize(store.configurations())
    budget = budget_depth_figure(summaries, "test_accuracy")
    legend = [t.get_text() for t in budget.axes[0].get_legend().get_texts()]
    assert "1000 units" in legend
    curves = learning_curves_figure(summaries, top=3)
    lines = curves.axes[0].get_lines()
    assert len(lines) == 4  # the top three and the worst
    assert lines[0].get_label().startswith("1. 500:relu,500:relu")
    assert "(worst)" in lines[-1].get_label()
    gaps = gaps_figure(summaries)
    assert len(gaps.axes) == 2
    assert len(gaps.axes[0].patches) == 10  # one bar per configuration


def test_cli_writes_the_report_beside_the_store_by_default(store_path: Path, capsys):
    assert main(["report", str(store_path), "--top", "3"]) == 0
    folder = store_path.with_name("results-report")
    assert (folder / "report.md").is_file()
    assert "results-report" in capsys.readouterr().out


def test_cli_with_out_and_sweep_and_val_metric(store_path: Path, tmp_path: Path):
    out = tmp_path / "elsewhere"
    code = main(
        [
            "report",
            f"sqlite:///{store_path}",
            "--out",
            str(out),
            "--sweep",
            "s",
            "--metric",
            "val_accuracy",
        ]
    )
    assert code == 0
    text = (out / "report.md").read_text()
    assert "Ranked by mean validation accuracy" in text
    assert "McNemar's test scores test predictions" in text


def test_store_with_one_configuration_and_one_seed_still_reports(tmp_path: Path):
    db = tmp_path / "one.db"
    with Store(db) as store:
        store.add(make_trial("100:relu", 0, 0.9, epochs=1))
    out = tmp_path / "one-report"
    assert main(["report", str(db), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "1 finished trial of 1 configuration, 1 seed per configuration" in text
    assert "nothing to compare it with" in text
    assert "is not drawn" in text
    rows = read_csv(out / "configurations.csv")
    assert len(rows) == 1 and rows[0]["test_accuracy_sd"] == "" and rows[0]["n_seeds"] == "1"
    assert read_csv(out / "significance.csv") == []
    for name in ("accuracy_depth_width.png", "two_layer_landscape.png", "significance.png"):
        assert not (out / name).exists(), f"{name} drawn from one configuration"
    # What one trial can show is drawn: its gaps and its time.
    assert (out / "gaps.png").is_file() and (out / "time_vs_accuracy.png").is_file()


def test_figures_that_do_not_apply_say_why(tmp_path: Path):
    db = tmp_path / "one.db"
    with Store(db) as store:
        store.add(make_trial("100:relu", 0, 0.9, epochs=1))
        summaries = summarize(store.configurations())
    for draw in (
        lambda: depth_width_figure(summaries, "test_accuracy"),
        lambda: two_layer_heatmap_figure(summaries, "test_accuracy"),
        lambda: budget_depth_figure(summaries, "test_accuracy"),
        lambda: learning_curves_figure(summaries, 5),
        lambda: significance_figure(pairwise_tests(summaries)),
    ):
        with pytest.raises(NotApplicable, match="not drawn"):
            draw()


def test_a_rerun_removes_plots_that_no_longer_apply(store_path: Path, tmp_path: Path):
    out = tmp_path / "r"
    write_report(store_path, out, sweep="s")
    assert (out / "two_layer_landscape.png").is_file()
    db = tmp_path / "one.db"
    with Store(db) as store:
        store.add(make_trial("100:relu", 0, 0.9))
    write_report(db, out)
    assert not (out / "two_layer_landscape.png").exists()


def test_two_seeds_one_shared_uses_mcnemar_on_that_seed(tmp_path: Path):
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.add(make_trial("100:relu", 3, 0.95))
        store.add(make_trial("100:relu", 4, 0.95))
        store.add(make_trial("50:relu", 4, 0.80))
        summaries = summarize(store.configurations())
    significance = pairwise_tests(summaries)
    (pair,) = significance.pairs
    assert pair.mcnemar_seeds == (4, 4) and pair.paired is None
    assert pair.decided_by == "mcnemar"
    assert "McNemar's exact test on seed 4" in best_sentence(significance)


def test_wrong_format_store_is_a_one_line_error(tmp_path: Path, capsys):
    bad = tmp_path / "notes.db"
    bad.write_text("not a database\n")
    assert main(["report", str(bad), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mlplab: error:") and error.count("\n") == 1
    assert "not an SQLite file" in error
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE x (a)")
    assert main(["report", str(foreign)]) == 2
    assert "without mlplab's tables" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.db")]) == 2
    assert "no such store" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists(), "a report must not create a store"


def test_bad_options_are_one_line_errors(store_path: Path, tmp_path: Path, capsys):
    assert main(["report", str(store_path), "--sweep", "nope"]) == 2
    assert "no sweep 'nope'; the store has: 's'" in capsys.readouterr().err
    assert main(["report", str(store_path), "--top", "1"]) == 2
    assert "--top 1" in capsys.readouterr().err
    assert main(["report", str(store_path), "--top", "21"]) == 2
    assert "--top 21: give 2 to 20" in capsys.readouterr().err
    a_file = tmp_path / "taken"
    a_file.write_text("")
    assert main(["report", str(store_path), "--out", str(a_file)]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="metric"):
        write_report(store_path, tmp_path / "r", metric="test_loss")
    with pytest.raises(ConfigError, match="top True"):
        write_report(store_path, tmp_path / "r", top=True)
    empty = tmp_path / "empty.db"
    Store(empty).close()
    with pytest.raises(DataError, match="no finished trials"):
        write_report(empty, tmp_path / "r")


def test_val_metric_without_validation_is_refused_naming_the_other(tmp_path: Path):
    db = tmp_path / "noval.db"
    record = make_trial("100:relu", 0, 0.9)
    record.metrics = {k: v for k, v in record.metrics.items() if not k.startswith("val")}
    with Store(db) as store:
        store.add(record)
    with pytest.raises(DataError, match="--metric test_accuracy"):
        write_report(db, tmp_path / "r", metric="val_accuracy")


def test_shapes_read_repeats_steps_and_graphs():
    config = RunConfig().to_dict()
    config["model"]["architecture"] = "dropout(0.2),3x64:batchnorm:relu,10:tanh"
    shape = read_shape(config)
    assert shape.widths == [64, 64, 64, 10] and shape.depth == 4 and shape.units == 202
    assert shape.layer_steps == ["batchnorm:relu"] * 3 + ["tanh"]
    assert not shape.uniform and shape.prefix == "dropout(0.2)"
    config["model"]["architecture"] = "5x32:sigmoid"
    assert read_shape(config).uniform and read_shape(config).steps == "sigmoid"
    graph = copy.deepcopy(config)
    graph["model"]["nodes"] = [{"name": "h", "type": "dense", "units": 4, "inputs": ["input"]}]
    assert read_shape(graph) is None


# -- ranking by the sweep's own metric ----------------------------------------------------------


def disagreeing_store(path: Path, metrics: dict[str, dict]) -> Path:
    """Two configurations whose test and validation accuracies rank them oppositely: 100:relu is
    better on the test set, 200:relu on the validation set; ``metrics`` are the sweeps' own."""
    with Store(path) as store:
        for sweep in metrics or {"s": None}:
            for architecture, test, val in (("100:relu", 0.95, 0.80), ("200:relu", 0.90, 0.85)):
                for seed in (0, 1):
                    record = make_trial(architecture, seed, test, sweep=sweep)
                    record.metrics["val_accuracy"] = val + 0.001 * seed
                    store.add(record)
        for sweep, metric in metrics.items():
            store.set_metric(sweep, metric)
    return path


def first_ranked(out: Path) -> str:
    return read_csv(out / "configurations.csv")[0]["label"]


@pytest.mark.parametrize(
    ("metric", "best", "sentence"),
    [
        (None, "100:relu", "Ranked by mean test accuracy over seeds. Accuracies"),
        (
            {"name": "val_accuracy", "goal": "maximize"},
            "200:relu",
            "Validation accuracy is the metric the sweep maximizes.",
        ),
        (
            {"name": "val_loss", "goal": "minimize"},
            "200:relu",
            "The sweep minimizes val_loss; reports rank by accuracies, so this one ranks by "
            "validation accuracy",
        ),
        (
            {"name": "train_seconds", "goal": "minimize"},
            "100:relu",
            "optimizes train_seconds (minimize), which reports cannot rank by",
        ),
    ],
)
def test_the_report_ranks_by_the_sweeps_own_metric(tmp_path: Path, metric, best, sentence):
    db = disagreeing_store(tmp_path / "r.db", {"s": metric} if metric else {})
    assert main(["report", str(db), "--out", str(tmp_path / "out")]) == 0
    assert first_ranked(tmp_path / "out") == best
    assert sentence in (tmp_path / "out" / "report.md").read_text()


def test_an_explicit_metric_overrides_the_sweeps(tmp_path: Path):
    db = disagreeing_store(tmp_path / "r.db", {"s": {"name": "val_accuracy", "goal": "maximize"}})
    write_report(db, tmp_path / "out", metric="test_accuracy")
    assert first_ranked(tmp_path / "out") == "100:relu"
    assert "the metric the sweep maximizes" not in (tmp_path / "out" / "report.md").read_text()


def test_sweeps_with_different_metrics_rank_by_test_accuracy_unless_one_is_chosen(tmp_path):
    metrics = {
        "a": {"name": "val_accuracy", "goal": "maximize"},
        "b": {"name": "test_accuracy", "goal": "maximize"},
    }
    db = disagreeing_store(tmp_path / "r.db", metrics)
    write_report(db, tmp_path / "all")
    assert first_ranked(tmp_path / "all") == "100:relu"
    assert "The sweeps optimize different metrics" in (tmp_path / "all" / "report.md").read_text()
    write_report(db, tmp_path / "a", sweep="a")
    assert first_ranked(tmp_path / "a") == "200:relu"
    assert "the metric sweep `a` maximizes" in (tmp_path / "a" / "report.md").read_text()


def test_a_sweep_metric_no_trial_recorded_falls_back_to_test_accuracy_and_says_so(tmp_path):
    db = tmp_path / "r.db"
    with Store(db) as store:
        for seed in (0, 1):
            record = make_trial("100:relu", seed, 0.9)
            del record.metrics["val_accuracy"]  # a run without validation data
            store.add(record)
        store.set_metric("s", {"name": "val_accuracy", "goal": "maximize"})
    write_report(db, tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "No trial recorded val_accuracy, so this report ranks by test accuracy." in text
    assert "Ranked by mean test accuracy" in text
