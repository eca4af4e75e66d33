"""The local sweep runner: worker processes, the store written as trials finish, re-runs that
skip finished trials, kills that lose only running trials, and results independent of workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mlplab.errors import ConfigError, DataError
from mlplab.experiments import runner as runner_module
from mlplab.experiments import trial as trial_module
from mlplab.experiments.runner import _pick, estimated_cost, plan_threads, run_sweep
from mlplab.experiments.store import Store
from mlplab.experiments.sweep import load_sweep
from mlplab.experiments.trial import data_key
from mlplab.training.config import RunConfig

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"

# 2 architectures x 2 learning rates x 2 seeds = 8 tiny trials on the 2,000-image fixture; the
# learning rate of 1e30 diverges, so half the trials fail, as a sweep's trials sometimes do.
TINY = f"""
    name = "tiny"
    metric = {{ name = "val_loss", goal = "minimize" }}
    seeds = 2
    [base]
    data = {{ dataset = "{MNIST_SMALL}", validation = 200 }}
    optimizer = {{ name = "sgd" }}
    schedule = {{ name = "constant" }}
    training = {{ epochs = 1, batch_size = 32 }}
    [parameters."model.architecture"]
    values = ["16:relu", "8:relu,8:relu"]
    [parameters."optimizer.learning_rate"]
    values = [0.1, 1e30]
"""


def write_sweep(folder: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def by_key(records) -> dict:
    return {record.trial_key: record for record in records}


def assert_same_results(a, b) -> None:
    """Two runs of the same trials computed the same thing (timings and machine aside)."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].status == b[key].status, a[key].label
        assert a[key].error == b[key].error
        assert a[key].metrics == b[key].metrics, a[key].label
        # Every history column but the wall-clock seconds of each epoch.
        assert a[key].history.keys() == b[key].history.keys()
        for column in a[key].history.keys() - {"seconds"}:
            assert a[key].history[column] == b[key].history[column], column
        assert a[key].seeds == b[key].seeds
        if a[key].status == "done":
            np.testing.assert_array_equal(a[key].predictions, b[key].predictions)


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv("MLPLAB_DATA", raising=False)


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    """The tiny sweep run once with 2 worker processes: (trials, store path, outcome)."""
    folder = tmp_path_factory.mktemp("sweep")
    trials = load_sweep(write_sweep(folder)).trials()
    with Store(folder / "tiny.db") as store:
        outcome = run_sweep(trials, store, workers=2, threads_per_worker=1, progress=False)
    return trials, folder / "tiny.db", outcome


def test_two_workers_store_one_row_per_trial_and_failed_trials_with_their_error(two_worker_run):
    trials, path, outcome = two_worker_run
    assert len(trials) == 8 and len(outcome.records) == 8 and outcome.skipped == 0
    assert (outcome.workers, outcome.threads_per_worker) == (2, 1)
    with Store(path, create=False) as store:
        done = store.trials("tiny")
        failed = store.trials("tiny", status="failed")
    assert len(done) == 4 and len(failed) == 4
    assert {r.trial_key for r in done + failed} == {t.trial_key for t in trials}
    for record in failed:  # lr = 1e30 diverges; the sweep went on
        assert record.config["optimizer"]["learning_rate"] == 1e30
        assert record.error.startswith("training diverged") and "\n" not in record.error
    for record in done:
        assert record.metrics["test_accuracy"] > 0.3
        assert {"val_accuracy", "test_first_half", "test_last_half", "test_loss"} <= set(
            record.metrics
        )
        assert record.predictions.dtype == np.uint8 and len(record.predictions) == 500
        assert record.labels_sha256 and record.history["epoch"] == [1]
        assert record.config["training"]["threads"] == 1


def test_the_sweeps_metric_is_stored_for_reports_to_rank_by(two_worker_run):
    _, path, _ = two_worker_run
    with Store(path, create=False) as store:
        assert store.metrics() == {"tiny": {"name": "val_loss", "goal": "minimize"}}


def test_a_missing_dataset_stops_the_sweep_before_any_worker_or_trial(tmp_path, monkeypatch):
    missing = tmp_path / "gone"
    trials = load_sweep(write_sweep(tmp_path, TINY.replace(str(MNIST_SMALL), str(missing))))
    started = []
    monkeypatch.setattr(runner_module, "_run_local", lambda *args: started.append(args))
    with Store(tmp_path / "tiny.db") as store:
        with pytest.raises(DataError, match=f"^tiny: {missing}: no such folder"):
            run_sweep(trials.trials(), store, workers=2, progress=False)
        assert started == [] and store.trials(status=None) == [] and store.metrics() == {}


