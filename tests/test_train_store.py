"""mlplab train --store: an ad-hoc run lands in a results store beside sweep trials."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

from mlplab.cli import main
from mlplab.experiments.store import Store

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
TRAIN = ["train", "--dataset", str(MNIST_SMALL), "--validation", "200", "--threads", "1"]
TRAIN += ["--arch", "16:relu", "--epochs", "1", "--quiet"]


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv("MLPLAB_DATA", raising=False)


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_a_stored_run_has_the_run_folders_predictions_and_shows_in_runs_and_compare(tmp_path):
    store = tmp_path / "results.db"
    for seed in (0, 1):
        code, out, _ = cli(
            *TRAIN, "--seed", str(seed), "--out", str(tmp_path / f"r{seed}"), "--store", str(store)
        )
        assert code == 0, out
        assert "Recorded in the results store" in out
    with Store(store) as results:
        records = results.trials(sweep="")
    assert len(records) == 2
    with np.load(tmp_path / "r0" / "predictions.npz", allow_pickle=False) as saved:
        predicted, labels = saved["predicted"], saved["labels"]
    np.testing.assert_array_equal(records[0].predictions, predicted)
    np.testing.assert_array_equal(records[0].labels, labels)
    assert records[0].label == records[1].label == "16:relu adam lr=0.001"
    assert records[0].metrics["test_accuracy"] == pytest.approx(np.mean(predicted == labels))
    code, out, _ = cli("runs", str(store))
    assert code == 0 and out.count("16:relu adam lr=0.001") == 2
    code, out, _ = cli("compare", str(tmp_path / "r0"), f"{store}:16:relu adam lr=0.001")
    assert code == 0 and "McNemar" in out


def test_a_store_that_cannot_be_opened_is_refused_before_training(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("not a database\n" * 100)
    code, _, err = cli(*TRAIN, "--out", str(tmp_path / "r"), "--store", str(bad))
    assert code == 2 and "Traceback" not in err and "notes.db" in err
    assert not (tmp_path / "r").exists()  # nothing trained, no folder made
