"""The published experiments our users started from, re-run and set beside the published figures.

Each experiment is an ordinary sweep file in the repository's ``experiments/`` folder with two
extra tables that ``mlplab sweep`` ignores:

``[reproduce]``
    ``title``, ``source`` (which seed document), ``published`` (a list of figures, each picking a
    configuration by ``variant`` name and/or ``where = {"table.key" = value}`` and giving one or
    more of ``test_accuracy``, ``test_first_half``, ``test_last_half``), ``compare`` (pairs of
    configurations to test against each other, each named by a variant or a swept value), and
    optionally ``target = {metric, value}`` (report the training time until it is first reached).
``[quick]``
    A small variant for CI: ``seeds`` (how many), ``base`` (merged into the base config),
    ``parameters`` (replacing those tables) and ``variants`` (the names to keep).

Whether a published figure agrees with ours is judged against the spread a *single* run of our
setup shows, since a published figure is one run: the 95% prediction interval over seeds,
``mean +- t(n-1) * sd * sqrt(1 + 1/n)``. With one seed there is no spread to measure, and the
figure is set against that run's Wilson interval, which only covers test-set sampling.
"""

from __future__ import annotations

import copy
import math
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from mlplab.errors import ConfigError
from mlplab.experiments import stats
from mlplab.experiments.records import mean_layers
from mlplab.experiments.sweep import Sweep, parse_sweep, read_base
from mlplab.training.metrics import wilson_interval

FIGURES = ("test_accuracy", "test_first_half", "test_last_half")
EXTRA_TABLES = ("reproduce", "quick")
TEST_SET_SIZE = 10_000


@dataclass
class Experiment:
    """One experiment file, parsed (with its quick variant applied when asked)."""

    path: Path
    sweep: Sweep
    title: str
    source: str
    published: list[dict]
    compare: list[list[str]]
    target: dict | None
    variants: dict[str, dict]  # variant name -> its settings as {"table.key": value}
    quick: bool

    @property
    def name(self) -> str:
        return self.sweep.name


@dataclass
class ConfigurationResult:
    """One configuration's figures over its seeds."""

    label: str
    variant: str
    settings: dict  # {"table.key": value} of the configuration
    seeds: list
    figures: dict[str, stats.Summary]  # test_accuracy, test_first_half, test_last_half, ...
    single_run: dict[str, tuple[float, float]]  # 95% prediction interval of one run, per figure
    records: list = field(default_factory=list)
    seconds: float = 0.0  # training time summed over seeds
    time_to_target: stats.Summary | None = None
    reached_target: int = 0
    layers: dict | None = None  # mean per-layer magnitudes over seeds, when recorded
    layer_types: dict | None = None  # node -> layer type, for the nodes of ``layers``


def experiments_folder(explicit: str | Path | None = None) -> Path:
    """The folder of experiment files: ``explicit``, else ``experiments/`` of this source tree,
    else ``./experiments``."""
    if explicit is not None:
        folder = Path(explicit)
    else:
        folder = Path(__file__).resolve().parents[3] / "experiments"
        if not folder.is_dir():
            folder = Path("experiments")
    if not folder.is_dir():
        raise ConfigError(
            f"{folder}: no experiments folder; run from a checkout of mlplab or pass --dir"
        )
    return folder


def find_experiments(folder: Path, names: list[str] | None = None) -> list[Path]:
    """Experiment files in ``folder`` (sorted), or those whose name or file stem match ``names``."""
    paths = sorted(folder.glob("*.toml"))
    if not names:
        return paths
    chosen = []
    for wanted in names:
        matches = [p for p in paths if wanted in (p.stem, _sweep_name(p), p.stem.split("_", 1)[-1])]
        if not matches:
            known = ", ".join(_sweep_name(p) for p in paths)
            raise ConfigError(f"no experiment called {wanted!r}; known: {known}")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def _sweep_name(path: Path) -> str:
    try:
        return tomllib.loads(path.read_text()).get("name", path.stem)
    except (OSError, tomllib.TOMLDecodeError):
        return path.stem


