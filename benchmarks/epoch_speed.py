"""Epoch time of mlplab against PyTorch and against the machine's GEMM bound, in one run.

For each network (784-1000(ReLU)-10 and 784-950(ReLU)-50(sigmoid)-10), Adam, batch 128, one
epoch over the 60,000 MNIST training images, this measures, interleaved so that both see the same
machine noise, the median of several repeats of

* mlplab: ``mlplab.training.loop.fit`` for one epoch (shuffle, gather, forward, loss, backward, Adam);
* PyTorch: the same loop written the usual way (``torch.optim.Adam``, ``CrossEntropyLoss``);
* the GEMM bound: the epoch's matrix products alone, on the same shapes and threads, which is
  what an epoch would cost if nothing but its float32 GEMMs took time. Its FLOP count is printed,
  and so is the bound implied by the machine's peak GEMM rate on large square matrices.

It also times 784-1000-10 with plain SGD, to separate the batch loop's own cost from Adam's.

Run (PyTorch is installed for the benchmark only; ``torch==2.13.0`` is a local CPU build here)::

    pip install torch==2.13.0
    MLPLAB_DATA=../shared/data python benchmarks/epoch_speed.py --threads 2 --repeats 5

It prints a Markdown table and, with ``--write``, replaces ``benchmarks/RESULTS.md``'s table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import mlplab  # noqa: F401  (first, as the CLI does: it sets OpenBLAS's spin before NumPy loads)

# (label, architecture, optimizer): the two networks of the targets, with Adam, and the first
# again with plain SGD, whose one-pass update shows what the batch loop costs without Adam's.
CASES = [
    ("784-1000(relu)-10, Adam", "1000:relu", "adam"),
    ("784-950(relu)-50(sigmoid)-10, Adam", "950:relu,50:sigmoid", "adam"),
    ("784-1000(relu)-10, SGD", "1000:relu", "sgd"),
]
BATCH = 128


def load_mnist():
    from mlplab.data import Preprocessing, load_dataset

    data = load_dataset("mnist", progress=False)
    features = Preprocessing().fit(data.train_images).transform(data.train_images)
    return features, data.train_labels


def mlplab_epoch(architecture, optimizer, x, y, threads):
    from mlplab.engine.architecture import build_network
    from mlplab.engine.losses import SoftmaxCrossEntropy
    from mlplab.engine.optimizers import make_optimizer
    from mlplab.training.loop import fit

    network = build_network(architecture, 784, 10, seed=0)
    started = time.perf_counter()
    fit(
        network,
        SoftmaxCrossEntropy(),
        x,
        y,
        epochs=1,
        batch_size=BATCH,
        threads=threads,
        optimizer=make_optimizer(optimizer, 1e-3 if optimizer == "adam" else 0.1),
        progress=False,
    )
    return time.perf_counter() - started


def torch_epoch(architecture, optimizer_name, x, y, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers, width = [], 784
    for item in architecture.split(","):
        units, activation = item.split(":")
        layers += [
            torch.nn.Linear(width, int(units)),
            torch.nn.ReLU() if activation == "relu" else torch.nn.Sigmoid(),
        ]
        width = int(units)
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    optimizer = (
        torch.optim.Adam(net.parameters(), lr=1e-3)
        if optimizer_name == "adam"
        else torch.optim.SGD(net.parameters(), lr=0.1)
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    started = time.perf_counter()
    order = torch.randperm(len(yt))
    for start in range(0, len(yt), BATCH):
        idx = order[start : start + BATCH]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt[idx]), yt[idx])
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def layer_widths(architecture):
    return [784] + [int(item.split(":")[0]) for item in architecture.split(",")] + [10]


def epoch_flops(architecture, n=60000):
    """Forward products, weight gradients, and input gradients of every layer but the first."""
    widths = layer_widths(architecture)
    pairs = list(zip(widths[:-1], widths[1:]))
    forward = sum(2 * n * a * b for a, b in pairs)
    input_grads = sum(2 * n * a * b for a, b in pairs[1:])
    return 2 * forward + input_grads


def gemm_epoch(architecture, threads, n=60000):
    """Time the epoch's GEMMs alone, with mlplab's (out, in) weight layout."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    widths = layer_widths(architecture)
    weights = [
        rng.standard_normal((b, a), dtype=np.float32) for a, b in zip(widths[:-1], widths[1:])
    ]
    acts = [rng.standard_normal((BATCH, w), dtype=np.float32) for w in widths]
    outs = [np.empty((BATCH, w), dtype=np.float32) for w in widths]  # no allocation is timed
    weight_grads = [np.empty_like(w) for w in weights]
    with threadpool_limits(threads):
        started = time.perf_counter()
        for _ in range(n // BATCH + 1):
            for i, w in enumerate(weights):
                np.matmul(acts[i], w.T, out=outs[i + 1])  # forward
                np.matmul(acts[i + 1].T, acts[i], out=weight_grads[i])  # weight gradient
                if i:
                    np.matmul(acts[i + 1], w, out=outs[i])  # input gradient
        return time.perf_counter() - started


def peak_gflops(threads, size=2048):
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    with threadpool_limits(threads):
        a @ a
        times = []
        for _ in range(5):
            started = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - started)
    return 2 * size**3 / np.median(times) / 1e9


