"""``mlplab train`` and ``mlplab eval``.

A run folder holds everything about one training run::

    config.toml        the configuration (re-run with `mlplab train --config`)
    model.npz          the trained model (pickle-free; `mlplab eval` / `predict` read it)
    checkpoint.npz     the state after the last finished epoch (`--resume` continues from it)
    history.csv/.json  per-epoch loss, accuracy, learning rate, batch size, seconds
    evaluation.json    test metrics: accuracy + 95% Wilson interval, both halves, per class, seeds
    evaluation.txt     the same, readable, with the confusion matrix
    predictions.npz    predicted class (uint8) and probabilities (float32) of every test image
    curves.png         loss and accuracy, train against validation      } drawn after training
    confusion.png      the confusion matrix                             } from the files above
    misclassified.png  a grid of misclassified test images              } by mlplab.report
    layer_stats.json   per-layer statistics per epoch (with --layer-stats)
    layers.png         their plot: activations, gradients, weights by layer (with --layer-stats)

Training writes the data files (:func:`mlplab.training.runs.train_run`); the plots are drawn from
them afterwards, so they can be redrawn without training again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlplab.errors import ConfigError, DataError, MlplabError
from mlplab.training.config import RunConfig
from mlplab.training.presets import preset_description, preset_names, preset_path
from mlplab.training.run_folder import CONFIG_FILE, MODEL_FILE

# flag -> (config table, key, help). Flags left out keep the config file's (or default) value.
FLAGS = {
    "--dataset": ("data", "dataset", "mnist, fashion-mnist, or a folder with the four IDX files"),
    "--data-dir": ("data", "data_dir", "folder holding the dataset's files"),
    "--protocol": (
        "data",
        "protocol",
        "holdout: validate on part of train; book: validate on the first "
        "5000 test images, test on the last 5000; none: no validation",
    ),
    "--validation": ("data", "validation", "holdout size: a count (5000) or a fraction (0.1)"),
    "--scale": (
        "data",
        "scale",
        "divide pixel values by 255; --no-scale feeds raw 0..255, as the Keras tutorial did",
    ),
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
    "--loss": ("model", "loss", "cross-entropy or mse"),
    "--output-activation": ("model", "output_activation", "for mse: sigmoid, softmax or linear"),
    "--optimizer": ("optimizer", "name", "sgd, momentum, nesterov, rmsprop, adam, adamw"),
    "--lr": ("optimizer", "learning_rate", "learning rate"),
    "--schedule": ("schedule", "name", "constant, step, cosine, one-cycle, warmup"),
    "--l1": ("regularization", "l1", "L1 penalty on weights"),
    "--l2": ("regularization", "l2", "L2 penalty on weights (l2/2 * sum W^2)"),
    "--max-norm": ("regularization", "max_norm", "cap each unit's incoming weight norm"),
    "--clip-norm": ("regularization", "clip_norm", "clip the global gradient norm"),
    "--adversarial": (
        "regularization",
        "adversarial",
        "adversarial training: epsilon of the fast-gradient-sign perturbation (0: off)",
    ),
    "--adversarial-weight": (
        "regularization",
        "adversarial_weight",
        "the perturbed batch's share of the loss, in (0, 1]",
    ),
    "--epochs": ("training", "epochs", "passes over the training data"),
    "--batch-size": ("training", "batch_size", "batch size (the final size of a ramp)"),
    "--batch-size-start": (
        "training",
        "batch_size_start",
        "start a batch-size ramp here (e.g. 20), growing each epoch",
    ),
    "--batch-size-growth": ("training", "batch_size_growth", "ramp factor per epoch"),
    "--early-stopping": ("training", "early_stopping", "patience in epochs (0: off)"),
    "--monitor": ("training", "monitor", "val_loss or val_accuracy"),
    "--seed": (
        "training",
        "seed",
        "master seed (>= 0): the holdout, initial weights, example order and dropout masks each "
        "get a seed derived from it unless given below",
    ),
    "--split-seed": ("training", "split_seed", "seed of the holdout split (-1: from --seed)"),
    "--init-seed": ("training", "init_seed", "seed of the initial weights (-1: from --seed)"),
    "--order-seed": (
        "training",
        "order_seed",
        "seed of the order of training examples (-1: from --seed)",
    ),
    "--dropout-seed": ("training", "dropout_seed", "seed of the dropout masks (-1: from --seed)"),
    "--threads": (
        "training",
        "threads",
        "BLAS threads (0: as many as the network pays for, at most the cores)",
    ),
    "--max-steps": ("training", "max_steps", "stop after this many steps (0: no limit)"),
    "--dtype": ("training", "dtype", "float32 or float64"),
    "--allow-large": (
        "training",
        "allow_large",
        "train even when the memory estimate exceeds the memory available",
    ),
    "--layer-stats": (
        "training",
        "layer_stats",
        "measure each layer's activations, gradients and weights on 1,000 validation examples "
        "at the start and after every epoch: layer_stats.json and layers.png",
    ),
}
# Optimizer and schedule options given as flags go into their `options` tables.
OPTION_FLAGS = {
    "--momentum": ("optimizer", float, "momentum coefficient"),
    "--dampened": ("optimizer", bool, "momentum in the dampened form v = m v + (1-m) lr g"),
    "--beta1": ("optimizer", float, "Adam's first-moment decay"),
    "--beta2": ("optimizer", float, "Adam's second-moment decay"),
    "--weight-decay": ("optimizer", float, "AdamW's decoupled weight decay"),
    "--every-epochs": ("schedule", float, "step schedule: epochs between drops (default 10)"),
    "--gamma": ("schedule", float, "step schedule: factor of each drop (default 0.5)"),
    "--warmup-epochs": ("schedule", float, "linear warm-up length in epochs, any schedule"),
}


def register(subparsers) -> None:
    defaults = RunConfig()
    train = subparsers.add_parser(
        "train",
        help="train a network and evaluate it; everything goes into a run folder",
        description="Train a network on MNIST-family data. With no options: a strong default "
        f"({defaults.model.architecture}, Adam) on MNIST. Flags override "
        "--config (or --preset), which overrides the defaults shown.",
    )
    train.add_argument(
        "--config",
        help="a TOML file with [data], [model], [optimizer], "
        "[schedule], [regularization], [training] tables",
    )
    train.add_argument(
        "--preset",
        metavar="NAME",
        help="a config file shipped with mlplab, instead of --config: "
        f"{', '.join(preset_names())} (--list-presets describes them)",
    )
    train.add_argument(
        "--list-presets",
        action="store_true",
        help="print each preset's name, what it trains and its file, and exit",
    )
    for flag, (table, key, help_text) in FLAGS.items():
        default = getattr(getattr(defaults, table), key)
        if isinstance(default, bool):
            action = argparse.BooleanOptionalAction if default else "store_true"
            train.add_argument(
                flag, action=action, default=None, help=f"{help_text} (default: {default})"
            )
            continue
        shown = repr(default) if isinstance(default, str) else default
        train.add_argument(
            flag,
            type=_number if isinstance(default, float) else type(default),
            default=None,
            help=f"{help_text} (default: {shown})",
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
        help="dropout after every hidden layer of an architecture string (default: none)",
    )
    train.add_argument(
        "--out", help="run folder (default: a new runs/<date>-<time>, unique per run)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint; only "
        + ", ".join(sorted(RESUME_FLAGS))
        + " may change",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument(
        "--store",
        metavar="PATH",
        help="also record the finished run in this results store (a path or sqlite:///path.db), "
        "so that `mlplab runs`, `compare` and `report` see it beside sweep trials",
    )
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "eval",
        help="evaluate a saved model on a test set",
        description="Score a saved model on the official test set of a dataset (only the test "
        "files are read): accuracy with its 95% Wilson interval, both halves, per class and the "
        "confusion matrix.",
    )
    evaluate.add_argument("model", help="a model file (.npz) or a run folder")
    evaluate.add_argument(
        "--dataset",
        help="mnist, fashion-mnist or a folder (default: the dataset the model was trained on)",
    )
    evaluate.add_argument(
        "--data-dir", help="folder holding the dataset's files (default: the usual places)"
    )
    evaluate.add_argument(
        "--force",
        action="store_true",
        help="evaluate even on a dataset whose classes differ from the model's",
    )
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


# The flags a resumed run may change (the library's RESUMABLE_KEYS, as flags).
RESUME_FLAGS = {
    "--epochs",
    "--max-steps",
    "--threads",
    "--data-dir",
    "--allow-large",
    "--layer-stats",
}


def resolve_config(args) -> RunConfig:
    """Defaults, then the --config file (or, resuming without one, the run's config), then flags.

    A resumed run given its original --config and flags again gets the same config, which the
    resume check then finds unchanged.
    """
    if args.config and args.preset:
        raise ConfigError(
            "--config and --preset both name a config file; give one (to change a preset, "
            "copy its file, shown by --list-presets, and pass the copy to --config)"
        )
    if args.preset:
        config = RunConfig.from_toml(preset_path(args.preset))
    elif args.config:
        config = RunConfig.from_toml(args.config)
    elif args.resume and args.out and (Path(args.out) / CONFIG_FILE).exists():
        config = RunConfig.from_toml(Path(args.out) / CONFIG_FILE)
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
    return config


def with_dropout(architecture: str, rate: float) -> str:
    """Add ``dropout(rate)`` after every hidden layer of an architecture string."""
    items = [item.strip() for item in architecture.split(",") if item.strip()]
    return ",".join(f"{item}:dropout({rate})" if item[0].isdigit() else item for item in items)


def run_train(args) -> int:
    from mlplab.training.run_folder import check_run_folder, new_run_folder
    from mlplab.training.runs import check_resume, prepare_run, train_run

    if args.list_presets:
        print_presets()
        return 0
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out, the run folder to continue")
    out = Path(args.out) if args.out else None
    if out is not None:
        check_run_folder(out, args.resume)  # before the data is read; checked again under lock
    config = resolve_config(args)
    if args.store:  # a store that cannot be opened is refused before anything trains
        from mlplab.experiments.store import Store

        Store(args.store).close()
    if args.resume:  # before the data is read; train_run checks again under the folder's lock
        check_resume(RunConfig.from_toml(out / CONFIG_FILE), config)
    # Every setting is checked here, before any folder is made or file written.
    prepared = prepare_run(config, progress=not args.quiet)
    if out is None:
        out = new_run_folder()
    if not args.quiet:
        print(prepared.describe())
    result = train_run(prepared, out, resume=args.resume, progress=not args.quiet)
    try:
        plot_run_folder(out, prepared.dataset.test_images)
    except OSError as error:  # the run's data files are saved; only a picture is missing
        raise MlplabError(
            f"{out}: trained and saved, but a plot could not be written ({error.strerror or error})"
            "; draw them later with mlplab.report.plot_run"
        ) from None
    print(result.summary())
    names = sorted(path.name for path in out.iterdir() if not path.name.startswith("."))
    print(f"\nSaved in {out}/: {', '.join(names)}")
    if args.store:
        record_in_store(args.store, prepared, result)
        print(f"Recorded in the results store {args.store} (`mlplab runs {args.store}`)")
    return 0


def print_presets() -> None:
    """Each preset's name, the first comment line of its file, and the file."""
    names = preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name.ljust(width)}  {preset_description(name)}")
        print(f"{' ' * width}  {preset_path(name)}")


