"""The plots of one run folder, drawn from the data files that training stored there.

Training writes only data: ``config.toml``, ``history.json`` (or ``history.csv``),
``evaluation.json``, ``predictions.npz`` and, with ``--layer-stats``, ``layer_stats.json``.
:func:`plot_run` reads them back and draws ``curves.png``, ``confusion.png``,
``misclassified.png`` and ``layers.png``, so a plot can be redrawn, restyled
or drawn for an old run without training again. Every file is optional: what is missing is not
drawn, and what cannot be read is reported as a one-line :class:`~mlplab.errors.DataError`.
"""

from __future__ import annotations

import csv
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlplab.errors import DataError
from mlplab.report.plots import (
    plot_confusion_matrix,
    plot_curves,
    plot_layer_stats,
    plot_misclassified,
)


@dataclass
class StoredRun:
    """What a run folder holds, each part None (or empty) when its file is absent."""

    folder: Path
    config: dict = field(default_factory=dict)
    history: dict | None = None  # columns
    best_epoch: int | None = None
    stopped_early: bool = False
    evaluation: dict | None = None
    predictions: dict[str, np.ndarray] | None = None  # predicted, probabilities, labels
    layer_stats: dict | None = None  # layer_stats.json: nodes, types, epoch_numbers, epochs

    @property
    def class_names(self) -> list[str] | None:
        if self.evaluation and self.evaluation.get("class_names"):
            return [str(name) for name in self.evaluation["class_names"]]
        if self.predictions is not None and "probabilities" in self.predictions:
            return [str(i) for i in range(self.predictions["probabilities"].shape[1])]
        if self.evaluation and self.evaluation.get("confusion_matrix"):
            return [str(i) for i in range(len(self.evaluation["confusion_matrix"]))]
        return None

    @property
    def dataset(self) -> str:
        if self.evaluation and self.evaluation.get("dataset"):
            return str(self.evaluation["dataset"])
        dataset = str(self.config.get("data", {}).get("dataset", ""))
        return Path(dataset).name if "/" in dataset else dataset  # a fixture folder: its name

    @property
    def has_dropout(self) -> bool:
        model = self.config.get("model", {})
        return "dropout" in str(model.get("architecture", "")) or "dropout" in str(
            model.get("nodes", "")
        )

    def title(self) -> str:
        """What was trained, in one or two lines, from ``config.toml`` (empty if absent)."""
        data, model = self.config.get("data", {}), self.config.get("model", {})
        optimizer, schedule = self.config.get("optimizer", {}), self.config.get("schedule", {})
        training = self.config.get("training", {})
        parts = []
        if self.dataset:
            parts.append(self.dataset + (f" ({data['protocol']})" if data.get("protocol") else ""))
        if model.get("nodes"):
            parts.append("graph network")
        elif model.get("architecture"):
            parts.append(f"architecture {model['architecture']}")
        line = ", ".join(parts)
        details = []
        if optimizer.get("name"):
            rate = optimizer.get("learning_rate")
            details.append(optimizer["name"] + (f" lr={rate:g}" if rate is not None else ""))
        if schedule.get("name"):
            details.append(f"{schedule['name']} schedule")
        if training.get("batch_size"):
            details.append(f"batch {training['batch_size']}")
        if training.get("epochs"):
            epochs = f"{training['epochs']} epochs"
            if self.history and self.history.get("epoch"):
                run = len(self.history["epoch"])
                if run != training["epochs"]:
                    epochs = f"{run} of {training['epochs']} epochs"
            details.append(epochs + (" (stopped early)" if self.stopped_early else ""))
        if details:
            line = f"{line}\n{', '.join(details)}" if line else ", ".join(details)
        return line


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(
            f"cannot read {path} ({type(error).__name__}); retrain or delete it"
        ) from None


def _read_history_csv(path: Path) -> dict[str, list]:
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"cannot read {path} ({type(error).__name__}); retrain or delete it"
        ) from None
    columns: dict[str, list] = {key: [] for key in (rows[0] if rows else {})}
    for row in rows:
        for key, text in row.items():
            try:
                columns[key].append(float(text) if text else None)
            except ValueError:
                columns[key].append(text)  # a column of words, e.g. how train figures were taken
    return columns


