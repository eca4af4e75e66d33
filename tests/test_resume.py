"""Resuming from a checkpoint ends bit-identical to an uninterrupted run, even after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import Crash, CrashAt, resume_data

from mlplab.engine.optimizers import make_optimizer
from mlplab.engine.regularizers import AdversarialTraining, Regularization
from mlplab.errors import ConfigError
from mlplab.saving import read_archive, write_archive
from mlplab.training.checkpoints import CHECKPOINT_FORMAT
from mlplab.training.loop import HISTORY_COLUMNS, EarlyStopping, read_history_csv
from mlplab.training.model import Model
from mlplab.training.schedules import BatchSizeRamp, make_schedule

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
CLASSES = [str(i) for i in range(10)]
ARCHITECTURE = "48:relu:dropout(0.3),24:tanh:dropout(0.1)"  # dropout: the RNG state matters


@pytest.fixture(scope="module")
def data():
    return resume_data()


def run(
    data,
    epochs,
    checkpoint=None,
    resume=False,
    callbacks=(),
    validation=None,
    patience=5,
    architecture=ARCHITECTURE,
    optimizer="adam",
    **options,
):
    """Build a fresh model (as a new process would) and train it; returns (model, history).

    ``options`` go to ``fit`` as they are, except ``schedule``: a ``(name, options)`` pair built
    with ``make_schedule`` for this call's ``epochs``, as the CLI does.
    """
    x, y, x_val, y_val = data
    if "schedule" in options:
        name, schedule_options = options["schedule"]
        options["schedule"] = make_schedule(name, 2e-3, epochs, **schedule_options)
    model = Model.build(architecture, 784, CLASSES, seed=3)
    options = {
        "optimizer": make_optimizer(optimizer, 2e-3) if isinstance(optimizer, str) else optimizer,
        "epochs": epochs,
        "batch_size": 40,
        "validation_data": validation or (x_val, y_val),
        "early_stopping": EarlyStopping(patience=patience),
        "order_seed": 11,
        "threads": 1,
        "checkpoint_path": checkpoint,
        "resume": resume,
        "progress": False,
        "callbacks": callbacks,
        **options,
    }
    history = model.fit(x, y, **options)
    return model, history


def assert_same_weights(a, b):
    params_a, params_b = a.network.params, b.network.params
    assert params_a.keys() == params_b.keys()
    for name in params_a:
        assert np.array_equal(params_a[name], params_b[name]), f"{name} differs"


def assert_same_history(a, b):
    for column in HISTORY_COLUMNS:
        if column != "seconds":
            assert a[column] == b[column], column
    assert (a.best_epoch, a.stopped_early) == (b.best_epoch, b.stopped_early)


# ------------------------------------------------------------------ in-process
def test_resume_after_a_crash_is_bit_identical_to_an_uninterrupted_run(data, tmp_path):
    reference, reference_history = run(data, 3, tmp_path / "reference.npz")
    checkpoint = tmp_path / "interrupted.npz"
    with pytest.raises(Crash):
        run(data, 3, checkpoint, callbacks=[CrashAt(2)])
    assert read_archive(checkpoint, CHECKPOINT_FORMAT).metadata["state"]["epoch"] == 1
    resumed, resumed_history = run(data, 3, checkpoint, resume=True)
    assert_same_weights(resumed, reference)
    assert_same_history(resumed_history, reference_history)
    # The optimizer state (Adam's moments and step) is carried over too.
    final = read_archive(checkpoint, CHECKPOINT_FORMAT)
    expected = read_archive(tmp_path / "reference.npz", CHECKPOINT_FORMAT)
    assert final.group("optimizer").keys() == expected.group("optimizer").keys()
    for name, array in expected.group("optimizer").items():
        assert np.array_equal(final.group("optimizer")[name], array), name


def test_resume_a_one_epoch_run_with_more_epochs_is_bit_identical_to_training_them_at_once(
    data, tmp_path
):
    reference, reference_history = run(data, 3, tmp_path / "reference.npz")
    checkpoint = tmp_path / "short.npz"
    run(data, 1, checkpoint)
    resumed, resumed_history = run(data, 3, checkpoint, resume=True)
    assert len(resumed_history) == 3
    assert_same_weights(resumed, reference)
    assert_same_history(resumed_history, reference_history)


def test_resume_restores_the_early_stopping_record(data, tmp_path):
    x, y, _, _ = data
    wrong = (x, (y + 1) % 10)  # validation loss rises every epoch: epoch 1 stays the best
    reference, reference_history = run(data, 8, validation=wrong, patience=3)
    assert reference_history.stopped_early and len(reference_history) == 4
    assert reference_history.best_epoch == 1
    checkpoint = tmp_path / "checkpoint.npz"
    with pytest.raises(Crash):
        run(data, 8, checkpoint, validation=wrong, patience=3, callbacks=[CrashAt(3)])
    # The checkpoint of epoch 2 holds one epoch without improvement and the best weights.
    resumed, resumed_history = run(data, 8, checkpoint, resume=True, validation=wrong, patience=3)
    assert_same_history(resumed_history, reference_history)
    assert_same_weights(resumed, reference)


def test_resuming_a_run_that_stopped_early_trains_no_further(data, tmp_path):
    x, y, _, _ = data
    wrong = (x, (y + 1) % 10)
    checkpoint = tmp_path / "checkpoint.npz"
    stopped, history = run(data, 8, checkpoint, validation=wrong, patience=1)
    assert history.stopped_early and len(history) == 2
    again, again_history = run(data, 8, checkpoint, resume=True, validation=wrong, patience=1)
    assert len(again_history) == 2 and again_history.stopped_early
    assert_same_weights(again, stopped)


def test_resume_refuses_a_checkpoint_of_another_architecture(data, tmp_path):
    checkpoint = tmp_path / "checkpoint.npz"
    run(data, 1, checkpoint, architecture="16:relu")
    with pytest.raises(ConfigError, match="architecture"):
        run(data, 2, checkpoint, resume=True, architecture="32:relu")


def test_resume_refuses_a_checkpoint_of_another_optimizer(data, tmp_path):
    checkpoint = tmp_path / "checkpoint.npz"
    run(data, 1, checkpoint, architecture="16:relu", optimizer="adam")
    with pytest.raises(ConfigError, match="adam"):
        run(data, 2, checkpoint, resume=True, architecture="16:relu", optimizer="rmsprop")


def test_resume_after_a_crash_with_a_cosine_schedule_is_bit_identical(data, tmp_path):
    cosine = ("cosine", {"warmup_epochs": 1})
    reference, reference_history = run(data, 3, schedule=cosine)
    checkpoint = tmp_path / "interrupted.npz"
    with pytest.raises(Crash):
        run(data, 3, checkpoint, callbacks=[CrashAt(2)], schedule=cosine)
    resumed, resumed_history = run(data, 3, checkpoint, resume=True, schedule=cosine)
    assert_same_weights(resumed, reference)
    assert_same_history(resumed_history, reference_history)


# ------------------------------------------------------------------ max_steps
@pytest.mark.parametrize("max_steps", [7, 20, 15])
def test_max_steps_then_resume_is_bit_identical_to_an_uninterrupted_run(data, tmp_path, max_steps):
    # Batch sizes 40, 80, 160: 15, 8 and 4 steps. Step 7 and 20 stop inside epochs 1 and 2,
    # step 15 at the end of epoch 1. Dropout: the generators' states must carry over too.
    options = {"batch_size": BatchSizeRamp(start=40, growth=2, final=160)}
    options["schedule"] = ("step", {"every_epochs": 1, "gamma": 0.5})
    reference, reference_history = run(data, 3, **options)
    checkpoint = tmp_path / "checkpoint.npz"
    stopped, stopped_history = run(data, 3, checkpoint, max_steps=max_steps, **options)
    assert sum(stopped_history["steps"]) == max_steps
    assert stopped_history["epoch"][-1] == 1 + (max_steps > 15)
    state = read_archive(checkpoint, CHECKPOINT_FORMAT).metadata["state"]
    assert state["step"] == max_steps
    # Resuming with the same max_steps has nothing left to do; without it, the run goes on.
    again, again_history = run(data, 3, checkpoint, resume=True, max_steps=max_steps, **options)
    assert_same_weights(again, stopped)
    assert_same_history(again_history, stopped_history)
    resumed, resumed_history = run(data, 3, checkpoint, resume=True, **options)
    assert resumed_history["steps"] == [15, 8, 4]
    assert_same_weights(resumed, reference)
    assert_same_history(resumed_history, reference_history)


def test_max_steps_then_resume_with_adversarial_training_is_bit_identical(data, tmp_path):
    # Adversarial steps draw a second set of dropout masks per step: the generators' states at
    # the stop must still be those an uninterrupted run has there.
    options = {"adversarial": AdversarialTraining(epsilon=0.1)}
    reference, reference_history = run(data, 2, **options)
    checkpoint = tmp_path / "checkpoint.npz"
    run(data, 2, checkpoint, max_steps=9, **options)
    resumed, resumed_history = run(data, 2, checkpoint, resume=True, **options)
    assert_same_weights(resumed, reference)
    assert_same_history(resumed_history, reference_history)


def test_max_steps_can_stop_a_resumed_run_again_inside_the_next_epoch(data, tmp_path):
    reference, reference_history = run(data, 2)
    checkpoint = tmp_path / "checkpoint.npz"
    for max_steps in (4, 11, 19, 26):  # batch size 40: 15 steps an epoch
        _, history = run(data, 2, checkpoint, resume=True, max_steps=max_steps)
        assert sum(history["steps"]) == max_steps
    resumed, resumed_history = run(data, 2, checkpoint, resume=True)
    assert_same_weights(resumed, reference)
    assert_same_history(resumed_history, reference_history)


# ------------------------------------------------------------------ extending a finished run
def test_extending_a_finished_run_with_a_step_schedule_equals_the_longer_run(data, tmp_path):
    step = ("step", {"every_epochs": 1, "gamma": 0.5})
    reference, reference_history = run(data, 5, schedule=step)
    checkpoint = tmp_path / "checkpoint.npz"
    _, short_history = run(data, 3, checkpoint, schedule=step)
    assert read_archive(checkpoint, CHECKPOINT_FORMAT).metadata["finished"] is True
    extended, extended_history = run(data, 5, checkpoint, resume=True, schedule=step)
    assert len(extended_history) == 5
    assert extended_history["learning_rate"][:3] == short_history["learning_rate"]
    assert_same_weights(extended, reference)
    assert_same_history(extended_history, reference_history)


@pytest.mark.parametrize(
    "schedule",
    [("cosine", {}), ("one-cycle", {}), ("cosine", {"warmup_epochs": 1})],
)
def test_extending_a_run_whose_schedule_depends_on_its_length_is_refused_saying_why(
    data, tmp_path, schedule
):
    checkpoint = tmp_path / "checkpoint.npz"
    short, _ = run(data, 2, checkpoint, schedule=schedule)
    with pytest.raises(ConfigError) as caught:
        run(data, 3, checkpoint, resume=True, schedule=schedule)
    message = str(caught.value)
    assert f"{schedule[0]} schedule was planned for 2 epochs" in message
    assert "its rate is down to" in message
    assert "differs from its first step" in message
    assert "new run with 3 epochs" in message and "\n" not in message
    # Refused before anything was restored: resuming with the planned length still works.
    again, again_history = run(data, 2, checkpoint, resume=True, schedule=schedule)
    assert len(again_history) == 2
    assert_same_weights(again, short)


# ------------------------------------------------------------------ changed settings
@pytest.mark.parametrize(
    "changed, named",
    [
        ({"order_seed": 12}, "order_seed"),
        ({"batch_size": 50}, "batch_size"),
        ({"batch_size": BatchSizeRamp(start=40, growth=2)}, "batch_size"),
        ({"schedule": ("step", {"gamma": 0.1})}, "schedule"),
        ({"regularization": Regularization(l2=1e-4)}, "regularization"),
        ({"adversarial": AdversarialTraining(epsilon=0.1)}, "adversarial"),
        ({"early_stopping": EarlyStopping(patience=2)}, "early_stopping"),
        ({"early_stopping": None}, "early_stopping"),
        ({"optimizer": make_optimizer("adam", 2e-3, beta1=0.8)}, "optimizer"),
        ({"validation": "training set"}, "validation_examples"),
        ({"examples": 500}, "examples"),
    ],
)
def test_resume_refuses_changed_settings_naming_them_in_one_line(data, tmp_path, changed, named):
    checkpoint = tmp_path / "checkpoint.npz"
    run(data, 1, checkpoint)
    x, y, x_val, y_val = data
    if "validation" in changed:
        changed = {"validation": (x, y)}
    if "examples" in changed:
        data = (x[: changed.pop("examples")], y[:500], x_val, y_val)
    with pytest.raises(ConfigError) as caught:
        run(data, 2, checkpoint, resume=True, **changed)
    message = str(caught.value)
    assert f"{named} was" in message and "\n" not in message
    others = {"order_seed", "batch_size", "schedule", "regularization", "early_stopping"} - {named}
    assert not any(f"{other} was" in message for other in others)


def test_resume_accepts_other_threads_and_max_steps(data, tmp_path):
    checkpoint = tmp_path / "checkpoint.npz"
    run(data, 1, checkpoint)
    _, history = run(data, 2, checkpoint, resume=True, threads=2, max_steps=20)
    assert sum(history["steps"]) == 20


def test_resume_refuses_a_checkpoint_of_the_first_format_with_a_message(data, tmp_path):
    checkpoint = tmp_path / "checkpoint.npz"
    model = Model.build(ARCHITECTURE, 784, CLASSES, seed=3)
    write_archive(checkpoint, {}, "mlplab-checkpoint/1", {"epoch": 1}, model.network.architecture())
    with pytest.raises(ConfigError, match="older mlplab"):
        run(data, 2, checkpoint, resume=True)


# ------------------------------------------------------------------ SIGKILL
def _command(out: Path) -> list[str]:
    # Batch size 2 makes an epoch take a good fraction of a second, so that right after a
    # checkpoint appears the process is in the middle of the next epoch.
    return [
        sys.executable,
        "-m",
        "mlplab",
        "train",
        "--dataset",
        str(MNIST_SMALL),
        "--arch",
        "64:relu:dropout(0.2)",
        "--epochs",
        "3",
        "--batch-size",
        "2",
        "--validation",
        "200",
        "--early-stopping",
        "5",
        "--threads",
        "1",
        "--quiet",
        "--out",
        str(out),
    ]


def _environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "MLPLAB_DATA"}


def test_run_killed_mid_epoch_resumes_to_bit_identical_weights(tmp_path):
    env = _environment()
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = subprocess.Popen(
        _command(reference_dir),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = subprocess.Popen(
        _command(killed_dir),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoint = killed_dir / "checkpoint.npz"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    state = read_archive(checkpoint, CHECKPOINT_FORMAT).metadata
    assert state["state"]["epoch"] < 3 and not state["finished"]
    assert not (killed_dir / "model.npz").exists()

    resumed = subprocess.run(
        _command(killed_dir) + ["--resume"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err

    with (
        np.load(killed_dir / "model.npz", allow_pickle=False) as got,
        np.load(reference_dir / "model.npz", allow_pickle=False) as expected,
    ):
        assert sorted(got.files) == sorted(expected.files)
        numeric = [name for name in expected.files if not name.startswith("__")]
        assert numeric, "the model file holds no arrays"
        for name in expected.files:
            assert np.array_equal(got[name], expected[name]), f"{name} differs"
    got_history = read_history_csv(killed_dir / "history.csv")
    expected_history = read_history_csv(reference_dir / "history.csv")
    assert got_history["val_loss"] == expected_history["val_loss"]
    assert got_history["epoch"] == [1.0, 2.0, 3.0]
    assert (
        json.loads((killed_dir / "evaluation.json").read_text())["accuracy"]
        == json.loads((reference_dir / "evaluation.json").read_text())["accuracy"]
    )

    assert list(killed_dir.glob(".*.tmp")) == [] and list(killed_dir.glob("*.tmp")) == []
    with np.load(checkpoint, allow_pickle=False) as archive:
        assert str(archive["__format__"]) == CHECKPOINT_FORMAT
        assert all(archive[name].dtype != object for name in archive.files)