def record_in_store(store_text: str, prepared, result) -> None:
    """Add a finished run to a results store, beside sweep trials (``mlplab train --store``).

    Its label says what was trained; runs of one configuration with other seeds pool into one
    configuration of the store, as a sweep's seeds do.
    """
    from mlplab.experiments.store import Store
    from mlplab.experiments.trial import run_record

    config = result.config
    architecture = "graph" if config.model.nodes else config.model.architecture
    label = f"{architecture} {config.optimizer.name} lr={config.optimizer.learning_rate:g}"
    with Store(store_text) as store:
        store.add(run_record(config.to_dict(), result, prepared, label))


def plot_run_folder(out: Path, test_images) -> list[Path]:
    """Draw the plots of a run folder from its data files (matplotlib is imported only here)."""
    from mlplab.report import plot_run

    return plot_run(out, test_images=test_images)


def model_path(value: str) -> Path:
    path = Path(value)
    return path / MODEL_FILE if path.is_dir() else path


def check_same_classes(model, model_path: Path, data) -> None:
    """Refuse to score a model on a dataset with other classes: its accuracy would mean nothing.

    Raises
    ------
    DataError
        The class counts differ, or the class names do (Fashion-MNIST's "T-shirt/top" is not
        MNIST's "0"), naming both datasets and the ``--force`` override.
    """
    trained_on = model.metadata.get("dataset", "an unknown dataset")
    if len(model.class_names) != data.n_classes:
        raise DataError(
            f"{model_path} predicts {len(model.class_names)} classes but the {data.name} test "
            f"set has {data.n_classes}; evaluate it on {trained_on}"
        )
    if [str(name) for name in model.class_names] != [str(name) for name in data.class_names]:
        raise DataError(
            f"{model_path} was trained on {trained_on}, whose classes "
            f"({', '.join(model.class_names[:3])}, ...) are not those of {data.name} "
            f"({', '.join(data.class_names[:3])}, ...); evaluate it on {trained_on}, or add "
            "--force to score it anyway"
        )