def load_experiment(path: Path, quick: bool = False, overrides: dict | None = None) -> Experiment:
    """Read an experiment file; ``overrides`` (a partial run config) applies to every trial."""
    path = Path(path)
    try:
        value = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the experiment file ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    meta = value.get("reproduce", {})
    quick_table = value.get("quick", {})
    sweep_value = {k: v for k, v in value.items() if k not in EXTRA_TABLES}
    if quick:
        sweep_value = _apply_quick(sweep_value, quick_table, path)
    if overrides:
        sweep_value["base"] = _merge(
            read_base(sweep_value.get("base", {}), path, str(path)), overrides
        )
    sweep = parse_sweep(sweep_value, path)
    if quick:
        sweep.name = f"{sweep.name}-quick"  # quick results never mix with full ones
    return Experiment(
        path=path,
        sweep=sweep,
        title=meta.get("title", sweep.name),
        source=meta.get("source", ""),
        published=list(meta.get("published", [])),
        compare=[list(pair) for pair in meta.get("compare", [])],
        target=meta.get("target"),
        variants=dict(sweep.variants),
        quick=quick,
    )


def _apply_quick(value: dict, quick: dict, path: Path) -> dict:
    value = copy.deepcopy(value)
    unknown = set(quick) - {"seeds", "base", "parameters", "variants"}
    if unknown:
        raise ConfigError(f"{path}: [quick] has unknown key(s) {', '.join(sorted(unknown))}")
    if "seeds" in quick:
        value["seeds"] = quick["seeds"]
    if "base" in quick:
        value["base"] = _merge(read_base(value.get("base", {}), path, str(path)), quick["base"])
    for key, spec in quick.get("parameters", {}).items():
        value.setdefault("parameters", {})[key] = spec
    if "variants" in quick:
        keep = set(quick["variants"])
        value["variants"] = [v for v in value.get("variants", []) if v.get("name") in keep]
    return value