def test_estimated_cost_grows_with_depth_width_epochs_and_smaller_batches():
    def cost(architecture="32:sigmoid", epochs=5, batch_size=128):
        config = RunConfig().to_dict()
        config["model"]["architecture"] = architecture
        config["training"].update(epochs=epochs, batch_size=batch_size)
        return estimated_cost(config)

    assert cost() < cost("2x32:sigmoid") < cost("4x32:sigmoid") < cost("1000:relu")
    assert cost(epochs=10) == pytest.approx(2 * cost()) and cost(batch_size=32) > cost()
    graph = RunConfig().to_dict()
    graph["model"]["nodes"] = [{"name": "h", "type": "dense", "units": 8, "inputs": ["input"]}]
    assert estimated_cost(graph) == 0.0  # no estimate: it keeps its place in the sweep


def test_each_worker_starts_the_longest_trials_of_its_data_first(two_worker_run):
    _, _, outcome = two_worker_run
    by_worker: dict[int, list] = {}
    for record in sorted(outcome.records, key=lambda r: r.timings["started_at"]):
        by_worker.setdefault(record.timings["pid"], []).append(record)
    for records in by_worker.values():
        for before, after in zip(records, records[1:]):
            if data_key(before.config) == data_key(after.config):
                assert estimated_cost(before.config) >= estimated_cost(after.config)


def test_workers_are_reused_across_trials(two_worker_run):
    # Each worker keeps its data cache for its lifetime: 8 trials ran in at most 2 processes.
    _, _, outcome = two_worker_run
    pids = {record.timings["pid"] for record in outcome.records}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids


def test_rerun_skips_every_finished_trial_and_retries_failed_ones(two_worker_run):
    trials, path, _ = two_worker_run
    done_trials = [t for t in trials if t.config["optimizer"]["learning_rate"] == 0.1]
    with Store(path) as store:
        again = run_sweep(done_trials, store, workers=2, progress=False)
        assert again.records == [] and again.skipped == 4
        retried = run_sweep(trials, store, workers=2, progress=False)
    assert retried.skipped == 4 and len(retried.records) == 4
    assert all(record.status == "failed" for record in retried.records)


def test_one_worker_and_two_workers_compute_identical_results(two_worker_run, tmp_path):
    trials, _, outcome = two_worker_run
    with Store(tmp_path / "one.db") as store:
        serial = run_sweep(trials, store, workers=1, threads_per_worker=1, progress=False)
    assert_same_results(by_key(serial.records), by_key(outcome.records))


def test_plan_threads_never_oversubscribes_the_cores():
    assert plan_threads(None, None, cores=8) == (8, 1)
    assert plan_threads(2, None, cores=8) == (2, 4)
    assert plan_threads(None, 2, cores=8) == (4, 2)
    assert plan_threads(3, None, cores=2) == (3, 1)
    assert plan_threads(None, 4, cores=2) == (1, 4)
    assert plan_threads(2, 3, cores=2) == (2, 3)  # both given: as asked
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        plan_threads(0, None)


