"""The results store: every finished trial of every sweep, in one SQLite file.

A store is addressed the way Optuna and SQLAlchemy address one: a path (``results.db``) or a URL
(``sqlite:///results.db`` relative, ``sqlite:////abs/results.db`` absolute). It holds one row per
trial of a sweep (``sweep = ""`` for single ``mlplab train --store`` runs)::

    trials(sweep, trial_key, config_hash, label, status, error, config, seeds, metrics,
           history, timings, machine, versions, predictions, labels_sha256, created)
    PRIMARY KEY (sweep, trial_key)

``config`` ... ``versions`` are JSON text; ``predictions`` is a BLOB of one byte (``uint8``) per
test image; nothing is pickled, so a store can be read without mlplab (``sqlite3 results.db``).
The test labels the predictions refer to are kept once per test set, in
``test_sets(labels_sha256 PRIMARY KEY, labels BLOB)``, so McNemar's test needs no dataset.
What each sweep optimizes (its file's ``metric = { name, goal }``) is kept once per sweep, in
``sweeps(sweep PRIMARY KEY, metric, goal)``, so a report ranks by the sweep's own metric.
A table ``mlplab_schema`` says which layout the file has, so a later mlplab can read old files.
The ``sweeps`` table came later without changing the version: it is an addition that an older
mlplab ignores, and a store made before it gets it when next opened for writing (read-only, such
a store simply names no metric).

Why SQLite, and why it is safe to kill a sweep at any moment:

- every trial is written by one transaction, so after a ``SIGKILL`` the row is either all there
  or not there at all; the write-ahead log (WAL) makes that hold however the process dies;
- WAL also lets readers (``mlplab runs``) read while a sweep writes, and a busy timeout makes two
  sweeps writing one store at once wait for each other instead of failing;
- re-adding a finished trial changes nothing (``add`` is idempotent), and a finished trial
  replaces an earlier failed attempt, so re-running a sweep retries only what failed.

WAL needs a local disk: SQLite's locks do not work across a network file system (NFS), so put
the store on local disk and let remote workers send their results to one writer.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlplab.errors import ConfigError, DataError
from mlplab.experiments.records import TrialRecord

SCHEMA_NAME = "mlplab-store"
SCHEMA_VERSION = 1
# How long a writer waits for another process's transaction before giving up (seconds).
BUSY_TIMEOUT = 60.0
JSON_FIELDS = ("config", "seeds", "metrics", "history", "timings", "machine", "versions")
COLUMNS = (
    "sweep",
    "trial_key",
    "config_hash",
    "label",
    "status",
    "error",
    *JSON_FIELDS,
    "predictions",
    "labels_sha256",
    "created",
)
# Added after version 1 (see the module docstring): created in old stores when they are opened.
SWEEPS_TABLE = """CREATE TABLE IF NOT EXISTS sweeps (
    sweep TEXT PRIMARY KEY,
    metric TEXT NOT NULL,
    goal TEXT NOT NULL CHECK (goal IN ('maximize', 'minimize'))
);"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS mlplab_schema (name TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    sweep TEXT NOT NULL,
    trial_key TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    label TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    error TEXT NOT NULL,
    {", ".join(f"{name} TEXT NOT NULL" for name in JSON_FIELDS)},
    predictions BLOB,
    labels_sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (sweep, trial_key)
);
CREATE INDEX IF NOT EXISTS trials_by_config ON trials (config_hash);
CREATE TABLE IF NOT EXISTS test_sets (labels_sha256 TEXT PRIMARY KEY, labels BLOB NOT NULL);
{SWEEPS_TABLE}
"""
SQLITE_MAGIC = b"SQLite format 3\x00"


def labels_sha256(labels) -> str:
    """The digest that ties predictions to a test set: sha256 of the labels as one byte each."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("labels must lie in 0..255 to be digested as bytes")
    return hashlib.sha256(labels.astype(np.uint8).tobytes()).hexdigest()


def store_path(path_or_url) -> Path:
    """The file a store path or ``sqlite:///`` URL names.

    ``sqlite:///results.db`` is relative to the working directory and ``sqlite:////abs/x.db``
    absolute, as in SQLAlchemy; other schemes are refused with the one that works.
    """
    text = str(path_or_url)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme != "sqlite":
            raise ConfigError(
                f"{text}: mlplab stores are SQLite files; give a path or sqlite:///path.db"
            )
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"{text}: name the file after three slashes, e.g. sqlite:///results.db"
            )
        text = rest[1:]  # "sqlite:///a.db" -> "a.db", "sqlite:////abs/a.db" -> "/abs/a.db"
    if not text or text == ":memory:":
        raise ConfigError(f"{text or 'an empty name'}: a store must be a file; give its path")
    return Path(text)


