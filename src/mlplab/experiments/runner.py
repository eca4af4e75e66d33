"""Running a sweep's trials: local worker processes or a Dask cluster, results into the store.

The parent process owns the store. Workers (local processes or Dask workers) run
:func:`~mlplab.experiments.trial.run_trial` and send back a record; the parent writes each one in
its own transaction the moment it arrives. So a sweep killed at any point (even ``SIGKILL``)
loses only the trials that were running, and running the sweep again skips every trial whose
key the store already holds as done (a failed trial is tried again).

Threads: the cores this process may use are divided between worker processes and the BLAS
threads of each, so that workers x threads never exceeds the cores. Small networks gain most
from many single-threaded workers (the default); large ones from fewer workers with more threads.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from mlplab.errors import ConfigError, MlplabError
from mlplab.experiments.records import TrialRecord
from mlplab.experiments.sweep import Trial, check_data
from mlplab.experiments.trial import MAX_PREPARED_SETTINGS, data_key, run_trial

# How long to keep trying to reach a Dask scheduler before saying it cannot be reached.
DASK_CONNECT_TIMEOUT = "20s"
# A trial's rough cost per epoch of MNIST in batches of 128 on one thread, fitted to the epoch
# times of benchmarks/RESULTS.md (2-core machine): about 0.05 s per step of the network (a layer,
# an activation; Python and small products dominate small networks), 0.1 s for the output, the
# loss and the batches' bookkeeping, and 4 microseconds per weight. Only the order of trials
# uses it, never a result.
STEP_SECONDS, WEIGHT_SECONDS = 0.05, 4e-6
FIXED_STEPS = 3  # the output layer, the loss, the batch's bookkeeping
# How often a local worker checks that the sweep process that started it is still alive.
PARENT_CHECK_SECONDS = 1.0


@dataclass
class SweepOutcome:
    """What one call of :func:`run_sweep` did."""

    records: list[TrialRecord] = field(default_factory=list)  # run now, in order of arrival
    skipped: int = 0  # already done in the store
    workers: int = 0
    threads_per_worker: int = 0

    @property
    def failed(self) -> list[TrialRecord]:
        return [record for record in self.records if record.status != "done"]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_threads(
    workers: int | None, threads_per_worker: int | None, cores: int | None = None
) -> tuple[int, int]:
    """Workers and BLAS threads per worker with ``workers * threads <= cores`` where possible.

    With neither given: one single-threaded worker per core. With one given, the other is what
    is left of the cores (at least 1). With both given, they are used as they are.
    """
    cores = cores or available_cores()
    for name, value in (("workers", workers), ("threads per worker", threads_per_worker)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if workers is None and threads_per_worker is None:
        return cores, 1
    if workers is None:
        return max(1, cores // threads_per_worker), threads_per_worker
    if threads_per_worker is None:
        return workers, max(1, cores // workers)
    return workers, threads_per_worker


def run_sweep(
    trials: Iterable[Trial],
    store,
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    dask_address: str | None = None,
    progress: bool = True,
) -> SweepOutcome:
    """Run every trial that ``store`` does not hold as done, writing each record as it arrives.

    Parameters
    ----------
    trials : iterable of Trial
        From :meth:`mlplab.experiments.sweep.Sweep.trials`.
    store : mlplab.experiments.store.Store
        Open store; only this (the calling) process writes to it.
    workers, threads_per_worker : int, optional
        Local worker processes and the BLAS threads of each (see :func:`plan_threads`). With
        ``dask_address``, ``threads_per_worker`` (default 1) is the threads of each trial and
        ``workers`` is ignored: the cluster has its own.
    dask_address : str, optional
        ``tcp://host:port`` of a Dask scheduler; its workers need mlplab installed and the data
        reachable. Start them with ``--nthreads 1``: a trial sets BLAS threads process-wide.
    progress : bool
        A progress bar on stderr: trials done, running and left, and an ETA.

    Returns
    -------
    SweepOutcome
        The records run now (failed ones included) and how many were skipped.

    Notes
    -----
    Local workers are started with "spawn", which imports the calling script afresh in each
    worker: a script that calls ``run_sweep`` must do so under ``if __name__ == "__main__":``
    (the ``mlplab sweep`` command does).
    """
    trials = list(trials)
    done = {name: store.finished_keys(name) for name in {trial.sweep for trial in trials}}
    pending = [trial for trial in trials if trial.trial_key not in done[trial.sweep]]
    outcome = SweepOutcome(skipped=len(trials) - len(pending))
    if dask_address is not None:
        workers_used, threads = 0, threads_per_worker or 1
        if threads < 1:
            raise ConfigError(f"threads per worker must be a positive integer, got {threads!r}")
    else:
        workers_used, threads = plan_threads(workers, threads_per_worker)
        workers_used = max(1, min(workers_used, len(pending)))
    outcome.workers, outcome.threads_per_worker = workers_used, threads
    if dask_address is None:
        # The data must be there before any worker starts: one clear error, not one per trial.
        # (A Dask cluster's workers read their own copies, which this machine may not have.)
        check_data(pending)
    for name, metric in {trial.sweep: trial.metric for trial in trials}.items():
        if metric is not None:
            store.set_metric(name, metric)  # what `mlplab report` ranks this sweep by
    if not pending:
        return outcome

    bar = tqdm(
        total=len(pending),
        desc=pending[0].sweep or "sweep",
        unit="trial",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )

    def arrived(trial: Trial, record: TrialRecord, running: int) -> None:
        store.add(record)  # one transaction: this trial is safe from here on
        outcome.records.append(record)
        if record.status != "done":
            bar.write(f"failed: {trial.label} (seed {trial.seed}): {record.error}", sys.stderr)
        bar.update(1)
        left = len(pending) - len(outcome.records) - running
        bar.set_postfix_str(
            f"running {running}, left {left}, failed {len(outcome.failed)}", refresh=True
        )

    starting = min(workers_used, len(pending)) if workers_used else 0
    bar.set_postfix_str(f"running {starting}, left {len(pending) - starting}, failed 0")
    jobs = [(trial, _with_threads(trial.config, threads)) for trial in pending]
    try:
        if dask_address is not None:
            _run_dask(jobs, dask_address, arrived)
        else:
            _run_local(jobs, workers_used, arrived)
    finally:
        bar.close()
    return outcome


def _with_threads(config: dict, threads: int) -> dict:
    """The trial's config with its thread count (a setting the trial keys leave out)."""
    return {**config, "training": {**config["training"], "threads": threads}}


