"""``mlplab report``: a report folder (Markdown, CSV, PNG) drawn only from a results store.

::

    mlplab report results.db                     # -> results-report/ beside the store
    mlplab report results.db --sweep node_budget --out reports/budget --top 8
    mlplab report sqlite:///results.db --metric val_accuracy
"""

from __future__ import annotations

from pathlib import Path

from mlplab.errors import ConfigError


def register(subparsers) -> None:
    report = subparsers.add_parser(
        "report",
        help="write a report folder of a results store: Markdown, CSV tables, PNG plots",
        description="Read a results store (nothing else: no data, no training) and write a "
        "folder with report.md, configurations.csv, trials.csv, significance.csv and plots: "
        "accuracy against depth and width, the two-layer node-budget landscape, learning "
        "curves, the train/test and first-half/last-half test gaps, time per configuration, "
        "and the significance of the top configurations against each other.",
    )
    report.add_argument("store", help="results store: a path or sqlite:///path.db")
    report.add_argument(
        "--sweep", help="only this sweep's trials ('' for single runs; default: all)"
    )
    report.add_argument(
        "--out", help="report folder (default: <store name>-report/ beside the store)"
    )
    report.add_argument(
        "--metric",
        choices=["test_accuracy", "val_accuracy"],
        help="what configurations are ranked and plotted by (default: the metric the sweep "
        "file names, for a loss the accuracy on the same examples; else test_accuracy)",
    )
    report.add_argument(
        "--top",
        type=int,
        default=5,
        help="how many of the best configurations to test against each other, 2 to 20 (default: 5)",
    )
    report.set_defaults(func=run_report)


def default_out(store: Path) -> Path:
    """``runs/results.db`` -> ``runs/results-report``."""
    return store.with_name(f"{store.stem}-report")


def run_report(args) -> int:
    from mlplab.experiments.store import store_path
    from mlplab.report.experiment_report import MAX_TOP, write_report

    if not 2 <= args.top <= MAX_TOP:
        raise ConfigError(f"--top {args.top}: give 2 to {MAX_TOP} configurations to compare")
    store = store_path(args.store)
    out = Path(args.out) if args.out else default_out(store)
    path = write_report(args.store, out, sweep=args.sweep, metric=args.metric, top=args.top)
    print(f"report: {path}")
    return 0