def test_cli_sweep_writes_the_default_store_beside_the_sweep_file(tmp_path):
    path = write_sweep(
        tmp_path,
        TINY.replace("values = [0.1, 1e30]", "values = [0.1]").replace("seeds = 2", "seeds = 1"),
    )
    command = [sys.executable, "-m", "mlplab", "sweep", str(path), "--workers", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "tiny: 2 trials, 0 already done, 2 run now (2 worker(s) x 1 thread(s))" in result.stdout
    assert "running" in result.stderr and "left" in result.stderr  # the progress bar
    with Store(tmp_path / "tiny.db", create=False) as store:
        assert len(store.trials("tiny")) == 2
    again = subprocess.run([*command, "--quiet"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stderr == ""
    assert "tiny: 2 trials, 2 already done, 0 run now" in again.stdout


def test_a_killed_sweep_loses_only_running_trials_and_a_rerun_completes_it(tmp_path):
    # 6 trials of a few epochs, one worker, so they finish one after another.
    text = (
        TINY.replace("values = [0.1, 1e30]", "values = [0.1]")
        .replace("seeds = 2", "seeds = 3")
        .replace("epochs = 1", "epochs = 3")
    )
    path = write_sweep(tmp_path, text)
    store_path = tmp_path / "tiny.db"
    trials = load_sweep(path).trials()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlplab", "sweep", str(path), "--workers", "1", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes its worker too
    )
    try:
        deadline = time.monotonic() + 240
        before: dict = {}
        while time.monotonic() < deadline and process.poll() is None:
            if store_path.exists():
                with Store(store_path, create=False) as store:
                    before = by_key(store.trials("tiny"))
                if before:
                    break
            time.sleep(0.05)
        assert before, f"no trial was stored: {process.stderr.read() if process.poll() else ''}"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    with Store(store_path, create=False) as store:
        killed = by_key(store.trials("tiny"))
    assert 1 <= len(killed) < len(trials), "the kill came after the sweep finished"
    with Store(store_path) as store:
        rerun = run_sweep(trials, store, workers=1, progress=False)
        final = by_key(store.trials("tiny"))
    # No finished trial was trained again: the re-run ran exactly the others...
    assert rerun.skipped == len(killed)
    assert set(by_key(rerun.records)).isdisjoint(killed)
    assert len(rerun.records) == len(trials) - len(killed)
    # ...the rows written before the kill are untouched, and the store is complete.
    assert set(final) == {t.trial_key for t in trials}
    for key, record in killed.items():
        assert final[key].timings == record.timings
    assert all(record.status == "done" for record in final.values())


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: read from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone since the listing
            # "pid (name) state ppid ...": the name may hold spaces, so split after its ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status waits to be collected


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_workers_of_a_sweep_killed_by_a_signal_stop_instead_of_finishing_their_trial(tmp_path):
    # One trial long enough (hundreds of epochs) to be still running when the sweep dies.
    text = (
        TINY.replace("values = [0.1, 1e30]", "values = [0.1]")
        .replace('values = ["16:relu", "8:relu,8:relu"]', 'values = ["16:relu"]')
        .replace("seeds = 2", "seeds = 1")
        .replace("epochs = 1", "epochs = 2000")
    )
    path = write_sweep(tmp_path, text)
    # Not in a session of its own and killed alone: SIGKILL reaches the sweep, not its worker.
    process = subprocess.Popen(
        [sys.executable, "-m", "mlplab", "sweep", str(path), "--workers", "1", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        # The pool's worker is the child that is not multiprocessing's resource tracker; it
        # exists once the first trial was submitted.
        while time.monotonic() < deadline and len(workers) < 2:
            workers = [pid for pid in _children(process.pid) if _alive(pid)]
            time.sleep(0.1)
        assert len(workers) == 2, f"expected a worker and a resource tracker, got {workers}"
        time.sleep(1.0)  # the worker is in its trial now
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "a worker outlived its sweep"
    finally:
        for pid in [process.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_free_worker_takes_a_trial_whose_data_it_holds_else_data_nobody_holds():
    queue = [("t1", {}, "seed0"), ("t2", {}, "seed1"), ("t3", {}, "seed2"), ("t4", {}, "seed1")]
    assert _pick(queue, mine={"seed1"}, others={"seed0"}) == 1
    assert _pick(queue, mine=set(), others={"seed0", "seed1"}) == 2
    assert _pick(queue, mine={"seed9"}, others={"seed0", "seed1", "seed2"}) == 0


def test_trials_share_prepared_data_only_when_data_settings_and_split_seed_agree(two_worker_run):
    trials, _, _ = two_worker_run
    keys = {(t.seed, t.config["model"]["architecture"]): data_key(t.config) for t in trials}
    assert keys[(0, "16:relu")] == keys[(0, "8:relu,8:relu")] != keys[(1, "16:relu")]
    config = trials[0].config
    moved = {**config, "data": {**config["data"], "data_dir": "/elsewhere"}}
    assert data_key(moved) == data_key(config)
    cropped = {**config, "data": {**config["data"], "crop_border": 2}}
    assert data_key(cropped) != data_key(config)


def test_a_worker_holds_at_most_max_prepared_settings(monkeypatch):
    monkeypatch.setattr(trial_module, "_data_cache", None)
    monkeypatch.setattr(trial_module, "_cached_keys", set())
    cache = trial_module.worker_data_cache("a")
    cleared = []
    monkeypatch.setattr(cache, "clear", lambda: cleared.append(True))
    for key in ["b", "c", "d", "a", "b"]:  # four settings fit
        assert trial_module.worker_data_cache(key) is cache
    assert cleared == []
    trial_module.worker_data_cache("e")  # a fifth drops the cache and starts afresh
    assert cleared == [True] and trial_module._cached_keys == {"e"}
