"""`mlplab compare` and `mlplab runs` on run folders and stores built by hand (no training)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from mlplab.cli import main
from mlplab.cli.experiments import format_p, sentence
from mlplab.experiments.records import TrialRecord
from mlplab.experiments.store import Store, labels_sha256

N_TEST = 10_000
LABELS = np.random.default_rng(0).integers(0, 10, N_TEST).astype(np.uint8)


def predictions_with(wrong: np.ndarray) -> np.ndarray:
    """Predictions that are wrong exactly on the images where ``wrong`` is True."""
    return np.where(wrong, (LABELS + 1) % 10, LABELS).astype(np.uint8)


def base_errors(seed: int) -> np.ndarray:
    """About 2% of the images wrong, different for every seed."""
    return np.random.default_rng(100 + seed).random(N_TEST) < 0.02


def write_run_folder(folder, predicted, labels=LABELS, seed=0):
    folder.mkdir(parents=True)
    np.savez(folder / "predictions.npz", predicted=predicted, labels=labels)
    accuracy = float(np.mean(predicted == labels))
    (folder / "evaluation.json").write_text(json.dumps({"accuracy": accuracy}))
    (folder / "config.toml").write_text(f"[training]\nseed = {seed}\n")
    return folder


def make_record(
    seed: int, learning_rate: float, wrong: np.ndarray, labels=LABELS, store_labels=True
):
    predicted = predictions_with(wrong)
    return TrialRecord(
        config={
            "data": {"dataset": "mnist"},
            "model": {"architecture": "950:relu,50:sigmoid"},
            "optimizer": {"name": "adam", "learning_rate": learning_rate},
            "training": {"seed": seed, "epochs": 15},
        },
        sweep="lr",
        label=f"950:relu,50:sigmoid lr={learning_rate}",
        seeds={"seed": seed},
        metrics={
            "test_accuracy": float(np.mean(predicted == labels)),
            "test_first_half": 0.99,
            "test_last_half": 0.98,
            "val_accuracy": 0.985,
            "epochs_run": 15,
        },
        timings={"train_seconds": 12.25},
        predictions=predicted,
        labels=labels if store_labels else None,
        labels_sha256=labels_sha256(labels),
    )


@pytest.fixture
def store_path(tmp_path):
    """A store with two configurations x 5 seeds; lr=0.01 fixes 30 more images on every seed."""
    path = tmp_path / "results.db"
    with Store(path) as store:
        for seed in range(5):
            errors = base_errors(seed)
            store.add(make_record(seed, 0.001, errors))
            better = errors.copy()
            better[np.flatnonzero(errors)[:30]] = False
            store.add(make_record(seed, 0.01, better))
    return path


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------- compare: folders


def test_compare_says_b_is_better_when_it_fixes_many_more_images(tmp_path, capsys):
    errors = base_errors(0)
    better = errors.copy()
    better[np.flatnonzero(errors)[:40]] = False  # B fixes 40 of A's errors
    better[np.flatnonzero(~errors)[:5]] = True  # and breaks 5 images A gets right
    a = write_run_folder(tmp_path / "a", predictions_with(errors))
    b = write_run_folder(tmp_path / "b", predictions_with(better))
    code, out, _ = run_cli(capsys, "compare", str(a), str(b))
    assert code == 0
    assert "only A right on 5, only B right on 40 of 10000 images" in out
    assert out.strip().splitlines()[-1] == (
        "B is better by 0.35 points, p < 0.001 (McNemar's exact test), significant at 5%."
    )


def test_compare_says_within_noise_for_identical_runs(tmp_path, capsys):
    predicted = predictions_with(base_errors(0))
    a = write_run_folder(tmp_path / "a", predicted)
    b = write_run_folder(tmp_path / "b", predicted)
    code, out, _ = run_cli(capsys, "compare", str(a), str(b))
    assert code == 0
    assert out.strip().splitlines()[-1] == (
        "The difference is within noise: B - A = +0.00 points, p = 1.00 (McNemar's exact "
        "test), not significant at 5%."
    )


def test_compare_json_has_accuracies_intervals_difference_and_the_sentence(tmp_path, capsys):
    errors = base_errors(0)
    worse = errors | (np.arange(N_TEST) < 60)
    a = write_run_folder(tmp_path / "a", predictions_with(errors))
    b = write_run_folder(tmp_path / "b", predictions_with(worse))
    code, out, _ = run_cli(capsys, "compare", str(a), str(b), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["a"]["low"] < result["a"]["accuracy"] < result["a"]["high"]
    assert result["difference"] < 0 and result["difference_high"] < 0
    assert result["significant"] is True and result["paired_seeds"] is None
    assert result["decided_by"] == "McNemar's exact test"
    assert result["sentence"].startswith("A is better by")
    assert result["mcnemar"]["b_only"] == 0


def test_compare_refuses_predictions_of_different_test_sets(tmp_path, capsys):
    other_labels = LABELS.copy()
    other_labels[0] = (other_labels[0] + 1) % 10
    a = write_run_folder(tmp_path / "a", LABELS.copy())
    b = write_run_folder(tmp_path / "b", LABELS.copy(), labels=other_labels)
    code, out, err = run_cli(capsys, "compare", str(a), str(b))
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "were scored on different test sets" in err


def test_compare_refuses_test_sets_of_different_sizes(tmp_path, capsys):
    a = write_run_folder(tmp_path / "a", LABELS.copy())
    b = write_run_folder(tmp_path / "b", LABELS[:500].copy(), labels=LABELS[:500])
    code, _, err = run_cli(capsys, "compare", str(a), str(b))
    assert code == 2 and "different test sets" in err


def test_compare_explains_a_run_folder_without_predictions(tmp_path, capsys):
    a = write_run_folder(tmp_path / "a", LABELS.copy())
    (tmp_path / "old").mkdir()
    code, _, err = run_cli(capsys, "compare", str(a), str(tmp_path / "old"))
    assert code == 2 and "has no predictions.npz" in err


def test_compare_refuses_a_pickled_predictions_file(tmp_path, capsys):
    a = write_run_folder(tmp_path / "a", LABELS.copy())
    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "predictions.npz", predicted=np.array([object()]), labels=LABELS)
    code, _, err = run_cli(capsys, "compare", str(a), str(bad))
    assert code == 2 and "predictions.npz" in err and "Traceback" not in err


def test_compare_refuses_labels_that_are_not_class_indices(tmp_path, capsys):
    a = write_run_folder(tmp_path / "a", LABELS.copy())
    b = write_run_folder(tmp_path / "b", LABELS.astype(float), labels=LABELS.astype(float))
    code, _, err = run_cli(capsys, "compare", str(a), str(b))
    assert code == 2 and "labels must be class indices" in err


def test_compare_of_something_that_does_not_exist_is_one_line(tmp_path, capsys):
    a = write_run_folder(tmp_path / "a", LABELS.copy())
    code, _, err = run_cli(capsys, "compare", str(a), str(tmp_path / "nowhere"))
    assert code == 2 and err.count("\n") == 1
    assert "neither a run folder nor STORE:NAME" in err


# ---------------------------------------------------------------------------- compare: stores


def test_compare_of_store_configurations_decides_by_the_paired_test_over_seeds(store_path, capsys):
    code, out, _ = run_cli(
        capsys,
        "compare",
        f"{store_path}:950:relu,50:sigmoid lr=0.001",
        f"{store_path}:950:relu,50:sigmoid lr=0.01",
    )
    assert code == 0
    assert "mean of 5 seeds" in out
    assert "McNemar's exact test (seed 0): only A right on 0, only B right on 30" in out
    last = out.strip().splitlines()[-1]
    # Every seed gains exactly 30 images: 0.30 points with no spread, p = 0.
    assert last == (
        "B is better by 0.30 points, p < 0.001 (paired t-test over 5 seeds), significant at 5%."
    )


def test_compare_takes_a_config_hash_prefix_and_a_sqlite_url(store_path, capsys):
    with Store(store_path) as store:
        first, second = store.configurations()
    code, out, _ = run_cli(
        capsys,
        "compare",
        f"sqlite:///{store_path}:{first.config_hash[:8]}",
        f"{store_path}:{second.config_hash}",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["a"]["seeds"] == [0, 1, 2, 3, 4]
    assert result["paired_seeds"]["n"] == 5
    assert result["difference"] == pytest.approx(0.003)


def test_compare_takes_one_trial_by_its_key(store_path, capsys):
    with Store(store_path) as store:
        trial = store.trials(where={"seed": 2, "optimizer.learning_rate": 0.001})[0]
    code, out, _ = run_cli(
        capsys,
        "compare",
        f"{store_path}:{trial.trial_key}",
        f"{store_path}:950:relu,50:sigmoid lr=0.01",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["a"]["seeds"] == [2] and result["paired_seeds"] is None
    assert result["mcnemar"]["seed_b"] == 2  # the configuration's run with the same seed
    assert result["mcnemar"]["b_only"] == 30


def test_compare_mcnemar_uses_the_chosen_seed(store_path, capsys):
    code, out, _ = run_cli(
        capsys,
        "compare",
        f"{store_path}:950:relu,50:sigmoid lr=0.001",
        f"{store_path}:950:relu,50:sigmoid lr=0.01",
        "--seed",
        "3",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["mcnemar"]["seed_a"] == result["mcnemar"]["seed_b"] == 3
    expected = float(np.mean(predictions_with(base_errors(3)) == LABELS))
    assert result["mcnemar"]["accuracy_a"] == pytest.approx(expected)


def test_compare_refuses_a_seed_a_configuration_does_not_have(store_path, capsys):
    code, _, err = run_cli(
        capsys,
        "compare",
        f"{store_path}:950:relu,50:sigmoid lr=0.001",
        f"{store_path}:950:relu,50:sigmoid lr=0.01",
        "--seed",
        "9",
    )
    assert code == 2 and "--seed 9" in err and "0, 1, 2, 3, 4" in err


def test_compare_a_run_folder_with_a_store_configuration(store_path, tmp_path, capsys):
    folder = write_run_folder(tmp_path / "mine", predictions_with(base_errors(0)), seed=0)
    code, out, _ = run_cli(
        capsys, "compare", str(folder), f"{store_path}:950:relu,50:sigmoid lr=0.01", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["paired_seeds"] is None  # one seed on A's side
    assert result["decided_by"] == "McNemar's exact test on seed 0"
    assert result["mcnemar"]["b_only"] == 30 and result["mcnemar"]["a_only"] == 0


def test_stored_predictions_without_labels_borrow_the_run_folders_labels(tmp_path, capsys):
    path = tmp_path / "nolabels.db"
    with Store(path) as store:
        store.add(make_record(0, 0.001, base_errors(0), store_labels=False))
    folder = write_run_folder(tmp_path / "mine", predictions_with(base_errors(0)))
    code, out, _ = run_cli(
        capsys, "compare", str(folder), f"{path}:950:relu,50:sigmoid lr=0.001", "--json"
    )
    assert code == 0
    assert json.loads(out)["mcnemar"]["p_value"] == 1.0


def test_compare_refuses_a_store_configuration_on_another_test_set(store_path, tmp_path, capsys):
    folder = write_run_folder(tmp_path / "fashion", LABELS[::-1].copy(), labels=LABELS[::-1].copy())
    code, _, err = run_cli(
        capsys, "compare", str(folder), f"{store_path}:950:relu,50:sigmoid lr=0.01"
    )
    assert code == 2 and "different test sets" in err


def test_compare_names_the_choices_for_an_unknown_or_ambiguous_name(store_path, capsys):
    code, _, err = run_cli(
        capsys, "compare", f"{store_path}:nope", f"{store_path}:950:relu,50:sigmoid lr=0.01"
    )
    assert code == 2 and "no configuration or trial named 'nope'" in err
    with Store(store_path) as store:  # a second configuration under an existing label
        record = make_record(0, 0.01, base_errors(0))
        record.config["training"]["epochs"] = 30
        store.add(record)
    code, _, err = run_cli(
        capsys,
        "compare",
        f"{store_path}:950:relu,50:sigmoid lr=0.01",
        f"{store_path}:950:relu,50:sigmoid lr=0.001",
    )
    assert code == 2 and "2 configurations match; name one by its config hash" in err


def test_a_store_without_a_configuration_name_is_explained(store_path, capsys):
    code, _, err = run_cli(capsys, "compare", str(store_path), str(store_path))
    assert code == 2 and f"{store_path}:LABEL" in err


def test_three_operands_are_each_compared_with_the_first_and_holm_adjusted(tmp_path, capsys):
    errors = base_errors(0)
    folders = [write_run_folder(tmp_path / "a", predictions_with(errors))]
    for name, fixed in (("b", 12), ("c", 25)):
        better = errors.copy()
        better[np.flatnonzero(errors)[:fixed]] = False
        folders.append(write_run_folder(tmp_path / name, predictions_with(better)))
    code, out, _ = run_cli(capsys, "compare", *map(str, folders), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["correction"] == "holm"
    first, second = result["comparisons"]
    # Holm: the smaller p-value is doubled, the larger kept (but not below the doubled one).
    assert first["p_value_unadjusted"] > second["p_value_unadjusted"]
    assert second["p_value"] == pytest.approx(2 * second["p_value_unadjusted"])
    assert first["p_value"] == pytest.approx(max(first["p_value_unadjusted"], second["p_value"]))
    assert "Holm-adjusted over 2 comparisons" in first["sentence"]
    assert second["sentence"].startswith("C is better by 0.25 points")
    code, out, _ = run_cli(capsys, "compare", *map(str, folders))
    assert "C is better by 0.25 points" in out and "B is better by 0.12 points" in out


def test_compare_needs_two_operands(tmp_path, capsys):
    a = write_run_folder(tmp_path / "a", LABELS.copy())
    code, _, err = run_cli(capsys, "compare", str(a))
    assert code == 2 and "at least two" in err


# ---------------------------------------------------------------------------- sentence rules


@pytest.mark.parametrize(
    ("p", "written"),
    [(0.41, "= 0.41"), (0.03, "= 0.03"), (0.0496, "= 0.0496"), (0.0004, "< 0.001"), (1, "= 1.00")],
)
def test_p_values_are_written_plainly_and_never_round_to_the_threshold(p, written):
    assert format_p(p) == written


def test_the_sentence_names_the_better_side_only_when_significant():
    result = {"difference": -0.0021, "p_value": 0.03, "decided_by": "McNemar's exact test"}
    assert sentence(result) == (
        "A is better by 0.21 points, p = 0.03 (McNemar's exact test), significant at 5%."
    )
    result["p_value"] = 0.2
    assert sentence(result) == (
        "The difference is within noise: B - A = -0.21 points, p = 0.20 (McNemar's exact "
        "test), not significant at 5%."
    )


# ---------------------------------------------------------------------------- mlplab runs


def test_runs_lists_every_trial_with_its_accuracies(store_path, capsys):
    code, out, _ = run_cli(capsys, "runs", str(store_path))
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == [
        "label", "seed", "config", "test", "%", "1st", "half", "%", "2nd", "half", "%",
        "val", "%", "epochs", "seconds",
    ]  # fmt: skip
    assert len(lines) == 11
    # Grouped by configuration, then by seed, although the trials were added interleaved.
    assert [line.split()[1:3] for line in lines[1:]] == [
        [f"lr={rate}", str(seed)] for rate in ("0.001", "0.01") for seed in range(5)
    ]
    assert lines[1].split()[-5:] == ["99.00", "98.00", "98.50", "15", "12.2"]


def test_runs_filters_sorts_and_limits(store_path, capsys):
    code, out, _ = run_cli(
        capsys,
        "runs",
        str(store_path),
        "--where",
        "optimizer.learning_rate=0.01",
        "--sort",
        "test_accuracy",
        "--limit",
        "3",
    )
    assert code == 0
    lines = out.strip().splitlines()[1:]
    assert len(lines) == 3 and all("lr=0.01 " in line for line in lines)
    shown = [float(line.split()[4]) for line in lines]
    assert shown == sorted(shown, reverse=True)


def test_runs_csv_has_full_precision_and_hashes(store_path, capsys):
    code, out, _ = run_cli(capsys, "runs", f"sqlite:///{store_path}", "--csv", "--where", "seed=2")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2 and {row["seed"] for row in rows} == {"2"}
    expected = float(np.mean(predictions_with(base_errors(2)) == LABELS))
    assert float(rows[0]["test_accuracy"]) == expected
    assert len(rows[0]["config_hash"]) == 16 and len(rows[0]["trial_key"]) == 16


def test_runs_shows_failed_trials_with_their_error(tmp_path, capsys):
    path = tmp_path / "r.db"
    with Store(path) as store:
        record = make_record(0, 1.0, base_errors(0))
        record.status, record.error, record.metrics, record.predictions = (
            "failed",
            "diverged",
            {},
            None,
        )
        store.add(record)
    code, out, _ = run_cli(capsys, "runs", str(path))
    assert code == 0 and "no done trials" in out
    code, out, _ = run_cli(capsys, "runs", str(path), "--status", "failed")
    assert code == 0 and "diverged" in out and "failed" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--where", "learning_rate"], "write KEY=VALUE"),
        (["--where", "optimizer.nope=1"], "unknown key 'optimizer.nope'"),
        (["--limit", "0"], "positive number"),
        (["--sort", "nope"], "unknown key 'nope'"),
    ],
)
def test_runs_rejects_bad_options_in_one_line(store_path, capsys, argv, message):
    code, _, err = run_cli(capsys, "runs", str(store_path), *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_runs_of_a_missing_or_foreign_file_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "runs", str(tmp_path / "typo.db"))
    assert code == 2 and "no such store" in err
    assert not (tmp_path / "typo.db").exists()
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run_cli(capsys, "runs", str(tmp_path / "notes.txt"))
    assert code == 2 and "not an SQLite file" in err
