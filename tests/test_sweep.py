"""Sweep files: parsing, expansion into trials, and checking every trial before anything runs."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from pathlib import Path

import pytest
from helpers import one_line_error

from mlplab.cli import main
from mlplab.errors import ConfigError, DataError
from mlplab.experiments.records import config_hash
from mlplab.experiments.sweep import check_data, load_sweep, parse_sweep
from mlplab.training.config import RunConfig

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "sweeps"


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GRID = """
    name = "grid"
    seeds = 3
    [base]
    optimizer = { name = "sgd", learning_rate = 0.1 }
    training = { epochs = 2 }
    [parameters."model.architecture"]
    generator = "depth-width"
    depths = [1, 2, 3, 4]
    widths = [32]
    activation = "sigmoid"
    [parameters."optimizer.learning_rate"]
    values = [0.1, 0.01]
"""


def test_grid_sweep_expands_to_every_configuration_times_every_seed(tmp_path):
    trials = load_sweep(write(tmp_path, GRID)).trials()
    assert len(trials) == 4 * 2 * 3
    assert len({t.trial_key for t in trials}) == 24
    assert len({config_hash(t.config) for t in trials}) == 8  # seeds group together
    assert {t.seed for t in trials} == {0, 1, 2}
    first = trials[0]
    assert first.sweep == "grid" and first.label == "32:sigmoid lr=0.1"
    assert first.config["model"]["architecture"] == "32:sigmoid"
    assert first.config["optimizer"]["name"] == "sgd"
    assert first.config["training"]["epochs"] == 2


def test_trial_configs_are_complete_run_configs_that_round_trip(tmp_path):
    for trial in load_sweep(write(tmp_path, GRID)).trials():
        assert RunConfig.from_dict(trial.config).to_dict() == trial.config


def test_sweep_metadata_defaults_and_values(tmp_path):
    sweep = load_sweep(write(tmp_path, GRID))
    assert sweep.method == "grid"
    assert sweep.metric == {"name": "val_accuracy", "goal": "maximize"}
    loss = parse_sweep({"metric": {"name": "val_loss"}})
    assert loss.metric["goal"] == "minimize" and loss.name == "sweep"
    assert load_sweep(write(tmp_path, "seeds = [3, 7]\n", "named.toml")).name == "named"


def test_a_sweep_without_parameters_runs_the_base_once_per_seed():
    trials = parse_sweep({"seeds": [5, 9], "base": {"training": {"epochs": 1}}}).trials()
    assert [t.seed for t in trials] == [5, 9]
    assert trials[0].label == RunConfig().model.architecture


def test_without_seeds_the_base_configs_seed_is_used():
    (trial,) = parse_sweep({"base": {"training": {"seed": 11}}}).trials()
    assert trial.seed == 11


def test_base_may_be_a_run_config_file_beside_the_sweep(tmp_path):
    write(tmp_path, '[model]\narchitecture = "100:sigmoid"\n[training]\nepochs = 3\n', "run.toml")
    sweep = write(tmp_path, 'base = "run.toml"\nseeds = 2\n')
    trials = load_sweep(sweep).trials()
    assert [t.config["model"]["architecture"] for t in trials] == ["100:sigmoid"] * 2
    assert trials[0].config["training"]["epochs"] == 3


def test_the_example_sweeps_load(tmp_path):
    counts = {path.name: len(load_sweep(path).trials()) for path in EXAMPLES.glob("*.toml")}
    assert counts["sigmoid_depth.toml"] == 24
    assert counts["node_budget.toml"] == 88
    assert counts["activation_mix.toml"] == 16
    assert counts["random_adam.toml"] == 40


def test_random_search_draws_count_configurations_reproducibly_within_the_ranges():
    spec = {
        "method": "random",
        "count": 12,
        "seed": 4,
        "seeds": 2,
        "parameters": {
            "optimizer.learning_rate": {
                "min": 1e-4,
                "max": 1e-1,
                "distribution": "log_uniform_values",
            },
            "training.batch_size": {"min": 16, "max": 64},
            "model.architecture": {"values": ["32:relu", "64:relu"]},
        },
    }
    trials = parse_sweep(spec).trials()
    again = parse_sweep(spec).trials()
    assert [t.config for t in trials] == [t.config for t in again]
    assert len(trials) == 24
    rates = [t.config["optimizer"]["learning_rate"] for t in trials]
    sizes = [t.config["training"]["batch_size"] for t in trials]
    assert all(1e-4 <= r <= 1e-1 for r in rates) and len(set(rates)) == 12
    assert all(isinstance(s, int) and 16 <= s <= 64 for s in sizes)
    other = parse_sweep({**spec, "seed": 5}).trials()
    assert [t.config for t in other] != [t.config for t in trials]


def test_duplicate_configurations_run_once():
    trials = parse_sweep(
        {"seeds": 1, "parameters": {"model.architecture": {"values": ["8:relu", "8:relu"]}}}
    ).trials()
    assert len(trials) == 1


def test_a_folder_dataset_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(MNIST_SMALL.parent)
    (trial,) = parse_sweep({"base": {"data": {"dataset": "mnist-small"}}}).trials()
    assert trial.config["data"]["dataset"] == str(MNIST_SMALL)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('methd = "grid"', r"s\.toml: unknown key\(s\) methd"),
        ('method = "bayes"', "method must be one of grid, random"),
        ('method = "random"', "needs count"),
        ("count = 3", "count applies to method 'random' only"),
        ("seeds = 0", "seeds must be a positive count"),
        ("seeds = [1, 1]", "seeds repeat a value"),
        ('metric = { name = "val_accuracy", goal = "up" }', "goal must be maximize or minimize"),
        ("[base.training]\nepochz = 3", r"s\.toml \[base\] \[training\]: unknown key 'epochz'"),
        ('[parameters."optimizer"]\nvalues = [1]', 'parameter "optimizer" must be "table.key"'),
        ('[parameters."model.archtecture"]\nvalues = ["8"]', '"model.archtecture": unknown key'),
        ('[parameters."training.epochs"]\nvalues = []', "values must be a non-empty list"),
        ('[parameters."training.epochs"]\nvalues = [1]\nvalue = 2', "exactly one of"),
        ('[parameters."training.epochs"]\nmin = 1\nmax = 3', "min/max ranges need method"),
        ('[parameters."training.seed"]\nvalues = [1, 2]', "give seeds with the top-level"),
        (
            '[parameters."model.architecture"]\ngenerator = "node-budget"\ntotal = 10',
            r'\[parameters."model.architecture"\]: generator .*missing option',
        ),
        ('[parameters."training.epochs"]\nvalues = [1, "two"]', "epochs should be a int"),
        ('[parameters."model.architecture"]\nvalues = ["8:relu", "8:frob"]', "frob"),
        ('[parameters."optimizer.name"]\nvalues = ["adam", "adamm"]', "adamm"),
        ('[parameters."optimizer.momentum"]\nvalues = [0.9]', "momentum"),
        ('[parameters."training.batch_size"]\nvalues = [64, 0]', "batch_size must be a positive"),
        ('[parameters."training.dtype"]\nvalues = ["float16"]', "dtype must be float32"),
        ('base = "missing.toml"', "cannot read base"),
        (
            '[[base.model.nodes]]\nname = "h"\ntype = "dense"\nunits = 8\ninputs = ["input"]\n'
            '[parameters."model.architecture"]\nvalues = ["8:relu"]',
            "would be ignored: the base is a graph",
        ),
    ],
)
def test_bad_sweep_files_fail_up_front_with_one_line_naming_the_file(tmp_path, text, message):
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_sweep(path).trials()
    assert "\n" not in str(caught.value)
    assert str(path) in str(caught.value)


def test_cli_dry_run_lists_every_trial_and_creates_no_store(tmp_path):
    path = write(tmp_path, GRID)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["sweep", str(path), "--dry-run"]) == 0
    lines = stdout.getvalue().splitlines()
    assert len(lines) == 25 and all(line.endswith("to run") for line in lines[:24])
    assert "24 trials (0 done, 24 to run)" in lines[-1]
    assert not (tmp_path / "s.db").exists()


def test_cli_reports_a_bad_sweep_as_one_line_and_exit_status_2(tmp_path, capsys):
    path = write(tmp_path, '[parameters."model.architecture"]\nvalues = ["8:nope"]\n')
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlplab: error: ") and err.count("\n") == 1 and str(path) in err
    assert not (tmp_path / "s.db").exists()  # nothing ran, no store was made


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dask", "localhost:8786"], "tcp://HOST:PORT"),
        (["--dask", "tcp://127.0.0.1:1", "--workers", "2"], "--workers is for local runs"),
        (["--workers", "0"], "workers must be a positive integer"),
        (["--store", "postgres://x/y"], "mlplab stores are SQLite files"),
    ],
)
def test_cli_refuses_bad_options_with_one_line(tmp_path, capsys, flags, message):
    path = write(tmp_path, "seeds = 1\n")
    assert main(["sweep", str(path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_variants_are_named_settings_crossed_with_the_parameters_and_seeds():
    sweep = parse_sweep(
        {
            "seeds": 2,
            "base": {"optimizer": {"name": "momentum", "momentum": 0.9}},
            "variants": [
                {
                    "name": "tanh",
                    "model": {"architecture": "8:tanh"},
                    "optimizer": {"learning_rate": 0.1},
                },
                {
                    "name": "sigmoid",
                    "model": {"architecture": "8:sigmoid"},
                    "optimizer": {"learning_rate": 0.5},
                },
            ],
            "parameters": {"training.batch_size": {"values": [32, 64]}},
        }
    )
    trials = sweep.trials()
    assert len(trials) == 2 * 2 * 2
    tanh = [t for t in trials if t.config["model"]["architecture"] == "8:tanh"]
    assert {t.config["optimizer"]["learning_rate"] for t in tanh} == {0.1}
    assert {t.config["optimizer"]["momentum"] for t in trials} == {0.9}  # the base still applies
    assert {t.label for t in tanh} == {"tanh batch_size=32", "tanh batch_size=64"}


def test_a_variant_alone_is_labelled_by_its_name():
    sweep = parse_sweep({"variants": [{"name": "wide", "model": {"architecture": "64:relu"}}]})
    assert [t.label for t in sweep.trials()] == ["wide"]


@pytest.mark.parametrize(
    "variants, message",
    [
        ([{"model": {"architecture": "8:relu"}}], "needs a name"),
        ([{"name": "a"}, {"name": "a"}], "needs a name of its own"),
        ([{"name": "a", "model": {"architecure": "8:relu"}}], "unknown key"),
        ([{"name": "a", "training": {"batch_size": 16}}], "also a parameter"),
        ({"name": "a"}, "must be"),
    ],
)
def test_bad_variants_are_one_line_errors(variants, message):
    value = {"variants": variants, "parameters": {"training.batch_size": {"values": [32]}}}
    with pytest.raises(ConfigError, match=message):
        parse_sweep(value)


def test_reproduce_and_quick_tables_are_left_to_mlplab_reproduce():
    sweep = parse_sweep({"reproduce": {"title": "t"}, "quick": {"seeds": 1}})
    assert len(sweep.trials()) == 1


def test_every_trial_carries_its_sweeps_metric(tmp_path):
    # (a top-level key after a table would belong to the table: it comes first)
    trials = load_sweep(
        write(tmp_path, 'metric = { name = "val_loss", goal = "minimize" }\n' + GRID)
    ).trials()
    assert {json.dumps(t.metric, sort_keys=True) for t in trials} == {
        '{"goal": "minimize", "name": "val_loss"}'
    }
    # A file that names no metric leaves the store none (reports keep ranking by test accuracy).
    assert {t.metric for t in load_sweep(write(tmp_path, GRID)).trials()} == {None}


MISSING_DATA = """
    name = "nodata"
    seeds = 2
    [base]
    data = {{ dataset = "{dataset}" }}
    training = {{ epochs = 1 }}
    [parameters."model.architecture"]
    values = ["8:relu", "16:relu"]
