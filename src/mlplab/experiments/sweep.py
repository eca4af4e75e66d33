"""Sweep files: a base run config, the parameters to vary, seeds; expanded into trials.

A sweep file reads like a Weights & Biases sweep whose base run is an ordinary ``mlplab train``
config (``examples/sweeps/`` has complete ones)::

    name = "sigmoid-depth"
    method = "grid"                 # grid: every combination; random: `count` draws
    metric = { name = "val_accuracy", goal = "maximize" }
    seeds = 3                       # the master seeds 0, 1, 2; or a list: [0, 7, 42]

    [base]                          # a run config (or: base = "run.toml", next to this file)
    data = { dataset = "mnist" }
    optimizer = { name = "sgd", learning_rate = 0.1 }
    training = { epochs = 5, batch_size = 128 }

    [parameters."model.architecture"]   # any config key, written "table.key"
    generator = "depth-width"           # a named source (mlplab.experiments.generators)
    depths = [1, 2, 3, 4]
    widths = [32]
    activation = "sigmoid"

    [parameters."optimizer.learning_rate"]
    values = [0.1, 0.01]

Settings that go together rather than on a grid are named variants, each a partial run config
crossed with the parameters (and the seeds)::

    [[variants]]
    name = "tanh"
    model = { architecture = "128:tanh" }
    optimizer = { learning_rate = 0.1 }

    [[variants]]
    name = "sigmoid"
    model = { architecture = "128:sigmoid" }
    optimizer = { learning_rate = 0.5 }

A file may also hold ``[reproduce]`` and ``[quick]`` tables for ``mlplab reproduce``
(:mod:`mlplab.experiments.reproduce`); a sweep ignores them.

A parameter is ``values = [...]`` (a grid axis or a random choice), ``value = x`` (fixed),
``generator = NAME`` with the generator's options, or, for ``method = "random"`` only,
``min``/``max`` with an optional ``distribution`` (``uniform``, ``log_uniform_values``,
``int_uniform``). Random search draws ``count`` configurations with the sweep's ``seed`` (0 by
default). Every configuration runs once per seed; the seed is the master seed
``[training] seed``.

Every trial's config is resolved and checked before anything runs: one bad key or value anywhere
is a one-line :class:`~mlplab.errors.ConfigError` naming the sweep file and the key; a dataset
that cannot be found is one line too (:func:`check_data`), before any worker starts.

The ``metric`` a file names goes into the results store with its trials, and ``mlplab report``
ranks the sweep's configurations by it (a file that names none is ranked by test accuracy).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlplab.engine.architecture import parse_architecture
from mlplab.errors import ConfigError, DataError, MlplabError
from mlplab.experiments.generators import generate
from mlplab.experiments.records import trial_key
from mlplab.training.config import RunConfig

SWEEP_KEYS = {
    "name",
    "method",
    "metric",
    "seeds",
    "base",
    "parameters",
    "count",
    "seed",
    "variants",
}
# Tables a sweep file may carry for `mlplab reproduce` (published figures, a quick variant);
# the sweep itself ignores them.
REPRODUCE_KEYS = {"reproduce", "quick"}
METHODS = ("grid", "random")
GOALS = ("maximize", "minimize")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform")
# Tables whose keys are free-form options (checked when the optimizer or schedule is made).
OPTION_TABLES = {"optimizer", "schedule"}


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep: a resolved config (``RunConfig.to_dict()``) and its names."""

    config: dict
    label: str  # the configuration without its seed, e.g. "32:sigmoid,32:sigmoid lr=0.1"
    sweep: str
    # The {"name", "goal"} the sweep file names (None when it names none): the store keeps it
    # so that reports rank by it.
    metric: dict | None = None

    @property
    def trial_key(self) -> str:
        return trial_key(self.config)

    @property
    def seed(self) -> int:
        return self.config["training"]["seed"]


