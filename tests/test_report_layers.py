"""Tests for the per-layer magnitudes plot of ``mlplab report``: ``layer_magnitudes.png``, drawn
from the per-layer statistics that trials with ``[training] layer_stats = true`` store.

The synthetic trials record statistics whose values say where they come from: the activation sd
of hidden layer ``i`` is ``i`` (times a per-seed factor), the weight RMS of Dense layer ``i`` is
``i / 100``, and every dropout node records 999, which must never reach the plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from PIL import Image

from mlplab.experiments.records import TrialRecord, layer_order, mean_layers, node_number
from mlplab.experiments.store import Store
from mlplab.report.experiment_figures import (
    MAX_FAMILIES,
    NotApplicable,
    layer_families,
    layer_magnitudes_figure,
)
from mlplab.report.experiment_report import LAYER_PLOT_FILE, write_report
from mlplab.report.experiment_summary import summarize
from mlplab.training.config import RunConfig

DROPOUT_VALUE = 999.0
SEED_FACTORS = {0: 1.0, 1: 1.5}  # seed 1's activations are 1.5 times seed 0's


def layer_nodes(depth: int, activation: str, dropout: bool) -> list[tuple[str, str]]:
    """``(node, type)`` of a ``{depth}x100:{activation}[:dropout]`` stack, in network order."""
    nodes = []
    for i in range(1, depth + 1):
        nodes += [(f"dense{i}", "dense"), (f"{activation}{i}", activation)]
        if dropout:
            nodes.append((f"dropout{i}", "dropout"))
    return nodes + [(f"dense{depth + 1}", "dense")]


def layer_statistics(nodes: list[tuple[str, str]], factor: float) -> dict:
    """Statistics that name their layer: activation sd = hidden layer number x ``factor``,
    weight RMS = Dense layer number / 100, dropout nodes 999 (a copy in inference mode)."""
    layers = {}
    for node, kind in nodes:
        number = node_number(node)[1]
        if kind == "dense":
            layers[node] = {"activation_std": 50.0, "weight_rms": number / 100}
        elif kind == "dropout":
            layers[node] = {"activation_std": DROPOUT_VALUE, "gradient_std": DROPOUT_VALUE}
        else:
            layers[node] = {"activation_std": number * factor, "activation_mean": 0.0}
    return layers


def layered_trial(
    architecture: str,
    seed: int,
    *,
    with_layers: bool = True,
    with_order: bool = True,
    older: bool = False,
    learning_rate: float = 0.001,
) -> TrialRecord:
    config = RunConfig().to_dict()
    config["model"]["architecture"] = architecture
    config["optimizer"]["learning_rate"] = learning_rate
    config["training"]["seed"] = seed
    if older:  # stored before label smoothing existed: the key is missing, not at its default
        del config["model"]["label_smoothing"]
    depth, steps = architecture.split("x100:")
    activation = steps.split(":")[0].split("(")[0]
    metrics = {"test_accuracy": 0.9 + 0.01 * seed + 0.001 * int(depth)}
    if with_layers:
        nodes = layer_nodes(int(depth), activation, "dropout" in steps)
        # The store keeps JSON keys sorted as text: relu10 before relu2.
        metrics["layers"] = dict(sorted(layer_statistics(nodes, SEED_FACTORS[seed]).items()))
        if with_order:
            metrics["layer_order"] = [list(pair) for pair in nodes]
    label = architecture + (f" lr={learning_rate:g}" if learning_rate != 0.001 else "")
    return TrialRecord(
        config=config, sweep="layers", label=label, seeds={"seed": seed}, metrics=metrics
    )


ARCHITECTURES = [
    "10x100:relu:dropout(0.2)",
    "3x100:relu:dropout(0.2)",
    "4x100:shifted-relu(-1)",
    "2x100:shifted-relu(-1)",
]


def make_store(path: Path, records: list[TrialRecord]) -> Path:
    with Store(path) as store:
        for record in records:
            store.add(record)
    return path


def layered_records(**options) -> list[TrialRecord]:
    return [layered_trial(a, seed, **options) for a in ARCHITECTURES for seed in (0, 1)]


def summaries_of(path: Path):
    with Store(path, create=False) as store:
        return summarize(store.configurations("layers"))


def lines_by_name(axes) -> dict:
    return {line.get_gid(): line for line in axes.get_lines()}


# -- the order of layers ---------------------------------------------------------------------------


def test_layer_order_falls_back_to_type_and_number_so_relu10_follows_relu9():
    nodes = layer_nodes(10, "relu", dropout=True)
    metrics = {"layers": dict(sorted(layer_statistics(nodes, 1.0).items()))}
    assert list(metrics["layers"])[:4] == ["dense1", "dense10", "dense11", "dense2"]  # as stored
    order = layer_order(metrics)
    relus = [node for node, kind in order if kind == "relu"]
    assert relus == [f"relu{i}" for i in range(1, 11)]
    assert [node for node, kind in order if kind == "dense"] == [f"dense{i}" for i in range(1, 12)]
    # A recorded order wins over the names.
    recorded = {**metrics, "layer_order": [["relu2", "relu"], ["relu1", "relu"]]}
    assert layer_order(recorded) == [("relu2", "relu"), ("relu1", "relu")]


def test_mean_layers_averages_seeds_in_network_order():
    records = [layered_trial("10x100:relu:dropout(0.2)", seed) for seed in (0, 1)]
    mean, types = mean_layers(records)
    relus = [node for node in mean if types[node] == "relu"]
    assert relus == [f"relu{i}" for i in range(1, 11)]
    assert mean["relu10"]["activation_std"] == pytest.approx(10 * 1.25)  # mean of 10 and 15
    assert mean_layers([layered_trial("3x100:relu", 0, with_layers=False)]) == (None, None)


# -- the figure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_order", [True, False], ids=["recorded order", "older trials"])
def test_lines_hold_each_layers_mean_over_seeds_in_network_order(tmp_path, with_order):
    path = make_store(tmp_path / "layers.db", layered_records(with_order=with_order))
    summaries = summaries_of(path)
    figure = layer_magnitudes_figure(summaries)
    activation_axes, weight_axes = figure.axes[:2]
    activations = lines_by_name(activation_axes)
    weights = lines_by_name(weight_axes)
    for architecture in ARCHITECTURES:
        depth = int(architecture.split("x")[0])
        # relu1 .. relu10 at positions 1 .. 10, each the mean of seed 0 (i) and seed 1 (1.5 i)
        line = activations[architecture]
        np.testing.assert_allclose(line.get_xdata(), np.arange(1, depth + 1))
        np.testing.assert_allclose(line.get_ydata(), 1.25 * np.arange(1, depth + 1))
        # the hidden Dense layers on the line, the output layer apart as its own marker
        line = weights[architecture]
        np.testing.assert_allclose(line.get_xdata(), np.arange(1, depth + 1))
        np.testing.assert_allclose(line.get_ydata(), np.arange(1, depth + 1) / 100)
        output = weights[f"{architecture} (output)"]
        assert output.get_linestyle() == "None"
        np.testing.assert_allclose(output.get_xdata(), [depth + 1])
        np.testing.assert_allclose(output.get_ydata(), [(depth + 1) / 100])


def test_dropout_and_dense_nodes_never_reach_the_activation_panel(tmp_path):
    path = make_store(tmp_path / "layers.db", layered_records())
    figure = layer_magnitudes_figure(summaries_of(path))
    for axes in figure.axes[:2]:
        for line in axes.get_lines():
            values = np.asarray(line.get_ydata(), dtype=float)
            assert DROPOUT_VALUE not in values, f"a dropout node's copy in {line.get_gid()}"
            assert 50.0 not in values, f"a Dense node's activation sd in {line.get_gid()}"


def test_each_family_has_one_bold_line_its_deepest_with_the_seed_band(tmp_path):
    path = make_store(tmp_path / "layers.db", layered_records())
    figure = layer_magnitudes_figure(summaries_of(path))
    activation_axes = figure.axes[0]
    lines = lines_by_name(activation_axes)
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["relu:dropout(0.2)", "shifted-relu(-1)"]
    assert (
        lines["10x100:relu:dropout(0.2)"].get_linewidth()
        > lines["3x100:relu:dropout(0.2)"].get_linewidth()
    )
    assert lines["4x100:shifted-relu(-1)"].get_label() == "shifted-relu(-1)"
    assert lines["2x100:shifted-relu(-1)"].get_label().startswith("_")  # not in the legend
    # dropout dashed, the two families told apart by colour
    assert lines["10x100:relu:dropout(0.2)"].get_linestyle() == "--"
    assert lines["4x100:shifted-relu(-1)"].get_linestyle() == "-"
    assert (
        lines["10x100:relu:dropout(0.2)"].get_color() != lines["4x100:shifted-relu(-1)"].get_color()
    )
    # One min-max band per bold line, spanning seed 0 (i) to seed 1 (1.5 i).
    bands = [c for c in activation_axes.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    band = bands[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(1.0)
    assert band[:, 1].max() == pytest.approx(15.0)


def test_a_setting_older_trials_lack_does_not_split_a_family_but_a_varied_one_does(tmp_path):
    records = [
        layered_trial("10x100:relu:dropout(0.2)", 0),
        layered_trial("3x100:relu:dropout(0.2)", 0, older=True),
        layered_trial("3x100:relu:dropout(0.2)", 0, learning_rate=0.1),
    ]
    path = make_store(tmp_path / "layers.db", records)
    families = dict(layer_families(summaries_of(path)))
    assert sorted(families) == [
        "relu:dropout(0.2) learning_rate=0.001",
        "relu:dropout(0.2) learning_rate=0.1",
    ]
    assert len(families["relu:dropout(0.2) learning_rate=0.001"]) == 2


def test_beyond_max_families_the_title_says_how_many_were_left_out(tmp_path):
    rates = [0.001 * (k + 1) for k in range(MAX_FAMILIES + 2)]
    records = [layered_trial("2x100:relu", 0, learning_rate=rate) for rate in rates]
    figure = layer_magnitudes_figure(summaries_of(make_store(tmp_path / "l.db", records)))
    assert len(figure.legends[0].get_texts()) == MAX_FAMILIES
    assert "2 more families not drawn" in figure._suptitle.get_text()


def test_no_recorded_layers_is_not_applicable(tmp_path):
    records = [layered_trial("3x100:relu", seed, with_layers=False) for seed in (0, 1)]
    with pytest.raises(NotApplicable, match="layer_stats"):
        layer_magnitudes_figure(summaries_of(make_store(tmp_path / "l.db", records)))


# -- the report ------------------------------------------------------------------------------------


def test_report_writes_and_names_the_plot_when_trials_recorded_layers(tmp_path):
    # Half the configurations without layers: the plot is drawn from those that have them.
    records = layered_records() + [
        layered_trial("5x100:relu", seed, with_layers=False) for seed in (0, 1)
    ]
    path = make_store(tmp_path / "layers.db", records)
    out = tmp_path / "report"
    write_report(path, out)
    png = out / LAYER_PLOT_FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size[0] >= 800 and image.size[1] >= 300
    text = (out / "report.md").read_text()
    assert "### Per-layer magnitudes" in text
    assert f"]({LAYER_PLOT_FILE})" in text
    assert not list(out.glob("*.tmp"))


def test_a_store_without_layers_gets_no_plot_and_no_mention_and_loses_an_old_one(tmp_path):
    records = [layered_trial(a, s, with_layers=False) for a in ARCHITECTURES for s in (0, 1)]
    path = make_store(tmp_path / "plain.db", records)
    out = tmp_path / "report"
    out.mkdir()
    (out / LAYER_PLOT_FILE).write_bytes(b"an older report's plot")
    write_report(path, out)
    assert not (out / LAYER_PLOT_FILE).exists()
    text = (out / "report.md").read_text()
    assert "Per-layer" not in text and LAYER_PLOT_FILE not in text
    assert "## Plots" in text and "### Learning curves" in text  # the rest is all there