@dataclass
class Configuration:
    """One configuration of a store and its trials, one per seed (the unit of statistics)."""

    config_hash: str
    label: str
    config: dict  # the first trial's config (its seeds are that trial's)
    records: list[TrialRecord] = field(default_factory=list)

    @property
    def seeds(self) -> list:
        return [seed_of(record) for record in self.records]

    def metric(self, name: str) -> dict:
        """``{seed: value}`` of one metric over the trials that have it."""
        return {
            seed_of(record): record.metrics[name]
            for record in self.records
            if record.metrics.get(name) is not None
        }


def seed_of(record: TrialRecord):
    """The seed that pairs trials of two configurations: the master seed when there is one."""
    if "seed" in record.seeds:
        return record.seeds["seed"]
    if record.seeds:
        return json.dumps(record.seeds, sort_keys=True)
    return record.config.get("training", {}).get("seed")


class Store:
    """An SQLite results store (see the module docstring); use it as a context manager.

    Parameters
    ----------
    path_or_url : str or Path
        ``results.db`` or ``sqlite:///results.db``.
    create : bool
        Make the file (and its folder) if missing. Readers pass False to get a clear error for a
        mistyped name instead of a new empty store.
    """

    def __init__(self, path_or_url, create: bool = True):
        self.path = store_path(path_or_url)
        _check_file(self.path, create)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Two processes opening a new store at once can be refused at once ("database is
        # locked") by the switch to WAL, which does not wait for the busy timeout as statements
        # do (about one start in eight of two writers here): try again until the timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                self._open()
                return
            except DataError:
                self.close()
                raise
            except sqlite3.DatabaseError as error:
                self.close()
                if "locked" not in str(error) and "busy" not in str(error):
                    raise DataError(f"{self.path}: not a readable mlplab store ({error})") from None
                if time.monotonic() > deadline:
                    raise DataError(
                        f"{self.path}: store stayed locked for {BUSY_TIMEOUT:.0f} s by another "
                        "process; is it on a network file system? keep stores on local disk"
                    ) from None
                time.sleep(0.05)

    def _open(self) -> None:
        # isolation_level=None: we open every transaction ourselves (BEGIN IMMEDIATE).
        self._connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        self._connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        self._connection.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed trial survives even a power cut, not only a killed process.
        self._connection.execute("PRAGMA synchronous = FULL")
        self._prepare_schema()

    # -- opening -------------------------------------------------------------------------------

    def _prepare_schema(self) -> None:
        if "mlplab_schema" not in self._table_names():
            # Decided inside the write lock: another process may be creating the same store.
            with self._transaction() as connection:
                tables = self._table_names()
                if tables and "mlplab_schema" not in tables:
                    raise DataError(
                        f"{self.path}: an SQLite database without mlplab's tables; give a "
                        "store written by mlplab or a new file name"
                    )
                # One statement at a time: executescript would commit our transaction early.
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(
                    "INSERT OR IGNORE INTO mlplab_schema VALUES (?, ?)",
                    (SCHEMA_NAME, SCHEMA_VERSION),
                )
        elif "sweeps" not in self._table_names():
            self._add_sweeps_table()
        row = self._connection.execute(
            "SELECT version FROM mlplab_schema WHERE name = ?", (SCHEMA_NAME,)
        ).fetchone()
        if row is None:
            raise DataError(f"{self.path}: has no {SCHEMA_NAME} version; it is not an mlplab store")
        if row[0] > SCHEMA_VERSION:
            raise DataError(
                f"{self.path}: written by a newer mlplab (store version {row[0]}, this one "
                f"reads {SCHEMA_VERSION}); upgrade mlplab"
            )

    def _add_sweeps_table(self) -> None:
        """Give a store made before the ``sweeps`` table one; a read-only file goes without."""
        try:
            with self._transaction() as connection:
                connection.execute(SWEEPS_TABLE)
        except sqlite3.OperationalError as error:
            if "readonly" not in str(error):
                raise

    def _table_names(self) -> set[str]:
        rows = self._connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}

    def _transaction(self):
        return _Transaction(self._connection)

    # -- writing -------------------------------------------------------------------------------

    def add(self, record: TrialRecord) -> None:
        """Write one trial in one transaction.

        Adding a trial that is already done changes nothing; a done trial replaces a failed
        attempt at the same ``(sweep, trial_key)``, and a failed one never replaces a done one.
        """
        labels, digest = None, record.labels_sha256
        if record.labels is not None:
            labels = np.asarray(record.labels)
            digest = labels_sha256(labels)
            if record.labels_sha256 and record.labels_sha256 != digest:
                raise ValueError(f"trial {record.trial_key}: labels do not match its labels_sha256")
        row = _row(record, digest)
        placeholders = ", ".join("?" for _ in COLUMNS)
        updates = ", ".join(f"{name} = excluded.{name}" for name in COLUMNS[2:])
        with self._transaction() as connection:
            if labels is not None:
                connection.execute(
                    "INSERT OR IGNORE INTO test_sets VALUES (?, ?)",
                    (digest, labels.astype(np.uint8).tobytes()),
                )
            connection.execute(
                f"INSERT INTO trials ({', '.join(COLUMNS)}) VALUES ({placeholders}) "
                f"ON CONFLICT (sweep, trial_key) DO UPDATE SET {updates} "
                "WHERE trials.status != 'done'",
                row,
            )

    def set_metric(self, sweep: str, metric: dict) -> None:
        """Record what ``sweep`` optimizes, ``{"name": ..., "goal": "maximize" | "minimize"}``.

        A sweep run again with an edited ``metric`` replaces the earlier one: the file says what
        the sweep is for now.
        """
        name, goal = metric.get("name"), metric.get("goal")
        if not isinstance(name, str) or not name or goal not in ("maximize", "minimize"):
            raise ValueError(f"a sweep metric is {{name, goal: maximize|minimize}}, not {metric}")
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO sweeps VALUES (?, ?, ?) ON CONFLICT (sweep) DO UPDATE SET "
                "metric = excluded.metric, goal = excluded.goal",
                (sweep, name, goal),
            )

    # -- reading -------------------------------------------------------------------------------

    def metrics(self) -> dict[str, dict]:
        """``{sweep: {"name": ..., "goal": ...}}`` of the sweeps that recorded their metric
        (sweeps of a store written before mlplab kept metrics have none)."""
        if "sweeps" not in self._table_names():  # an old store opened read-only
            return {}
        rows = self._connection.execute("SELECT sweep, metric, goal FROM sweeps ORDER BY rowid")
        return {sweep: {"name": name, "goal": goal} for sweep, name, goal in rows}

    def metric(self, sweep: str) -> dict | None:
        """The metric ``sweep`` optimizes, or None when it recorded none."""
        return self.metrics().get(sweep)

    def has(self, trial_key: str, sweep: str | None = None) -> bool:
        """Whether a finished trial with this key is stored (in ``sweep``, or in any)."""
        query = "SELECT 1 FROM trials WHERE trial_key = ? AND status = 'done'"
        parameters: tuple = (trial_key,)
        if sweep is not None:
            query += " AND sweep = ?"
            parameters += (sweep,)
        return self._connection.execute(query + " LIMIT 1", parameters).fetchone() is not None

    def finished_keys(self, sweep: str | None = None) -> set[str]:
        """Keys of the finished trials (of ``sweep``, or of all): what a re-run skips."""
        query = "SELECT trial_key FROM trials WHERE status = 'done'"
        parameters: tuple = ()
        if sweep is not None:
            query += " AND sweep = ?"
            parameters = (sweep,)
        return {key for (key,) in self._connection.execute(query, parameters)}

    def sweeps(self) -> list[str]:
        """Names of the sweeps in the store ("" stands for single runs), in order of first trial."""
        rows = self._connection.execute(
            "SELECT sweep FROM trials GROUP BY sweep ORDER BY MIN(rowid)"
        ).fetchall()
        return [sweep for (sweep,) in rows]

    def trials(
        self, sweep: str | None = None, where: dict | None = None, status: str | None = "done"
    ) -> list[TrialRecord]:
        """Stored trials in the order they were added.

        Parameters
        ----------
        sweep : str, optional
            Only this sweep's trials ("" for single runs); None for all.
        where : dict, optional
            ``{key: value}`` that every returned trial matches. A key is a column (``label``,
            ``config_hash``, ``trial_key``, ``sweep``), ``seed``, or a dotted config key such as
            ``optimizer.learning_rate``. A value given as text also matches a number or boolean
            written the same way (so ``--where optimizer.learning_rate=0.001`` works).
        status : str or None
            "done" (default), "failed", or None for both.
        """
        query = f"SELECT {', '.join(COLUMNS)} FROM trials"
        clauses, parameters = [], []
        if sweep is not None:
            clauses.append("sweep = ?")
            parameters.append(sweep)
        if status is not None:
            clauses.append("status = ?")
            parameters.append(status)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        rows = self._connection.execute(query + " ORDER BY rowid", parameters).fetchall()
        test_sets = self._test_sets()
        records = [_record(row, test_sets) for row in rows]
        for key, value in (where or {}).items():
            records = [record for record in records if _matches(record, key, value)]
        return records

    def test_labels(self, digest: str) -> np.ndarray | None:
        """The stored test labels with this ``labels_sha256``, or None if none were stored."""
        return self._test_sets().get(digest)

    def _test_sets(self) -> dict[str, np.ndarray]:
        test_sets = {}
        for digest, blob in self._connection.execute("SELECT * FROM test_sets"):
            labels = np.frombuffer(blob, dtype=np.uint8).copy()
            labels.flags.writeable = False  # shared by every record of that test set
            test_sets[digest] = labels
        return test_sets

    def configurations(self, sweep: str | None = None, where: dict | None = None):
        """The finished trials grouped by ``config_hash``, in order of each one's first trial.

        Over all sweeps (``sweep=None``) a trial stored by two sweeps counts once.
        """
        groups: dict[str, Configuration] = {}
        seen: set[str] = set()
        for record in self.trials(sweep, where):
            if record.trial_key in seen:
                continue
            seen.add(record.trial_key)
            group = groups.get(record.config_hash)
            if group is None:
                group = groups[record.config_hash] = Configuration(
                    record.config_hash, record.label, record.config
                )
            group.records.append(record)
        return list(groups.values())

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        connection = getattr(self, "_connection", None)
        if connection is not None:
            connection.close()
            self._connection = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception).

    IMMEDIATE takes the write lock at the start, so two writers queue on the busy timeout rather
    than both reading and then one failing with "database is locked" when it tries to write.
    """

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind, error, trace) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


def _check_file(path: Path, create: bool) -> None:
    if path.is_dir():
        raise DataError(f"{path}: is a folder; a store is one file, e.g. {path / 'results.db'}")
    if not path.exists():
        if not create:
            raise DataError(f"{path}: no such store; check the name or run a sweep first")
        return
    with open(path, "rb") as file:
        start = file.read(len(SQLITE_MAGIC))
    if start and start != SQLITE_MAGIC:
        raise DataError(f"{path}: not an SQLite file; give a store written by mlplab")


def _json(value, name: str, record: TrialRecord) -> str:
    try:
        # allow_nan=False: NaN is not JSON; a diverged metric should be stored as None.
        return json.dumps(value, sort_keys=True, allow_nan=False, default=_plain)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"trial {record.trial_key}: {name} is not JSON-serializable ({error})"
        ) from error


def _plain(value):
    """NumPy scalars and arrays as plain JSON values (they turn up in metrics and histories)."""
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _finite(value):
    """NaN and infinities (a diverged loss) become None, which JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _row(record: TrialRecord, digest: str) -> tuple:
    if record.status not in ("done", "failed"):
        raise ValueError(f"trial status must be 'done' or 'failed', not {record.status!r}")
    predictions = None
    if record.predictions is not None:
        array = np.asarray(record.predictions)
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"predictions must be a 1-D integer array, got {array.dtype}")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("predictions must be class indices in 0..255 (one byte each)")
        predictions = array.astype(np.uint8).tobytes()
    values = {
        "sweep": record.sweep,
        "trial_key": record.trial_key,
        "config_hash": record.config_hash,
        "label": record.label,
        "status": record.status,
        "error": record.error,
        **{name: _json(_finite(getattr(record, name)), name, record) for name in JSON_FIELDS},
        "predictions": predictions,
        "labels_sha256": digest,
        "created": time.time(),
    }
    return tuple(values[name] for name in COLUMNS)


