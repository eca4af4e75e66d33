"""The SQLite results store: round trips, idempotence, bad files, SIGKILL and concurrent writers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mlplab.errors import ConfigError, DataError
from mlplab.experiments.records import TrialRecord
from mlplab.experiments.store import Store, labels_sha256, store_path

N_TEST = 300
LABELS = np.random.default_rng(0).integers(0, 10, N_TEST).astype(np.uint8)


def make_record(seed: int, learning_rate: float = 0.001, sweep: str = "s", **changes):
    """A synthetic finished trial: random predictions that are right about 90% of the time."""
    rng = np.random.default_rng(seed + int(learning_rate * 1e6))
    predictions = np.where(rng.random(N_TEST) < 0.9, LABELS, rng.integers(0, 10, N_TEST))
    config = {
        "model": {"architecture": "100:relu"},
        "optimizer": {"name": "adam", "learning_rate": learning_rate},
        "training": {"seed": seed, "epochs": 3, "threads": 1},
    }
    record = TrialRecord(
        config=config,
        sweep=sweep,
        label=f"100:relu lr={learning_rate}",
        seeds={"seed": seed, "init": seed * 7 + 1},
        metrics={
            "test_accuracy": float(np.mean(predictions == LABELS)),
            "test_first_half": 0.9,
            "test_last_half": 0.8,
            "val_accuracy": 0.85,
            "epochs_run": 3,
        },
        history={"epoch": [1, 2, 3], "train_loss": [0.5, 0.3, 0.2]},
        timings={"train_seconds": 1.5},
        machine={"hostname": "test"},
        versions={"mlplab": "0.1.0"},
        predictions=predictions.astype(np.uint8),
        labels=LABELS,
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def assert_same_trial(back: TrialRecord, record: TrialRecord) -> None:
    for name in ("config", "sweep", "label", "status", "error", "seeds", "metrics", "history"):
        assert getattr(back, name) == getattr(record, name), name
    for name in ("timings", "machine", "versions"):
        assert getattr(back, name) == getattr(record, name), name
    assert back.predictions.dtype == np.uint8
    np.testing.assert_array_equal(back.predictions, record.predictions)
    np.testing.assert_array_equal(back.labels, LABELS)
    assert back.labels_sha256 == labels_sha256(LABELS)


def test_a_trial_comes_back_exactly_as_it_was_added(tmp_path):
    record = make_record(3)
    with Store(tmp_path / "results.db") as store:
        store.add(record)
        (back,) = store.trials()
    assert_same_trial(back, record)
    assert back.trial_key == record.trial_key and back.config_hash == record.config_hash


def test_test_labels_are_kept_once_per_test_set(tmp_path):
    with Store(tmp_path / "results.db") as store:
        for seed in range(3):
            store.add(make_record(seed))
        np.testing.assert_array_equal(store.test_labels(labels_sha256(LABELS)), LABELS)
        assert store.test_labels("0" * 64) is None
    with sqlite3.connect(tmp_path / "results.db") as connection:
        assert connection.execute("SELECT count(*) FROM test_sets").fetchone() == (1,)
    connection.close()


def test_predictions_are_stored_one_byte_per_image(tmp_path):
    with Store(tmp_path / "results.db") as store:
        store.add(make_record(0))
    with sqlite3.connect(tmp_path / "results.db") as connection:
        (size,) = connection.execute("SELECT length(predictions) FROM trials").fetchone()
    connection.close()
    assert size == N_TEST


def test_re_adding_a_finished_trial_changes_nothing(tmp_path):
    record = make_record(1)
    with Store(tmp_path / "results.db") as store:
        store.add(record)
        changed = make_record(1, metrics={"test_accuracy": 0.0})
        store.add(changed)
        store.add(record)
        trials = store.trials()
    assert len(trials) == 1
    assert trials[0].metrics == record.metrics


def test_a_finished_trial_replaces_a_failed_attempt_but_never_the_reverse(tmp_path):
    failed = make_record(2, status="failed", error="diverged", metrics={}, predictions=None)
    done = make_record(2)
    with Store(tmp_path / "results.db") as store:
        store.add(failed)
        assert store.finished_keys("s") == set()
        assert not store.has(done.trial_key)
        assert [r.error for r in store.trials(status="failed")] == ["diverged"]
        store.add(done)
        assert store.finished_keys("s") == {done.trial_key}
        store.add(failed)
        (back,) = store.trials(status=None)
    assert back.status == "done" and back.metrics == done.metrics


def test_finished_keys_and_has_can_be_limited_to_one_sweep(tmp_path):
    with Store(tmp_path / "results.db") as store:
        store.add(make_record(0, sweep="a"))
        store.add(make_record(1, sweep="b"))
        key_a, key_b = make_record(0).trial_key, make_record(1).trial_key
        assert store.finished_keys() == {key_a, key_b}
        assert store.finished_keys("a") == {key_a}
        assert store.has(key_a) and store.has(key_a, sweep="a")
        assert not store.has(key_a, sweep="b")
        assert store.sweeps() == ["a", "b"]


def test_configurations_group_the_seeds_of_one_config(tmp_path):
    with Store(tmp_path / "results.db") as store:
        for seed in range(3):
            store.add(make_record(seed, 0.001))
            store.add(make_record(seed, 0.01))
        configurations = store.configurations("s")
    assert [c.label for c in configurations] == ["100:relu lr=0.001", "100:relu lr=0.01"]
    first = configurations[0]
    assert first.seeds == [0, 1, 2]
    assert len({r.config_hash for r in first.records}) == 1
    assert set(first.metric("test_accuracy")) == {0, 1, 2}


def test_a_trial_stored_by_two_sweeps_counts_once_over_all_sweeps(tmp_path):
    with Store(tmp_path / "results.db") as store:
        store.add(make_record(0, sweep="a"))
        store.add(make_record(0, sweep="b"))
        assert len(store.trials()) == 2
        (configuration,) = store.configurations()
        assert configuration.seeds == [0]


def test_where_matches_config_keys_given_as_text(tmp_path):
    with Store(tmp_path / "results.db") as store:
        for learning_rate in (0.001, 0.01):
            store.add(make_record(0, learning_rate))
        assert len(store.trials(where={"optimizer.learning_rate": "0.01"})) == 1
        assert len(store.trials(where={"optimizer.learning_rate": 0.001})) == 1
        assert len(store.trials(where={"optimizer.learning_rate": "1e-3"})) == 1
        assert len(store.trials(where={"seed": "0", "label": "100:relu lr=0.01"})) == 1
        assert store.trials(where={"optimizer.name": "sgd"}) == []
        with pytest.raises(ConfigError, match="unknown key 'optimizer.nope'"):
            store.trials(where={"optimizer.nope": 1})


def test_nan_metrics_are_stored_as_null(tmp_path):
    metrics = {"test_loss": float("nan"), "x": np.float32(0.5), "y": np.float32("inf")}
    history = {"val_loss": np.array([0.5, np.nan]), "train_loss": [np.float64("nan")]}
    with Store(tmp_path / "results.db") as store:
        store.add(make_record(0, metrics=metrics, history=history))
        (back,) = store.trials()
    assert back.metrics == {"test_loss": None, "x": 0.5, "y": None}
    assert back.history == {"val_loss": [0.5, None], "train_loss": [None]}


@pytest.mark.parametrize(
    "predictions", [np.array([1, 300]), np.array([[1, 2]]), np.array([0.5, 1.0])]
)
def test_predictions_that_are_not_bytes_are_refused(tmp_path, predictions):
    with Store(tmp_path / "results.db") as store, pytest.raises(ValueError, match="predictions"):
        store.add(make_record(0, predictions=predictions, labels=None))


def test_labels_that_contradict_their_digest_are_refused(tmp_path):
    record = make_record(0, labels_sha256="0" * 64)
    with Store(tmp_path / "results.db") as store, pytest.raises(ValueError, match="labels"):
        store.add(record)


def test_store_urls_are_read_the_way_sqlalchemy_reads_them(tmp_path):
    assert str(store_path("sqlite:///results.db")) == "results.db"
    assert str(store_path("sqlite:////tmp/x/results.db")) == "/tmp/x/results.db"
    assert str(store_path(tmp_path / "a.db")) == str(tmp_path / "a.db")
    with Store(f"sqlite:///{tmp_path}/url.db") as store:
        store.add(make_record(0))
    assert (tmp_path / "url.db").is_file()


@pytest.mark.parametrize(
    "url", ["postgresql://host/db", "sqlite://", "sqlite:///", "", "sqlite:///:memory:"]
)
def test_unusable_store_addresses_are_refused_in_one_line(url):
    with pytest.raises(ConfigError) as error:
        Store(url)
    assert "\n" not in str(error.value)


def test_a_file_that_is_not_sqlite_is_refused_naming_it(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("not a database\n")
    with pytest.raises(DataError, match=r"notes\.db: not an SQLite file"):
        Store(path)


@pytest.mark.parametrize("table", ["birds", "trials"])  # Optuna's storage has a `trials` table
def test_an_sqlite_file_without_our_tables_is_refused_and_left_alone(tmp_path, table):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"CREATE TABLE {table} (name TEXT)")
    connection.close()
    with pytest.raises(DataError, match=r"other\.db: an SQLite database without mlplab's tables"):
        Store(path)
    with sqlite3.connect(path) as connection:
        names = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert [name for (name,) in names] == [table]
    connection.close()


def test_a_store_from_a_newer_mlplab_is_refused(tmp_path):
    path = tmp_path / "new.db"
    Store(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE mlplab_schema SET version = 99")
    connection.close()
    with pytest.raises(DataError, match="newer mlplab"):
        Store(path)


def test_a_folder_or_a_missing_store_is_refused_when_reading(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        Store(tmp_path)
    with pytest.raises(DataError, match="no such store"):
        Store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


# A child process that adds trials 0, 1, 2, ... (skipping finished ones, as a re-run sweep does)
# and prints "ready" once the store is open, then each seed once `add` has returned.
WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_store import make_record
    from mlplab.experiments.store import Store

    path, start, stop, sweep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    with Store(path) as store:
        done = store.finished_keys(sweep)
        print("ready", flush=True)
        for seed in range(start, stop):
            record = make_record(seed, sweep=sweep)
            if record.trial_key not in done:
                store.add(record)
                print(seed, flush=True)
    """
).format(tests=os.path.dirname(os.path.abspath(__file__)))