@dataclass
class Sweep:
    """A parsed sweep file."""

    name: str
    path: Path | None
    method: str
    metric: dict
    seeds: list[int]
    base: dict  # a run config as plain tables
    parameters: dict[str, list]  # "table.key" -> the values it takes, generators expanded
    ranges: dict[str, dict]  # "table.key" -> {min, max, distribution} (random search only)
    count: int
    seed: int
    variants: list[tuple[str, dict]] = dataclasses.field(default_factory=list)
    # Whether the file names its metric: only then do its trials carry it to the store (a report
    # of a sweep that names none keeps ranking by test accuracy).
    metric_given: bool = False

    def trials(self) -> list[Trial]:
        """Every trial, resolved and validated; duplicates (same trial key) appear once."""
        where = str(self.path) if self.path else self.name
        trials, seen = [], set()
        for variant, settings in self.variants or [("", {})]:
            for assignment in self._assignments():
                varied = {k: v for k, v in assignment.items() if self._varies(k)}
                label = _label(self.base, varied) if varied or not variant else ""
                label = f"{variant} {label}".strip()
                for seed in self.seeds:
                    config = _resolve(self.base, {**settings, **assignment}, seed, where)
                    metric = self.metric if self.metric_given else None
                    trial = Trial(config, label, self.name, metric)
                    if trial.trial_key not in seen:
                        seen.add(trial.trial_key)
                        trials.append(trial)
        return trials

    def _varies(self, key: str) -> bool:
        """Whether a parameter takes more than one value (a fixed one does not name a trial)."""
        return key in self.ranges or len(self.parameters.get(key, ())) > 1

    def _assignments(self) -> list[dict]:
        """The configurations as {"table.key": value}, seeds not yet applied."""
        keys = list(self.parameters) + list(self.ranges)
        if self.method == "grid":
            return [
                dict(zip(keys, chosen))
                for chosen in itertools.product(*(self.parameters[k] for k in self.parameters))
            ]
        rng = np.random.default_rng(self.seed)
        assignments = []
        for _ in range(self.count):
            assignment = {}
            for key in keys:  # a fixed key order keeps the draws reproducible
                if key in self.parameters:
                    values = self.parameters[key]
                    assignment[key] = values[int(rng.integers(len(values)))]
                else:
                    assignment[key] = _draw(rng, self.ranges[key])
            assignments.append(assignment)
        return assignments


def load_sweep(path) -> Sweep:
    """Read and check a sweep file (TOML)."""
    path = Path(path)
    try:
        value = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the sweep file ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    return parse_sweep(value, path)


def parse_sweep(value: dict, path: Path | None = None) -> Sweep:
    """Check a sweep given as plain tables; ``path`` names it in errors and anchors ``base``."""
    where = str(path) if path else "sweep"
    unknown = set(value) - SWEEP_KEYS - REPRODUCE_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(SWEEP_KEYS))}"
        )
    name = value.get("name", path.stem if path else "sweep")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name must be a non-empty string, got {name!r}")
    method = value.get("method", "grid")
    if method not in METHODS:
        raise ConfigError(f"{where}: method must be one of {', '.join(METHODS)}, not {method!r}")
    metric = _metric(value.get("metric", {"name": "val_accuracy", "goal": "maximize"}), where)
    count = value.get("count", 0)
    seed = value.get("seed", 0)
    if method == "random":
        if not _is_int(count) or count < 1:
            raise ConfigError(f"{where}: method 'random' needs count = a positive integer")
    elif "count" in value:
        raise ConfigError(f"{where}: count applies to method 'random' only")
    if not _is_int(seed):
        raise ConfigError(f"{where}: seed (of the random search) must be an integer, got {seed!r}")
    base = read_base(value.get("base", {}), path, where)
    parameters, ranges = {}, {}
    tables = value.get("parameters", {})
    if not isinstance(tables, dict):
        raise ConfigError(f'{where}: parameters must be tables: [parameters."table.key"]')
    for key, spec in tables.items():
        _check_key(key, where)
        source = f'{where}: [parameters."{key}"]'
        if not isinstance(spec, dict):
            raise ConfigError(f"{source} must be a table with values, value, generator or min/max")
        if "min" in spec or "max" in spec:
            if method != "random":
                raise ConfigError(f"{source}: min/max ranges need method = 'random'; use values")
            ranges[key] = _range(spec, source)
        else:
            parameters[key] = _values(spec, source)
    if "model.architecture" in parameters and base.get("model", {}).get("nodes"):
        raise ConfigError(
            f'{where}: [parameters."model.architecture"] would be ignored: the base is a graph '
            "([[base.model.nodes]]); vary model.nodes, or give the base an architecture string"
        )
    if "training.seed" in parameters or "training.seed" in ranges:
        raise ConfigError(f"{where}: give seeds with the top-level `seeds`, not as a parameter")
    seeds = _seeds(value.get("seeds"), base, where)
    variants = _variants(value.get("variants", []), {**parameters, **ranges}, where)
    return Sweep(
        name,
        path,
        method,
        metric,
        seeds,
        base,
        parameters,
        ranges,
        count,
        seed,
        variants,
        metric_given="metric" in value,
    )


