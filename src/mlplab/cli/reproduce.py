"""``mlplab reproduce``: run the published experiments and print ours beside the published figures."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from mlplab.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="re-run the published experiments and set our figures beside theirs",
        description="Run the experiments of the repository's experiments/ folder (the setups of "
        "the forum threads, the Keras tutorial, the course report and the learning diary our "
        "users started from), store every trial, and print, per experiment, our figures with "
        "their spread over seeds beside the published ones, the first-half/last-half test gap, "
        "and the significance of the comparisons the experiment names. Finished trials are "
        "never run twice: an interrupted reproduction continues where it stopped.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="experiments to run (default: all); see --list"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the small variant of each experiment (one seed, one epoch, fewer settings), "
        "for CI and for trying the command; its results are kept apart from full ones",
    )
    parser.add_argument("--list", action="store_true", help="list the experiments and stop")
    parser.add_argument(
        "--store",
        help="results store (a path or sqlite:///path.db; default: runs/reproduce.db, "
        "or runs/reproduce-quick.db with --quick)",
    )
    parser.add_argument("--dir", help="the experiments folder (default: experiments/ of mlplab)")
    parser.add_argument(
        "--dataset", help="train every experiment on this dataset instead (a name or a folder)"
    )
    parser.add_argument("--data-dir", help="folder holding the dataset's files")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help="override a run setting in every trial, e.g. --set training.threads=1 "
        "(the value is read as TOML: numbers, true/false, or text); may be repeated",
    )
    parser.add_argument(
        "--workers", type=int, help="local worker processes (default: one per core)"
    )
    parser.add_argument("--threads-per-worker", type=int, help="BLAS threads of each worker")
    parser.add_argument(
        "--dask", metavar="tcp://HOST:PORT", help="run the trials on a Dask cluster"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing; print what the store holds"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the tables as Markdown (for docs/)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_reproduce)


def run_reproduce(args) -> int:
    from mlplab.experiments import reproduce
    from mlplab.experiments.store import Store

    folder = reproduce.experiments_folder(args.dir)
    paths = reproduce.find_experiments(folder, args.names)
    overrides = {}
    if args.dataset or args.data_dir:
        overrides["data"] = {
            **({"dataset": str(_dataset(args.dataset))} if args.dataset else {}),
            **({"data_dir": args.data_dir} if args.data_dir else {}),
        }
    for assignment in args.set:
        table, key, value = _setting(assignment)
        overrides.setdefault(table, {})[key] = value
    experiments = [reproduce.load_experiment(p, args.quick, overrides) for p in paths]
    if args.list:
        for experiment in experiments:
            n = len(experiment.sweep.trials())
            print(f"{experiment.name:22} {n:4} trials  {experiment.title}")
        return 0
    store_path = args.store or ("runs/reproduce-quick.db" if args.quick else "runs/reproduce.db")
    if not args.store:
        Path(store_path).parent.mkdir(parents=True, exist_ok=True)
    runner_options = {
        "workers": args.workers,
        "threads_per_worker": args.threads_per_worker,
        "dask_address": args.dask,
        "progress": not args.quiet,
    }
    with Store(store_path) as store:
        for experiment in experiments:
            wall = None
            if not args.report_only:
                if not args.quiet:
                    print(f"== {experiment.name}: {experiment.title}", file=sys.stderr)
                wall = reproduce.run_experiment(experiment, store, **runner_options)
            text = format_experiment(experiment, store, wall, markdown=args.markdown)
            print(text, flush=True)
    return 0


def _setting(text: str) -> tuple[str, str, object]:
    """``table.key=value`` with the value read as TOML (``0.1``, ``true``, ``"a"`` or bare text)."""
    name, sep, raw = text.partition("=")
    table, dot, key = name.strip().partition(".")
    if not sep or not dot or not table or not key:
        raise ConfigError(f"--set {text!r}: write TABLE.KEY=VALUE, e.g. --set training.threads=1")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare text such as a dataset name
    return table, key, value


def _dataset(value: str) -> str:
    path = Path(value)
    return str(path.resolve()) if path.is_dir() else value


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _summary(summary) -> str:
    if summary is None:
        return "-"
    if summary.std is None:
        return f"{_pct(summary.mean)} (1 seed)"
    return f"{_pct(summary.mean)} ± {_pct(summary.std)} [{_pct(summary.low)}, {_pct(summary.high)}]"


def format_experiment(experiment, store, wall: float | None, markdown: bool = False) -> str:
    """The experiment's tables: our configurations, the published figures, the comparisons."""
    from mlplab.engine.activations import ACTIVATIONS
    from mlplab.experiments import reproduce

    rows = reproduce.results(experiment, store)
    lines = [f"## {experiment.title}" if markdown else f"\n{experiment.title}"]
    lines.append(
        f"{'' if markdown else '  '}source: {experiment.source}; sweep "
        f"{experiment.name}, {experiment.path.name}"
    )
    if not rows:
        lines.append("  no finished trials in the store")
        return "\n".join(lines)
    seconds = sum(row.seconds for row in rows)
    timing = (
        f"training time {seconds:.0f} s summed over trials, "
        f"{reproduce.busy_seconds(rows):.0f} s with trials running"
    )
    if wall is not None:
        timing += f", {wall:.0f} s wall time this run"
    lines.append(("" if markdown else "  ") + timing)
    header = [
        "configuration",
        "seeds",
        "test % (mean ± sd [95% CI])",
        "first half",
        "last half",
        "last - first",
    ]
    if experiment.target:
        header.append(f"s to {experiment.target['metric']} >= {experiment.target['value']}")
    table = []
    for row in rows:
        cells = [
            row.label or "(no hidden layer)",
            str(len(row.seeds)),
            _summary(row.figures.get("test_accuracy")),
            _pct(row.figures["test_first_half"].mean) if "test_first_half" in row.figures else "-",
            _pct(row.figures["test_last_half"].mean) if "test_last_half" in row.figures else "-",
            _pct(row.figures["half_gap"].mean) if "half_gap" in row.figures else "-",
        ]
        if experiment.target:
            cells.append(
                f"{row.time_to_target.mean:.1f} ({row.reached_target}/{len(row.seeds)})"
                if row.time_to_target
                else f"not reached (0/{len(row.seeds)})"
            )
        table.append(cells)
    lines.append(_table(header, table, markdown))
    checks = reproduce.check_published(experiment, rows)
    if checks:
        lines.append("" if markdown else "  published against ours (one run's 95% range):")
        table = [
            [
                check.description,
                check.figure,
                _pct(check.published),
                _summary(check.ours),
                f"[{_pct(check.interval[0])}, {_pct(check.interval[1])}]"
                if check.interval
                else "-",
                check.verdict + (f" ({check.note})" if check.note else ""),
            ]
            for check in checks
        ]
        lines.append(
            _table(
                ["published", "figure", "theirs %", "ours %", "one run's range", "verdict"],
                table,
                markdown,
            )
        )
    layered = [row for row in rows if row.layers]
    if layered:
        lines.append("" if markdown else "  per-layer magnitudes (mean over seeds):")
        table = []
        for row in layered:
            weights = " ".join(
                f"{v['weight_rms']:.3g}" for v in row.layers.values() if "weight_rms" in v
            )
            activations = " ".join(  # the activations' outputs: not the Dense ones, not dropout's
                f"{v['activation_std']:.3g}"
                for node, v in row.layers.items()
                if row.layer_types[node] in ACTIVATIONS and "activation_std" in v
            )
            table.append([row.label, weights, activations])
        lines.append(
            _table(
                ["configuration", "weight RMS per layer", "activation sd per layer"],
                table,
                markdown,
            )
        )
    for result in reproduce.comparisons(experiment, rows):
        lines.append(
            ("- " if markdown else "  ")
            + f"{result['name_a']} vs {result['name_b']}: {result['sentence']}"
            + (f" (Holm-adjusted p = {result['p_holm']:.3g})" if "p_holm" in result else "")
        )
    return ("\n\n" if markdown else "\n").join(lines)  # Markdown tables need blank lines


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    out = ["  " + "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


__all__ = ["format_experiment", "register", "run_reproduce"]