def _writer(path, start, stop, sweep="s"):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(start), str(stop), sweep],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _check_complete(path) -> list[int]:
    """Every stored row is whole; returns the stored seeds."""
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()
    with Store(path, create=False) as store:
        trials = store.trials()
    for record in trials:
        assert record.predictions is not None and record.predictions.size == N_TEST
        assert_same_trial(record, make_record(record.seeds["seed"]))
    return sorted(record.seeds["seed"] for record in trials)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_finished_trial_and_leaves_no_partial_row(tmp_path):
    path, total = tmp_path / "results.db", 200
    rng = np.random.default_rng(1)
    previous: list[int] = []
    mid_sweep = 0  # kills that landed before the writer had stored everything
    for _ in range(6):
        if len(previous) == total:
            break  # an earlier writer got to the end before its kill (a fast machine)
        writer = _writer(path, 0, total)
        assert writer.stdout.readline() == b"ready\n", writer.stderr.read().decode()
        # Let it store a random number of trials, then kill it a random fraction of a write
        # later (one add takes a few milliseconds), so the kill lands anywhere in a transaction.
        reported = []
        for _ in range(rng.integers(1, 40)):
            line = writer.stdout.readline()
            if not line:  # the writer stored what was left and exited before this many
                break
            reported.append(int(line))
        time.sleep(rng.uniform(0.0, 0.01))
        writer.send_signal(signal.SIGKILL)
        rest, errors = writer.communicate()
        # Killed (-9) or finished (0); anything else is a writer that failed on its own.
        assert writer.returncode in (0, -signal.SIGKILL), errors.decode()
        reported += [int(line) for line in rest.split()]
        seeds = _check_complete(path)
        # Every trial whose `add` returned is there; a single writer commits in order, so the
        # stored trials are 0..k-1, and no kill took away a trial stored before it.
        assert set(reported) <= set(seeds)
        assert seeds == list(range(len(seeds)))
        assert set(previous) <= set(seeds)
        previous = seeds
        mid_sweep += len(seeds) < total
    assert mid_sweep >= 1, "no kill landed mid-sweep; adjust the timing"
    finisher = _writer(path, 0, total)
    _, errors = finisher.communicate(timeout=120)
    assert finisher.returncode == 0, errors.decode()
    assert _check_complete(path) == list(range(total))


