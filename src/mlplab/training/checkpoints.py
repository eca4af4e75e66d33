"""Checkpoints of a training: the state to resume from, and the settings it must be resumed with.

A checkpoint is an ``.npz`` archive (see :mod:`mlplab.saving`) of format ``mlplab-checkpoint/2``:

``param/*``, ``buffer/*``  the network's weights and buffers (BatchNorm running statistics)
``optimizer/*``            the optimizer's state arrays (moments, step count)
``best/*``                 the best weights so far, when early stopping keeps some
``__architecture__``       the network's graph as JSON
``__metadata__``           JSON: ``state`` (where training stands: the 0-based ``epoch`` in
                           progress, ``batch_index`` batches into it, the global ``step``, the
                           running sums of that epoch, the history of complete epochs, the early
                           stopping record), ``rng_states`` (the dropout generators), ``settings``
                           (see :func:`training_settings`), ``epochs`` (the length the run was
                           given) and ``finished`` (for people reading the file).

Version 1 recorded only complete epochs and no settings; it is refused with a message.

Resuming is exact only with the settings that define the trajectory, so :func:`read_checkpoint`
refuses a resume whose settings differ from the recorded ones and names them. Only the number of
epochs, ``max_steps`` and the thread count may change; a schedule planned for a length of training
(:attr:`~mlplab.training.schedules.Schedule.depends_on_total`) fixes the number of epochs too.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mlplab.errors import ConfigError, DataError
from mlplab.saving import CHECKPOINT_FORMAT, network_arrays, read_archive, write_archive
from mlplab.training.schedules import Schedule


def training_settings(
    *,
    optimizer,
    schedule,
    batch_size_ramp,
    regularization,
    early_stopping,
    order_seed: int,
    dtype,
    n_examples: int,
    n_validation: int | None,
    augmentation: dict | None = None,
    augment_seed: int = 0,
    adversarial=None,
) -> dict:
    """The settings that define a training's trajectory, as plain JSON values.

    The optimizer's learning rate is left out: the schedule sets it at every step, and the
    schedule's settings include its rates. A schedule that is a plain callable rather than a
    :class:`~mlplab.training.schedules.Schedule` is recorded by its name only. ``augmentation``
    is :meth:`Augmentation.settings() <mlplab.data.augmentation.Augmentation.settings>` (None
    when off), recorded with its seed; a run without it records None, as checkpoints made before
    augmentation existed read. ``adversarial`` (an
    :class:`~mlplab.engine.regularizers.AdversarialTraining`, or None) is recorded the same way.
    """
    optimizer_config = {k: v for k, v in optimizer.config().items() if k != "learning_rate"}
    if isinstance(schedule, Schedule):
        schedule_settings = schedule.settings()
    else:
        schedule_settings = {"type": getattr(schedule, "__qualname__", type(schedule).__name__)}
    settings = {
        "optimizer": {"name": optimizer.name, **optimizer_config},
        "schedule": schedule_settings,
        "batch_size": asdict(batch_size_ramp),
        "regularization": asdict(regularization),
        "early_stopping": None if early_stopping is None else asdict(early_stopping),
        "order_seed": order_seed,
        "dtype": np.dtype(dtype).name,
        "examples": n_examples,
        "validation_examples": n_validation,
        "augmentation": None if augmentation is None else {**augmentation, "seed": augment_seed},
        "adversarial": None if adversarial is None else asdict(adversarial),
    }
    return json.loads(json.dumps(settings))  # as they read back from the file: lists, not tuples


def write_checkpoint(
    path, network, optimizer, metadata: dict, best_arrays: dict[str, np.ndarray] | None
) -> None:
    """Write the network, the optimizer's state, the best weights and ``metadata``, atomically."""
    arrays = network_arrays(network)
    arrays.update({f"optimizer/{name}": a for name, a in optimizer.state.items()})
    if best_arrays is not None:
        arrays.update({f"best/{name}": a for name, a in best_arrays.items()})
    metadata = {**metadata, "rng_states": network.rng_states()}
    write_archive(path, arrays, CHECKPOINT_FORMAT, metadata, network.architecture())


def read_checkpoint(
    path, network, optimizer, settings: dict, epochs: int
) -> tuple[dict, dict[str, np.ndarray] | None]:
    """Check that ``path`` can be resumed with these settings, then restore it.

    Fills ``network`` (weights, buffers, dropout generators) and ``optimizer`` (state arrays)
    in place and returns the recorded training ``state`` and the best weights (or None).

    Raises
    ------
    ConfigError
        When the checkpoint belongs to another architecture or was trained with other settings;
        the message names the differing settings and what to do.
    """
    path = Path(path)
    try:
        archive = read_archive(path, CHECKPOINT_FORMAT)
    except DataError as error:
        if "mlplab-checkpoint/1" in str(error):
            raise ConfigError(
                f"{path}: this checkpoint was written by an older mlplab that did not record the "
                "training settings, so it cannot be resumed exactly; start a new run"
            ) from None
        raise
    if archive.architecture != network.architecture():
        raise ConfigError(
            f"{path}: this checkpoint belongs to a different architecture; start "
            "a new run folder or drop --resume"
        )
    meta = archive.metadata
    check_resumable(path, meta["settings"], settings, meta["epochs"], epochs, meta["state"])
    for name, target in network_arrays(network).items():
        target[...] = archive.arrays[name]
    optimizer.state = {name: array.copy() for name, array in archive.group("optimizer").items()}
    network.set_rng_states(meta["rng_states"])
    return meta["state"], archive.group("best") or None


def check_resumable(
    path, recorded: dict, current: dict, recorded_epochs: int, epochs: int, state: dict
) -> None:
    """Raise ConfigError unless a run recorded with ``recorded`` settings can go on with these."""
    keys = list(current) + [key for key in recorded if key not in current]
    differing = [key for key in keys if recorded.get(key) != current.get(key)]
    if not differing:
        return
    if differing == ["schedule"] and _without_total(recorded["schedule"]) == _without_total(
        current["schedule"]
    ):
        rates = state["history"]["columns"]["learning_rate"]
        reached = f"; its rate is down to {rates[-1]:.3g}" if rates else ""
        raise ConfigError(
            f"{path}: this run's {_name(recorded['schedule'])} schedule was planned for "
            f"{_total(recorded['schedule']):g} epochs{reached}, and one planned for "
            f"{_total(current['schedule']):g} epochs differs from its first step, so the run "
            f"cannot be extended to {epochs} epochs exactly; train a new run with "
            f"{epochs} epochs (--epochs {epochs}), or resume with --epochs {recorded_epochs}"
        )
    described = "; ".join(
        f"{key} was {json.dumps(recorded.get(key))}, now {json.dumps(current.get(key))}"
        for key in differing
    )
    raise ConfigError(
        f"{path}: resuming needs the settings this checkpoint was trained with ({described}); "
        "resume with those, or start a new run folder"
    )


def _without_total(settings: dict) -> dict:
    """Schedule settings with every ``total_epochs`` left out (a warm-up wraps its schedule)."""
    return {
        key: _without_total(value) if isinstance(value, dict) else value
        for key, value in settings.items()
        if key != "total_epochs"
    }


def _total(settings: dict) -> float:
    if "total_epochs" in settings:
        return settings["total_epochs"]
    return _total(settings["schedule"])


def _name(settings: dict) -> str:
    """The planned schedule's name as make_schedule spells it, looking through a warm-up."""
    inner = settings.get("schedule")
    if isinstance(inner, dict):
        return _name(inner)
    return re.sub(r"(?<!^)(?=[A-Z])", "-", settings["type"]).lower()  # OneCycle: one-cycle
