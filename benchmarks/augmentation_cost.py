"""Cost of data augmentation per epoch against the cost of the epoch's training, in one run.

On full MNIST (55,000 training images, batch 128, 430 batches), interleaved repeat by repeat so
that all see the same machine noise, it times:

* augment: augmenting every batch of one epoch, alone (gather + ``Augmentation.augment``), with
  the setting below;
* train: one epoch of ``mlplab.training.loop.fit`` on 784-1200(ReLU)-1200(ReLU)-10 with Adam and
  no augmentation;
* train + augment: the same epoch with the augmentation on, as ``fit`` runs it.

It prints the medians and two ratios: ``augment / train`` (the work augmentation adds) and
``(train + augment) / train - 1`` (what it costs a training in fact, after whatever overlap the
loop achieves). The machine's noise moves single figures by tens of percent: read the medians.

Run::

    MLPLAB_DATA=../shared/data python benchmarks/augmentation_cost.py --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

# Time the engine as the `mlplab` command runs it: with its entry point's process settings, made
# before NumPy loads (see mlplab.cli.PROCESS_ENVIRONMENT).
from mlplab.cli import PROCESS_ENVIRONMENT

os.environ.update({**PROCESS_ENVIRONMENT, **os.environ})  # a value the user set wins

import numpy as np

from mlplab.data import Preprocessing, load_dataset, validation_split
from mlplab.data.augmentation import Augmentation, augmentation_for
from mlplab.engine.optimizers import make_optimizer
from mlplab.training.model import Model
from mlplab.training.threads import thread_limit

BATCH = 128
ARCHITECTURE = "1200:relu,1200:relu"
# A typical setting for digits: every transformation on, elastic included (the costliest part).
SETTING = {
    "shift": 2.0,
    "rotation": 10.0,
    "scale": 0.1,
    "shear": 10.0,
    "elastic_alpha": 1.5,
    "elastic_sigma": 5.0,
}


def augment_epoch(x: np.ndarray, augmentation: Augmentation, threads: int, epoch: int) -> float:
    """Seconds to gather and augment every batch of one epoch, as the training loop does."""
    order = np.random.default_rng([0, epoch]).permutation(len(x))
    with thread_limit(threads):
        started = time.perf_counter()
        for index, start in enumerate(range(0, len(x), BATCH)):
            batch = x[order[start : start + BATCH]]
            augmentation.augment(batch, np.random.default_rng([1, epoch, index]))
        return time.perf_counter() - started


def train_epoch(x, y, augmentation: Augmentation | None, threads: int) -> float:
    """Seconds of one training epoch (fit's own measure: training, without measuring)."""
    model = Model.build(ARCHITECTURE, x.shape[1], [str(i) for i in range(10)], seed=0)
    history = model.fit(
        x,
        y,
        optimizer=make_optimizer("adam", 1e-3),
        epochs=1,
        batch_size=BATCH,
        threads=threads,
        progress=False,
        augmentation=augmentation,
        augment_seed=1,
    )
    return history["seconds"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    data = load_dataset("mnist")
    train, _ = validation_split(data.train_labels, 5000, seed=0)
    preprocessing = Preprocessing().fit(data.train_images[train])
    x = preprocessing.transform(data.train_images[train])
    y = data.train_labels[train]
    augmentation = augmentation_for(preprocessing, **SETTING)

    times = {"augment": [], "train": [], "train + augment": []}
    for repeat in range(args.repeats):
        times["augment"].append(augment_epoch(x, augmentation, args.threads, repeat))
        times["train"].append(train_epoch(x, y, None, args.threads))
        times["train + augment"].append(train_epoch(x, y, augmentation, args.threads))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    median = {key: statistics.median(values) for key, values in times.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(
        f"{len(y)} images, batch {BATCH}, 784-{ARCHITECTURE}-10 Adam, {args.threads} threads, "
        f"{platform.processor() or platform.machine()}, load average {load:.1f} at the end"
    )
    print(f"setting: {SETTING}")
    print()
    print("| per epoch | median | repeats |")
    print("|---|---|---|")
    for key, values in times.items():
        print(f"| {key} | {median[key]:.2f} s | {', '.join(f'{v:.2f}' for v in values)} |")
    print()
    print(f"augment / train: {median['augment'] / median['train']:.3f}")
    print(f"(train + augment) / train - 1: {median['train + augment'] / median['train'] - 1:+.3f}")
    print(f"augment per batch: {1000 * median['augment'] / -(-len(y) // BATCH):.2f} ms")


if __name__ == "__main__":
    main()
