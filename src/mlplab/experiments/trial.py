"""One trial of a sweep, run wherever a worker is: a local worker process or a Dask worker.

:func:`run_trial` is the function the runner sends to workers. It is a top-level function of
plain data (a config dict and two names), so it pickles across a process boundary
and a network alike, and it returns a :class:`~mlplab.experiments.records.TrialRecord` (its
NumPy predictions pickle fine in transit; the files mlplab writes stay pickle-free). It writes
nothing: the parent process that owns the store writes each record as it arrives.

Each worker process keeps one :class:`~mlplab.training.runs.DataCache` for its lifetime, so a
dataset is read, and each preprocessing fitted, once per worker rather than once per trial.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time

import numpy as np

from mlplab.errors import MlplabError
from mlplab.experiments.records import TrialRecord

# The worker process's data cache, made on its first trial (never on import).
_data_cache = None
_cached_keys: set[str] = set()  # the data settings it holds
# A prepared MNIST (train, validation and test as float32) takes about 220 MB; a worker holds at
# most this many data settings (dataset, preprocessing, split seed) before starting afresh, so
# that a sweep over many crops and seeds cannot fill the memory.
MAX_PREPARED_SETTINGS = 4


def worker_data_cache(key: str | None = None):
    """The data cache of this process, made on first use; dropped when a trial needs a data
    setting beyond :data:`MAX_PREPARED_SETTINGS` (``key`` names the setting)."""
    global _data_cache, _cached_keys
    from mlplab.training.runs import DataCache

    if _data_cache is None:
        _data_cache, _cached_keys = DataCache(), set()
    if key is not None and key not in _cached_keys:
        if len(_cached_keys) >= MAX_PREPARED_SETTINGS:
            _data_cache.clear()
            _cached_keys = set()
        _cached_keys.add(key)
    return _data_cache


def run_trial(config: dict, sweep: str = "", label: str = "") -> TrialRecord:
    """Train and evaluate one resolved config; a user error becomes a failed record.

    Parameters
    ----------
    config : dict
        ``RunConfig.to_dict()`` of a resolved config (a :class:`~mlplab.experiments.sweep.Trial`'s
        ``config``); ``[training] threads`` sets the BLAS threads of this trial.
    sweep, label : str
        Copied into the record.

    Returns
    -------
    TrialRecord
        ``status = "done"`` with metrics, history and test predictions, or ``status = "failed"``
        with the one-line error of a :class:`~mlplab.errors.MlplabError` (a divergence, a
        network too large for memory, a missing dataset). Bugs are not caught: they reach the
        runner as exceptions with their traceback.
    """
    from mlplab.training.config import RunConfig
    from mlplab.training.runs import prepare_run, run_threads, train_run
    from mlplab.training.threads import thread_limit

    started_at = time.time()
    started = time.perf_counter()
    record = TrialRecord(
        config=config,
        sweep=sweep,
        label=label,
        machine=_machine(),
        versions=_versions(),
    )
    try:
        run_config = RunConfig.from_dict(config, f"trial {label or '(unnamed)'}")
        record.seeds = run_config.resolved_seeds()
        # The whole trial, test-set evaluation included, keeps to its threads, so that workers
        # side by side do not oversubscribe the cores; the training's may be fewer than asked
        # by default (a small network), which is known once the network is built.
        with thread_limit(run_config.training.threads or None):
            cache = worker_data_cache(data_key(config))
            prepared = prepare_run(run_config, data_cache=cache, progress=False)
        with thread_limit(run_threads(prepared)):
            result = train_run(prepared, None, progress=False)
    except MlplabError as error:
        record.status = "failed"
        record.error = str(error).splitlines()[0] if str(error) else type(error).__name__
        record.timings = _timings(started_at, started, None)
        return record
    fill_record(record, result, prepared)
    record.timings = _timings(started_at, started, result.seconds)
    return record


def data_key(config: dict) -> str:
    """What a worker's data cache keys on: every data setting but the folder, and the split
    seed (runs that share these share their prepared arrays)."""
    from mlplab.training.config import RunConfig

    data = {key: value for key, value in config["data"].items() if key != "data_dir"}
    split_seed = RunConfig.from_dict(config).resolved_seeds()["split"]
    return json.dumps([data, split_seed], sort_keys=True)


def fill_record(record: TrialRecord, result, prepared) -> TrialRecord:
    """Put a finished run's results (a :class:`~mlplab.training.runs.RunResult` of the prepared
    run) into ``record``: seeds, metrics, history, test predictions and labels."""
    from mlplab.experiments.store import labels_sha256

    record.seeds = dict(result.seeds)
    record.metrics = _metrics(result)
    if result.layer_stats:  # [training] layer_stats: keep the last measurement, per layer
        record.metrics["layers"] = result.layer_stats["epochs"][-1]
        # The network's order (the store sorts the keys of "layers"), with each node's type.
        types = result.layer_stats["types"]
        record.metrics["layer_order"] = [
            [node, types[node]] for node in result.layer_stats["nodes"]
        ]
    record.history = {key: list(values) for key, values in result.history.columns.items()}
    record.predictions = np.asarray(result.test_predictions, dtype=np.uint8)
    record.labels_sha256 = labels_sha256(prepared.y_test)
    record.labels = np.asarray(prepared.y_test, dtype=np.uint8)
    return record


def run_record(config: dict, result, prepared, label: str = "") -> TrialRecord:
    """The record of a single ``mlplab train --store`` run (its sweep is ``""``)."""
    record = TrialRecord(
        config=config, sweep="", label=label, machine=_machine(), versions=_versions()
    )
    fill_record(record, result, prepared)
    record.timings = {"train_seconds": result.seconds, "finished_at": time.time()}
    return record


def _metrics(result) -> dict:
    """The record's metrics: test figures, and those of the epoch whose weights were kept."""
    evaluation, history = result.evaluation, result.history
    metrics = {
        "test_accuracy": evaluation["accuracy"],
        "test_first_half": evaluation["first_half"]["accuracy"],
        "test_last_half": evaluation["last_half"]["accuracy"],
        "test_loss": evaluation["loss"],
        "epochs_run": len(history),
        "best_epoch": history.best_epoch,
    }
    kept = (history.best_epoch or len(history)) - 1
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        column = history.columns.get(name)
        if column and kept < len(column) and column[kept] is not None:
            metrics[name] = column[kept]
    return metrics


def _timings(started_at: float, started: float, train_seconds: float | None) -> dict:
    timings = {
        "total_seconds": time.perf_counter() - started,
        "started_at": started_at,
        "finished_at": time.time(),
        "pid": os.getpid(),
    }
    if train_seconds is not None:
        timings["train_seconds"] = train_seconds
    return timings


def _machine() -> dict:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "cpus": _cpus()}


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _versions() -> dict:
    from mlplab import __version__

    return {"mlplab": __version__, "numpy": np.__version__, "python": sys.version.split()[0]}


__all__ = [
    "MAX_PREPARED_SETTINGS",
    "data_key",
    "fill_record",
    "run_record",
    "run_trial",
    "worker_data_cache",
]
