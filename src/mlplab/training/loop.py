"""The training loop: mini-batches, schedules, early stopping, checkpoints and a divergence guard.

One epoch is a seeded permutation of the training indices, sliced into batches; the data are
never copied, each batch is gathered by fancy indexing. The permutation of epoch ``e`` comes from
``default_rng([seed, e])`` and the learning rate and batch size are pure functions of the epoch,
so the only state a resumed run needs is the weights, the optimizer's arrays, the dropout
generators and the early-stopping record, all of which a checkpoint holds. With the same seed and
thread count, a run resumed from a checkpoint ends with bit-identical weights.

A training step::

    logits = network.forward(x, training=True)
    loss.forward(logits, y); network.backward(loss.backward())
    regularization.add_penalty_gradients(...); regularization.clip_gradients(...)
    optimizer.update(params, grads); regularization.apply_max_norm(params)
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mlplab.engine.regularizers import Regularization
from mlplab.errors import ConfigError, DivergenceError
from mlplab.saving import CHECKPOINT_FORMAT, network_arrays, read_archive, write_archive, write_text
from mlplab.training.schedules import BatchSizeRamp, Constant, fixed_batch_size, steps_per_epoch
from mlplab.training.threads import thread_limit

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "batch_size",
    "seconds",
]


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    The best weights are always restored at the end (Keras forgets to by default). Validation
    must come from the training set (or the book protocol's first test half), never the figures
    you report.
    """

    monitor: str = "val_loss"
    patience: int = 3
    min_delta: float = 0.0

    def __post_init__(self):
        if self.monitor not in ("val_loss", "val_accuracy"):
            raise ConfigError(
                f"early stopping monitors val_loss or val_accuracy, not {self.monitor!r}"
            )
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ConfigError(
                f"early stopping patience must be a positive integer, got {self.patience!r}"
            )
        if self.min_delta < 0:
            raise ConfigError(f"min_delta must not be negative, got {self.min_delta!r}")

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.monitor == "val_loss":
            return value < best - self.min_delta
        return value > best + self.min_delta


@dataclass
class History:
    """Per-epoch records as plain lists (``history.columns["val_loss"]``), plus how it ended."""

    columns: dict[str, list] = field(default_factory=lambda: {k: [] for k in HISTORY_COLUMNS})
    best_epoch: int | None = None  # 1-based epoch whose weights the model ends with
    stopped_early: bool = False

    def __getitem__(self, key: str) -> list:
        return self.columns[key]

    def __len__(self) -> int:
        return len(self.columns["epoch"])

    def append(self, **record) -> None:
        for key in HISTORY_COLUMNS:
            self.columns[key].append(record.get(key))

    def to_dict(self) -> dict:
        return {
            "columns": self.columns,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, value: dict) -> History:
        return cls(value["columns"], value.get("best_epoch"), value.get("stopped_early", False))

    def save(self, folder: Path) -> None:
        """``history.json`` and ``history.csv`` in ``folder``, each written atomically."""
        folder = Path(folder)
        write_text(folder / "history.json", json.dumps(self.to_dict(), indent=2) + "\n")
        lines = [",".join(HISTORY_COLUMNS)]
        for row in zip(*(self.columns[k] for k in HISTORY_COLUMNS)):
            lines.append(",".join("" if v is None else repr(v) for v in row))
        write_text(folder / "history.csv", "\n".join(lines) + "\n")


def read_history_csv(path) -> dict[str, list[float]]:
    """Read a ``history.csv`` back (for reports that plot stored runs)."""
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return {key: [float(row[key]) if row[key] else None for row in rows] for key in HISTORY_COLUMNS}