def _failed(trial: Trial, config: dict, error: BaseException) -> TrialRecord:
    """The record of a trial whose function raised (a bug, not a user error): noted, not fatal."""
    message = f"{type(error).__name__}: {error}".splitlines()[0]
    return TrialRecord(
        config=config,
        sweep=trial.sweep,
        label=trial.label,
        status="failed",
        error=f"internal error: {message}",
    )


def _pick(queue: list, mine: set, others: set) -> int:
    """Index of the next job for a worker: one whose data it holds, else one whose data no
    worker holds yet, else the first. Splitting and preprocessing MNIST costs about half a trial
    of a small network, so a worker that stays with its data prepares it once, not once per seed.
    """
    for index, (_, _, key) in enumerate(queue):
        if key in mine:
            return index
    for index, (_, _, key) in enumerate(queue):
        if key not in others:
            return index
    return 0


def estimated_cost(config: dict) -> float:
    """A trial's rough training time in seconds, to start long trials first; 0 when unknown.

    Workers run the trials that share prepared data one after another; starting the longest of
    them first leaves short ones for the end, where they even out when the workers finish (the
    order of the longest processing time first). The input is taken as MNIST's 784 pixels.
    """
    from mlplab.engine.architecture import parse_architecture

    model, training = config.get("model", {}), config.get("training", {})
    if model.get("nodes") or not isinstance(model.get("architecture"), str):
        return 0.0  # a graph: no cheap estimate, so it keeps its place
    try:
        steps = parse_architecture(model["architecture"])
    except MlplabError:
        return 0.0
    width, weights = 784, 0
    for name, options in steps:
        if name == "dense":
            weights += (width + 1) * options["units"]
            width = options["units"]
    weights += (width + 1) * 10  # the output layer
    batches = 128 / max(1, training.get("batch_size") or 128)  # per-step costs scale with steps
    per_epoch = STEP_SECONDS * (len(steps) + FIXED_STEPS) * batches + WEIGHT_SECONDS * weights
    return max(1, training.get("epochs") or 1) * per_epoch