def _variants(tables, parameters: dict, where: str) -> list[tuple[str, dict]]:
    """``[[variants]]``: named partial run configs, each crossed with the parameters.

    For settings that go together rather than on a grid (the course report's five runs: tanh
    at lr 0.1, sigmoid at lr 0.5, ...). Returns ``(name, {"table.key": value})`` pairs.
    """
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{where}: variants must be [[variants]] tables, each with a name")
    variants, names = [], set()
    for table in tables:
        name = table.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise ConfigError(f"{where}: each [[variants]] needs a name of its own, got {name!r}")
        names.add(name)
        settings = {}
        for section, values in table.items():
            if section == "name":
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: variant {name!r}: {section} must be a table")
            for key, value in values.items():
                dotted = f"{section}.{key}"
                _check_key(dotted, f"{where}: variant {name!r}")
                if dotted in parameters:
                    raise ConfigError(
                        f"{where}: variant {name!r} sets {dotted}, which is also a parameter; "
                        "set it in one place"
                    )
                settings[dotted] = value
        variants.append((name, settings))
    return variants


def _metric(metric, where: str) -> dict:
    if isinstance(metric, str):
        metric = {"name": metric}
    if not isinstance(metric, dict) or set(metric) - {"name", "goal"} or "name" not in metric:
        raise ConfigError(f'{where}: metric must be {{ name = "val_accuracy", goal = "maximize" }}')
    goal = metric.get("goal", "minimize" if metric["name"].endswith("loss") else "maximize")
    if goal not in GOALS:
        raise ConfigError(f"{where}: metric goal must be maximize or minimize, not {goal!r}")
    return {"name": metric["name"], "goal": goal}


def read_base(base, path: Path | None, where: str) -> dict:
    """A sweep's base run config as tables: given inline, or as a config file beside the sweep."""
    if isinstance(base, str):  # a run config file, relative to the sweep file
        file = Path(base)
        if not file.is_absolute() and path is not None:
            file = path.parent / file
        try:
            base = tomllib.loads(file.read_text())
        except OSError as error:
            raise ConfigError(
                f"{where}: cannot read base = {str(file)!r} ({error.strerror})"
            ) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{where}: base file {file} is not valid TOML ({error})") from None
    if not isinstance(base, dict):
        raise ConfigError(f"{where}: base must be a table of run settings or a config file path")
    RunConfig.from_dict(copy.deepcopy(base), f"{where} [base]")  # its own errors, named
    return base


def _check_key(key: str, where: str) -> None:
    parts = key.split(".")
    tables = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    if len(parts) != 2 or parts[0] not in tables:
        raise ConfigError(
            f'{where}: parameter "{key}" must be "table.key" with table one of {", ".join(tables)}'
        )
    table, name = parts
    if table in OPTION_TABLES:
        return  # optimizer and schedule options are checked when the trials are resolved
    known = [f.name for f in dataclasses.fields(getattr(RunConfig(), table))]
    if name not in known:
        raise ConfigError(
            f'{where}: parameter "{key}": unknown key; [{table}] has {", ".join(known)}'
        )


def _values(spec: dict, source: str) -> list:
    kinds = [k for k in ("values", "value", "generator") if k in spec]
    if len(kinds) != 1:
        raise ConfigError(f"{source} needs exactly one of values, value, generator")
    if kinds[0] == "values":
        if set(spec) != {"values"}:
            raise ConfigError(f"{source}: unexpected key(s) beside values")
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: values must be a non-empty list")
        return values
    if kinds[0] == "value":
        if set(spec) != {"value"}:
            raise ConfigError(f"{source}: unexpected key(s) beside value")
        return [spec["value"]]
    options = {k: v for k, v in spec.items() if k != "generator"}
    try:
        values = generate(spec["generator"], options)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    if not values:
        raise ConfigError(f"{source}: the generator produced no values")
    return values


def _range(spec: dict, source: str) -> dict:
    unknown = set(spec) - {"min", "max", "distribution"}
    if unknown or "min" not in spec or "max" not in spec:
        raise ConfigError(f"{source}: a range is min, max and an optional distribution")
    low, high = spec["min"], spec["max"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"{source}: min and max must be numbers")
    if not low < high:
        raise ConfigError(f"{source}: min must be below max, got {low} and {high}")
    default = "int_uniform" if _is_int(low) and _is_int(high) else "uniform"
    distribution = spec.get("distribution", default)
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(
            f"{source}: distribution must be one of {', '.join(DISTRIBUTIONS)}, "
            f"not {distribution!r}"
        )
    if distribution == "log_uniform_values" and low <= 0:
        raise ConfigError(f"{source}: log_uniform_values needs min > 0")
    if distribution == "int_uniform" and not (_is_int(low) and _is_int(high)):
        raise ConfigError(f"{source}: int_uniform needs integer min and max")
    return {"min": low, "max": high, "distribution": distribution}


