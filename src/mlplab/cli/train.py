"""``mlplab train``, ``mlplab eval`` and ``mlplab predict``.

A run folder holds everything about one training run::

    config.toml        the resolved configuration (re-run with `mlplab train --config`)
    model.npz          the trained model (pickle-free; `mlplab eval` / `predict` read it)
    checkpoint.npz     the state after the last finished epoch (`--resume` continues from it)
    history.csv/.json  per-epoch loss, accuracy, learning rate, batch size, seconds
    curves.png         loss and accuracy, train against validation
    evaluation.json    test metrics: accuracy + 95% Wilson interval, both halves, per class
    evaluation.txt     the same, readable, with the confusion matrix
    confusion.png      the confusion matrix
    misclassified.png  a grid of misclassified test images
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mlplab.errors import ConfigError, DataError
from mlplab.training.config import RunConfig

MODEL_FILE, CHECKPOINT_FILE, CONFIG_FILE = "model.npz", "checkpoint.npz", "config.toml"

# flag -> (config table, key, help). Flags left out keep the config file's (or default) value.
FLAGS = {
    "--dataset": ("data", "dataset", "mnist, fashion-mnist, or a folder with the four IDX files"),
    "--data-dir": ("data", "data_dir", "folder holding the dataset's files"),
    "--protocol": (
        "data",
        "protocol",
        "holdout: validate on part of train (default); book: validate on the first "
        "5000 test images, test on the last 5000; none: no validation",
    ),
    "--validation": ("data", "validation", "holdout size: a count (5000) or a fraction (0.1)"),
    "--standardize": ("data", "standardize", "none, global or per-pixel (training statistics)"),
    "--crop-border": ("data", "crop_border", "cut k pixels from every side (28 -> 28-2k)"),
    "--pixel-subset": ("data", "pixel_subset", "keep this many seeded random pixels"),
    "--arch": (
        "model",
        "architecture",
        "hidden layers, e.g. '950:relu,50:sigmoid' (see `mlplab summary --help`)",
    ),
    "--init": (
        "model",
        "init",
        "auto, glorot-uniform, glorot-normal, he-normal, he-uniform, lecun-normal, lecun-uniform",
    ),
    "--loss": ("model", "loss", "cross-entropy (default) or mse"),
    "--output-activation": ("model", "output_activation", "for mse: sigmoid, softmax or linear"),
    "--optimizer": ("optimizer", "name", "sgd, momentum, nesterov, rmsprop, adam, adamw"),
    "--lr": ("optimizer", "learning_rate", "learning rate"),
    "--schedule": ("schedule", "name", "constant, step, cosine, one-cycle, warmup"),
    "--l1": ("regularization", "l1", "L1 penalty on weights"),
    "--l2": ("regularization", "l2", "L2 penalty on weights (l2/2 * sum W^2)"),
    "--max-norm": ("regularization", "max_norm", "cap each unit's incoming weight norm"),
    "--clip-norm": ("regularization", "clip_norm", "clip the global gradient norm"),
    "--epochs": ("training", "epochs", "passes over the training data"),
    "--batch-size": ("training", "batch_size", "batch size (the final size of a ramp)"),
    "--batch-size-start": (
        "training",
        "batch_size_start",
        "start a batch-size ramp here (e.g. 20), growing each epoch",
    ),
    "--batch-size-growth": ("training", "batch_size_growth", "ramp factor per epoch (2)"),
    "--early-stopping": ("training", "early_stopping", "patience in epochs (0: off)"),
    "--monitor": ("training", "monitor", "val_loss or val_accuracy"),
    "--seed": ("training", "seed", "seed of initialization, shuffles, dropout, holdout"),
    "--threads": ("training", "threads", "BLAS and update threads (0: NumPy's default)"),
    "--max-steps": ("training", "max_steps", "stop after this many steps (0: no limit)"),
    "--dtype": ("training", "dtype", "float32 (default) or float64"),
}
# Optimizer and schedule options given as flags go into their `options` tables.
OPTION_FLAGS = {
    "--momentum": ("optimizer", float, "momentum coefficient"),
    "--dampened": ("optimizer", bool, "momentum in the dampened form v = m v + (1-m) lr g"),
    "--beta1": ("optimizer", float, "Adam's first-moment decay"),
    "--beta2": ("optimizer", float, "Adam's second-moment decay"),
    "--weight-decay": ("optimizer", float, "AdamW's decoupled weight decay"),
    "--warmup-epochs": ("schedule", float, "linear warm-up length in epochs, any schedule"),
}


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a network and evaluate it; everything goes into a run folder",
        description="Train a network on MNIST-family data. With no options: a strong default "
        f"({RunConfig().model.architecture}, Adam) on MNIST. Flags override "
        "--config, which overrides the defaults.",
    )
    train.add_argument(
        "--config",
        help="a TOML file with [data], [model], [optimizer], "
        "[schedule], [regularization], [training] tables",
    )
    for flag, (table, key, help_text) in FLAGS.items():
        kind = type(getattr(getattr(RunConfig(), table), key))
        train.add_argument(
            flag, type=_number if kind is float else kind, default=None, help=help_text
        )
    for flag, (_, kind, help_text) in OPTION_FLAGS.items():
        if kind is bool:
            train.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            train.add_argument(flag, type=kind, default=None, help=help_text)
    train.add_argument(
        "--dropout",
        type=float,
        default=None,
        help="dropout after every hidden layer of an architecture string",
    )
    train.add_argument("--out", help="run folder (default: runs/<date>-<time>)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser("eval", help="evaluate a saved model on a test set")
    evaluate.add_argument("model", help="a model file (.npz) or a run folder")
    evaluate.add_argument("--dataset", help="default: the dataset the model was trained on")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument(
        "--json", action="store_true", help="print the metrics as one JSON object"
    )
    evaluate.set_defaults(func=run_eval)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


# What may change when a run is resumed: everything else must stay as the checkpoint was made.
RESUME_FLAGS = {"--epochs", "--max-steps", "--threads", "--data-dir"}


def resolve_config(args) -> RunConfig:
    """Defaults, then the --config file (or the resumed run's config), then flags."""
    saved = None
    if args.resume and args.out and (Path(args.out) / CONFIG_FILE).exists():
        saved = RunConfig.from_toml(Path(args.out) / CONFIG_FILE)
        config = RunConfig.from_toml(Path(args.out) / CONFIG_FILE)
    elif args.config:
        config = RunConfig.from_toml(args.config)
    else:
        config = RunConfig()
    for flag, (table, key, _) in FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            setattr(getattr(config, table), key, value)
    for flag, (table, _, _) in OPTION_FLAGS.items():
        name = flag[2:].replace("-", "_")
        value = getattr(args, name)
        if value is not None:
            getattr(config, table).options[name] = value
    if args.arch is not None:
        config.model.nodes = []  # a flag architecture replaces a graph from the file
    if args.dropout is not None:
        if config.model.nodes:
            raise ConfigError(
                "--dropout rewrites architecture strings; in a graph config add "
                "dropout nodes instead"
            )
        config.model.architecture = with_dropout(config.model.architecture, args.dropout)
    config.data.resolve_dataset_path()
    if saved is not None:
        _check_resume_changes(saved, config)
    return config


def _check_resume_changes(saved: RunConfig, config: RunConfig) -> None:
    """A resumed run may train longer or on other threads, but not change what it trains."""
    allowed = {(FLAGS[flag][0], FLAGS[flag][1]) for flag in RESUME_FLAGS}
    before, after = saved.to_dict(), config.to_dict()
    changed = [
        f"{table}.{key}"
        for table in after
        for key in after[table]
        if (table, key) not in allowed and after[table][key] != before[table].get(key)
    ]
    if changed:
        raise ConfigError(
            f"--resume continues the run's saved config.toml, but these settings "
            f"differ from it: {', '.join(changed)}; only "
            f"{', '.join(sorted(RESUME_FLAGS))} may change"
        )


def with_dropout(architecture: str, rate: float) -> str:
    """Add ``dropout(rate)`` after every hidden layer of an architecture string."""
    items = [item.strip() for item in architecture.split(",") if item.strip()]
    return ",".join(f"{item}:dropout({rate})" if item[0].isdigit() else item for item in items)


def _run_folder(args) -> Path:
    if args.out:
        out = Path(args.out)
    else:
        out = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if args.resume:
        if not (out / CHECKPOINT_FILE).exists():
            raise ConfigError(f"{out}: no {CHECKPOINT_FILE} to resume from; train without --resume")
    elif (out / CHECKPOINT_FILE).exists() or (out / MODEL_FILE).exists():
        raise ConfigError(
            f"{out} already holds a run; add --resume to continue it or choose "
            "another --out (nothing was overwritten)"
        )
    return out


def run_train(args) -> int:
    from mlplab import report
    from mlplab.training.runs import prepare_run, train_run, training_options

    out = _run_folder(args)
    config = resolve_config(args)
    prepared = prepare_run(config, progress=not args.quiet)
    training_options(config)  # every setting is checked before the run folder is made
    out.mkdir(parents=True, exist_ok=True)
    if not args.quiet:
        print(prepared.describe())
    result = train_run(prepared, out, resume=args.resume, progress=not args.quiet)
    report.plot_curves(result.history.columns, out / "curves.png")
    print(result.summary())
    print(
        f"\nSaved in {out}/: model.npz, config.toml, history.csv/.json, curves.png, "
        "evaluation.json/.txt, confusion.png, misclassified.png"
    )
    return 0


def model_path(value: str) -> Path:
    path = Path(value)
    return path / MODEL_FILE if path.is_dir() else path


def run_eval(args) -> int:
    from mlplab.data import load_dataset
    from mlplab.training.metrics import format_evaluation
    from mlplab.training.model import Model

    path = model_path(args.model)
    model = Model.load(path)  # read once: its metadata says which data it was trained on
    data_config = model.metadata.get("config", {}).get("data", {})
    dataset_name = (
        args.dataset or data_config.get("dataset") or model.metadata.get("dataset", "mnist")
    )
    data_dir = args.data_dir or (None if args.dataset else data_config.get("data_dir")) or None
    data = load_dataset(dataset_name, data_dir, progress=False)
    if model.preprocessing is None:
        raise DataError(f"{path}: holds no preprocessing; it was not saved by `mlplab train`")
    metrics = model.evaluate(model.features(data.test_images), data.test_labels)
    metrics["dataset"], metrics["model"] = data.name, str(path)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{path} on the {data.name} test set ({len(data.test_labels)} images)")
        print(format_evaluation(metrics))
    return 0
