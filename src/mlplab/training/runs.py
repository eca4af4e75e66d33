"""One training run from a :class:`~mlplab.training.config.RunConfig`: data, split, preprocessing,
model, training, evaluation, and the data files of the run folder.

``mlplab train`` is a thin layer over :func:`prepare_run` and :func:`train_run`; experiment sweeps
call the same two functions with one :class:`DataCache`, so that a hundred runs on MNIST read,
split and preprocess it once per distinct data setting rather than a hundred times::

    cache = DataCache()
    for config in configs:
        result = train_run(prepare_run(config, data_cache=cache, progress=False), progress=False)
        result.evaluation["accuracy"], result.test_predictions   # uint8, one per test image

Training computes and stores; it draws nothing. The plots of a run folder are drawn afterwards
from its files by :func:`mlplab.report.plot_run` (so importing this module does not import
matplotlib).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlplab.data import Dataset, Preprocessing, evaluation_split, load_dataset
from mlplab.data.augmentation import augmentation_for
from mlplab.data.preprocessing import FittedPreprocessing
from mlplab.data.splits import EvaluationSplit
from mlplab.engine import architecture as architectures
from mlplab.engine.losses import make_loss
from mlplab.engine.optimizers import make_optimizer
from mlplab.engine.regularizers import AdversarialTraining, Regularization
from mlplab.errors import ConfigError, MlplabError
from mlplab.resources import available_memory_bytes, format_bytes
from mlplab.saving import atomic_path, write_json, write_text
from mlplab.training.config import RunConfig
from mlplab.training.diagnostics import LayerStatistics, measurement_sample
from mlplab.training.loop import EarlyStopping, History
from mlplab.training.metrics import format_evaluation, json_safe
from mlplab.training.model import Model
from mlplab.training.run_folder import CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE, locked_run_folder
from mlplab.training.schedules import BatchSizeRamp, fixed_batch_size, make_schedule
from mlplab.training.threads import thread_limit, training_threads

PREDICTIONS_FILE = "predictions.npz"
# What a resumed run may change: how long it trains, on how many threads, where the data is,
# whether a large run is allowed, and whether layers are measured (which changes no weight).
# Everything else must stay as the checkpoint was made.
RESUMABLE_KEYS = frozenset(
    {
        ("training", "epochs"),
        ("training", "max_steps"),
        ("training", "threads"),
        ("training", "allow_large"),
        ("training", "layer_stats"),
        ("data", "data_dir"),
    }
)
# Arrays held per parameter besides the weights themselves and their gradient.
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "nesterov": 1, "rmsprop": 1, "adam": 2, "adamw": 2}
# Per unit and example of a batch: the node's output, its gradient, and a mask or cached input.
ARRAYS_PER_UNIT = 3
EVALUATION_BATCH = 1000  # predict_logits' default batch, used for validation and test
LAYER_STATS_FILE = "layer_stats.json"
LAYER_STATS_SAMPLE = 1000  # examples measured by [training] layer_stats


# ---------------------------------------------------------------------------- data, shared
@dataclass(frozen=True)
class PreparedData:
    """One dataset split and preprocessed for one data setting; arrays are read-only and shared.

    ``x_test``/``y_test`` are always the full official test set whatever the protocol.
    """

    dataset: Dataset
    split: EvaluationSplit
    preprocessing: FittedPreprocessing
    x_train: np.ndarray
    y_train: np.ndarray
    validation: tuple[np.ndarray, np.ndarray] | None
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def nbytes(self) -> int:
        arrays = [self.x_train, self.y_train, self.x_test, self.y_test, *(self.validation or ())]
        return int(sum(array.nbytes for array in arrays))


class DataCache:
    """Loads each dataset once, and splits and preprocesses it once per data setting.

    The key of a prepared dataset is the dataset, every ``[data]`` setting except the folder's
    location, and the split seed (only under the holdout protocol, the one split that uses it).
    The arrays handed out are read-only: runs share them, so none may write into them.

    Safe to share between threads: each key is computed by the first caller while later callers
    of the same key wait for it, and callers of other keys go on. Nothing is cached at module
    level; drop the cache (or call :meth:`clear`) to free the memory.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._datasets: dict[tuple, Dataset] = {}
        self._prepared: dict[tuple, PreparedData] = {}

    def __len__(self) -> int:
        """Number of prepared data settings held."""
        return len(self._prepared)

    def clear(self) -> None:
        with self._lock:
            self._datasets.clear()
            self._prepared.clear()

    def dataset(self, name: str, data_dir: str | None = None, progress: bool = True) -> Dataset:
        """The dataset ``load_dataset(name, data_dir)`` gives, read once."""
        key = (str(name), data_dir or None)
        return self._once(
            self._datasets, ("dataset", *key), lambda: load_dataset(*key, progress=progress)
        )

    def prepared(self, data, split_seed: int, progress: bool = True) -> PreparedData:
        """Split, preprocessing and float arrays for a :class:`~mlplab.training.config.DataConfig`."""
        # Every data setting is part of the key (a new one cannot be forgotten here); the split
        # seed only matters when the split is random.
        settings = tuple(sorted(dataclasses.asdict(data).items()))
        key = ("prepared", settings, split_seed if data.protocol == "holdout" else None)
        return self._once(self._prepared, key, lambda: self._prepare(data, split_seed, progress))

    def _once(self, table: dict, key: tuple, make):
        with self._lock:
            if key in table:
                return table[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in table:  # made by another thread while this one waited
                    return table[key]
            value = make()
            with self._lock:
                table[key] = value
                self._key_locks.pop(key, None)
            return value

    def _prepare(self, data, split_seed: int, progress: bool) -> PreparedData:
        dataset = self.dataset(data.dataset, data.data_dir, progress)
        split = evaluation_split(
            data.protocol,
            dataset.train_labels,
            len(dataset.test_labels),
            _validation_size(data.validation),
            seed=split_seed,
        )
        preprocessing = Preprocessing(
            scale=data.scale,
            standardize=None if data.standardize == "none" else data.standardize,
            crop_border=data.crop_border,
            pixel_subset=data.pixel_subset or None,
            pixel_subset_seed=data.pixel_subset_seed,
        ).fit(dataset.train_images[split.train])
        validation = None
        if split.validation is not None:
            on_train = split.validation_set == "train"
            source = dataset.train_images if on_train else dataset.test_images
            labels = dataset.train_labels if on_train else dataset.test_labels
            validation = (
                _read_only(preprocessing.transform(source[split.validation])),
                _read_only(labels[split.validation]),
            )
        return PreparedData(
            dataset,
            split,
            preprocessing,
            _read_only(preprocessing.transform(dataset.train_images[split.train])),
            _read_only(dataset.train_labels[split.train]),
            validation,
            _read_only(preprocessing.transform(dataset.test_images)),
            _read_only(np.asarray(dataset.test_labels)),
        )


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array.flags.writeable = False
    return array


def _validation_size(value):
    return int(value) if float(value).is_integer() and value >= 1 else float(value)


# ---------------------------------------------------------------------------- one run
@dataclass
class PreparedRun:
    """Everything a run needs, checked and built; :func:`train_run` trains it once."""

    config: RunConfig  # a private copy, with the dataset folder made absolute
    seeds: dict[str, int]  # RunConfig.resolved_seeds()
    data: PreparedData
    model: Model
    memory_estimate: int  # bytes
    trained: bool = field(default=False, repr=False)

    # The data's parts under the names callers used before PreparedData existed.
    dataset = property(lambda self: self.data.dataset)
    split = property(lambda self: self.data.split)
    x_train = property(lambda self: self.data.x_train)
    y_train = property(lambda self: self.data.y_train)
    validation = property(lambda self: self.data.validation)
    x_test = property(lambda self: self.data.x_test)
    y_test = property(lambda self: self.data.y_test)

    def describe(self) -> str:
        c, n_val = self.config, (len(self.validation[1]) if self.validation else 0)
        return (
            f"{self.dataset.name}: {len(self.y_train)} training, {n_val} validation "
            f"({c.data.protocol} protocol), {len(self.y_test)} test images; "
            f"network {self.model.network.input_size}-"
            f"{c.model.architecture if not c.model.nodes else 'graph'}-"
            f"{len(self.model.class_names)}, {self.model.network.n_params:,} parameters"
        )


@dataclass
class RunResult:
    """What a finished run computed.

    Attributes
    ----------
    history : History
        Per-epoch columns, best epoch, whether it stopped early.
    evaluation : dict
        Test-set metrics of :func:`mlplab.training.metrics.evaluate_predictions` (``accuracy``,
        ``wilson_low``/``high``, ``first_half``/``last_half`` when there are >= 2 test images,
        per class, confusion) plus ``loss``, ``dataset``, ``protocol``, ``epochs_run``,
        ``best_epoch``, ``train_seconds`` and ``seeds``; JSON-safe (non-finite numbers are None).
    test_predictions : numpy.ndarray
        uint8, the predicted class of every test image, in test-set order.
    test_probabilities : numpy.ndarray
        float32, shape ``(n_test, n_classes)``.
    seconds : float
        Training time (without data preparation and evaluation).
    config : RunConfig
        The run's own copy of its configuration (seeds as written, -1 for derived).
    seeds : dict
        The resolved seeds: ``seed`` (master), ``split``, ``init``, ``order``, ``dropout``.
    folder : Path or None
        The run folder, or None for a run that wrote no files.
    layer_stats : dict or None
        With ``[training] layer_stats``: :meth:`LayerStatistics.to_dict
        <mlplab.training.diagnostics.LayerStatistics.to_dict>`, what ``layer_stats.json`` holds
        (per-layer activations, gradients and weights at the start and after every epoch).
    """

    history: History
    evaluation: dict
    test_predictions: np.ndarray
    test_probabilities: np.ndarray
    seconds: float
    config: RunConfig
    seeds: dict[str, int]
    folder: Path | None = None
    layer_stats: dict | None = None

    @property
    def protocol(self) -> str:
        return self.config.data.protocol

    def summary(self) -> str:
        h, e = self.history, self.evaluation
        best = h.best_epoch - 1 if h.best_epoch else len(h) - 1

        def pct(value):
            return "-" if value is None else f"{100 * value:.2f}%"

        def interval(score):
            if score is None:
                return "-  (too few test images to split in halves)"
            return (
                f"{pct(score['accuracy'])}  [{100 * score['wilson_low']:.2f}, "
                f"{100 * score['wilson_high']:.2f}]  ({score['correct']}/{score['total']})"
            )

        return "\n".join(
            [
                "",
                "Summary",
                f"  epochs run          {len(h)}{' (stopped early)' if h.stopped_early else ''}, "
                f"weights of epoch {best + 1}, {self.seconds:.1f} s",
                f"  train accuracy      {pct(h['train_accuracy'][best])}",
                f"  validation accuracy {pct(h['val_accuracy'][best])}",
                f"  test, full set      {interval(e)}",
                f"  test, first half    {interval(e.get('first_half'))}",
                f"  test, last half     {interval(e.get('last_half'))}"
                + ("   <- the book protocol's test figure" if self.protocol == "book" else ""),
            ]
        )


def prepare_run(
    config: RunConfig, *, data_cache: DataCache | None = None, progress: bool = True
) -> PreparedRun:
    """Check every setting, get the prepared data, estimate the memory and build the model.

    ``config`` is never changed: the run works on a deep copy. Every setting is checked here,
    before :func:`train_run` creates or writes anything.

    Parameters
    ----------
    config : RunConfig
    data_cache : DataCache, optional
        Shared between runs to load and preprocess each dataset once; default: a fresh one.
    progress : bool
        Show a progress bar if the dataset must be downloaded.

    Raises
    ------
    ConfigError
        For an invalid setting, or a memory estimate above what is available (unless
        ``training.allow_large``).
    DataError
        For data that cannot be read.
    """
    config = copy.deepcopy(config)
    config.validate()
    config.data.resolve_dataset_path()
    seeds = config.resolved_seeds()
    spec = config.model.spec()
    if isinstance(spec, str):
        architectures.parse_architecture(spec)  # a misspelt layer fails before the data is read
    training_options(config, seeds)  # optimizer and schedule options, likewise
    loss = make_loss(config.model.loss, **loss_options(config))  # and the loss's
    if data_cache is None:  # (not `data_cache or ...`: an empty cache has len 0, so is falsy)
        data_cache = DataCache()
    data = data_cache.prepared(config.data, seeds["split"], progress)
    n_classes = data.dataset.n_classes
    if n_classes > 256:  # predictions are stored one byte each
        raise ConfigError(f"{data.dataset.name} has {n_classes} classes; at most 256 are supported")
    estimate = estimate_memory(config, data.preprocessing.n_features, n_classes, data.nbytes)
    available = available_memory_bytes()
    if estimate > available and not config.training.allow_large:
        raise ConfigError(
            f"this run needs about {format_bytes(estimate)} of memory and "
            f"{format_bytes(available)} is available; choose a smaller network or batch, or "
            "pass --allow-large ([training] allow_large = true) to try anyway"
        )
    network = architectures.build_network(
        spec,
        data.preprocessing.n_features,
        n_classes,
        init=config.model.init,
        dtype=np.dtype(config.training.dtype),
        seed=seeds["init"],
        dropout_seed=seeds["dropout"],
    )
    model = Model(network, loss, data.dataset.class_names, data.preprocessing)
    return PreparedRun(config, seeds, data, model, estimate)


def loss_options(config: RunConfig) -> dict:
    """The options of :func:`~mlplab.engine.losses.make_loss` that ``[model]`` sets.

    Options left at their "off" value are left out, so that ``mse`` with the default
    ``label_smoothing = 0`` is accepted and ``mse`` with ``label_smoothing = 0.1`` is refused.
    """
    model = config.model
    options = {}
    if model.output_activation:
        options["output_activation"] = model.output_activation
    if model.label_smoothing:
        options["label_smoothing"] = model.label_smoothing
    return options


def estimate_memory(config: RunConfig, input_size: int, n_classes: int, data_bytes: int) -> int:
    """Bytes a training will hold at its peak, estimated before the network is allocated.

    ``params x (weights + gradients + optimizer slots [+ best weights kept by early stopping]
    [+ a copy of the gradients for adversarial training])``
    plus ``max(batch, evaluation batch) x units x a few arrays``, at the run's item size, plus
    the preprocessed data (and its float64 copy for a float64 run).
    """
    size = architectures.network_size(config.model.spec(), input_size, n_classes)
    n_params, n_units = size.n_params, size.n_units
    itemsize = np.dtype(config.training.dtype).itemsize
    copies = 2 + OPTIMIZER_SLOTS.get(config.optimizer.name, 2)
    if config.training.early_stopping:
        copies += 1
    if config.regularization.adversarial:
        copies += 1  # the clean batch's gradients, kept while the perturbed batch's are computed
    batch = max(config.training.batch_size, EVALUATION_BATCH)
    data = data_bytes * (3 if itemsize == 8 else 1)  # float32 arrays, plus their float64 copy
    return int(n_params * copies * itemsize + batch * n_units * ARRAYS_PER_UNIT * itemsize + data)


def training_options(config: RunConfig, seeds: dict[str, int] | None = None) -> dict:
    """The keyword arguments of :func:`mlplab.training.loop.fit` that a config prescribes."""
    config.validate()
    t, r = config.training, config.regularization
    seeds = seeds or config.resolved_seeds()
    optimizer = make_optimizer(
        config.optimizer.name, config.optimizer.learning_rate, **config.optimizer.options
    )
    return {
        "optimizer": optimizer,
        "epochs": t.epochs,
        "batch_size": batch_size_ramp(t),
        "schedule": make_schedule(
            config.schedule.name,
            config.optimizer.learning_rate,
            t.epochs,
            **config.schedule.options,
        ),
        "regularization": Regularization(
            l1=r.l1, l2=r.l2, max_norm=r.max_norm or None, clip_norm=r.clip_norm or None
        ),
        "early_stopping": (
            EarlyStopping(monitor=t.monitor, patience=t.early_stopping)
            if t.early_stopping
            else None
        ),
        "adversarial": (
            AdversarialTraining(epsilon=r.adversarial, weight=r.adversarial_weight)
            if r.adversarial
            else None
        ),
        "order_seed": seeds["order"],
        "threads": t.threads or None,
        "max_steps": t.max_steps or None,
        "augment_seed": seeds["augment"],
    }


def batch_size_ramp(t) -> BatchSizeRamp:
    """The batch sizes a config's ``[training]`` table prescribes, epoch by epoch."""
    if t.batch_size_start:
        return BatchSizeRamp(
            start=t.batch_size_start, growth=t.batch_size_growth, final=t.batch_size
        )
    return fixed_batch_size(t.batch_size)


def check_resume(saved: RunConfig, config: RunConfig) -> None:
    """Refuse to resume a run whose settings changed, except those in :data:`RESUMABLE_KEYS`.

    Raises
    ------
    ConfigError
        Naming each setting that differs from the saved ``config.toml``.
    """
    before, after = saved.to_dict(), config.to_dict()
    changed = [
        f"{table}.{key}"
        for table in sorted(set(before) | set(after))
        for key in sorted(set(before.get(table, {})) | set(after.get(table, {})))
        if (table, key) not in RESUMABLE_KEYS
        and after.get(table, {}).get(key) != before.get(table, {}).get(key)
    ]
    if changed:
        allowed = ", ".join(f"{table}.{key}" for table, key in sorted(RESUMABLE_KEYS))
        raise ConfigError(
            f"resuming continues the run's saved {CONFIG_FILE}, but these settings differ from "
            f"it: {', '.join(changed)}; only {allowed} may change"
        )


class _SaveConfigOnce:
    """A fit callback that writes config.toml after the first epoch a resumed run trains, so
    that a checkpoint that cannot be read leaves the saved config as it was."""

    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text

    def on_epoch_end(self, epoch: int, record: dict) -> bool:
        if self.text is not None:
            write_text(self.path, self.text)
            self.text = None
        return False


def train_run(
    prepared: PreparedRun, out: Path | None = None, *, resume: bool = False, progress: bool = True
) -> RunResult:
    """Train, evaluate on the test set, and (with ``out``) write the run folder's data files.

    With ``out`` the folder is locked for the run (a second process gets a one-line error), its
    stale temporary files are removed, and every file is written atomically: ``config.toml``,
    ``checkpoint.npz`` (after every epoch), ``model.npz``, ``history.json``/``.csv``,
    ``evaluation.json``/``.txt`` and ``predictions.npz`` (``predicted`` uint8, ``probabilities``
    float32, ``labels`` uint8); with ``[training] layer_stats`` also ``layer_stats.json`` (after
    every epoch, see :func:`layer_stats_callback`). Without ``out`` nothing is written, not even
    a checkpoint.

    Parameters
    ----------
    prepared : PreparedRun
        From :func:`prepare_run`; trained in place, so it can be trained only once.
    out : path, optional
    resume : bool
        Continue the run in ``out`` from its checkpoint; ``out/config.toml`` must match the
        prepared config except for :data:`RESUMABLE_KEYS`.
    progress : bool

    Raises
    ------
    ConfigError
        Resume without ``out``, a folder in use or holding another run, changed settings.
    MlplabError
        A file of the run folder could not be written (a full disk, say).
    """
    if prepared.trained:
        raise ConfigError("this prepared run was trained already; call prepare_run again")
    if resume and out is None:
        raise ConfigError("resume needs the run folder (out) that holds the checkpoint")
    prepared.trained = True
    if out is None:
        return _train_and_evaluate(prepared, None, False, progress)
    out = Path(out)
    with locked_run_folder(out, resume):
        try:
            return _train_and_evaluate(prepared, out, resume, progress)
        except OSError as error:
            raise MlplabError(
                f"{out}: could not write the run's files ({error.strerror or error}); free some "
                "space or choose another --out, then add --resume to continue from the checkpoint"
            ) from None


def layer_stats_callback(
    prepared: PreparedRun, out: Path | None = None, resume: bool = False
) -> LayerStatistics:
    """The :class:`~mlplab.training.diagnostics.LayerStatistics` callback of ``[training]
    layer_stats``: it measures :data:`LAYER_STATS_SAMPLE` validation examples (training examples
    when there is no validation set), spread evenly over the set, now and after every epoch, and
    with ``out`` writes ``out/layer_stats.json`` each time.

    Resuming, it continues the entries of the run's ``layer_stats.json`` (measured before the
    checkpoint) and measures nothing before training; a file that is missing or cannot be read
    leaves those epochs out.
    """
    x, y = prepared.validation or (prepared.x_train, prepared.y_train)
    x, y = measurement_sample(x, y, LAYER_STATS_SAMPLE)
    network, loss = prepared.model.network, prepared.model.loss
    path = None if out is None else Path(out) / LAYER_STATS_FILE
    callback = LayerStatistics(network, loss, x, y, at_start=False, path=path)
    if not resume:
        _measure_layers(callback, 0, prepared)
    elif path is not None and path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            stored = None  # measured again from the resumed epoch on
        if isinstance(stored, dict):
            callback.restore(stored)
    return callback


def run_threads(prepared: PreparedRun) -> int:
    """The threads the run's training uses (the config's, or the default for its network and
    first batch size; see :func:`~mlplab.training.threads.training_threads`)."""
    t = prepared.config.training
    # The first epoch's size, as fit takes it from the same ramp.
    return training_threads(
        t.threads or None, prepared.model.network, batch_size_ramp(t).batch_size(0)
    )


def _measure_layers(callback: LayerStatistics, epoch: int, prepared: PreparedRun) -> None:
    """Measure outside training as inside it: on the run's BLAS threads, with the same quiet
    floating-point errors (a diverging network's overflows are what is being measured)."""
    with (
        thread_limit(run_threads(prepared)),
        np.errstate(over="ignore", invalid="ignore", divide="ignore"),
    ):
        callback.measure(epoch)


def _train_and_evaluate(prepared: PreparedRun, out: Path | None, resume: bool, progress: bool):
    config = prepared.config
    callbacks = []
    if out is not None:
        if resume:
            check_resume(RunConfig.from_toml(out / CONFIG_FILE), config)
            callbacks.append(_SaveConfigOnce(out / CONFIG_FILE, config.to_toml()))
        else:
            write_text(out / CONFIG_FILE, config.to_toml())
    layer_stats, measured_before = None, 0.0
    if config.training.layer_stats:
        layer_stats = layer_stats_callback(prepared, out, resume)
        callbacks.append(layer_stats)
        measured_before = layer_stats.seconds
    started = time.perf_counter()
    history = prepared.model.fit(
        prepared.x_train,
        prepared.y_train,
        validation_data=prepared.validation,
        checkpoint_path=None if out is None else out / CHECKPOINT_FILE,
        resume=resume,
        progress=progress,
        callbacks=callbacks,
        augmentation=augmentation_for(
            prepared.data.preprocessing, **dataclasses.asdict(config.augmentation)
        ),
        **training_options(config, prepared.seeds),
    )
    seconds = time.perf_counter() - started
    if layer_stats is not None:
        seconds -= layer_stats.seconds - measured_before  # measuring is not training
        if not layer_stats.epoch_numbers or layer_stats.epoch_numbers[-1] < len(history):
            # max_steps ended inside an epoch, after which no callback runs
            _measure_layers(layer_stats, len(history), prepared)

    model, labels = prepared.model, prepared.y_test
    logits = model.network.predict_logits(prepared.x_test)
    probabilities = model.loss.predict(logits).astype(np.float32, copy=False)
    predictions = logits.argmax(axis=1).astype(np.uint8)
    evaluation = model.evaluate_logits(logits, labels)
    evaluation.update(
        dataset=prepared.dataset.name,
        protocol=config.data.protocol,
        epochs_run=len(history),
        best_epoch=history.best_epoch,
        train_seconds=seconds,
        seeds=dict(prepared.seeds),
    )
    evaluation = json_safe(evaluation)
    result = RunResult(
        history,
        evaluation,
        predictions,
        probabilities,
        seconds,
        config,
        prepared.seeds,
        out,
        None if layer_stats is None else layer_stats.to_dict(),
    )
    if out is None:
        return result
    if resume:  # a run resumed after its last epoch trains none, so the callback never ran
        callbacks[0].on_epoch_end(len(history), {})
    history.save(out)
    model.save(
        out / MODEL_FILE,
        {"dataset": prepared.dataset.name, "config": config.to_dict(), "seeds": prepared.seeds},
    )
    write_json(out / "evaluation.json", evaluation)
    write_text(out / "evaluation.txt", format_evaluation(evaluation) + "\n")
    write_predictions(out / PREDICTIONS_FILE, predictions, probabilities, labels)
    return result


def write_predictions(path, predicted, probabilities, labels) -> Path:
    """``predictions.npz``: ``predicted`` and ``labels`` (uint8), ``probabilities`` (float32)."""
    arrays = {
        "predicted": np.asarray(predicted, dtype=np.uint8),
        "probabilities": np.asarray(probabilities, dtype=np.float32),
        "labels": np.asarray(labels).astype(np.uint8),
    }
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, **arrays)
    return Path(path)


__all__ = [
    "DataCache",
    "LAYER_STATS_FILE",
    "PREDICTIONS_FILE",
    "PreparedData",
    "PreparedRun",
    "RESUMABLE_KEYS",
    "RunResult",
    "check_resume",
    "estimate_memory",
    "layer_stats_callback",
    "prepare_run",
    "train_run",
    "training_options",
    "write_predictions",
]