def _merge(base: dict, extra: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _flatten(table: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# ------------------------------------------------------------------------------ running
def run_experiment(experiment: Experiment, store, **runner_options) -> float:
    """Run the experiment's trials that ``store`` lacks; returns the wall time in seconds."""
    from mlplab.experiments.runner import run_sweep

    started = time.perf_counter()
    run_sweep(experiment.sweep.trials(), store, **runner_options)
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ results
def results(experiment: Experiment, store) -> list[ConfigurationResult]:
    """Every configuration of the experiment found in ``store``, with its figures over seeds."""
    rows = []
    # In the order the experiment file lists its configurations, not the order they finished.
    listed = {}
    for trial in experiment.sweep.trials():
        listed.setdefault(trial.label, len(listed))
    configurations = sorted(
        store.configurations(experiment.sweep.name),
        key=lambda c: listed.get(c.label, len(listed)),
    )
    for configuration in configurations:
        settings = _flatten(configuration.config)
        records = configuration.records
        figures, single = {}, {}
        for name in (*FIGURES, "val_accuracy"):
            values = [r.metrics[name] for r in records if r.metrics.get(name) is not None]
            if not values:
                continue
            figures[name] = stats.seed_summary(values, bounds=stats.ACCURACY_BOUNDS)
            single[name] = _single_run_interval(values, name, _test_size(records))
        gap = [
            r.metrics["test_last_half"] - r.metrics["test_first_half"]
            for r in records
            if r.metrics.get("test_last_half") is not None
        ]
        if gap:
            figures["half_gap"] = stats.seed_summary(gap)
        row = ConfigurationResult(
            label=configuration.label,
            variant=_variant_of(experiment, configuration.label),
            settings=settings,
            seeds=configuration.seeds,
            figures=figures,
            single_run=single,
            records=records,
            seconds=sum(r.timings.get("train_seconds", 0.0) for r in records),
        )
        if experiment.target:
            _time_to_target(row, experiment.target)
        # In network order, from the trials' layer_order (or their node names when older).
        row.layers, row.layer_types = mean_layers(records)
        rows.append(row)
    return rows


def busy_seconds(rows: list[ConfigurationResult]) -> float:
    """Seconds during which at least one of the rows' trials was running.

    The union of the trials' ``[started_at, finished_at]`` intervals: the experiment's wall time
    on this machine with any pause between sessions left out (an experiment finished in two
    sittings counts the two, not the night between them), and parallel trials counted once.
    """
    intervals = sorted(
        (r.timings["started_at"], r.timings["finished_at"])
        for row in rows
        for r in row.records
        if "started_at" in r.timings and "finished_at" in r.timings
    )
    total, current_start, current_end = 0.0, None, None
    for start, end in intervals:
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def _test_size(records) -> int:
    sizes = [len(r.predictions) for r in records if r.predictions is not None]
    return sizes[0] if sizes else TEST_SET_SIZE


def _single_run_interval(values: list[float], name: str, n_test: int) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size >= 2:
        half = (
            scipy_stats.t.ppf(0.975, values.size - 1)
            * values.std(ddof=1)
            * math.sqrt(1 + 1 / values.size)
        )
        return max(float(values.mean() - half), 0.0), min(float(values.mean() + half), 1.0)
    total = n_test // 2 if name in ("test_first_half", "test_last_half") else n_test
    return wilson_interval(int(round(values[0] * total)), total)


def _variant_of(experiment: Experiment, label: str) -> str:
    """A trial's label starts with its variant's name (see :class:`~mlplab.experiments.sweep.Sweep`)."""
    first = label.split(" ", 1)[0]
    return first if first in experiment.variants else ""


def _matches(row: ConfigurationResult, variant: str, where: dict) -> bool:
    if variant and row.variant != variant:
        return False
    return all(row.settings.get(key) == value for key, value in where.items())


def find_configuration(experiment: Experiment, rows, name: str) -> ConfigurationResult | None:
    """A configuration named by its label, a variant, or the value of a swept parameter."""
    for row in rows:
        if row.label == name:
            return row
    for row in rows:
        if row.variant == name:
            return row
    for row in rows:
        if any(row.settings.get(key) == name for key in experiment.sweep.parameters):
            return row
    return None


def _time_to_target(row: ConfigurationResult, target: dict) -> None:
    metric, value = target["metric"], target["value"]
    times = []
    for record in row.records:
        column, seconds = record.history.get(metric, []), record.history.get("seconds", [])
        elapsed = 0.0
        for reached, took in zip(column, seconds):
            elapsed += took or 0.0
            if reached is not None and reached >= value:
                times.append(elapsed)
                break
    row.reached_target = len(times)
    if times:
        row.time_to_target = stats.seed_summary(times)


@dataclass
class PublishedCheck:
    """One published figure beside ours."""

    description: str
    figure: str
    published: float
    ours: stats.Summary | None
    interval: tuple[float, float] | None
    verdict: str  # "agrees", "ours higher", "ours lower", "not run"
    note: str = ""


def check_published(experiment: Experiment, rows) -> list[PublishedCheck]:
    checks = []
    for entry in experiment.published:
        variant, where = entry.get("variant", ""), entry.get("where", {})
        description = entry.get("label") or variant or ", ".join(f"{v}" for v in where.values())
        matching = [row for row in rows if _matches(row, variant, where)]
        if len(rows) == 1 and not variant and not where:
            matching = rows
        for figure in FIGURES:
            if figure not in entry:
                continue
            published = float(entry[figure])
            row = matching[0] if matching else None
            if row is None or figure not in row.figures:
                checks.append(PublishedCheck(description, figure, published, None, None, "not run"))
                continue
            low, high = row.single_run[figure]
            # A published 0.114 stands for anything that rounds to it, e.g. our 0.1135.
            rounding = _half_last_digit(entry[figure])
            if experiment.quick:
                verdict = "quick run: not comparable"
            elif low <= published <= high:
                verdict = "agrees"
            elif low - rounding <= published <= high + rounding:
                verdict = "agrees to the published rounding"
            else:
                verdict = "ours higher" if row.figures[figure].mean > published else "ours lower"
            checks.append(
                PublishedCheck(
                    description,
                    figure,
                    published,
                    row.figures[figure],
                    (low, high),
                    verdict,
                    entry.get("note", ""),
                )
            )
    return checks


def _half_last_digit(value) -> float:
    """Half a unit of a published figure's last written digit: 0.0005 for 0.114, 0 for one
    written in exponent form. TOML keeps no trailing zero, so 0.950 counts as 0.95 (0.005):
    write such a figure's precision into its ``note`` if it matters."""
    text = repr(value)
    if "." not in text or "e" in text.lower():
        return 0.0
    return 0.5 * 10.0 ** -len(text.split(".")[1])


def comparisons(experiment: Experiment, rows) -> list[dict]:
    """The experiment's ``compare`` pairs, tested (McNemar on paired predictions, and a paired
    t-test over seeds where both have two or more), with Holm's correction over the pairs."""
    from mlplab.experiments.compare import compare_records

    results_ = []
    for name_a, name_b in experiment.compare:
        a = find_configuration(experiment, rows, name_a)
        b = find_configuration(experiment, rows, name_b)
        if a is None or b is None:
            continue
        result = compare_records(a.records, b.records, name_a, name_b)
        result.update(name_a=name_a, name_b=name_b)
        results_.append(result)
    if results_:
        adjusted = stats.holm([r["p_value"] for r in results_])
        for result, p in zip(results_, adjusted):
            result["p_holm"] = p
    return results_