def evaluate_loss(network, loss, x, y, batch_size: int = 1000) -> tuple[float, float]:
    """Mean loss and accuracy of ``network`` on ``(x, y)`` in inference mode."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = network.forward(x[start : start + batch_size])
        batch_labels = y[start : start + batch_size]
        total_loss += loss.forward(logits, batch_labels) * len(batch_labels)
        correct += int((logits.argmax(axis=1) == batch_labels).sum())
    return total_loss / len(y), correct / len(y)


def _snapshot(network) -> dict[str, np.ndarray]:
    return {name: array.copy() for name, array in network_arrays(network).items()}


def _restore(network, arrays: dict[str, np.ndarray]) -> None:
    for name, target in network_arrays(network).items():
        target[...] = arrays[name]


def fit(
    network,
    loss,
    x: np.ndarray,
    y: np.ndarray,
    *,
    optimizer,
    epochs: int,
    batch_size: int | BatchSizeRamp = 128,
    schedule=None,
    validation_data=None,
    regularization: Regularization | None = None,
    early_stopping: EarlyStopping | None = None,
    seed: int = 0,
    threads: int | None = None,
    checkpoint_path=None,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    callbacks=(),
) -> History:
    """Train ``network`` in place and return its :class:`History`.

    Parameters
    ----------
    network : mlplab.engine.graph.Network
    loss : a loss from :mod:`mlplab.engine.losses`
    x, y : arrays
        Features ``(N, input_size)`` (float32) and integer labels ``(N,)``.
    optimizer : mlplab.engine.optimizers.Optimizer
    epochs : int
        Number of passes over the data (``max_steps`` may stop earlier).
    batch_size : int or BatchSizeRamp
        A fixed size or a ramp such as ``BatchSizeRamp(start=20, growth=2, final=128)``.
    schedule : callable ``epoch (float) -> learning rate``, optional
        From :mod:`mlplab.training.schedules`; default: the optimizer's learning rate, constant.
    validation_data : (x_val, y_val), optional
    regularization : Regularization, optional
    early_stopping : EarlyStopping, optional
        Needs ``validation_data``; the best weights are restored at the end.
    seed : int
        Seeds the per-epoch shuffles.
    threads : int, optional
        BLAS and element-wise threads; the same count is needed for bit-identical reruns.
    checkpoint_path : path, optional
        Written atomically after every epoch.
    resume : bool
        Continue from ``checkpoint_path`` if it exists.
    callbacks : iterable
        Objects with ``on_epoch_end(epoch, record)``; returning True stops training.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
    if len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"need as many labels as examples (got {len(x)} and {len(y)}), and some")
    if early_stopping is not None and validation_data is None:
        raise ConfigError("early stopping needs validation data (a holdout or the book protocol)")
    ramp = batch_size if isinstance(batch_size, BatchSizeRamp) else fixed_batch_size(batch_size)
    schedule = schedule or Constant(optimizer.learning_rate)
    regularization = regularization or Regularization()
    x = x if x.dtype == network.dtype else x.astype(network.dtype)
    params, grads = network.params, network.grads
    history, best_value, best_arrays, wait = History(), None, None, 0
    start_epoch, step = 0, 0
    if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
        state = _load_checkpoint(checkpoint_path, network, optimizer)
        history = History.from_dict(state["history"])
        start_epoch, step = state["epoch"], state["step"]
        best_value, wait = state["best_value"], state["wait"]
        best_arrays = state["best_arrays"]
        steps_done = max_steps is not None and step >= max_steps
        if history.stopped_early or start_epoch >= epochs or steps_done:
            return _finish(network, history, best_arrays)

    # Overflow on the way to a NaN is reported once, by the divergence guard, not as warnings.
    with thread_limit(threads), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        stop = False
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            size = ramp.batch_size(epoch)
            order = np.random.default_rng([seed, epoch]).permutation(len(y))
            n_steps = steps_per_epoch(len(y), size)
            loss_sum, correct, seen = 0.0, 0, 0
            bar = tqdm(
                total=len(y),
                desc=f"epoch {epoch + 1}/{epochs}",
                unit="ex",
                unit_scale=True,
                leave=True,
                disable=not progress,
                dynamic_ncols=True,
            )
            for batch_index in range(n_steps):
                learning_rate = schedule(epoch + batch_index / n_steps)
                optimizer.learning_rate = learning_rate
                indices = order[batch_index * size : (batch_index + 1) * size]
                xb, yb = x[indices], y[indices]
                logits = network.forward(xb, training=True)
                correct += int((logits.argmax(axis=1) == yb).sum())
                batch_loss = loss.forward(logits, yb)
                if not math.isfinite(batch_loss):
                    bar.close()
                    _diverged(
                        epoch,
                        batch_index,
                        f"the loss became {batch_loss}",
                        learning_rate,
                        checkpoint_path,
                    )
                network.backward(loss.backward())
                regularization.add_penalty_gradients(params, grads)
                regularization.clip_gradients(grads)
                optimizer.update(params, grads)
                regularization.apply_max_norm(params)
                loss_sum += batch_loss * len(yb)
                seen += len(yb)
                step += 1
                bar.update(len(yb))
                if batch_index % 20 == 0 or batch_index == n_steps - 1:
                    bar.set_postfix(
                        loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False
                    )
                if max_steps is not None and step >= max_steps:
                    stop = True
                    break
            if not all(np.isfinite(p).all() for p in params.values()):
                bar.close()
                _diverged(
                    epoch, n_steps - 1, "a weight became NaN or Inf", learning_rate, checkpoint_path
                )
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "learning_rate": learning_rate,
                "batch_size": size,
            }
            if validation_data is not None:
                record["val_loss"], record["val_accuracy"] = evaluate_loss(
                    network, loss, *validation_data
                )
                if not math.isfinite(record["val_loss"]):
                    bar.close()
                    _diverged(
                        epoch,
                        n_steps - 1,
                        f"the validation loss became {record['val_loss']}",
                        learning_rate,
                        checkpoint_path,
                    )
                bar.set_postfix(
                    loss=f"{record['train_loss']:.4f}",
                    acc=f"{record['train_accuracy']:.4f}",
                    val_loss=f"{record['val_loss']:.4f}",
                    val_acc=f"{record['val_accuracy']:.4f}",
                )
            bar.close()
            record["seconds"] = time.perf_counter() - started
            history.append(**record)
            if early_stopping is not None:
                value = record[early_stopping.monitor]
                if early_stopping.improved(value, best_value):
                    best_value, wait, best_arrays = value, 0, _snapshot(network)
                    history.best_epoch = epoch + 1
                else:
                    wait += 1
                    if wait >= early_stopping.patience:
                        history.stopped_early = stop = True
            for callback in callbacks:
                stop = bool(callback.on_epoch_end(epoch + 1, record)) or stop
            if checkpoint_path is not None:  # the last weights, so that more epochs can follow
                _save_checkpoint(
                    checkpoint_path,
                    network,
                    optimizer,
                    history,
                    epoch + 1,
                    step,
                    best_value,
                    wait,
                    best_arrays,
                    stop or epoch + 1 == epochs,
                )
            if stop:
                break
    return _finish(network, history, best_arrays)


