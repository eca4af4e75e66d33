"""``mlplab sweep``: run a sweep file's trials into a results store.

::

    mlplab sweep examples/sweeps/sigmoid_depth.toml              # store: sigmoid_depth.db beside it
    mlplab sweep FILE --dry-run                                  # list the trials, run nothing
    mlplab sweep FILE --store sqlite:///results.db --workers 2 --threads-per-worker 1
    mlplab sweep FILE --dask tcp://scheduler:8786                # run on a Dask cluster

Running a sweep again skips every trial the store holds as done, so an interrupted or killed
sweep continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from mlplab.errors import ConfigError


def register(subparsers) -> None:
    sweep = subparsers.add_parser(
        "sweep",
        help="run a sweep file: many configurations and seeds, results into a store",
        description="Expand a sweep file into trials (configurations x seeds), check them all, "
        "and run those the store does not hold yet, in parallel worker processes or on a Dask "
        "cluster. Each finished trial is stored at once; re-running skips finished trials.",
    )
    sweep.add_argument("file", help="the sweep file (TOML); see examples/sweeps/")
    sweep.add_argument(
        "--store",
        metavar="PATH",
        help="results store: a path or sqlite:///path.db (default: <sweep file>.db beside it)",
    )
    sweep.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local worker processes (default: the cores left after --threads-per-worker)",
    )
    sweep.add_argument(
        "--threads-per-worker",
        type=int,
        metavar="N",
        help="BLAS threads of each worker (default: cores / workers, or 1)",
    )
    sweep.add_argument("--dask", metavar="tcp://HOST:PORT", help="run on this Dask scheduler")
    sweep.add_argument(
        "--dry-run", action="store_true", help="list the trials and whether each is done; run none"
    )
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(func=run_sweep_command)


def default_store(sweep_file: Path) -> Path:
    """``results/x.toml`` -> ``results/x.db``."""
    return sweep_file.with_suffix(".db")


def run_sweep_command(args) -> int:
    from mlplab.experiments.runner import plan_threads, run_sweep
    from mlplab.experiments.store import Store, store_path
    from mlplab.experiments.sweep import check_data, load_sweep

    sweep_file = Path(args.file)
    if args.dask is not None and not args.dask.startswith(("tcp://", "tls://", "ucx://")):
        raise ConfigError(f"--dask {args.dask}: give the scheduler's address, tcp://HOST:PORT")
    if args.dask is not None and args.workers is not None:
        raise ConfigError("--workers is for local runs; a Dask cluster has its own workers")
    sweep = load_sweep(sweep_file)
    trials = sweep.trials()  # every trial resolved and checked before anything runs
    store_name = args.store or default_store(sweep_file)
    if args.dry_run:
        return _dry_run(sweep, trials, store_name)
    store_path(store_name)  # a bad --store name fails before anything is checked or made
    if args.dask is None:
        # Check the numbers and the data now, so that a bad --workers or a missing dataset fails
        # before the store is made or any worker starts. (A Dask cluster's workers read their
        # own copies of the data, which this machine need not have.)
        plan_threads(args.workers, args.threads_per_worker)
        check_data(trials, str(sweep_file))
    with Store(store_name) as store:
        outcome = run_sweep(
            trials,
            store,
            workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            dask_address=args.dask,
            progress=not args.quiet,
        )
    failed = outcome.failed
    where = args.dask or f"{outcome.workers} worker(s) x {outcome.threads_per_worker} thread(s)"
    print(
        f"{sweep.name}: {len(trials)} trials, {outcome.skipped} already done, "
        f"{len(outcome.records) - len(failed)} run now"
        + (f" ({where})" if outcome.records else "")
        + (f", {len(failed)} failed" if failed else "")
        + f"; store: {store.path}"
    )
    return 0  # a failed trial (say, a divergence) is a result of the sweep, not an error of it


def _dry_run(sweep, trials, store_name) -> int:
    from mlplab.experiments.store import Store, store_path

    done: set[str] = set()
    if store_path(store_name).exists():
        with Store(store_name, create=False) as store:
            done = store.finished_keys(sweep.name)
    width = max(len(trial.label) for trial in trials)
    for trial in trials:
        state = "done" if trial.trial_key in done else "to run"
        print(f"{trial.trial_key}  {trial.label:<{width}}  seed {trial.seed:<4} {state}")
    left = sum(trial.trial_key not in done for trial in trials)
    print(
        f"{sweep.name}: {len(trials)} trials ({len(trials) - left} done, {left} to run), "
        f"method {sweep.method}, metric {sweep.metric['name']} ({sweep.metric['goal']})"
    )
    return 0