"""


def test_a_sweep_whose_dataset_folder_is_missing_fails_before_any_store_or_worker(tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    path = write(tmp_path, MISSING_DATA.format(dataset=missing))
    assert main(["sweep", str(path)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(path) in line and str(missing) in line and "no such folder" in line
    assert not (tmp_path / "s.db").exists()  # nothing ran, no store was made


def test_a_dataset_folder_lacking_a_file_is_named_with_the_file(tmp_path, capsys):
    folder = tmp_path / "partial"
    folder.mkdir()
    for file in MNIST_SMALL.iterdir():
        if not file.name.startswith("t10k-labels"):
            (folder / file.name).symlink_to(file)
    path = write(tmp_path, MISSING_DATA.format(dataset=folder))
    assert main(["sweep", str(path)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "t10k-labels-idx1-ubyte" in line and str(path) in line
    assert not (tmp_path / "s.db").exists()


def test_a_known_dataset_found_nowhere_fails_once_naming_the_places_looked_at(
    tmp_path, isolated_data_env, capsys
):
    path = write(tmp_path, MISSING_DATA.format(dataset="mnist"))
    assert main(["sweep", str(path)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "mnist: IDX files not found" in line and "MLPLAB_DATA" in line
    assert not (tmp_path / "s.db").exists()


def test_check_data_passes_a_complete_folder_and_reads_each_dataset_once(tmp_path, monkeypatch):
    from mlplab.data import sources

    trials = load_sweep(write(tmp_path, MISSING_DATA.format(dataset=MNIST_SMALL))).trials()
    listed = []
    real = sources.find_files
    monkeypatch.setattr(sources, "find_files", lambda *a: listed.append(a) or real(*a))
    check_data(trials)  # four trials, one dataset: no error, one look
    assert len(trials) == 4 and len(listed) == 1
    both = MISSING_DATA.format(dataset=f'{MNIST_SMALL}", data_dir = "/tmp')
    with pytest.raises(ConfigError, match="give either a folder or --data-dir"):
        check_data(load_sweep(write(tmp_path, both)).trials())
    with pytest.raises(DataError, match="^elsewhere: "):
        check_data(
            load_sweep(write(tmp_path, MISSING_DATA.format(dataset="/nope"))).trials(), "elsewhere"
        )


def test_a_bad_architecture_in_one_variant_fails_before_anything_runs(tmp_path, capsys):
    text = MISSING_DATA.format(dataset=MNIST_SMALL).replace(
        '[parameters."model.architecture"]\n    values = ["8:relu", "16:relu"]',
        '[[variants]]\n    name = "good"\n    model = { architecture = "8:relu" }\n'
        '    [[variants]]\n    name = "bad"\n    model = { architecture = "8:rleu" }',
    )
    path = write(tmp_path, text)
    assert main(["sweep", str(path)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(path) in line and "rleu" in line
    assert not (tmp_path / "s.db").exists()