def _run_local(jobs, workers: int, arrived: Callable) -> None:
    """Worker processes, started by "spawn": a fresh interpreter holds no copy of the parent's
    threads (BLAS pools, tqdm's monitor), which a fork would duplicate mid-state.

    Each worker is a one-process pool of its own, so that the parent chooses which worker runs
    which trial (see :func:`_pick`), one trial at a time, so "running" on the progress bar is
    exact.
    """
    context = multiprocessing.get_context("spawn")
    # Trials that share data next to each other, the longest of them first (see
    # estimated_cost); the sort is stable, so equal ones keep the sweep's order.
    queue = [(trial, config, data_key(config)) for trial, config in jobs]
    queue.sort(key=lambda job: (job[2], -estimated_cost(job[1])))
    pools = [
        futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )
        for _ in range(workers)
    ]
    held: list[set] = [set() for _ in pools]  # data keys each worker has prepared
    running: dict[futures.Future, tuple] = {}  # future -> (worker, trial, config)
    try:
        while queue or running:
            busy = {worker for worker, _, _ in running.values()}
            for worker in range(workers):
                if worker in busy or not queue:
                    continue
                others = set().union(*(h for w, h in enumerate(held) if w != worker))
                trial, config, key = queue.pop(_pick(queue, held[worker], others))
                if key not in held[worker] and len(held[worker]) >= MAX_PREPARED_SETTINGS:
                    held[worker] = set()  # the worker's cache will be dropped: see run_trial
                held[worker].add(key)
                future = pools[worker].submit(run_trial, config, trial.sweep, trial.label)
                running[future] = (worker, trial, config)
            finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            # Take all finished trials out first, so that "running" counts only the others.
            for future, (_, trial, config) in [(f, running.pop(f)) for f in finished]:
                try:
                    record = future.result()
                except BrokenProcessPool:
                    labels = ", ".join(t.label for _, t, _ in [(0, trial, 0), *running.values()])
                    raise MlplabError(
                        f"a worker process died (killed, out of memory, or a script calling "
                        f"run_sweep without `if __name__ == '__main__':`) while running "
                        f"{labels}; finished trials are in the store: run the sweep again to "
                        "go on, with fewer --workers if memory is short"
                    ) from None
                except Exception as error:  # a bug in one trial: record it, keep going
                    record = _failed(trial, config, error)
                arrived(trial, record, len(running))
    finally:
        # On an error or Ctrl-C, drop what has not started and do not wait for running trials.
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker as soon as the sweep process that started it is gone.

    A sweep stopped by a signal its parent cannot catch (SIGTERM's default, SIGKILL) would
    otherwise leave each worker to finish its trial, minutes or hours of work that nobody can
    store any more, on cores a rerun of the sweep then shares. The worker's parent changes when
    the parent dies (the orphan is adopted), which a daemon thread checks every second.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)  # nothing of the trial's is worth keeping: its result had nowhere to go

    threading.Thread(target=watch, name="mlplab-parent-watch", daemon=True).start()


def _run_dask(jobs, address: str, arrived: Callable) -> None:
    """The same trial function on a Dask cluster; the records come back here to be stored."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ConfigError(
            "--dask needs the 'distributed' package: pip install distributed"
        ) from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address} ({error}); start one with "
            "`dask scheduler` and give its tcp://host:port"
        ) from None
    try:
        submitted = {}
        for trial, config in jobs:
            # pure=False: two trials with equal arguments are still two runs; the key names it.
            future = client.submit(
                run_trial,
                config,
                trial.sweep,
                trial.label,
                pure=False,
                key=f"mlplab-trial-{trial.trial_key}-{os.getpid()}",
                retries=0,
            )
            submitted[future] = (trial, config)
        remaining = len(submitted)
        for future in as_completed(submitted, loop=client.loop):
            trial, config = submitted[future]
            remaining -= 1
            try:
                record = future.result()
            except Exception as error:  # a bug in the trial, or a worker lost for good
                record = _failed(trial, config, error)
            arrived(trial, record, min(remaining, _dask_threads(client)))
    finally:
        client.close()


def _dask_threads(client) -> int:
    """How many trials the cluster runs at once (its worker threads), for the progress bar."""
    try:
        return sum(client.nthreads().values())
    except Exception:  # the scheduler went away: the progress bar is no reason to fail
        return 0


__all__ = ["SweepOutcome", "available_cores", "estimated_cost", "plan_threads", "run_sweep"]