def _record(row, test_sets: dict[str, np.ndarray]) -> TrialRecord:
    values = dict(zip(COLUMNS, row))
    blob = values["predictions"]
    return TrialRecord(
        config=json.loads(values["config"]),
        sweep=values["sweep"],
        label=values["label"],
        status=values["status"],
        error=values["error"],
        **{name: json.loads(values[name]) for name in JSON_FIELDS if name != "config"},
        # frombuffer is read-only and tied to the bytes object; copy to an ordinary array.
        predictions=None if blob is None else np.frombuffer(blob, dtype=np.uint8).copy(),
        labels_sha256=values["labels_sha256"],
        labels=test_sets.get(values["labels_sha256"]),
    )


def lookup(record: TrialRecord, key: str):
    """The value a ``where`` key names in a trial (see :meth:`Store.trials`)."""
    if key in ("label", "sweep", "status", "error", "config_hash", "trial_key", "labels_sha256"):
        return getattr(record, key)
    if key == "seed":
        return seed_of(record)
    table, dot, name = key.partition(".")
    if dot and table in ("metrics", "seeds", "timings", "machine", "versions"):
        return getattr(record, table).get(name)
    if dot and table in record.config and name in record.config[table]:
        return record.config[table][name]
    raise ConfigError(
        f"unknown key {key!r}; use label, seed, config_hash, sweep, metrics.<name> or a "
        "config key such as optimizer.learning_rate"
    )


def _matches(record: TrialRecord, key: str, wanted) -> bool:
    value = lookup(record, key)
    if value == wanted:
        return True
    if isinstance(wanted, str):
        written = json.dumps(value) if not isinstance(value, str) else value
        if written == wanted:
            return True
        try:  # "1e-3" matches 0.001, "true" matches True
            return json.loads(wanted) == value
        except json.JSONDecodeError:
            return False
    return False
