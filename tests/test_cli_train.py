"""``mlplab train``, ``eval`` and ``predict``: the run folder, protocols, one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error
from PIL import Image

from mlplab.cli import main
from mlplab.data import load_dataset
from mlplab.training.model import Model

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
RUN_FILES = [
    "model.npz",
    "config.toml",
    "checkpoint.npz",
    "history.csv",
    "history.json",
    "curves.png",
    "evaluation.json",
    "evaluation.txt",
    "confusion.png",
    "misclassified.png",
    "predictions.npz",
]
# --validation: the default holdout of 5000 images is larger than the 2000-image fixture.
TRAIN = ["train", "--dataset", str(MNIST_SMALL), "--validation", "200", "--threads", "1"]
PREDICTION = re.compile(r"^(?P<path>.+): (?P<label>\S+) \(p=(?P<p>[0-9.]+); top: (?P<top>.+)\)$")


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv("MLPLAB_DATA", raising=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small run folder shared by the tests that only read it: (folder, stdout)."""
    out = tmp_path_factory.mktemp("runs") / "D"
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.delenv("MLPLAB_DATA", raising=False)
        code = main(
            [
                *TRAIN,
                "--arch",
                "32:relu",
                "--epochs",
                "2",
                "--lr",
                "0.005",
                "--batch-size",
                "32",
                "--quiet",
                "--out",
                str(out),
            ]
        )
    assert code == 0
    return out, stdout.getvalue()


@pytest.fixture(scope="module")
def test_set():
    dataset = load_dataset(MNIST_SMALL)
    return dataset.test_images, dataset.test_labels


def subprocess_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "MLPLAB_DATA"}


# ------------------------------------------------------------------ the run folder
def test_train_writes_every_file_of_the_run_folder(run):
    out, _ = run
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list(out.glob(".*.tmp"))


def test_train_output_says_where_the_run_was_saved(run):
    out, stdout = run
    assert f"Saved in {out}/" in stdout
    assert "Summary" in stdout and "test, full set" in stdout


def test_evaluation_json_has_accuracy_inside_its_wilson_interval_and_both_halves(run):
    out, _ = run
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["wilson_low"] <= evaluation["accuracy"] <= evaluation["wilson_high"]
    assert evaluation["total"] == 500 and evaluation["accuracy"] > 0.5
    for half in ("first_half", "last_half"):
        part = evaluation[half]
        assert part["total"] == 250
        assert part["wilson_low"] <= part["accuracy"] <= part["wilson_high"]
    assert (
        evaluation["first_half"]["correct"] + evaluation["last_half"]["correct"]
        == evaluation["correct"]
    )
    assert evaluation["epochs_run"] == 2 and evaluation["protocol"] == "holdout"
    assert "accuracy" in (out / "evaluation.txt").read_text()


def test_history_files_have_one_row_per_epoch(run):
    out, _ = run
    rows = (out / "history.csv").read_text().strip().split("\n")
    assert rows[0].split(",")[:2] == ["epoch", "train_loss"] and len(rows) == 3
    history = json.loads((out / "history.json").read_text())
    assert history["columns"]["epoch"] == [1, 2] and history["columns"]["val_loss"][1] > 0


def test_training_again_into_the_same_folder_is_refused_and_overwrites_nothing(run, capsys):
    out, _ = run
    model = out / "model.npz"
    before = (model.read_bytes(), model.stat().st_mtime_ns)
    code = main([*TRAIN, "--arch", "32:relu", "--epochs", "1", "--quiet", "--out", str(out)])
    assert code == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(out) in line and "--resume" in line
    assert (model.read_bytes(), model.stat().st_mtime_ns) == before


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    code = main([*TRAIN, "--epochs", "1", "--quiet", "--resume", "--out", str(tmp_path / "new")])
    assert code == 2
    assert "checkpoint.npz" in one_line_error(capsys.readouterr().err)


