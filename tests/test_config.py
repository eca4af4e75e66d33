"""Run configuration: TOML round trip, refusing unknown or mistyped settings, flags over files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlplab.cli import build_parser, main
from mlplab.cli.train import resolve_config, with_dropout
from mlplab.errors import ConfigError
from mlplab.saving import load_model
from mlplab.training.config import (
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    RegularizationConfig,
    RunConfig,
    ScheduleConfig,
    TrainingConfig,
)
from mlplab.training.runs import training_options
from mlplab.training.schedules import BatchSizeRamp

ROOT = Path(__file__).resolve().parent.parent
MNIST_SMALL = ROOT / "tests" / "fixtures" / "mnist-small"
SKIP_CONCAT = ROOT / "examples" / "skip_concat.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def parse(*argv: str) -> RunConfig:
    return resolve_config(build_parser().parse_args(["train", *argv]))


def full_config() -> RunConfig:
    """A configuration in which every table differs from the defaults."""
    return RunConfig(
        data=DataConfig(
            dataset="fashion-mnist",
            data_dir="/data",
            protocol="book",
            validation=1000,
            standardize="per-pixel",
            crop_border=2,
            pixel_subset=300,
            pixel_subset_seed=4,
        ),
        model=ModelConfig(
            architecture="64:relu:dropout(0.2),32:tanh",
            init="he-normal",
            loss="mse",
            output_activation="softmax",
        ),
        optimizer=OptimizerConfig(
            name="momentum", learning_rate=0.05, options={"momentum": 0.8, "nesterov": True}
        ),
        schedule=ScheduleConfig(name="step", options={"every_epochs": 2, "gamma": 0.25}),
        regularization=RegularizationConfig(l1=1e-6, l2=1e-4, max_norm=3.0, clip_norm=5.0),
        training=TrainingConfig(
            epochs=7,
            batch_size=64,
            batch_size_start=16,
            batch_size_growth=3.0,
            early_stopping=2,
            monitor="val_accuracy",
            seed=9,
            split_seed=0,
            init_seed=5,
            order_seed=6,
            dropout_seed=7,
            augment_seed=8,
            threads=1,
            max_steps=500,
            dtype="float64",
            allow_large=True,
        ),
    )


# ------------------------------------------------------------------ TOML
def test_config_with_every_table_round_trips_through_toml(tmp_path):
    config = full_config()
    path = write(tmp_path / "run.toml", config.to_toml())
    assert RunConfig.from_toml(path) == config


def test_graph_config_round_trips_through_toml(tmp_path):
    config = RunConfig.from_toml(SKIP_CONCAT)
    assert [node["name"] for node in config.model.nodes][-1] == "logits"
    path = write(tmp_path / "graph.toml", config.to_toml())
    assert RunConfig.from_toml(path) == config


def test_partial_config_keeps_the_defaults_of_what_it_leaves_out(tmp_path):
    path = write(tmp_path / "run.toml", "[training]\nepochs = 3\n")
    config = RunConfig.from_toml(path)
    assert config.training.epochs == 3
    assert config.training.batch_size == TrainingConfig().batch_size
    assert config.model == ModelConfig() and config.data == DataConfig()


def test_unknown_table_is_refused_by_name(tmp_path):
    path = write(tmp_path / "run.toml", "[trainig]\nepochs = 3\n")
    with pytest.raises(ConfigError, match="trainig"):
        RunConfig.from_toml(path)


def test_unknown_key_is_refused_by_name_and_table(tmp_path):
    path = write(tmp_path / "run.toml", "[training]\nepoch = 3\n")
    with pytest.raises(ConfigError, match=r"\[training\].*'epoch'"):
        RunConfig.from_toml(path)


@pytest.mark.parametrize(
    "line", ['epochs = "ten"', "epochs = 2.5", "epochs = true", "seed = [1, 2]"]
)
def test_wrongly_typed_value_is_refused_naming_the_key(tmp_path, line):
    path = write(tmp_path / "run.toml", f"[training]\n{line}\n")
    key = line.split(" ")[0]
    with pytest.raises(ConfigError, match=key):
        RunConfig.from_toml(path)


def test_a_table_given_as_a_value_is_refused(tmp_path):
    path = write(tmp_path / "run.toml", "training = 3\n")
    with pytest.raises(ConfigError, match="training"):
        RunConfig.from_toml(path)


def test_whole_number_is_accepted_for_a_float_setting(tmp_path):
    path = write(
        tmp_path / "run.toml", "[optimizer]\nlearning_rate = 1\n[regularization]\nl2 = 0\n"
    )
    config = RunConfig.from_toml(path)
    assert config.optimizer.learning_rate == 1 and config.regularization.l2 == 0


def test_validation_may_be_a_fraction_as_documented(tmp_path):
    path = write(tmp_path / "run.toml", "[data]\nvalidation = 0.1\n")
    assert RunConfig.from_toml(path).data.validation == 0.1


def test_validation_flag_may_be_a_fraction_as_its_help_says():
    assert parse("--validation", "0.1").data.validation == 0.1
    assert parse("--validation", "300").data.validation == 300


def test_missing_config_file_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.toml"):
        RunConfig.from_toml(tmp_path / "nowhere.toml")


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path):
    path = write(tmp_path / "broken.toml", "[training\nepochs = \n")
    with pytest.raises(ConfigError, match="broken.toml.*TOML"):
        RunConfig.from_toml(path)


def test_optimizer_and_schedule_tables_take_their_own_options(tmp_path):
    path = write(
        tmp_path / "run.toml",
        '[optimizer]\nname = "adam"\nbeta1 = 0.8\n'
        '[schedule]\nname = "step"\nevery_epochs = 1\ngamma = 0.5\n',
    )
    config = RunConfig.from_toml(path)
    assert config.optimizer.options == {"beta1": 0.8}
    options = training_options(config)
    assert options["optimizer"].beta1 == 0.8
    assert options["schedule"](1.0) == pytest.approx(0.5 * config.optimizer.learning_rate)


def test_a_misspelt_optimizer_option_is_refused_when_the_optimizer_is_made(tmp_path):
    path = write(tmp_path / "run.toml", '[optimizer]\nname = "adam"\nbetta1 = 0.8\n')
    with pytest.raises(ConfigError, match="betta1"):
        training_options(RunConfig.from_toml(path))


def test_training_options_follow_the_training_table():
    config = RunConfig()
    config.training = TrainingConfig(
        epochs=4,
        batch_size=128,
        batch_size_start=20,
        early_stopping=2,
        monitor="val_accuracy",
        threads=0,
        max_steps=0,
        seed=5,
    )
    options = training_options(config)
    assert options["batch_size"] == BatchSizeRamp(start=20, growth=2.0, final=128)
    assert options["early_stopping"].patience == 2
    assert options["early_stopping"].monitor == "val_accuracy"
    assert options["threads"] is None and options["max_steps"] is None
    assert options["epochs"] == 4
    assert options["order_seed"] == config.resolved_seeds()["order"]
    config.training.early_stopping = 0
    assert training_options(config)["early_stopping"] is None


# ------------------------------------------------------------------ flags
def test_flags_override_the_config_file_and_keep_the_rest(tmp_path):
    path = write(
        tmp_path / "run.toml",
        '[model]\narchitecture = "64:relu"\n'
        "[optimizer]\nlearning_rate = 0.01\n"
        "[training]\nepochs = 5\nbatch_size = 32\n",
    )
    config = parse("--config", str(path), "--epochs", "2", "--lr", "0.5")
    assert config.training.epochs == 2 and config.optimizer.learning_rate == 0.5
    assert config.model.architecture == "64:relu" and config.training.batch_size == 32


def test_option_flags_go_into_the_optimizer_and_schedule_options():
    config = parse(
        "--optimizer", "adam", "--beta1", "0.7", "--warmup-epochs", "1.5", "--schedule", "cosine"
    )
    assert config.optimizer.options == {"beta1": 0.7}
    assert config.schedule.options == {"warmup_epochs": 1.5}
    assert training_options(config)["optimizer"].beta1 == 0.7


def test_no_flags_give_the_default_config():
    assert parse() == RunConfig()


def test_arch_flag_replaces_a_graph_from_the_config_file():
    config = parse("--config", str(SKIP_CONCAT), "--arch", "16:relu")
    assert config.model.nodes == [] and config.model.spec() == "16:relu"


def test_dropout_flag_puts_dropout_after_every_hidden_layer():
    assert (
        with_dropout("100:relu,50:sigmoid", 0.5) == "100:relu:dropout(0.5),50:sigmoid:dropout(0.5)"
    )
    config = parse("--arch", "100:relu,50:sigmoid", "--dropout", "0.5")
    assert config.model.architecture == "100:relu:dropout(0.5),50:sigmoid:dropout(0.5)"


def test_dropout_flag_leaves_an_input_dropout_alone():
    assert with_dropout("dropout(0.2),100:relu", 0.5) == "dropout(0.2),100:relu:dropout(0.5)"


# ------------------------------------------------------------------ configs that train
def test_graph_config_trains_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLPLAB_DATA", raising=False)
    out = tmp_path / "graph-run"
    code = main(
        [
            "train",
            "--config",
            str(SKIP_CONCAT),
            "--dataset",
            str(MNIST_SMALL),
            "--validation",
            "200",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--threads",
            "1",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    network, metadata, _ = load_model(out / "model.npz")
    types = {node["type"] for node in network.architecture()["nodes"]}
    assert {"concat", "add", "layernorm"} <= types
    assert metadata["config"]["model"]["nodes"] == RunConfig.from_toml(SKIP_CONCAT).model.nodes
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert 0.1 < evaluation["accuracy"] <= 1.0 and np.isfinite(evaluation["loss"])


# ------------------------------------------------------------------ seeds and bad files
def test_seeds_default_to_derived_and_are_resolved_from_the_master(tmp_path):
    config = RunConfig.from_toml(write(tmp_path / "run.toml", "[training]\nseed = 3\n"))
    assert (config.training.split_seed, config.training.dropout_seed) == (-1, -1)
    seeds = config.resolved_seeds()
    assert seeds["seed"] == 3 and min(seeds.values()) >= 0
    assert RunConfig.from_toml(write(tmp_path / "again.toml", config.to_toml())) == config


def test_resolved_seeds_of_full_config_are_those_it_gives():
    assert full_config().resolved_seeds() == {
        "seed": 9,
        "split": 0,
        "init": 5,
        "order": 6,
        "dropout": 7,
        "augment": 8,
    }


def test_a_negative_master_seed_in_a_config_file_is_a_config_error(tmp_path):
    config = RunConfig.from_toml(write(tmp_path / "run.toml", "[training]\nseed = -4\n"))
    with pytest.raises(ConfigError, match="seed must be an integer >= 0, got -4"):
        config.validate()


def test_a_binary_config_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"PK\x03\x04\xff\xfe\x00\x80" * 64)
    with pytest.raises(ConfigError, match="weights.npz: not a text file"):
        RunConfig.from_toml(path)


@pytest.mark.parametrize("line", ["learning_rate = nan", "learning_rate = inf"])
def test_a_non_finite_learning_rate_is_refused(tmp_path, line):
    config = RunConfig.from_toml(write(tmp_path / "run.toml", f"[optimizer]\n{line}\n"))
    with pytest.raises(ConfigError, match="learning_rate must be a finite number"):
        config.validate()


def test_the_harness_seed_keys_are_fields_of_the_training_table():
    from mlplab.experiments.records import SEED_KEYS

    fields = RunConfig().to_dict()
    assert all(key in fields[table] for table, key in SEED_KEYS)
