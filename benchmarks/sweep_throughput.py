"""Sweep throughput: the sweep runner against the same trials run one after another, in one run.

The trials: ``[32]*k`` sigmoid networks for k = 1..4, 3 seeds, 5 epochs, SGD (learning rate
0.01, constant), batch 128, on full MNIST (55,000 training images, 5,000 held out): 12 trials.
Two ways to run them:

* one after another: :func:`mlplab.experiments.trial.run_trial` in a loop in this process, with
  2 BLAS threads and one data cache (MNIST read and preprocessed once per seed: the best a
  hand-written loop can do);
* the sweep: :func:`mlplab.experiments.runner.run_sweep` with its default plan (one
  single-threaded worker process per core), into a fresh store, start-up of the workers and
  their data loading included.

Both run as ``mlplab sweep`` runs: with the process settings of the command's entry point
(``mlplab.cli.PROCESS_ENVIRONMENT``: no huge pages; the workers inherit
them), and workers that import only what the trials need (this script keeps its top level small,
since "spawn" re-runs it in every worker).

The target is a ratio (sweep / one after another) of at most 0.6. Small networks spend most of
their time in Python and small GEMMs that a second BLAS thread barely speeds up, while a second
worker process runs a second trial at full speed. The benchmark also reports whether both ways
computed identical results (they may differ in the last bits where 1 and 2 BLAS threads sum in
different orders; the tests compare equal thread counts).

Run::

    MLPLAB_DATA=../shared/data python benchmarks/sweep_throughput.py --repeats 3
    python benchmarks/sweep_throughput.py --epochs 1 --depths 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# Time the sweep as `mlplab sweep` runs it: with the process settings of the command's entry
# point (no huge pages), made before NumPy loads (see
# mlplab.cli.PROCESS_ENVIRONMENT; mlplab.cli does not load NumPy); the workers inherit them. A
# value set in the environment wins.
from mlplab.cli import PROCESS_ENVIRONMENT

os.environ.update({**PROCESS_ENVIRONMENT, **os.environ})  # a value the user set wins

import numpy as np  # after the settings are made

# Nothing else at the top: "spawn" runs this script again in every worker (as __mp_main__), and
# the workers of `mlplab sweep` import only its small entry script, not the runner, the store and
# tqdm. The modules the measurement needs are imported in main().


def sweep_spec(args) -> dict:
    return {
        "name": "throughput",
        "seeds": args.seeds,
        "base": {
            "data": {"dataset": args.dataset, "validation": 5000},
            "optimizer": {"name": "sgd", "learning_rate": 0.01},
            "schedule": {"name": "constant"},
            "training": {"epochs": args.epochs, "batch_size": 128},
        },
        "parameters": {
            "model.architecture": {
                "generator": "depth-width",
                "depths": list(range(1, args.depths + 1)),
                "widths": [32],
                "activation": "sigmoid",
            }
        },
    }


def main() -> int:
    from mlplab.experiments import trial as trial_module
    from mlplab.experiments.runner import available_cores, run_sweep
    from mlplab.experiments.store import Store
    from mlplab.experiments.sweep import parse_sweep
    from mlplab.experiments.trial import run_trial

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--depths", type=int, default=4, help="k = 1..DEPTHS")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--serial-threads", type=int, default=2, help="BLAS threads, one by one")
    parser.add_argument("--workers", type=int, default=None, help="sweep workers (default: plan)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating repeats (median)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    trials = parse_sweep(sweep_spec(args)).trials()
    print(
        f"{len(trials)} trials ({args.depths} depths x {args.seeds} seeds, {args.epochs} epochs) "
        f"on {args.dataset}; {available_cores()} cores; {platform.processor() or platform.machine()}",
        flush=True,
    )

    # Alternate the two ways, so that both see the same drift in the machine's load, and report
    # the median of each. Every repeat starts cold: fresh worker processes, and a fresh data
    # cache for the serial loop.
    sweep_times, serial_times, loads = [], [], []
    for repeat in range(args.repeats):
        loads.append(os.getloadavg()[0])  # the machine's load as each repeat starts
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            with Store(Path(folder) / "throughput.db") as store:
                outcome = run_sweep(trials, store, workers=args.workers, progress=False)
            sweep_times.append(time.perf_counter() - started)
        print(
            f"[{repeat + 1}/{args.repeats}] sweep: {sweep_times[-1]:.1f} s ({outcome.workers} "
            f"workers x {outcome.threads_per_worker} thread(s))",
            flush=True,
        )
        trial_module._data_cache = None  # the serial loop loads the data afresh too
        started = time.perf_counter()
        serial = []
        for trial in trials:
            config = {
                **trial.config,
                "training": {**trial.config["training"], "threads": args.serial_threads},
            }
            serial.append(run_trial(config, trial.sweep, trial.label))
        serial_times.append(time.perf_counter() - started)
        print(
            f"[{repeat + 1}/{args.repeats}] one after another: {serial_times[-1]:.1f} s "
            f"({args.serial_threads} BLAS threads)",
            flush=True,
        )
    sweep_seconds, serial_seconds = float(np.median(sweep_times)), float(np.median(serial_times))
    ratio = sweep_seconds / serial_seconds
    by_key = {record.trial_key: record for record in outcome.records}
    identical = all(
        record.status == by_key[record.trial_key].status == "done"
        and record.metrics == by_key[record.trial_key].metrics
        and np.array_equal(record.predictions, by_key[record.trial_key].predictions)
        for record in serial
    )
    accuracies = {
        record.label: round(float(np.mean([r.metrics["test_accuracy"] for r in serial
                                            if r.label == record.label])), 4)
        for record in serial
    }  # fmt: skip
    print(
        f"median sweep {sweep_seconds:.1f} s, one after another {serial_seconds:.1f} s; "
        f"ratio {ratio:.2f} (target <= 0.6); load average {os.getloadavg()[0]:.1f}"
    )
    print(f"identical results both ways: {identical}")
    print(f"mean test accuracy over seeds: {json.dumps(accuracies)}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "trials": len(trials),
                    "cores": available_cores(),
                    "sweep_seconds": sweep_times,
                    "serial_seconds": serial_times,
                    "ratio": ratio,
                    "workers": outcome.workers,
                    "threads_per_worker": outcome.threads_per_worker,
                    "serial_threads": args.serial_threads,
                    "identical": identical,
                    "load_average": os.getloadavg(),
                    "load_average_at_each_repeat": loads,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