# ------------------------------------------------------------------ the book protocol
def test_book_protocol_validates_on_the_first_test_half_and_reports_the_last(tmp_path, capsys):
    out = tmp_path / "book"
    code = main(
        [
            "train",
            "--dataset",
            str(MNIST_SMALL),
            "--protocol",
            "book",
            "--arch",
            "32:relu",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    assert "2000 training, 250 validation (book protocol), 500 test images" in stdout
    lines = {line.strip().split("  ")[0]: line for line in stdout.splitlines() if "test," in line}
    assert set(lines) == {"test, full set", "test, first half", "test, last half"}
    assert "(250/250)" not in stdout  # the halves are scored, not just counted
    assert re.search(r"/250\)", lines["test, first half"])
    assert re.search(r"/250\)\s+<- the book protocol's test figure", lines["test, last half"])
    assert re.search(r"/500\)", lines["test, full set"])
    assert "book" not in lines["test, full set"] and "book" not in lines["test, first half"]
    evaluation = json.loads((out / "evaluation.json").read_text())
    history = json.loads((out / "history.json").read_text())["columns"]
    # Validation was the first half of the test set: the same images, the same final weights.
    assert history["val_accuracy"][-1] == evaluation["first_half"]["accuracy"]
    assert evaluation["protocol"] == "book"


# ------------------------------------------------------------------ user errors
@pytest.mark.parametrize(
    "flags, named",
    [
        (["--arch", "100:sigmod"], "sigmod"),
        (["--arch", "0:relu"], "0:relu"),
        (["--lr", "-1"], "learning_rate"),
        (["--optimizer", "adagrad"], "adagrad"),
        (["--schedule", "exponential"], "exponential"),
        (["--protocol", "bookish"], "bookish"),
        (["--output-activation", "sigmoid"], "output_activation"),
        (["--loss", "mse", "--output-activation", "tanh"], "tanh"),
        (["--optimizer", "adam", "--momentum", "0.9"], "momentum"),
        (["--batch-size", "0"], "batch_size"),
        (["--epochs", "0"], "epochs"),
        (["--init", "orthogonal"], "orthogonal"),
        (["--crop-border", "14"], "crop_border"),
        (["--monitor", "acc", "--early-stopping", "2"], "acc"),
        (["--dtype", "float16"], "float16"),
        (["--seed", "-1"], "seed"),
        (["--split-seed", "-3"], "split_seed"),
        (["--schedule", "step", "--gamma", "0"], "gamma"),
        (["--arch", "100000000:relu"], "--allow-large"),
        (["--adversarial", "-0.1"], "adversarial epsilon"),
        (["--adversarial", "0.1", "--adversarial-weight", "0"], "adversarial_weight"),
        (["--adversarial", "0.1", "--adversarial-weight", "1.5"], "adversarial_weight"),
        (["--adversarial", "inf"], "adversarial"),
    ],
)
def test_user_errors_exit_2_with_one_line_naming_the_problem(tmp_path, capsys, flags, named):
    code = main([*TRAIN, "--epochs", "1", "--quiet", "--out", str(tmp_path / "run"), *flags])
    assert code == 2
    assert named in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()  # every setting is checked before the folder is made


def test_missing_config_file_exits_2_naming_it(tmp_path, capsys):
    code = main([*TRAIN, "--config", str(tmp_path / "absent.toml"), "--out", str(tmp_path / "r")])
    assert code == 2
    assert "absent.toml" in one_line_error(capsys.readouterr().err)


def test_invalid_config_file_exits_2_naming_it(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[training]\nepochs = "ten"\n')
    code = main([*TRAIN, "--config", str(config), "--out", str(tmp_path / "r")])
    assert code == 2
    line = one_line_error(capsys.readouterr().err)
    assert "bad.toml" in line and "epochs" in line


def test_user_error_in_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlplab",
            *TRAIN,
            "--arch",
            "100:sigmod",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert result.returncode == 2
    assert "sigmod" in one_line_error(result.stderr)
    assert not (tmp_path / "run" / "model.npz").exists()


def test_divergence_exits_3_with_one_line_and_no_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlplab",
            *TRAIN,
            "--arch",
            "32:relu",
            "--epochs",
            "2",
            "--lr",
            "1e9",
            "--optimizer",
            "sgd",
            "--schedule",
            "constant",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "mlplab: error: training diverged at epoch 1" in result.stderr
    line = one_line_error(result.stderr)
    assert "learning rate" in line and "1e+09" in line


# ------------------------------------------------------------------ eval
def test_eval_json_prints_one_object_with_accuracy_and_both_halves(run, capsys):
    out, _ = run
    assert main(["eval", str(out), "--dataset", str(MNIST_SMALL), "--json"]) == 0
    printed = capsys.readouterr().out.strip()
    assert "\n" not in printed
    metrics = json.loads(printed)
    stored = json.loads((out / "evaluation.json").read_text())
    assert metrics["accuracy"] == stored["accuracy"]
    assert metrics["first_half"] == stored["first_half"]
    assert metrics["last_half"] == stored["last_half"]


def test_eval_accepts_the_model_file_itself(run, capsys):
    out, _ = run
    assert main(["eval", str(out / "model.npz"), "--dataset", str(MNIST_SMALL)]) == 0
    printed = capsys.readouterr().out
    stored = json.loads((out / "evaluation.json").read_text())
    assert f"{100 * stored['accuracy']:.2f}%" in printed
    assert "first half" in printed and "last half" in printed


def test_eval_without_dataset_uses_the_dataset_the_model_was_trained_on(run, capsys):
    out, _ = run
    code = main(["eval", str(out / "model.npz"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    stored = json.loads((out / "evaluation.json").read_text())
    assert json.loads(captured.out)["accuracy"] == stored["accuracy"]


def test_eval_of_a_missing_model_exits_2_with_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing.npz"), "--dataset", str(MNIST_SMALL)]) == 2
    assert "nothing.npz" in one_line_error(capsys.readouterr().err)


# ------------------------------------------------------------------ predict
def parse_predictions(stdout: str) -> list[dict]:
    """Each line of `mlplab predict`: path, label, p and the top three as (name, p)."""
    rows = []
    for line in stdout.strip().split("\n"):
        match = PREDICTION.match(line)
        assert match, line
        top = [
            (name, float(p))
            for name, p in (item.rsplit(" ", 1) for item in match["top"].split(", "))
        ]
        rows.append(
            {"path": match["path"], "label": match["label"], "p": float(match["p"]), "top": top}
        )
    return rows


def save_png(pixels: np.ndarray, path: Path) -> str:
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return str(path)


def test_predict_prints_a_class_and_its_top_probabilities_per_image(
    run, test_set, tmp_path, capsys
):
    out, _ = run
    images, labels = test_set
    model = Model.load(out / "model.npz")
    probabilities = model.predict_proba(model.features(images))
    # A test digit the model gets right with confidence; --no-crop keeps MNIST's own framing, so
    # the PNG must give the network exactly the test array's pixels.
    confident = np.flatnonzero(
        (probabilities.argmax(axis=1) == labels) & (probabilities.max(axis=1) > 0.9)
    )
    assert confident.size > 0
    index = int(confident[0])
    light = save_png(images[index], tmp_path / "light.png")
    dark = save_png(255 - np.asarray(images[index]), tmp_path / "dark.png")
    assert main(["predict", str(out), light, dark, "--no-crop"]) == 0
    rows = parse_predictions(capsys.readouterr().out)
    assert [row["path"] for row in rows] == [light, dark]
    for row in rows:
        assert row["label"] == str(labels[index])
        assert row["p"] == pytest.approx(probabilities[index].max(), abs=1e-3)
        values = [p for _, p in row["top"]]
        assert len(values) == 3 and row["top"][0] == (row["label"], row["p"])
        assert values == sorted(values, reverse=True) and sum(values) <= 1.002


def test_predict_reads_dark_on_light_the_same_as_light_on_dark(run, test_set, tmp_path, capsys):
    out, _ = run
    images, _ = test_set
    light = save_png(images[3], tmp_path / "light.png")
    dark = save_png(255 - np.asarray(images[3]), tmp_path / "dark.png")
    assert main(["predict", str(out), light, dark]) == 0
    first, second = parse_predictions(capsys.readouterr().out)
    assert (first["label"], first["top"]) == (second["label"], second["top"])


def test_predict_on_mnist_test_pngs_is_about_as_accurate_as_on_the_test_arrays(
    run, test_set, tmp_path, capsys
):
    # The default (cropping) path re-frames a digit to look like MNIST's, so an MNIST digit saved
    # as a PNG must be classified about as well as the array itself.
    out, _ = run
    images, labels = test_set
    model = Model.load(out / "model.npz")
    count = 100
    direct = float(np.mean(model.predict(model.features(images[:count])) == labels[:count]))
    paths = [save_png(images[i], tmp_path / f"{i}.png") for i in range(count)]
    assert main(["predict", str(out), *paths]) == 0
    rows = parse_predictions(capsys.readouterr().out)
    from_png = float(np.mean([row["label"] == str(label) for row, label in zip(rows, labels)]))
    assert from_png >= direct - 0.10, f"{from_png:.2f} from PNGs, {direct:.2f} from the arrays"


def test_predict_of_an_unreadable_image_exits_2_naming_it(run, tmp_path, capsys):
    out, _ = run
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    assert main(["predict", str(out), str(broken)]) == 2
    assert "broken.png" in one_line_error(capsys.readouterr().err)


def test_predict_of_a_missing_image_exits_2_naming_it(run, tmp_path, capsys):
    out, _ = run
    assert main(["predict", str(out), str(tmp_path / "absent.png")]) == 2
    assert "absent.png" in one_line_error(capsys.readouterr().err)


# ------------------------------------------------------------------ seeds, flags, help
def test_evaluation_and_model_record_the_resolved_seeds(run):
    out, _ = run
    seeds = json.loads((out / "evaluation.json").read_text())["seeds"]
    assert set(seeds) == {"seed", "split", "init", "order", "dropout", "augment"}
    assert seeds["seed"] == 0
    assert Model.load(out / "model.npz").metadata["seeds"] == seeds


def test_seed_flags_set_the_named_seeds(tmp_path):
    from mlplab.cli import build_parser
    from mlplab.cli.train import resolve_config

    args = build_parser().parse_args(["train", "--seed", "4", "--split-seed", "0"])
    seeds = resolve_config(args).resolved_seeds()
    assert seeds["seed"] == 4 and seeds["split"] == 0 and seeds["init"] not in (0, 4)


def test_step_schedule_flags_set_its_length_and_factor():
    from mlplab.cli import build_parser
    from mlplab.cli.train import resolve_config
    from mlplab.training.runs import training_options

    args = build_parser().parse_args(
        ["train", "--schedule", "step", "--every-epochs", "2", "--gamma", "0.1", "--lr", "1"]
    )
    config = resolve_config(args)
    assert config.schedule.options == {"every_epochs": 2.0, "gamma": 0.1}
    schedule = training_options(config)["schedule"]
    assert schedule(1.9) == pytest.approx(1.0) and schedule(2.0) == pytest.approx(0.1)


def test_train_help_shows_the_default_of_every_setting_flag(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    for flag, default in [
        ("--epochs", "15"),
        ("--batch-size", "128"),
        ("--optimizer", "'adam'"),
        ("--lr", "0.001"),
        ("--seed", "0"),
        ("--split-seed", "-1"),
        ("--arch", "'1000:relu'"),
    ]:
        assert re.search(rf"{flag} \S+ .*?\(default: {re.escape(default)}\)", text), flag


def test_every_train_and_eval_option_has_help_and_eval_has_a_description(capsys):
    from mlplab.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("train", "eval"):
        for action in commands[name]._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    assert commands["eval"].description and "test" in commands["eval"].description


# ------------------------------------------------------------------ run folders
HOLD_LOCK = """
import sys, time
from mlplab.training.run_folder import locked_run_folder
with locked_run_folder(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_training_into_a_folder_in_use_is_refused_naming_the_process(tmp_path, capsys):
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main([*TRAIN, "--arch", "16:relu", "--epochs", "1", "--quiet", "--out", str(out)])
        assert code == 2
        line = one_line_error(capsys.readouterr().err)
        assert f"process {holder.pid}" in line and "in use" in line
        assert not (out / "config.toml").exists() and not (out / "model.npz").exists()
    finally:
        holder.kill()
        holder.wait()


def test_runs_without_out_started_in_the_same_second_get_their_own_folders(
    tmp_path, monkeypatch, capsys
):
    from mlplab.training import run_folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_folder.time, "strftime", lambda _: "20260101-120000")
    for _ in range(2):
        assert main([*TRAIN, "--arch", "16:relu", "--epochs", "1", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    folders = sorted((tmp_path / "runs").iterdir())
    assert [folder.name for folder in folders] == ["20260101-120000", "20260101-120000-2"]
    for folder in folders:
        assert (
            folder / "model.npz"
        ).is_file() and f"Saved in {Path('runs') / folder.name}/" in stdout


def test_out_naming_an_existing_file_is_refused_and_the_file_kept(tmp_path, capsys):
    path = tmp_path / "results.txt"
    path.write_text("keep me")
    assert main([*TRAIN, "--epochs", "1", "--quiet", "--out", str(path)]) == 2
    assert "is a file" in one_line_error(capsys.readouterr().err)
    assert path.read_text() == "keep me"


def test_a_binary_file_given_as_config_is_a_one_line_error(tmp_path, capsys):
    binary = tmp_path / "model.npz"
    binary.write_bytes(bytes(range(256)) * 4)
    assert main([*TRAIN, "--config", str(binary), "--out", str(tmp_path / "r")]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "model.npz" in line and "not a text file" in line
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ resume
def test_resume_with_more_epochs_continues_the_run_as_the_readme_says(tmp_path, capsys):
    out = tmp_path / "forum"
    first = [*TRAIN, "--arch", "16:relu", "--schedule", "constant", "--quiet", "--out", str(out)]
    assert main([*first, "--epochs", "1"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    history = json.loads((out / "history.json").read_text())["columns"]
    assert history["epoch"] == [1, 2]
    assert "epochs = 2" in (out / "config.toml").read_text()
    assert json.loads((out / "evaluation.json").read_text())["epochs_run"] == 2


def test_resume_with_a_changed_setting_is_refused_and_changes_no_file(run, capsys):
    out, _ = run
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    code = main(["train", "--out", str(out), "--resume", "--lr", "0.5", "--quiet"])
    assert code == 2
    line = one_line_error(capsys.readouterr().err)
    assert "optimizer.learning_rate" in line and "--resume" not in line.split("differ")[1][:40]
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_resume_needs_out(capsys):
    assert main(["train", "--resume", "--quiet"]) == 2
    assert "--out" in one_line_error(capsys.readouterr().err)


# ------------------------------------------------------------------ odd data
def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of uint8 values (magic 0x08, then the dimensions)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape
    )
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def test_a_test_set_of_one_image_trains_and_reports_without_halves(tmp_path, capsys):
    data = load_dataset(MNIST_SMALL)
    folder = tmp_path / "one-test-image"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", data.train_images[:300])
    write_idx(folder / "train-labels-idx1-ubyte", data.train_labels[:300])
    write_idx(folder / "t10k-images-idx3-ubyte", data.test_images[:1])
    write_idx(folder / "t10k-labels-idx1-ubyte", data.test_labels[:1])
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            str(folder),
            "--protocol",
            "none",
            "--arch",
            "16:relu",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "test, full set" in captured.out and "/1)" in captured.out
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["total"] == 1 and "first_half" not in evaluation


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
FASHION_CLASSES += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def test_eval_refuses_a_model_of_other_classes_unless_forced(run, tmp_path, capsys):
    out, _ = run
    # The run's model as if trained on Fashion-MNIST: same arrays, Fashion-MNIST's classes.
    model = Model.load(out / "model.npz")
    model.class_names = FASHION_CLASSES
    fashion_model = tmp_path / "fashion.npz"
    model.save(fashion_model, {"dataset": "fashion-mnist"})
    assert main(["eval", str(fashion_model), "--dataset", str(MNIST_SMALL)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "fashion-mnist" in line and "mnist-small" in line and "--force" in line
    code = main(["eval", str(fashion_model), "--dataset", str(MNIST_SMALL), "--force", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["total"] == 500


def test_eval_json_prints_null_for_a_non_finite_loss(run, capsys, monkeypatch):
    out, _ = run
    evaluate = Model.evaluate

    def diverged(self, x, y, halves=True):
        return {**evaluate(self, x, y, halves), "loss": float("nan")}

    monkeypatch.setattr(Model, "evaluate", diverged)
    assert main(["eval", str(out), "--dataset", str(MNIST_SMALL), "--json"]) == 0
    printed = capsys.readouterr().out
    assert "NaN" not in printed and json.loads(printed)["loss"] is None


def test_eval_reads_only_the_test_files(run, tmp_path, capsys):
    out, _ = run
    folder = tmp_path / "test-only"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes((MNIST_SMALL / name).read_bytes())
    code = main(["eval", str(out), "--dataset", str(folder), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    stored = json.loads((out / "evaluation.json").read_text())
    assert json.loads(captured.out)["accuracy"] == stored["accuracy"]


def test_resume_given_the_original_config_file_and_flags_again_continues(tmp_path, capsys):
    out = tmp_path / "again"
    config = tmp_path / "run.toml"
    config.write_text('[model]\narchitecture = "16:relu"\n[schedule]\nname = "constant"\n')
    command = [*TRAIN, "--config", str(config), "--quiet", "--out", str(out)]
    assert main([*command, "--epochs", "1"]) == 0
    assert main([*command, "--epochs", "2", "--resume"]) == 0
    assert json.loads((out / "history.json").read_text())["columns"]["epoch"] == [1, 2]
    capsys.readouterr()
    config.write_text('[model]\narchitecture = "32:relu"\n[schedule]\nname = "constant"\n')
    assert main([*command, "--epochs", "3", "--resume"]) == 2
    assert "model.architecture" in one_line_error(capsys.readouterr().err)
