"""``mlplab runs`` (the trials of a results store) and ``mlplab compare`` (is B better than A?).

``compare`` takes two or more operands, each either

- a run folder of ``mlplab train`` (its ``predictions.npz`` holds ``predicted`` and ``labels``), or
- ``STORE:NAME``: a configuration of a results store, named by its label, a prefix of its
  config hash, or a prefix of one trial's key (that trial alone), with all its seeds pooled.

Which test decides (differences are always B minus A, in accuracy points):

- both sides have at least two matching seeds: the paired t-test over seeds (seed *i* of A and B
  share the split and data order), with the t interval of the mean difference;
- otherwise: McNemar's exact test on the two runs' test predictions (the same seed on both
  sides when they share one: ``--seed``, else the smallest), with Newcombe's paired interval.

When both can be computed both are shown, and the sentence says which one it used. With more
than two operands each is compared with the first, and the deciding p-values are adjusted for
the number of comparisons with Holm's method.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np

from mlplab.errors import ConfigError, DataError
from mlplab.experiments.compare import (
    ALPHA,
    Run,
    Side,
    compare_sides,
    format_p,
    sentence,
    side_from_records,
    test_set,
)

PREDICTIONS_FILE, EVALUATION_FILE, CONFIG_FILE = "predictions.npz", "evaluation.json", "config.toml"


def register(subparsers) -> None:
    runs = subparsers.add_parser(
        "runs",
        help="list the trials of a results store",
        description="List the trials of a results store (a path or sqlite:///path.db): label, "
        "seed, config hash, test accuracy and its halves, validation accuracy, epochs, seconds.",
    )
    runs.add_argument("store", help="results store: results.db or sqlite:///results.db")
    runs.add_argument("--sweep", help="only this sweep's trials ('' for single runs)")
    runs.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep trials whose KEY equals VALUE, e.g. optimizer.learning_rate=0.001, "
        "label=..., seed=0, metrics.epochs_run=15 (repeat to combine)",
    )
    runs.add_argument(
        "--sort",
        metavar="KEY",
        help="sort by a metric (test_accuracy, val_accuracy, test_loss, ...), seed, label, "
        "epochs or seconds; accuracies best first, everything else smallest first",
    )
    runs.add_argument("--limit", type=int, metavar="N", help="show the first N trials only")
    runs.add_argument("--csv", action="store_true", help="print CSV (full precision)")
    runs.add_argument(
        "--status",
        choices=("done", "failed", "all"),
        default="done",
        help="finished trials (default), failed ones with their error, or all",
    )
    runs.set_defaults(func=run_runs)

    compare = subparsers.add_parser(
        "compare",
        help="is B more accurate than A, or is the difference noise?",
        description="Compare run folders or configurations of a results store (STORE:LABEL, "
        "STORE:CONFIG_HASH or STORE:TRIAL_KEY): accuracies with 95% intervals, the "
        "difference B - A with its interval, the p-value and one plain sentence. With seeds on "
        "both sides, the paired t-test over seeds decides; otherwise McNemar's exact test on "
        "the test predictions. More than two: each against the first, Holm-adjusted.",
    )
    compare.add_argument(
        "operands",
        nargs="+",
        metavar="RUN",
        help="a run folder, or STORE:NAME with NAME a configuration's label, its config hash "
        "(or 4+ leading digits) or one trial's key (two or more operands)",
    )
    compare.add_argument(
        "--seed",
        help="the seed whose predictions McNemar's test uses (default: the smallest shared)",
    )
    compare.add_argument("--sweep", help="look configurations up in this sweep only")
    compare.add_argument("--json", action="store_true", help="print the result as JSON")
    compare.set_defaults(func=run_compare)


# ------------------------------------------------------------------------------- mlplab runs

RUN_COLUMNS = [
    ("label", "label"),
    ("seed", "seed"),
    ("config", "config"),
    ("test %", "test_accuracy"),
    ("1st half %", "test_first_half"),
    ("2nd half %", "test_last_half"),
    ("val %", "val_accuracy"),
    ("epochs", "epochs"),
    ("seconds", "seconds"),
]


def _where(pairs: list[str]) -> dict:
    where = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"--where {pair!r}: write KEY=VALUE, e.g. optimizer.name=adam")
        where[key.strip()] = value.strip()
    return where


def trial_row(record) -> dict:
    """The values ``mlplab runs`` shows of one trial (fractions, not percentages)."""
    from mlplab.experiments.store import seed_of

    history = record.history.get("columns", record.history)
    epochs = record.metrics.get("epochs_run")
    if epochs is None and history.get("epoch") is not None:
        epochs = len(history["epoch"])
    seconds = record.timings.get("train_seconds", record.timings.get("total_seconds"))
    row = {
        "sweep": record.sweep,
        "label": record.label,
        "seed": seed_of(record),
        "config": record.config_hash[:8],
        "trial_key": record.trial_key,
        "status": record.status,
        "epochs": epochs,
        "seconds": seconds,
    }
    for _, key in RUN_COLUMNS[3:7]:
        row[key] = record.metrics.get(key)
    if record.status == "failed":
        row["error"] = record.error
    return row


def _sort_key(records, key: str):
    from mlplab.experiments.store import lookup

    def value(record):
        row = trial_row(record)
        if key in row:
            return row[key]
        if key in record.metrics:
            return record.metrics[key]
        return lookup(record, key)  # a config key; raises for unknown keys

    known = [value(record) for record in records]
    descending = "accuracy" in key or key in ("test_first_half", "test_last_half")
    present = [(v, r) for v, r in zip(known, records) if v is not None]
    missing = [r for v, r in zip(known, records) if v is None]
    try:
        present.sort(key=lambda pair: pair[0], reverse=descending)
    except TypeError:  # mixed types (numbers and text): sort by the written form
        present.sort(key=lambda pair: str(pair[0]), reverse=descending)
    return [r for _, r in present] + missing  # trials without the value go last


def _by_configuration(records):
    """Trials grouped by configuration (in order of each one's first trial), then by seed."""
    from mlplab.experiments.store import seed_of

    first: dict[str, int] = {}
    for record in records:
        first.setdefault(record.config_hash, len(first))

    def key(record):
        seed = seed_of(record)
        return first[record.config_hash], (0, seed) if isinstance(seed, int) else (1, str(seed))

    return sorted(records, key=key)


def _cell(value, key: str) -> str:
    if value is None:
        return "-"
    if key in ("test_accuracy", "test_first_half", "test_last_half", "val_accuracy"):
        return f"{100 * value:.2f}"
    if key == "seconds":
        return f"{value:.1f}"
    return str(value)


def run_runs(args) -> int:
    from mlplab.experiments.store import Store

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: give a positive number of trials")
    status = None if args.status == "all" else args.status
    with Store(args.store, create=False) as store:
        records = store.trials(args.sweep, _where(args.where), status=status)
        several_sweeps = args.sweep is None and len(store.sweeps()) > 1
    if args.sort:
        records = _sort_key(records, args.sort)
    else:
        records = _by_configuration(records)
    if args.limit is not None:
        records = records[: args.limit]
    columns = list(RUN_COLUMNS)
    if several_sweeps:
        columns.insert(0, ("sweep", "sweep"))
    if args.status != "done":
        columns += [("status", "status"), ("error", "error")]
    rows = [trial_row(record) for record in records]
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        keys = ["sweep", "label", "seed", "config_hash", "trial_key", *(k for _, k in columns[3:])]
        keys = list(dict.fromkeys(key for key in keys if key != "config"))
        writer.writerow(keys)
        for record, row in zip(records, rows):
            row = {**row, "config_hash": record.config_hash}
            writer.writerow(["" if row.get(key) is None else row.get(key) for key in keys])
        return 0
    if not rows:
        print(
            f"no {'' if status is None else status + ' '}trials in {args.store} match", flush=True
        )
        return 0
    table = [[title for title, _ in columns]]
    table += [[_cell(row.get(key), key) for _, key in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        cells = [
            text.ljust(width) if key in ("label", "sweep", "error", "status") else text.rjust(width)
            for text, width, (_, key) in zip(line, widths, columns)
        ]
        print("  ".join(cells).rstrip())
    return 0


# ---------------------------------------------------------------------------- mlplab compare


def _read_run_folder(folder: Path, operand: str) -> Side:
    from mlplab.experiments.store import labels_sha256

    path = folder / PREDICTIONS_FILE
    if not path.is_file():
        raise DataError(
            f"{folder}: has no {PREDICTIONS_FILE}; compare needs the test predictions of a run "
            "(runs trained with this mlplab write them)"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            predicted, labels = archive["predicted"], archive["labels"]
    except KeyError as error:
        raise DataError(f"{path}: has no {error} array; it was not written by mlplab") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz archive ({error})") from None
    if predicted.shape != labels.shape or predicted.ndim != 1 or labels.size == 0:
        raise DataError(
            f"{path}: predicted {predicted.shape} and labels {labels.shape} must be equal 1-D"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 255:
        raise DataError(
            f"{path}: labels must be class indices 0..255; it was not written by mlplab"
        )
    seed, config = None, None
    if (folder / CONFIG_FILE).is_file():
        try:
            config = tomllib.loads((folder / CONFIG_FILE).read_text())
            seed = config.get("training", {}).get("seed")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            config = None  # the seed is only shown; the predictions are what is compared
    accuracy = float(np.mean(predicted == labels))
    run = Run(seed, accuracy, predicted, labels, labels_sha256(labels))
    return Side(operand, str(folder), [run], config)


def _split_store_operand(text: str):
    """``STORE:NAME`` -> (store, name), where STORE is the longest prefix that is a file.

    Labels hold colons ("950:relu,50:sigmoid"), so the split is found by trying each colon.
    """
    from mlplab.experiments.store import store_path

    start = len("sqlite:///") if text.startswith("sqlite:///") else 0
    best = None
    for index in range(start, len(text)):
        if text[index] != ":":
            continue
        try:
            candidate = store_path(text[:index])
        except ConfigError:
            continue
        if candidate.is_file():
            best = (text[:index], text[index + 1 :])
    return best


def _read_store_configuration(store_text: str, name: str, operand: str, sweep) -> Side:
    from mlplab.experiments.store import Store, seed_of

    with Store(store_text, create=False) as store:
        configurations = store.configurations(sweep)
        by_label = [c for c in configurations if c.label == name]
        # A hash prefix needs 4 digits, so that a short label never matches hashes by chance.
        by_hash = [c for c in configurations if len(name) >= 4 and c.config_hash.startswith(name)]
        trials = [r for c in configurations for r in c.records if name and r.trial_key == name]
        if not trials and len(name) >= 4:
            trials = [r for c in configurations for r in c.records if r.trial_key.startswith(name)]
        matches = by_label or by_hash
        if len(matches) > 1:
            listed = ", ".join(f"{c.config_hash} ({c.label})" for c in matches[:5])
            raise ConfigError(
                f"{operand}: {len(matches)} configurations match; name one by its config "
                f"hash: {listed}"
            )
        if matches:
            (configuration,) = matches
            records = configuration.records
            label = f"{configuration.label or configuration.config_hash} [{store_text}]"
        elif len(trials) == 1:
            records = trials
            label = f"{trials[0].label or trials[0].config_hash} seed {seed_of(trials[0])} "
            label += f"[{store_text}]"
        else:
            known = ", ".join(repr(c.label or c.config_hash) for c in configurations[:6])
            raise ConfigError(
                f"{operand}: no configuration or trial named {name!r} in {store_text}; "
                f"`mlplab runs {store_text}` lists them ({known or 'it holds none'})"
            )
    return side_from_records(label, records, operand)


def resolve_operand(text: str, sweep=None) -> Side:
    """A run folder or ``STORE:NAME`` as a :class:`Side`; a one-line error otherwise."""
    path = Path(text)
    if path.is_dir():
        return _read_run_folder(path, text)
    split = _split_store_operand(text)
    if split is not None:
        return _read_store_configuration(*split, text, sweep)
    if path.is_file():
        raise ConfigError(
            f"{text}: name a configuration of the store as {text}:LABEL or {text}:CONFIG_HASH "
            f"(`mlplab runs {text}` lists them)"
        )
    raise DataError(f"{text}: neither a run folder nor STORE:NAME of an existing store")


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def format_comparison(result: dict, letters=("A", "B")) -> str:
    """The readable report of one comparison (``result`` from :func:`compare_sides`)."""
    first, second = letters
    lines = []
    for letter, key in zip(letters, ("a", "b")):
        side = result[key]
        seeds = side["seeds"]
        if len(seeds) >= 2:
            how = f"mean of {len(seeds)} seeds, sd {100 * side['std']:.2f} points"
        else:
            how = "1 run" + ("" if seeds[0] is None else f", seed {seeds[0]}")
        interval = (
            "no interval"
            if side["low"] is None
            else f"95% interval {_percent(side['low'])} to {_percent(side['high'])}"
        )
        lines.append(f"{letter}  {side['name']}")
        lines.append(f"   accuracy {_percent(side['accuracy'])}  ({interval}; {how})")
    mcnemar, paired = result["mcnemar"], result["paired_seeds"]
    if mcnemar is not None:
        lines.append(
            f"McNemar's exact test{_seed_text(mcnemar)}: only {first} right on "
            f"{mcnemar['a_only']}, only {second} right on {mcnemar['b_only']} of "
            f"{mcnemar['n']} images; {second} - {first} = "
            f"{100 * mcnemar['difference']:+.2f} points (95% interval "
            f"{100 * mcnemar['low']:+.2f} to {100 * mcnemar['high']:+.2f}), "
            f"p {format_p(mcnemar['p_value'])}"
        )
    if paired is not None:
        lines.append(
            f"paired t-test over {paired['n']} seeds: {second} - {first} = "
            f"{100 * paired['difference']:+.2f} points (95% interval "
            f"{100 * paired['low']:+.2f} to {100 * paired['high']:+.2f}), "
            f"p {format_p(paired['p_value'])}"
        )
    lines.append(result["sentence"])
    return "\n".join(lines)


def _seed_text(mcnemar: dict) -> str:
    if mcnemar["seed_a"] is None and mcnemar["seed_b"] is None:
        return ""
    if mcnemar["seed_a"] == mcnemar["seed_b"]:
        return f" (seed {mcnemar['seed_a']})"
    return f" (seeds {mcnemar['seed_a']} and {mcnemar['seed_b']})"


def run_compare(args) -> int:
    from mlplab.experiments.stats import holm

    if len(args.operands) < 2:
        raise ConfigError("compare needs at least two runs or configurations: A B [C ...]")
    sides = [resolve_operand(text, args.sweep) for text in args.operands]
    _, labels = test_set(sides)  # every operand on one test set, before anything is computed
    baseline = sides[0]
    results = [compare_sides(baseline, other, args.seed, labels) for other in sides[1:]]
    correction = ""
    if len(results) > 1:
        adjusted = holm([result["p_value"] for result in results])
        correction = f", Holm-adjusted over {len(results)} comparisons"
        for result, p in zip(results, adjusted):
            result["p_value_unadjusted"] = result["p_value"]
            result["p_value"] = p
    letters = [chr(ord("A") + index) for index in range(len(sides))] if len(sides) <= 26 else None
    for index, result in enumerate(results):
        pair = ("A", "B") if letters is None else (letters[0], letters[index + 1])
        result["significant"] = bool(result["p_value"] < ALPHA and result["difference"] != 0)
        result["sentence"] = sentence(result, correction, pair)
        result["letters"] = pair
    if args.json:
        if len(results) == 1:
            print(json.dumps(_json_ready(results[0])))
        else:
            output = {"baseline": baseline.operand, "correction": "holm", "comparisons": results}
            print(json.dumps(_json_ready(output)))
        return 0
    for index, result in enumerate(results):
        if index:
            print()
        print(format_comparison(result, result["letters"]))
    return 0


def _json_ready(value):
    """Plain JSON: NumPy scalars as numbers, NaN as null."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = ["compare_sides", "format_p", "register", "resolve_operand", "sentence", "trial_row"]