def _draw(rng: np.random.Generator, spec: dict):
    low, high = spec["min"], spec["max"]
    if spec["distribution"] == "int_uniform":
        return int(rng.integers(low, high + 1))  # both ends included, as W&B does
    if spec["distribution"] == "log_uniform_values":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def _seeds(seeds, base: dict, where: str) -> list[int]:
    if seeds is None:
        return [base.get("training", {}).get("seed", RunConfig().training.seed)]
    if _is_int(seeds):
        if seeds < 1:
            raise ConfigError(f"{where}: seeds must be a positive count or a list of integers")
        return list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) for s in seeds):
        raise ConfigError(f"{where}: seeds must be a positive count or a list of integers")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seeds repeat a value: {seeds}")
    return seeds


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _resolve(base: dict, assignment: dict, seed: int, where: str) -> dict:
    """The fully resolved config dict of one trial, validated as far as possible without data."""
    tables = copy.deepcopy(base)
    for key, value in assignment.items():
        table, name = key.split(".")
        tables.setdefault(table, {})[name] = copy.deepcopy(value)
    tables.setdefault("training", {})["seed"] = seed
    config = RunConfig.from_dict(tables, where)
    config.data.resolve_dataset_path()
    _validate(config, where)
    return config.to_dict()


# What check_data reads of a known dataset: its two label files (70 kB), found by the same search
# a trial makes, and verified; the images (55 MB) are left to the workers that read them anyway.
CHECKED_FILES = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")


def check_data(trials, where: str | None = None) -> None:
    """Check that every dataset the trials name can be found, before any worker starts.

    Each (dataset, data folder) is checked once: a known dataset (``mnist``) is searched for the
    way a trial searches for it (and downloaded into the cache if no copy is found), reading only
    its label files; a dataset given as a folder must hold the four IDX files.

    Raises
    ------
    DataError, ConfigError
        The first dataset that cannot be found, as one line prefixed with ``where`` (default:
        the sweep's name) and naming the fix.
    """
    from mlplab.data import load_dataset, sources

    checked = set()
    for trial in trials:
        data = trial.config["data"]
        dataset, data_dir = str(data["dataset"]), data.get("data_dir") or None
        if (dataset, data_dir) in checked:
            continue
        checked.add((dataset, data_dir))
        try:
            if dataset in sources.CLASS_NAMES:
                sources.locate(dataset, data_dir, True, False, CHECKED_FILES)
            elif Path(dataset).expanduser().is_dir():
                if data_dir is not None:  # load_dataset refuses both, before reading anything
                    load_dataset(dataset, data_dir, download=False, progress=False)
                found = sources.find_files(Path(dataset).expanduser())
                missing = [stem for stem in sources.FILE_STEMS if stem not in found]
                if missing:
                    raise DataError(
                        f"{dataset}: missing {', '.join(f'{stem}[.gz]' for stem in missing)}; "
                        "a dataset folder holds the four standard IDX files"
                    )
            else:  # neither a name nor a folder: load_dataset says which mistake it is
                load_dataset(dataset, data_dir, download=False, progress=False)
        except MlplabError as error:
            raise type(error)(f"{where or trial.sweep}: {error}") from None


def _validate(config: RunConfig, where: str) -> None:
    """What RunConfig.from_dict leaves to training time: options, names, the architecture."""
    from mlplab.training.runs import training_options

    try:
        if not config.model.nodes:
            parse_architecture(config.model.architecture)
        if config.training.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, not {config.training.dtype!r}")
        training_options(config)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    except (TypeError, ValueError) as error:  # e.g. an unknown optimizer keyword argument
        raise ConfigError(f"{where}: {error}") from None


def _label(base: dict, assignment: dict) -> str:
    """A short name of a configuration: the architecture bare, other varied keys as key=value."""
    parts = []
    for key, value in assignment.items():
        name = key.split(".")[1]
        if key == "model.architecture":
            parts.insert(0, value if value else '""')
        elif key == "optimizer.learning_rate":
            parts.append(f"lr={value:g}" if isinstance(value, float) else f"lr={value}")
        else:
            parts.append(f"{name}={value}")
    if not parts:
        parts.append(base.get("model", {}).get("architecture", RunConfig().model.architecture))
    return " ".join(str(p) for p in parts)


__all__ = ["Sweep", "Trial", "check_data", "load_sweep", "parse_sweep"]