def read_run(folder) -> StoredRun:
    """Read what :func:`plot_run` needs from a run folder; absent files are left out.

    Raises
    ------
    DataError
        If ``folder`` is not a folder, or a file in it is corrupt.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"run folder {folder} does not exist; give the --out folder of a run")
    run = StoredRun(folder)
    if (folder / "config.toml").is_file():
        try:
            run.config = tomllib.loads((folder / "config.toml").read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            message = f"cannot read {folder / 'config.toml'} ({type(error).__name__})"
            raise DataError(
                message + "; plots are drawn without a title if it is deleted"
            ) from None
    if (folder / "history.json").is_file():
        stored = _read_json(folder / "history.json")
        columns = stored.get("columns", stored) if isinstance(stored, dict) else None
        if not isinstance(columns, dict):
            raise DataError(f"{folder / 'history.json'} holds no columns; retrain or delete it")
        run.history = columns
        run.best_epoch = stored.get("best_epoch")
        run.stopped_early = bool(stored.get("stopped_early", False))
    elif (folder / "history.csv").is_file():
        run.history = _read_history_csv(folder / "history.csv")
    if (folder / "evaluation.json").is_file():
        run.evaluation = _read_json(folder / "evaluation.json")
        if run.best_epoch is None:
            run.best_epoch = run.evaluation.get("best_epoch")
    if (folder / "predictions.npz").is_file():
        try:
            with np.load(folder / "predictions.npz", allow_pickle=False) as archive:
                run.predictions = {name: archive[name] for name in archive.files}
        except (OSError, ValueError, KeyError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            message = f"cannot read {folder / 'predictions.npz'} ({reason}); retrain or delete it"
            raise DataError(message) from None
    if (folder / "layer_stats.json").is_file():
        stored = _read_json(folder / "layer_stats.json")
        if not isinstance(stored, dict) or not isinstance(stored.get("epochs"), list):
            raise DataError(
                f"{folder / 'layer_stats.json'} holds no per-epoch statistics; retrain or delete it"
            )
        run.layer_stats = stored
    return run


def _confusion(run: StoredRun) -> np.ndarray | None:
    if run.evaluation and run.evaluation.get("confusion_matrix"):
        return np.asarray(run.evaluation["confusion_matrix"])
    if run.predictions is not None and {"labels", "predicted"} <= run.predictions.keys():
        n = len(run.class_names or [])
        labels = run.predictions["labels"].astype(np.int64)  # stored as uint8
        predicted = run.predictions["predicted"].astype(np.int64)
        n = max(n, int(labels.max(initial=-1)) + 1, int(predicted.max(initial=-1)) + 1)
        pairs = labels * n + predicted
        return np.bincount(pairs, minlength=n * n).reshape(n, n)
    return None


def plot_run(folder, test_images: np.ndarray | None = None) -> list[Path]:
    """Draw the plots of a run folder from its stored files; return the paths written.

    Parameters
    ----------
    folder : str or Path
        A run folder as ``mlplab train`` writes it.
    test_images : ndarray, shape (N, H, W) or (N, H*W), optional
        The test images, in the order of ``predictions.npz`` (raw 0..255 pixels or 0..1 floats).
        Only ``misclassified.png`` needs them; without them it is not drawn.

    Returns
    -------
    list of Path
        ``curves.png`` (if there is a history), ``confusion.png`` (if there is an evaluation or
        predictions), ``misclassified.png`` (if there are predictions and ``test_images``) and
        ``layers.png`` (if there is a ``layer_stats.json``), in that order.

    Raises
    ------
    DataError
        If the folder is missing, a file in it is corrupt, or ``test_images`` does not match the
        stored predictions.
    """
    run = read_run(folder)
    folder, title, written = Path(folder), run.title(), []
    class_names = run.class_names
    if run.history:
        written.append(
            plot_curves(
                run.history,
                folder / "curves.png",
                best_epoch=run.best_epoch,
                title=title or None,
                n_classes=len(class_names) if class_names else None,
                dropout=run.has_dropout,
            )
        )
    confusion = _confusion(run)
    if confusion is not None:
        names = class_names or [str(i) for i in range(len(confusion))]
        heading = f"{run.dataset} test set" if run.dataset else "test set"
        written.append(plot_confusion_matrix(confusion, names, folder / "confusion.png", heading))
    if test_images is not None and run.predictions is not None:
        predictions = run.predictions
        missing = {"labels", "predicted"} - predictions.keys()
        if missing:
            raise DataError(
                f"{folder / 'predictions.npz'} lacks {', '.join(sorted(missing))}; retrain the run"
            )
        if len(test_images) != len(predictions["labels"]):
            raise DataError(
                f"{len(test_images)} test images given for {len(predictions['labels'])} stored "
                f"predictions in {folder / 'predictions.npz'}; pass the run's own test set"
            )
        names = class_names or [str(i) for i in range(int(predictions["labels"].max()) + 1)]
        written.append(
            plot_misclassified(
                test_images,
                predictions["labels"],
                predictions["predicted"],
                names,
                folder / "misclassified.png",
                probabilities=predictions.get("probabilities"),
                title=title.splitlines()[0] if title else None,
            )
        )
    if run.layer_stats is not None:
        written.append(plot_layer_stats(run.layer_stats, folder / "layers.png", title or None))
    return written
