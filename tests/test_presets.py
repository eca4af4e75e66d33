"""``mlplab train --preset NAME``: shipped config files that --config reads just as well."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest
from helpers import one_line_error

from mlplab.cli import build_parser, main
from mlplab.cli.train import resolve_config
from mlplab.errors import ConfigError
from mlplab.training.config import RunConfig
from mlplab.training.presets import PRESETS_DIR, preset_description, preset_names, preset_path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHIPPED = ["fashion", "mnist", "mnist-long", "mnist-pi"]


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv("MLPLAB_DATA", raising=False)


def test_the_four_presets_of_issue_9_are_shipped():
    assert preset_names() == SHIPPED
    for name in SHIPPED:
        assert preset_path(name) == PRESETS_DIR / f"{name}.toml"
        assert preset_path(name).is_file()


@pytest.mark.parametrize("name", SHIPPED)
def test_every_preset_parses_as_a_run_config_and_validates(name):
    config = RunConfig.from_toml(preset_path(name))
    config.validate()
    config.augmentation.validate(config.data)
    assert config.data.protocol == "none"  # a preset's final run trains on all 60,000 images


@pytest.mark.parametrize("name", SHIPPED)
def test_every_preset_says_what_it_trains_and_where_its_settings_come_from(name):
    lines = preset_path(name).read_text().splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 20
    assert preset_description(name) == lines[0][2:]
    # The header names the sweep its settings were chosen by (on validation data) and the page
    # with its figures; both exist.
    header = " ".join(line[2:] for line in lines if line.startswith("# "))
    assert "validation data" in header and "docs/RESULTS.md" in header
    sweeps = re.findall(r"experiments/presets/[\w.-]+\.toml", header)
    assert sweeps and all((ROOT / sweep).is_file() for sweep in sweeps), header


def test_presets_name_their_dataset():
    datasets = {name: RunConfig.from_toml(preset_path(name)).data.dataset for name in SHIPPED}
    assert datasets == {
        "fashion": "fashion-mnist",
        "mnist": "mnist",
        "mnist-long": "mnist",
        "mnist-pi": "mnist",
    }
    assert not RunConfig.from_toml(preset_path("mnist-pi")).augmentation.active


def test_the_wheel_ships_every_preset_file():
    """pyproject.toml's package data must cover the presets, or an installed mlplab has none."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["mlplab"]
    package = ROOT / "src" / "mlplab"
    for path in PRESETS_DIR.glob("*.toml"):
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in package_data), relative


def resolved(argv: list[str]) -> dict:
    return resolve_config(build_parser().parse_args(argv)).to_dict()


@pytest.mark.parametrize("name", SHIPPED)
def test_preset_and_config_on_the_same_file_resolve_to_the_same_config(name):
    flags = ["--epochs", "3", "--lr", "0.01", "--dataset", str(FIXTURES / "mnist-small")]
    by_preset = resolved(["train", "--preset", name, *flags])
    by_config = resolved(["train", "--config", str(preset_path(name)), *flags])
    assert by_preset == by_config
    assert by_preset["training"]["epochs"] == 3  # flags override a preset as they do a config
    assert by_preset["optimizer"]["learning_rate"] == 0.01
    untouched = RunConfig.from_toml(preset_path(name)).to_dict()
    assert by_preset["model"] == untouched["model"]


def test_unknown_preset_is_one_line_naming_the_available_ones_and_exit_2(capsys):
    assert main(["train", "--preset", "mnist-best", "--epochs", "1"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "unknown preset 'mnist-best'" in line
    assert "fashion, mnist, mnist-long, mnist-pi" in line


def test_preset_path_refuses_a_path_in_place_of_a_name():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_path("../presets/mnist")


def test_preset_with_config_is_refused_in_one_line_before_any_folder_is_made(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a run without --out would make runs/ here
    config = tmp_path / "run.toml"
    config.write_text("[training]\nepochs = 1\n")
    assert main(["train", "--preset", "mnist", "--config", str(config)]) == 2
    assert "give one" in one_line_error(capsys.readouterr().err)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.toml"]


def test_list_presets_prints_each_name_description_and_file_and_trains_nothing(capsys):
    assert main(["train", "--list-presets"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert f"{name}  " in out
        assert preset_description(name) in out
        assert str(preset_path(name)) in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "dataset"), [("mnist-pi", "mnist-small"), ("fashion", "fashion-small")]
)
def test_preset_trains_on_fixture_data_with_flag_overrides(name, dataset, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--preset", name, "--dataset", str(FIXTURES / dataset)]
    argv += ["--epochs", "1", "--threads", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    saved = RunConfig.from_toml(out / "config.toml")
    preset = RunConfig.from_toml(preset_path(name))
    assert saved.training.epochs == 1
    assert saved.model == preset.model  # the preset's network, dropout and label smoothing
    assert saved.regularization == preset.regularization
    assert saved.augmentation == preset.augmentation
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["epochs_run"] == 1
    assert 0.0 <= evaluation["accuracy"] <= 1.0