def _finish(network, history, best_arrays) -> History:
    """End with the best weights when early stopping kept some (always: Keras forgets to)."""
    if best_arrays is not None:
        _restore(network, best_arrays)
    if history.best_epoch is None:
        history.best_epoch = len(history)
    return history


def _diverged(epoch, batch_index, what, learning_rate, checkpoint_path):
    kept = (
        f"the last good checkpoint is kept at {checkpoint_path}"
        if checkpoint_path is not None and Path(checkpoint_path).exists()
        else "no checkpoint was written before this"
    )
    raise DivergenceError(
        f"training diverged at epoch {epoch + 1}, step {batch_index + 1}: {what}. Likely causes: "
        f"a learning rate too high (it was {learning_rate:g}; try 10x lower), or an unstable loss "
        f"or activation; {kept}"
    )


# ------------------------------------------------------------------------- checkpoints
def _save_checkpoint(
    path, network, optimizer, history, epoch, step, best_value, wait, best_arrays, finished
):
    arrays = network_arrays(network)
    arrays.update({f"optimizer/{name}": a for name, a in optimizer.state.items()})
    if best_arrays is not None:
        arrays.update({f"best/{name}": a for name, a in best_arrays.items()})
    metadata = {
        "epoch": epoch,
        "step": step,
        "finished": finished,  # for people reading the file; resuming decides from the rest
        "history": history.to_dict(),
        "best_value": best_value,
        "wait": wait,
        "rng_states": network.rng_states(),
        "optimizer": {"name": optimizer.name, **optimizer.config()},
        "dtype": network.dtype.name,
    }
    write_archive(path, arrays, CHECKPOINT_FORMAT, metadata, network.architecture())


def _load_checkpoint(path, network, optimizer) -> dict:
    archive = read_archive(path, CHECKPOINT_FORMAT)
    if archive.architecture != network.architecture():
        raise ConfigError(
            f"{path}: this checkpoint belongs to a different architecture; start "
            "a new run folder or drop --resume"
        )
    if archive.metadata["optimizer"]["name"] != optimizer.name:
        raise ConfigError(
            f"{path}: this checkpoint was trained with "
            f"{archive.metadata['optimizer']['name']}, not {optimizer.name}"
        )
    _restore(network, {name: archive.arrays[name] for name in network_arrays(network)})
    optimizer.state = {name: array.copy() for name, array in archive.group("optimizer").items()}
    network.set_rng_states(archive.metadata["rng_states"])
    best = archive.group("best")
    meta = archive.metadata
    return {
        "epoch": meta["epoch"],
        "step": meta["step"],
        "history": meta["history"],
        "best_value": meta["best_value"],
        "wait": meta["wait"],
        "best_arrays": best or None,
    }
