"""One training run from a :class:`~mlplab.training.config.RunConfig`: data, split, preprocessing, model,
training, evaluation, and the files of the run folder.

``mlplab train`` is a thin layer over :func:`prepare_run` and :func:`train_run`; experiment sweeps
call the same two functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlplab import report
from mlplab.data import Preprocessing, evaluation_split, load_dataset
from mlplab.engine.optimizers import make_optimizer
from mlplab.engine.regularizers import Regularization
from mlplab.errors import ConfigError
from mlplab.saving import write_json, write_text
from mlplab.training.config import RunConfig
from mlplab.training.loop import EarlyStopping, History
from mlplab.training.metrics import format_evaluation
from mlplab.training.model import Model
from mlplab.training.schedules import BatchSizeRamp, fixed_batch_size, make_schedule


@dataclass
class PreparedRun:
    config: RunConfig
    dataset: object
    split: object
    model: Model
    x_train: np.ndarray
    y_train: np.ndarray
    validation: tuple[np.ndarray, np.ndarray] | None
    x_test: np.ndarray  # always the full official test set
    y_test: np.ndarray

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
    history: History
    evaluation: dict
    seconds: float
    protocol: str

    def summary(self) -> str:
        h, e = self.history, self.evaluation
        best = h.best_epoch - 1 if h.best_epoch else len(h) - 1

        def pct(value):
            return "-" if value is None else f"{100 * value:.2f}%"

        def interval(score):
            return (
                f"{pct(score['accuracy'])}  [{100 * score['wilson_low']:.2f}, "
                f"{100 * score['wilson_high']:.2f}]  ({score['correct']}/{score['total']})"
            )

        lines = [
            "",
            "Summary",
            f"  epochs run          {len(h)}{' (stopped early)' if h.stopped_early else ''}, "
            f"weights of epoch {best + 1}, {self.seconds:.1f} s",
            f"  train accuracy      {pct(h['train_accuracy'][best])}",
            f"  validation accuracy {pct(h['val_accuracy'][best])}",
            f"  test, full set      {interval(e)}",
            f"  test, first half    {interval(e['first_half'])}",
            f"  test, last half     {interval(e['last_half'])}"
            + ("   <- the book protocol's test figure" if self.protocol == "book" else ""),
        ]
        return "\n".join(lines)


def _validation_size(value):
    return int(value) if float(value).is_integer() and value >= 1 else float(value)


def prepare_run(config: RunConfig, progress: bool = True) -> PreparedRun:
    """Load and split the data, fit the preprocessing and build the (untrained) model."""
    data_config = config.data
    data_config.resolve_dataset_path()
    dataset = load_dataset(data_config.dataset, data_config.data_dir or None, progress=progress)
    split = evaluation_split(
        data_config.protocol,
        dataset.train_labels,
        len(dataset.test_labels),
        _validation_size(data_config.validation),
        seed=config.training.seed,
    )
    preprocessing = Preprocessing(
        standardize=None if data_config.standardize == "none" else data_config.standardize,
        crop_border=data_config.crop_border,
        pixel_subset=data_config.pixel_subset or None,
        pixel_subset_seed=data_config.pixel_subset_seed,
    ).fit(dataset.train_images[split.train])
    x_train = preprocessing.transform(dataset.train_images[split.train])
    x_test = preprocessing.transform(dataset.test_images)
    validation = None
    if split.validation is not None:
        source = dataset.train_images if split.validation_set == "train" else dataset.test_images
        labels = dataset.train_labels if split.validation_set == "train" else dataset.test_labels
        validation = (preprocessing.transform(source[split.validation]), labels[split.validation])
    if config.training.dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be float32 or float64, not {config.training.dtype!r}")
    model = Model.build(
        config.model.spec(),
        preprocessing.n_features,
        dataset.class_names,
        loss=config.model.loss,
        output_activation=config.model.output_activation or None,
        init=config.model.init,
        seed=config.training.seed,
        dtype=np.dtype(config.training.dtype),
        preprocessing=preprocessing,
    )
    return PreparedRun(
        config,
        dataset,
        split,
        model,
        x_train,
        dataset.train_labels[split.train],
        validation,
        x_test,
        dataset.test_labels,
    )


def training_options(config: RunConfig) -> dict:
    """The keyword arguments of :func:`mlplab.training.loop.fit` that a config prescribes."""
    t, r = config.training, config.regularization
    for name in ("epochs", "batch_size"):
        if getattr(t, name) < 1:
            raise ConfigError(f"{name} must be a positive integer, got {getattr(t, name)!r}")
    optimizer = make_optimizer(
        config.optimizer.name, config.optimizer.learning_rate, **config.optimizer.options
    )
    if t.batch_size_start:
        batch_size = BatchSizeRamp(
            start=t.batch_size_start, growth=t.batch_size_growth, final=t.batch_size
        )
    else:
        batch_size = fixed_batch_size(t.batch_size)
    return {
        "optimizer": optimizer,
        "epochs": t.epochs,
        "batch_size": batch_size,
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
        "seed": t.seed,
        "threads": t.threads or None,
        "max_steps": t.max_steps or None,
    }


def train_run(
    prepared: PreparedRun, out: Path, resume: bool = False, progress: bool = True
) -> RunResult:
    """Train, save and evaluate; every file of the run folder is written atomically."""
    out = Path(out)
    config = prepared.config
    write_text(out / "config.toml", config.to_toml())
    started = time.perf_counter()
    history = prepared.model.fit(
        prepared.x_train,
        prepared.y_train,
        validation_data=prepared.validation,
        checkpoint_path=out / "checkpoint.npz",
        resume=resume,
        progress=progress,
        **training_options(config),
    )
    seconds = time.perf_counter() - started
    history.save(out)
    prepared.model.save(
        out / "model.npz", {"dataset": prepared.dataset.name, "config": config.to_dict()}
    )
    test_logits = prepared.model.network.predict_logits(prepared.x_test)
    evaluation = prepared.model.evaluate_logits(test_logits, prepared.y_test)
    evaluation.update(
        dataset=prepared.dataset.name,
        protocol=config.data.protocol,
        epochs_run=len(history),
        best_epoch=history.best_epoch,
        train_seconds=seconds,
    )
    write_json(out / "evaluation.json", evaluation)
    write_text(out / "evaluation.txt", format_evaluation(evaluation) + "\n")
    predicted = test_logits.argmax(axis=1)
    report.plot_confusion_matrix(
        np.array(evaluation["confusion_matrix"]),
        prepared.dataset.class_names,
        out / "confusion.png",
        title=f"{prepared.dataset.name} test set",
    )
    report.plot_misclassified(
        prepared.dataset.test_images,
        prepared.y_test,
        predicted,
        prepared.dataset.class_names,
        out / "misclassified.png",
    )
    return RunResult(history, evaluation, seconds, config.data.protocol)


__all__ = ["PreparedRun", "RunResult", "prepare_run", "train_run", "training_options"]
