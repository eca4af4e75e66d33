"""Run configuration: a few dataclasses, read from TOML, overridden by CLI flags, saved resolved.

A config file has one table per dataclass; every key is optional and unknown keys are refused
(a misspelt setting that is silently ignored costs a day)::

    [data]
    dataset = "mnist"            # or "fashion-mnist", or a folder holding the four IDX files
    protocol = "holdout"         # holdout (validate on part of train) | book | none
    validation = 5000            # holdout size: a count, or a fraction such as 0.1
    scale = true                 # pixels 0..255 -> [0, 1]; false feeds raw 0..255 (Keras tutorial)
    standardize = "none"         # none | global | per-pixel
    crop_border = 0
    pixel_subset = 0             # 0 keeps every pixel

    [model]
    architecture = "1000:relu"   # or a graph: [[model.nodes]] tables (examples/skip_concat.toml)
    init = "auto"
    loss = "cross-entropy"       # or "mse" (with output_activation = "sigmoid" | "softmax" | "linear")
    label_smoothing = 0.0        # cross-entropy only: target (1 - eps) onehot + eps / classes

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
    adversarial = 0.0            # adversarial training: epsilon of the fast-gradient-sign
                                 # perturbation, in input units (pixels in [0, 1]); 0 means off
    adversarial_weight = 0.5     # the perturbed batch's share of the loss, in (0, 1]

    [training]
    epochs = 15
    batch_size = 128
    batch_size_start = 0         # > 0 turns on the ramp: start, times growth each epoch, up to batch_size
    batch_size_growth = 2.0
    early_stopping = 0           # patience in epochs; 0 means off
    monitor = "val_loss"         # or "val_accuracy"
    seed = 0                     # master seed (>= 0): the five seeds below derive from it
    split_seed = -1              # holdout split; -1 means derived from seed
    init_seed = -1               # initial weights; -1 means derived from seed
    order_seed = -1              # order of the training examples; -1 means derived from seed
    dropout_seed = -1            # dropout masks; -1 means derived from seed
    augment_seed = -1            # data augmentation; -1 means derived from seed
    threads = 0                  # BLAS threads; 0: what the network pays for, <= cores
    max_steps = 0                # 0 means no limit
    dtype = "float32"
    allow_large = false          # train even when the memory estimate exceeds available memory
    layer_stats = false          # per-layer statistics after every epoch: layer_stats.json
                                 # (and layers.png); costs a forward+backward on 1,000 examples

    [augmentation]               # random transformations of the training batches; 0 is off
    shift = 0.0                  # pixels: each axis moves by uniform(-shift, shift)
    rotation = 0.0               # degrees: uniform(-rotation, rotation), counterclockwise
    scale = 0.0                  # relative: a size factor uniform(1 - scale, 1 + scale)
    shear = 0.0                  # degrees of horizontal shear: uniform(-shear, shear)
    elastic_alpha = 0.0          # elastic distortion: RMS displacement of a pixel, in pixels
    elastic_sigma = 4.0          # its smoothness: the Gaussian's standard deviation, in pixels
    hflip = false                # mirror half the images (refused for mnist: digits are not
                                 # mirror-symmetric)

Each derived seed is ``SeedSequence([seed, tag])`` with a fixed tag per use, so the five streams are
independent of each other, and setting one (say ``split_seed = 0``) holds that part of the run fixed
while the master seed varies the rest.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tomli_w

from mlplab.data.augmentation import TRANSFORMATION_KEYS
from mlplab.data.augmentation import check_settings as check_augmentation_settings
from mlplab.errors import ConfigError

DEFAULT_ARCHITECTURE = "1000:relu"
# A seed of -1 (TOML has no None) means "derived from the master seed".
DERIVED = -1
# The tag of each derived seed in SeedSequence([master, tag]). Fixed forever: changing one changes
# every run made with a derived seed.
SEED_TAGS = {"split": 1, "init": 2, "order": 3, "dropout": 4, "augment": 5}


@dataclass
class DataConfig:
    dataset: str = "mnist"
    data_dir: str = ""
    protocol: str = "holdout"
    validation: float = 5000.0
    scale: bool = True
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
    label_smoothing: float = 0.0

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
    adversarial: float = 0.0
    adversarial_weight: float = 0.5


@dataclass
class TrainingConfig:
    epochs: int = 15
    batch_size: int = 128
    batch_size_start: int = 0
    batch_size_growth: float = 2.0
    early_stopping: int = 0
    monitor: str = "val_loss"
    seed: int = 0
    split_seed: int = DERIVED
    init_seed: int = DERIVED
    order_seed: int = DERIVED
    dropout_seed: int = DERIVED
    augment_seed: int = DERIVED
    threads: int = 0
    max_steps: int = 0
    dtype: str = "float32"
    allow_large: bool = False
    layer_stats: bool = False


@dataclass
class AugmentationConfig:
    """Random transformations of the training batches (:mod:`mlplab.data.augmentation`).

    The image shape and the value of a blank pixel are not settings: they follow from the data
    and its preprocessing.
    """

    shift: float = 0.0
    rotation: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    hflip: bool = False

    @property
    def active(self) -> bool:
        """True when at least one transformation is on."""
        return any(getattr(self, key) for key in TRANSFORMATION_KEYS)

    def validate(self, data: DataConfig) -> None:
        """Refuse values out of range, and augmentation of data it cannot apply to."""
        check_augmentation_settings(**dataclasses.asdict(self))
        if not self.active:
            return
        if data.pixel_subset:
            raise ConfigError(
                "augmentation moves pixels within an image, and pixel_subset leaves no image "
                "(a seeded subset of pixels); set pixel_subset = 0 or turn augmentation off"
            )
        if data.standardize == "per-pixel":
            raise ConfigError(
                "augmentation with standardize = 'per-pixel' would standardize a moved pixel "
                "with another position's statistics; use standardize = 'global' or 'none'"
            )
        if self.hflip and data.dataset == "mnist":
            raise ConfigError(
                "augmentation hflip mirrors images, and digits are not mirror-symmetric (a "
                "mirrored 2 is no digit); set hflip = false for mnist (it suits fashion-mnist)"
            )


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

    def resolved_seeds(self) -> dict[str, int]:
        """The master seed and the five seeds a run uses, with derived ones (-1) worked out.

        Returns
        -------
        dict
            ``{"seed": master, "split": .., "init": .., "order": .., "dropout": ..,
            "augment": ..}``, plain ints (``augment`` seeds the data augmentation, and is
            there whether augmentation is on or not).

        Raises
        ------
        ConfigError
            For a negative master seed, or a part seed below -1.
        """
        t = self.training
        if not isinstance(t.seed, int) or t.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {t.seed!r}")
        seeds = {"seed": t.seed}
        for part, tag in SEED_TAGS.items():
            value = getattr(t, f"{part}_seed")
            if not isinstance(value, int) or value < DERIVED:
                raise ConfigError(
                    f"{part}_seed must be an integer >= 0, or -1 to derive it from seed; "
                    f"got {value!r}"
                )
            if value == DERIVED:
                state = np.random.SeedSequence([t.seed, tag]).generate_state(1, dtype=np.uint32)
                value = int(state[0])
            seeds[part] = value
        return seeds

    def validate(self) -> None:
        """Refuse settings that are wrong on their own, before any data is read.

        Settings that need the data or another module (architecture, optimizer and schedule
        options) are checked when :func:`mlplab.training.runs.prepare_run` builds them.
        """
        t = self.training
        self.resolved_seeds()
        for name in ("epochs", "batch_size"):
            if getattr(t, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(t, name)!r}")
        for name in ("batch_size_start", "early_stopping", "threads", "max_steps"):
            if getattr(t, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 means off), got {getattr(t, name)!r}")
        if t.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, not {t.dtype!r}")
        for table in (self.optimizer, self.regularization):
            for key, value in dataclasses.asdict(table).items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise ConfigError(f"{key} must be a finite number, got {value!r}")
        self.augmentation.validate(self.data)

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
        except UnicodeDecodeError:
            raise ConfigError(
                f"{path}: not a text file; give a TOML config such as examples/skip_concat.toml"
            ) from None
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