@pytest.mark.slow
def test_two_processes_writing_one_store_at_once_lose_nothing(tmp_path):
    path = tmp_path / "results.db"
    # Overlapping ranges: trials 30..59 are written by both, as by two copies of one sweep.
    writers = [_writer(path, 0, 60), _writer(path, 30, 90)]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors.decode()
    assert _check_complete(path) == list(range(90))


def test_readers_see_the_store_while_a_writer_works(tmp_path):
    path = tmp_path / "results.db"
    Store(path).close()
    writer = _writer(path, 0, 200)
    counts = []
    while writer.poll() is None:
        with Store(path, create=False) as store:
            counts.append(len(store.finished_keys()))
        time.sleep(0.05)
    _, errors = writer.communicate()
    assert writer.returncode == 0, errors.decode()
    assert counts == sorted(counts)
    with Store(path, create=False) as store:
        assert len(store.trials()) == 200


# -- what each sweep optimizes -------------------------------------------------------------------


def test_a_sweeps_metric_is_kept_and_an_edited_one_replaces_it(tmp_path):
    with Store(tmp_path / "results.db") as store:
        assert store.metrics() == {} and store.metric("s") is None
        store.set_metric("s", {"name": "val_loss", "goal": "minimize"})
        store.set_metric("t", {"name": "val_accuracy", "goal": "maximize"})
        store.set_metric("s", {"name": "val_accuracy", "goal": "maximize"})  # the file was edited
    with Store(tmp_path / "results.db", create=False) as store:
        assert store.metrics() == {
            "s": {"name": "val_accuracy", "goal": "maximize"},
            "t": {"name": "val_accuracy", "goal": "maximize"},
        }