def peak_memory_of_training():
    """Peak resident memory of `mlplab train` for one epoch on full MNIST, in MB."""
    with __import__("tempfile").TemporaryDirectory() as out:
        subprocess.run(
            [sys.executable, "-m", "mlplab", "train", "--epochs", "1", "--quiet", "--out", out],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()

    x, y = load_mnist()
    peak = peak_gflops(args.threads)
    rows = []
    for label, architecture, optimizer in CASES:
        mlplab_epoch(architecture, optimizer, x[:5000], y[:5000], args.threads)  # warm up
        times = {"mlplab": [], "torch": [], "gemm": []}
        for _ in range(args.repeats):
            times["gemm"].append(gemm_epoch(architecture, args.threads))
            times["mlplab"].append(mlplab_epoch(architecture, optimizer, x, y, args.threads))
            if not args.no_torch:
                times["torch"].append(torch_epoch(architecture, optimizer, x, y, args.threads))
        median = {k: float(np.median(v)) if v else float("nan") for k, v in times.items()}
        flops = epoch_flops(architecture)
        rows.append((label, median, flops, flops / peak / 1e9, times))
        print(label, {k: [round(t, 2) for t in v] for k, v in times.items()}, flush=True)
    memory = peak_memory_of_training()

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"threads={args.threads}; NumPy {np.__version__}"
        + ("" if args.no_torch else f", PyTorch {__import__('torch').__version__}")
        + f"; peak float32 GEMM {peak:.0f} GFLOP/s (2048x2048). Median of {args.repeats} "
        f"interleaved repeats, one epoch of 60,000 images, batch {BATCH}.",
        "",
        "| network | GFLOP/epoch | mlplab s | PyTorch s | GEMMs alone s | peak-rate bound s "
        "| mlplab / PyTorch | mlplab / GEMMs alone | mlplab / peak-rate bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, m, flops, bound, _ in rows:
        lines.append(
            f"| {label} | {flops / 1e9:.0f} | {m['mlplab']:.2f} | {m['torch']:.2f} | {m['gemm']:.2f} "
            f"| {bound:.2f} | {m['mlplab'] / m['torch']:.2f} | {m['mlplab'] / m['gemm']:.2f} "
            f"| {m['mlplab'] / bound:.2f} |"
        )
    lines += [
        "",
        f"Peak resident memory of `mlplab train --epochs 1` on full MNIST: {memory:.0f} MB.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        path = Path(__file__).with_name("RESULTS.md")
        head = path.read_text().split("<!-- results -->")[0] if path.exists() else ""
        path.write_text(head + "<!-- results -->\n" + table + "\n")


if __name__ == "__main__":
    main()