def run_eval(args) -> int:
    from mlplab.data import load_dataset
    from mlplab.training.metrics import format_evaluation, json_safe
    from mlplab.training.model import Model

    path = model_path(args.model)
    model = Model.load(path)  # read once: its metadata says which data it was trained on
    if model.preprocessing is None:
        raise DataError(f"{path}: holds no preprocessing; it was not saved by `mlplab train`")
    data_config = model.metadata.get("config", {}).get("data", {})
    dataset_name = (
        args.dataset or data_config.get("dataset") or model.metadata.get("dataset", "mnist")
    )
    data_dir = args.data_dir or (None if args.dataset else data_config.get("data_dir")) or None
    data = load_dataset(dataset_name, data_dir, progress=False, parts=("test",))
    if not args.force or len(model.class_names) != data.n_classes:
        check_same_classes(model, path, data)  # --force cannot score labels the model lacks
    metrics = model.evaluate(model.features(data.test_images), data.test_labels)
    metrics["dataset"], metrics["model"] = data.name, str(path)
    metrics = json_safe(metrics)  # a diverged loss is null, not NaN (which is not JSON)
    if args.json:
        print(json.dumps(metrics, allow_nan=False))
    else:
        print(f"{path} on the {data.name} test set ({len(data.test_labels)} images)")
        print(format_evaluation(metrics))
    return 0
