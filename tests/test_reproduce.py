"""mlplab reproduce: the experiment files are consistent, quick runs work, verdicts are honest."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

from mlplab.cli import main
from mlplab.experiments import reproduce
from mlplab.experiments.records import TrialRecord
from mlplab.experiments.store import Store
from mlplab.training.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
MNIST_SMALL = ROOT / "tests" / "fixtures" / "mnist-small"
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.toml"))


def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def quick_reproduce_args(store: Path, *names: str, workers: int) -> list[str]:
    """`mlplab reproduce --quick` on the fixture, as CI runs it, for ``names`` (default: all)."""
    return [
        "reproduce",
        *names,
        "--quick",
        "--dataset",
        str(MNIST_SMALL),
        "--set",
        "data.validation=200",
        "--store",
        str(store),
        "--workers",
        str(workers),
        "--quiet",
    ]


def test_there_is_one_experiment_file_per_published_setup():
    assert len(EXPERIMENTS) == 9
    names = [reproduce.load_experiment(path).name for path in EXPERIMENTS]
    assert len(set(names)) == 9


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_published_figure_and_comparison_names_a_configuration_the_sweep_runs(path):
    experiment = reproduce.load_experiment(path)
    trials = experiment.sweep.trials()
    settings = [reproduce._flatten(trial.config) for trial in trials]
    labels = {trial.label for trial in trials}
    for entry in experiment.published:
        variant, where = entry.get("variant", ""), entry.get("where", {})
        assert not variant or variant in experiment.variants, variant
        matching = [
            s
            for s, trial in zip(settings, trials)
            if (not variant or trial.label.split(" ")[0] == variant)
            and all(s.get(k) == v for k, v in where.items())
        ]
        assert matching or (not variant and not where and len(labels) == 1), entry
        assert set(entry) & set(reproduce.FIGURES), entry  # it gives at least one figure
    for pair in experiment.compare:
        for name in pair:
            swept = any(name in values for values in experiment.sweep.parameters.values())
            assert name in labels or name in experiment.variants or swept, name


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_the_quick_variant_is_small_and_kept_apart_from_the_full_results(path):
    quick = reproduce.load_experiment(path, quick=True)
    full = reproduce.load_experiment(path)
    assert quick.name == f"{full.name}-quick"
    assert len(quick.sweep.trials()) <= 5
    assert all(trial.config["training"]["epochs"] == 1 for trial in quick.sweep.trials())


def test_the_keras_experiment_feeds_raw_pixels_as_the_tutorial_did_and_ablates_it():
    experiment = reproduce.load_experiment(ROOT / "experiments" / "04_keras_depth_width.toml")
    scales = {trial.config["data"]["scale"] for trial in experiment.sweep.trials()}
    assert scales == {False, True}
    assert all(entry["where"] == {"data.scale": False} for entry in experiment.published)


def test_quick_reproduction_on_the_fixture_prints_ours_beside_theirs_and_resumes(tmp_path):
    store = tmp_path / "r.db"
    args = quick_reproduce_args(store, "book-network", "one-hidden-layer", workers=1)
    code, out, _ = run_cli(*args)
    assert code == 0
    assert "The book's 784-100-10 sigmoid network" in out
    assert "98.60" in out and "quick run: not comparable" in out  # theirs, and an honest verdict
    for variant in ("tanh", "sigmoid", "relu", "tanh-l2", "tanh-l1"):
        assert f"\n  {variant} " in out
    with Store(store) as results:
        assert len(results.trials()) == 6
        first = {r.trial_key: r.timings["finished_at"] for r in results.trials()}
    code, again, _ = run_cli(*args)
    assert code == 0
    with Store(store) as results:  # nothing was trained twice
        assert {r.trial_key: r.timings["finished_at"] for r in results.trials()} == first


def synthetic_store(tmp_path, accuracies: list[float], sweep: str) -> Path:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 10_000).astype(np.uint8)
    path = tmp_path / "s.db"
    with Store(path) as store:
        for seed, accuracy in enumerate(accuracies):
            config = RunConfig().to_dict()
            config["training"]["seed"] = seed
            config["data"]["protocol"] = "book"
            config["model"]["architecture"] = "100:sigmoid"
            predictions = labels.copy()
            wrong = rng.choice(10_000, int(round((1 - accuracy) * 10_000)), replace=False)
            predictions[wrong] = (predictions[wrong] + 1) % 10
            store.add(
                TrialRecord(
                    config=config,
                    sweep=sweep,
                    label="100:sigmoid",
                    metrics={
                        "test_accuracy": accuracy,
                        "test_first_half": accuracy - 0.005,
                        "test_last_half": accuracy + 0.005,
                    },
                    predictions=predictions,
                    labels=labels,
                    labels_sha256=__import__("hashlib").sha256(labels.tobytes()).hexdigest(),
                )
            )
    return path


@pytest.mark.parametrize(
    "published, verdict",
    [
        (0.976, "agrees"),
        (0.995, "ours lower"),
        (0.95, "ours higher"),
        (0.96685, "ours higher"),  # 0.00008 below the range: more than its rounding (0.000005)
        (0.987, "agrees to the published rounding"),  # 0.00007 above: within 0.0005
    ],
)
def test_a_published_figure_is_judged_against_the_spread_of_one_run_over_seeds(
    tmp_path, published, verdict
):
    path = tmp_path / "e.toml"
    path.write_text(
        'name = "e"\nseeds = 3\nbase = { model = { architecture = "100:sigmoid" } }\n'
        f'[reproduce]\npublished = [{{ label = "x", test_accuracy = {published} }}]\n'
    )
    experiment = reproduce.load_experiment(path)
    store_path = synthetic_store(tmp_path, [0.975, 0.977, 0.979], "e")
    with Store(store_path) as store:
        rows = reproduce.results(experiment, store)
    (check,) = reproduce.check_published(experiment, rows)
    assert check.verdict == verdict
    low, high = check.interval
    # mean 0.977, sd 0.002, t(2) = 4.30: one run's range is 0.977 +- 4.30 * 0.002 * sqrt(4/3)
    assert (low, high) == pytest.approx((0.977 - 0.00993, 0.977 + 0.00993), abs=1e-4)


@pytest.mark.parametrize("bad", ["training.threads", "threads=1", ".x=1"])
def test_a_malformed_set_is_a_one_line_error(bad, capsys):
    code, _, err = run_cli("reproduce", "book-network", "--list", "--set", bad)
    assert code == 2 and "TABLE.KEY=VALUE" in err and "Traceback" not in err


def test_an_unknown_experiment_names_the_known_ones():
    code, _, err = run_cli("reproduce", "no-such-thing", "--list")
    assert code == 2 and "node-budget" in err


def test_busy_time_counts_parallel_trials_once_and_leaves_out_pauses_between_sittings():
    def row(*intervals):
        records = [
            TrialRecord(config={}, timings={"started_at": start, "finished_at": end})
            for start, end in intervals
        ]
        return reproduce.ConfigurationResult("x", "", {}, [], {}, {}, records=records)

    # Two workers overlapping (0-10 and 5-12), then a night off, then one more trial (100-103).
    rows = [row((0.0, 10.0), (100.0, 103.0)), row((5.0, 12.0))]
    assert reproduce.busy_seconds(rows) == pytest.approx(12.0 + 3.0)
    # A trial recorded by `mlplab train --store` has no start time and is left out.
    rows.append(row())
    rows[-1].records.append(TrialRecord(config={}, timings={"finished_at": 50.0}))
    assert reproduce.busy_seconds(rows) == pytest.approx(15.0)
    assert reproduce.busy_seconds([]) == 0.0


def layered_store(tmp_path, architectures: list[str], with_order: bool) -> Path:
    """A store with one trial per architecture, the per-layer statistics of a 10-layer
    relu + dropout network stored as the store keeps them (keys sorted as text)."""
    nodes = []
    for i in range(1, 11):
        nodes += [(f"dense{i}", "dense"), (f"relu{i}", "relu"), (f"dropout{i}", "dropout")]
    nodes.append(("dense11", "dense"))
    layers = {}
    for index, (node, kind) in enumerate(nodes):
        depth = index // 3 + 1  # the hidden layer a node belongs to
        layers[node] = {"activation_std": float(depth)}
        if kind == "dense":
            layers[node]["weight_rms"] = depth / 100
    path = tmp_path / "layers.db"
    with Store(path) as store:
        for architecture in reversed(architectures):  # finished in the reverse of file order
            config = RunConfig().to_dict()
            config["model"]["architecture"] = architecture
            metrics = {"test_accuracy": 0.9, "layers": dict(sorted(layers.items()))}
            if with_order:
                metrics["layer_order"] = [list(pair) for pair in nodes]
            store.add(TrialRecord(config=config, sweep="e", label=architecture, metrics=metrics))
    return path


@pytest.mark.parametrize("with_order", [True, False], ids=["recorded order", "older trials"])
def test_per_layer_magnitudes_are_in_network_order_and_skip_dropout_nodes(tmp_path, with_order):
    from mlplab.cli.reproduce import format_experiment

    architectures = ["10x100:relu:dropout(0.5)", "10x100:relu:dropout(0.2)"]
    path = tmp_path / "e.toml"
    path.write_text(
        'name = "e"\nseeds = 1\n[parameters."model.architecture"]\n'
        f"values = {architectures!r}\n".replace("'", '"')
    )
    experiment = reproduce.load_experiment(path)
    with Store(layered_store(tmp_path, architectures, with_order)) as store:
        rows = reproduce.results(experiment, store)
        text = format_experiment(experiment, store, None)
    assert [row.label for row in rows] == architectures  # the file's order, not the finishing one
    activations = [str(depth) for depth in range(1, 11)]
    weights = [f"{depth / 100:.3g}" for depth in range(1, 12)]
    for architecture in architectures:
        (line,) = [
            line
            for line in text.splitlines()
            if line.split()[:1] == [architecture] and weights[0] in line.split()
        ]
        # dense1 .. dense11 and relu1 .. relu10 in order (relu10 after relu9, not after relu1),
        # and no dropout node's copy of its input
        assert line.split()[1:] == weights + activations


def test_every_quick_reproduction_runs_on_the_fixture(tmp_path):
    """`mlplab reproduce --quick`, all nine experiments, as CI runs it: each prints its table and
    stores every trial of its quick plan, none failed."""
    store = tmp_path / "quick.db"
    code, out, err = run_cli(*quick_reproduce_args(store, workers=2))
    assert code == 0, err
    with Store(store) as results:
        for path in EXPERIMENTS:
            experiment = reproduce.load_experiment(path, quick=True)
            assert experiment.title in out, experiment.name
            planned = len(experiment.sweep.trials())
            done = len(results.finished_keys(experiment.name))
            assert done == planned, f"{experiment.name}: {done} of {planned} trials done"
