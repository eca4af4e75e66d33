"""Run configuration: a few dataclasses, read from TOML, overridden by CLI flags, saved resolved.

A config file has one table per dataclass; every key is optional and unknown keys are refused
(a misspelt setting that is silently ignored costs a day)::

    [data]
    dataset = "mnist"            # or "fashion-mnist", or a folder holding the four IDX files
    protocol = "holdout"         # holdout (validate on part of train) | book | none
    validation = 5000            # holdout size: a count, or a fraction such as 0.1
    standardize = "none"         # none | global | per-pixel
    crop_border = 0
    pixel_subset = 0             # 0 keeps every pixel

    [model]
    architecture = "1000:relu"   # or a graph: [[model.nodes]] tables (examples/skip_concat.toml)
    init = "auto"
    loss = "cross-entropy"       # or "mse" (with output_activation = "sigmoid" | "softmax" | "linear")

    [optimizer]
    name = "adam"                # sgd | momentum | nesterov | rmsprop | adam | adamw
    learning_rate = 0.001
    # other keys are the optimizer's own options: momentum, dampened, beta1, beta2, eps, rho,
    # weight_decay

    [schedule]
    name = "cosine"              # constant | step | cosine | one-cycle | warmup
    # other keys are the schedule's options, e.g. warmup_epochs, every_epochs, gamma

    [regularization]
    l1 = 0.0
    l2 = 0.0
    max_norm = 0.0               # 0 means off
    clip_norm = 0.0              # 0 means off

    [training]
    epochs = 15
    batch_size = 128
    batch_size_start = 0         # > 0 turns on the ramp: start, times growth each epoch, up to batch_size
    batch_size_growth = 2.0
    early_stopping = 0           # patience in epochs; 0 means off
    monitor = "val_loss"         # or "val_accuracy"
    seed = 0
    threads = 0                  # 0 lets NumPy's BLAS decide
    max_steps = 0                # 0 means no limit
    dtype = "float32"
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from mlplab.errors import ConfigError

DEFAULT_ARCHITECTURE = "1000:relu"


@dataclass
class DataConfig:
    dataset: str = "mnist"
    data_dir: str = ""
    protocol: str = "holdout"
    validation: float = 5000.0
    standardize: str = "none"
    crop_border: int = 0
    pixel_subset: int = 0
    pixel_subset_seed: int = 0

    def resolve_dataset_path(self) -> None:
        """Make a dataset given as a folder absolute, so the saved config finds it from anywhere
        (``mlplab eval`` reads it)."""
        if Path(self.dataset).is_dir():
            self.dataset = str(Path(self.dataset).resolve())


@dataclass
class ModelConfig:
    architecture: str = DEFAULT_ARCHITECTURE
    nodes: list = field(default_factory=list)
    output: str = ""
    init: str = "auto"
    loss: str = "cross-entropy"
    output_activation: str = ""

    def spec(self) -> str | dict:
        """The architecture string, or the graph spec when nodes are given."""
        if self.nodes:
            return {"nodes": self.nodes, **({"output": self.output} if self.output else {})}
        return self.architecture


@dataclass
class OptimizerConfig:
    name: str = "adam"
    learning_rate: float = 1e-3
    options: dict = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    name: str = "cosine"
    options: dict = field(default_factory=dict)


@dataclass
class RegularizationConfig:
    l1: float = 0.0
    l2: float = 0.0
    max_norm: float = 0.0
    clip_norm: float = 0.0


@dataclass
class TrainingConfig:
    epochs: int = 15
    batch_size: int = 128
    batch_size_start: int = 0
    batch_size_growth: float = 2.0
    early_stopping: int = 0
    monitor: str = "val_loss"
    seed: int = 0
    threads: int = 0
    max_steps: int = 0
    dtype: str = "float32"


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @classmethod
    def from_dict(cls, value: dict, source: str = "config") -> RunConfig:
        config = cls()
        unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(
                f"{source}: unknown table(s) {', '.join(sorted(unknown))}; known: "
                + ", ".join(f.name for f in dataclasses.fields(cls))
            )
        for section in dataclasses.fields(cls):
            table = value.get(section.name, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: [{section.name}] must be a table")
            _update(getattr(config, section.name), table, f"{source} [{section.name}]")
        return config

    @classmethod
    def from_toml(cls, path) -> RunConfig:
        try:
            value = tomllib.loads(Path(path).read_text())
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the config file ({error.strerror})") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from None
        return cls.from_dict(value, str(path))

    def to_dict(self) -> dict:
        """Plain values, with optimizer and schedule options flattened into their tables, the
        same form a config file uses."""
        value = dataclasses.asdict(self)
        for table in ("optimizer", "schedule"):
            value[table].update(value[table].pop("options"))
        return value

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


# Keys that go into an `options` table rather than being fields of their own.
_OPTION_TABLES = {OptimizerConfig, ScheduleConfig}


def _update(target, table: dict, where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in table.items():
        if key not in fields or key == "options":
            if type(target) in _OPTION_TABLES:  # checked when the optimizer/schedule is made
                if key == "options" and isinstance(value, dict):
                    target.options.update(value)
                else:
                    target.options[key] = value
                continue
            raise ConfigError(f"{where}: unknown key {key!r}; known: {', '.join(fields)}")
        default = getattr(target, key)
        if isinstance(default, bool) or default is None:
            expected = type(default)
        elif isinstance(default, float):
            expected = (int, float)
        else:
            expected = type(default)
        if not isinstance(value, expected) or isinstance(value, bool) != isinstance(default, bool):
            raise ConfigError(f"{where}: {key} should be a {type(default).__name__}, got {value!r}")
        setattr(target, key, value)