@pytest.mark.parametrize(
    "metric", [{"name": "val_loss", "goal": "lower"}, {"name": "", "goal": "maximize"}, {}]
)
def test_a_malformed_sweep_metric_is_refused_and_not_stored(tmp_path, metric):
    with Store(tmp_path / "results.db") as store:
        with pytest.raises(ValueError, match="a sweep metric is"):
            store.set_metric("s", metric)
        assert store.metrics() == {}


def test_a_store_made_before_sweep_metrics_were_kept_still_opens_and_gains_them(tmp_path):
    path = tmp_path / "old.db"
    with Store(path) as store:
        store.add(make_record(0))
    with sqlite3.connect(path) as connection:  # the layout of the first version-1 stores
        connection.execute("DROP TABLE sweeps")
    with Store(path, create=False) as store:
        (back,) = store.trials()
        assert_same_trial(back, make_record(0))
        assert store.metrics() == {}  # an old sweep names no metric
        store.set_metric("s", {"name": "val_accuracy", "goal": "maximize"})
        assert store.metric("s") == {"name": "val_accuracy", "goal": "maximize"}
    with sqlite3.connect(path) as connection:  # still version 1: older mlplab reads it too
        assert connection.execute("SELECT version FROM mlplab_schema").fetchone() == (1,)


def test_a_store_refused_at_once_as_locked_while_opening_is_opened_on_a_later_try(
    tmp_path, monkeypatch
):
    """Two writers creating one store at once: the switch to WAL can answer "database is locked"
    without waiting for the busy timeout (seen once in eight runs of the test above, under
    load). Opening tries again instead of failing with a message that claims a 60 s wait."""
    real_open, refusals = Store._open, []

    def open_refused_twice(store):
        if len(refusals) < 2:
            refusals.append(1)
            raise sqlite3.OperationalError("database is locked")
        real_open(store)

    monkeypatch.setattr(Store, "_open", open_refused_twice)
    with Store(tmp_path / "results.db") as store:
        assert store.trials() == []
    assert len(refusals) == 2


def test_a_damaged_store_is_refused_without_retrying(tmp_path):
    path = tmp_path / "results.db"
    path.write_bytes(b"SQLite format 3\x00" + b"damaged header and pages" * 200)
    started = time.monotonic()
    with pytest.raises(DataError, match="not a readable mlplab store"):
        Store(path)
    assert time.monotonic() - started < 5
