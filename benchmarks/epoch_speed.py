"""Training time of mlplab against PyTorch and against a memory-and-GEMM bound, in one run.

Cases (batch 128, the 60,000 MNIST training images):

* the two Adam networks of the targets, one epoch each: 784-1000(ReLU)-10 and
  784-950(ReLU)-50(sigmoid)-10, learning rate 1e-3;
* two small networks where per-call overhead dominates, five epochs each, plain SGD with
  learning rate 0.01: 784-32(sigmoid)-10 and 784-[32(sigmoid)]x4-10.

For each case, interleaved repeat by repeat so that all see the same machine noise, it times

* mlplab: ``mlplab.training.loop.fit`` (shuffle, gather, forward, loss, backward, update, and
  at each epoch's end the ``train_loss`` the history records: a forward pass in inference mode
  over ``TRAIN_MEASURE_EXAMPLES`` = 10,000 training examples), on its default thread count
  (``--mlplab-threads auto``): as many as the network's size pays for, at most the cores, which
  is one for the two small networks and two for the Adam networks on a 2-core machine;
* PyTorch: the same loop written the usual way (``torch.optim``, ``CrossEntropyLoss``), with the
  same end-of-epoch measurement under ``torch.no_grad()``, so that both do the same work, on
  ``--threads`` threads; the loop alone (without the measurement) is timed inside the same run
  and reported beside it, and so is PyTorch on one thread, which shows how much of a ratio the
  thread count alone explains;
* the GEMMs alone: the run's matrix products on the same shapes and threads, no allocation,
  the measurement's forward products included;
* the machine's stream bandwidth: in-place ``a += b`` over 64 MB arrays, split over the same
  threads (3 x 64 MB moved per call);
* the NumPy floor (since 2026-12-04): the same training as one plain NumPy function with every
  array made once and the engine's own devices, on mlplab's threads (``numpy_floor_run``). It
  separates what the engine costs (``mlplab / floor``) from what NumPy itself costs
  (``floor / PyTorch``: no NumPy engine of this algorithm gets below it here).

The bound is ``GEMMs alone + steps * state bytes / bandwidth``, where the state is the
parameters, gradients and the optimizer's moments, each read and written once per step
(Adam: 4 arrays, SGD: 2 arrays, of 4-byte floats). Each table entry is the median of the
repeats; ratios are taken between medians of the same run.

``--ablation`` also times mlplab with each speed device switched off in turn (in-place
activations, reused work arrays, the chunked update, the skipped gradient of the data) and
reports each device's gain: ``time without it / time with it - 1``.

Run (PyTorch is installed for the benchmark only; ``torch==2.13.0`` is a local CPU build here)::

    pip install torch==2.13.0
    MLPLAB_DATA=../shared/data python benchmarks/epoch_speed.py --threads 2 --repeats 5 --ablation

It prints Markdown tables and, with ``--write``, replaces ``benchmarks/RESULTS.md``'s tables.
The IDX files are read here (not through ``mlplab.data``) so that only training is timed.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Time the engine as the `mlplab` command runs it: with the process settings of its entry point
# (no huge pages), which have to be made before NumPy loads (see mlplab.cli.PROCESS_ENVIRONMENT;
# mlplab.cli does not load NumPy). A value set in the environment wins.
from mlplab.cli import PROCESS_ENVIRONMENT

os.environ.update({**PROCESS_ENVIRONMENT, **os.environ})  # a value the user set wins

import numpy as np

BATCH = 128
N_TRAIN = 60000


@dataclass(frozen=True)
class Case:
    label: str
    architecture: str  # "units:activation,..." hidden layers; the output layer is 10 logits
    optimizer: str
    learning_rate: float
    epochs: int


CASES = [
    Case("784-1000(relu)-10, Adam, 1 epoch", "1000:relu", "adam", 1e-3, 1),
    Case("784-950(relu)-50(sigmoid)-10, Adam, 1 epoch", "950:relu,50:sigmoid", "adam", 1e-3, 1),
    Case("784-32(sigmoid)-10, SGD, 5 epochs", "32:sigmoid", "sgd", 0.01, 5),
    Case("784-[32(sigmoid)]x4-10, SGD, 5 epochs", ",".join(["32:sigmoid"] * 4), "sgd", 0.01, 5),
]
# Arrays read and written once per step: parameters and gradients, plus the optimizer's moments.
STATE_ARRAYS = {"adam": 4, "sgd": 2}


# ----------------------------------------------------------------------------- the speed devices
def _set_inplace(on):
    from mlplab.engine import graph

    graph.INPLACE_ACTIVATIONS = on


def _set_work_arrays(on):
    from mlplab.engine import layers

    layers.REUSE_WORK_ARRAYS = on


def _set_chunked_update(on):
    from mlplab.engine import optimizers

    optimizers.UPDATE_CHUNK = 1 << 17 if on else 1 << 62  # off: every array in one piece


def _set_skip_data_gradient(on):
    from mlplab.engine import graph

    graph.SKIP_DATA_GRADIENT = on


DEVICES = {
    "in-place activations": _set_inplace,
    "work arrays": _set_work_arrays,
    "chunked update": _set_chunked_update,
    "skipped data gradient": _set_skip_data_gradient,
}


# ----------------------------------------------------------------------------- data
def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = np.frombuffer(raw, ">u4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist():
    folder = Path(os.environ.get("MLPLAB_DATA", "../shared/data")) / "mnist"
    images = read_idx(folder / "train-images-idx3-ubyte.gz")
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    return images.reshape(len(labels), -1).astype(np.float32) / 255, labels.astype(np.int64)


# ----------------------------------------------------------------------------- the contenders
def mlplab_run(case: Case, x, y, threads: int | None) -> float:
    """Seconds of ``fit``; ``threads=None`` is fit's default choice (see mlplab_threads)."""
    from mlplab.engine.architecture import build_network
    from mlplab.engine.losses import SoftmaxCrossEntropy
    from mlplab.engine.optimizers import make_optimizer
    from mlplab.training.loop import fit

    network = build_network(case.architecture, 784, 10, seed=0)
    started = time.perf_counter()
    fit(
        network,
        SoftmaxCrossEntropy(),
        x,
        y,
        epochs=case.epochs,
        batch_size=BATCH,
        threads=threads,
        optimizer=make_optimizer(case.optimizer, case.learning_rate),
        progress=False,
    )
    return time.perf_counter() - started


def mlplab_threads(case: Case, threads: int | None) -> int:
    """The threads ``fit`` trains the case on: ``threads``, or by default as many as the
    network's size pays for (``mlplab.training.threads.training_threads``)."""
    from mlplab.engine.architecture import build_network
    from mlplab.training.threads import training_threads

    return training_threads(threads, build_network(case.architecture, 784, 10), BATCH)


def torch_run(case: Case, x, y, threads: int) -> tuple[float, float]:
    """Seconds of the whole run, and of its end-of-epoch measurements alone."""
    import torch

    from mlplab.training.loop import TRAIN_MEASURE_EXAMPLES

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers, widths = [], layer_widths(case.architecture)
    for fan_in, fan_out, activation in zip(widths, widths[1:], activations(case.architecture)):
        layers += [
            torch.nn.Linear(fan_in, fan_out),
            torch.nn.ReLU() if activation == "relu" else torch.nn.Sigmoid(),
        ]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-2], 10))
    optimizer_class = torch.optim.Adam if case.optimizer == "adam" else torch.optim.SGD
    optimizer = optimizer_class(net.parameters(), lr=case.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    # The measurement fit makes for the history: any 10,000 rows cost the same.
    measure_x, measure_y = xt[:TRAIN_MEASURE_EXAMPLES], yt[:TRAIN_MEASURE_EXAMPLES]
    measuring = 0.0
    started = time.perf_counter()
    for _ in range(case.epochs):
        order = torch.randperm(len(yt))
        for start in range(0, len(yt), BATCH):
            idx = order[start : start + BATCH]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
        measure_started = time.perf_counter()
        net.eval()
        with torch.no_grad():
            total, correct = 0.0, 0
            for start in range(0, len(measure_y), 1000):
                logits = net(measure_x[start : start + 1000])
                labels = measure_y[start : start + 1000]
                total += loss_fn(logits, labels).item() * len(labels)
                correct += int((logits.argmax(dim=1) == labels).sum())
        net.train()
        measuring += time.perf_counter() - measure_started
    return time.perf_counter() - started, measuring


def numpy_floor_run(case: Case, x, y, threads: int) -> tuple[float, float]:
    """Seconds of the same training written as one plain NumPy function, without the engine,
    and the training accuracy it measured at the end (to show that it trained).

    It starts from ``mlplab_run``'s initial weights. Every array is allocated once and written
    in place, and it computes what the engine computes the way the engine does (the batch
    gathered by ``take``, the sigmoid as ``(1 + tanh(z / 2)) / 2``, no gradient for the data,
    one flat array of parameters and one of gradients, Adam's decayed sums in chunks of
    ``UPDATE_CHUNK``), with the same end-of-epoch measurement on 10,000 examples: about the
    least work per step that NumPy calls allow for this algorithm. ``mlplab / NumPy floor`` is
    then what the engine's layers, graph and loop cost beyond it, and ``floor / PyTorch`` is
    the best ratio a NumPy engine of the same computation could reach on this machine.
    """
    from threadpoolctl import threadpool_limits

    from mlplab.engine.architecture import build_network
    from mlplab.engine.optimizers import UPDATE_CHUNK
    from mlplab.training.loop import TRAIN_MEASURE_EXAMPLES

    widths = layer_widths(case.architecture)
    kinds = activations(case.architecture)  # of the hidden layers
    params = np.zeros(n_params(case.architecture), np.float32)
    grads = np.zeros_like(params)
    weights, biases, weight_grads, bias_grads, offset = [], [], [], [], 0
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        for shape, kept, kept_grads in [
            ((fan_out, fan_in), weights, weight_grads),
            ((fan_out,), biases, bias_grads),
        ]:
            size = int(np.prod(shape))
            kept.append(params[offset : offset + size].reshape(shape))
            kept_grads.append(grads[offset : offset + size].reshape(shape))
            offset += size
    # The initial weights of mlplab_run's network: (weight, bias) per dense layer, in order.
    initial = build_network(case.architecture, 784, 10, seed=0).params.values()
    for piece, value in zip(
        [a for pair in zip(weights, biases) for a in pair], initial, strict=True
    ):
        piece[...] = value
    m_sum, v_sum = np.zeros_like(params), np.zeros_like(params)
    scratch = np.empty(min(params.size, UPDATE_CHUNK), np.float32)
    work = {}  # batch size -> its arrays, made once

    def arrays(n):
        if n not in work:
            work[n] = {
                "out": [np.empty((n, w), np.float32) for w in widths],
                "grad": [np.empty((n, w), np.float32) for w in widths],
                "other": [np.empty((n, w), np.float32) for w in widths],
                "mask": [np.empty((n, w), bool) for w in widths],
            }
        return work[n]

    def forward(xb):
        out = arrays(len(xb))["out"]
        h = xb
        for i, (weight, bias) in enumerate(zip(weights, biases)):
            z = np.matmul(h, weight.T, out=out[i + 1])
            z += bias
            if i < len(kinds) and kinds[i] == "relu":
                np.maximum(z, 0.0, out=z)
            elif i < len(kinds):  # the engine's sigmoid, (1 + tanh(z / 2)) / 2
                z *= 0.5
                np.tanh(z, out=z)
                z += 1.0
                z *= 0.5
            h = z
        return h

    def loss_gradient(logits, labels):
        """The mean cross-entropy; leaves its gradient in ``logits``."""
        n, rows = len(labels), np.arange(len(labels))
        logits -= logits[rows, logits.argmax(axis=1)][:, None]
        label_term = logits[rows, labels]
        np.exp(logits, out=logits)
        sum_exp = np.add.reduce(logits, axis=1)
        loss = float(np.add.reduce(np.log(sum_exp) - label_term, dtype=np.float64)) / n
        logits /= sum_exp[:, None]
        logits[rows, labels] -= 1.0
        logits *= 1.0 / n
        return loss

    def backward(xb, grad):
        work_arrays = arrays(len(xb))
        out = [xb, *work_arrays["out"][1:]]
        for i in reversed(range(len(weights))):
            np.matmul(grad.T, out[i], out=weight_grads[i])
            np.add.reduce(grad, axis=0, out=bias_grads[i])
            if i == 0:
                return
            grad = np.matmul(grad, weights[i], out=work_arrays["grad"][i])
            y_i = out[i]
            if kinds[i - 1] == "relu":
                grad *= np.greater(y_i, 0.0, out=work_arrays["mask"][i])
            else:
                one_minus_y = np.subtract(1.0, y_i, out=work_arrays["other"][i])
                grad *= y_i
                grad *= one_minus_y

    def update(step):
        if case.optimizer == "sgd":
            np.multiply(grads, case.learning_rate, out=scratch)
            params.__isub__(scratch)
            return
        b1, b2, eps = 0.9, 0.999, 1e-8
        bias_correction1, bias_correction2 = 1.0 - b1**step, 1.0 - b2**step
        v_scale = np.sqrt(bias_correction2 / (1.0 - b2))
        step_size = float(case.learning_rate * (1.0 - b1) / bias_correction1 * v_scale)
        eps_hat = float(eps * v_scale)
        for start in range(0, params.size, scratch.size):
            stop = min(start + scratch.size, params.size)
            p, g, m, v = (a[start:stop] for a in (params, grads, m_sum, v_sum))
            s = scratch[: stop - start]
            m *= b1
            m += g
            np.multiply(g, g, out=s)
            v *= b2
            v += s
            np.sqrt(v, out=s)
            s += eps_hat
            np.divide(m, s, out=s)
            s *= step_size
            p -= s

    measure_x, measure_y = x[:TRAIN_MEASURE_EXAMPLES], y[:TRAIN_MEASURE_EXAMPLES]
    with threadpool_limits(threads, user_api="blas"):
        started, step = time.perf_counter(), 0
        for epoch in range(case.epochs):
            order = np.random.default_rng([0, epoch]).permutation(len(y))
            correct = 0
            for start in range(0, len(y), BATCH):
                indices = order[start : start + BATCH]
                xb, yb = x.take(indices, axis=0), y[indices]
                logits = forward(xb)
                correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
                if not np.isfinite(loss_gradient(logits, yb)):
                    raise FloatingPointError("the NumPy floor's loss diverged")
                backward(xb, logits)
                step += 1
                update(step)
            measured_correct = 0
            for start in range(0, len(measure_y), 1000):  # the history's measurement
                logits = forward(measure_x[start : start + 1000])
                labels = measure_y[start : start + 1000]
                measured_correct += int(np.count_nonzero(logits.argmax(axis=1) == labels))
                loss_gradient(logits, labels)
        return time.perf_counter() - started, measured_correct / len(measure_y)


def layer_widths(architecture: str) -> list[int]:
    return [784] + [int(item.split(":")[0]) for item in architecture.split(",")] + [10]


def activations(architecture: str) -> list[str]:
    """The hidden layers' activations of a ``"units:activation,..."`` string."""
    return [item.split(":")[1] for item in architecture.split(",")]


def n_params(architecture: str) -> int:
    widths = layer_widths(architecture)
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


def steps(case: Case) -> int:
    return case.epochs * -(-N_TRAIN // BATCH)


def gemm_run(case: Case, threads: int) -> float:
    """The run's GEMMs alone, with mlplab's (out, in) weight layout and no input gradient for
    the data (nobody needs it), and the forward products of each epoch's measurement."""
    from threadpoolctl import threadpool_limits

    from mlplab.training.loop import TRAIN_MEASURE_EXAMPLES

    rng = np.random.default_rng(0)
    widths = layer_widths(case.architecture)
    weights = [
        rng.standard_normal((b, a), dtype=np.float32) for a, b in zip(widths[:-1], widths[1:])
    ]
    acts = [rng.standard_normal((BATCH, w), dtype=np.float32) for w in widths]
    outs = [np.empty((BATCH, w), dtype=np.float32) for w in widths]
    weight_grads = [np.empty_like(w) for w in weights]
    measure_acts = [rng.standard_normal((1000, w), dtype=np.float32) for w in widths]
    with threadpool_limits(threads, user_api="blas"):
        started = time.perf_counter()
        for _ in range(steps(case)):
            for i, w in enumerate(weights):
                np.matmul(acts[i], w.T, out=outs[i + 1])  # forward
                np.matmul(acts[i + 1].T, acts[i], out=weight_grads[i])  # weight gradient
                if i:
                    np.matmul(acts[i + 1], w, out=outs[i])  # input gradient
        for _ in range(case.epochs * TRAIN_MEASURE_EXAMPLES // 1000):
            for i, w in enumerate(weights):
                np.matmul(measure_acts[i], w.T, out=measure_acts[i + 1])
        return time.perf_counter() - started


def stream_bandwidth(threads: int, size: int = 1 << 24, calls: int = 5) -> float:
    """Bytes per second of ``a += b`` over two 64 MB float32 arrays, on ``threads`` threads."""
    a = np.ones(size, dtype=np.float32)
    b = np.ones(size, dtype=np.float32)
    bounds = [size * i // threads for i in range(threads + 1)]
    chunks = [(a[lo:hi], b[lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
    with ThreadPoolExecutor(threads) as pool:

        def one_pass():
            for job in [pool.submit(np.add, x, y, out=x) for x, y in chunks]:
                job.result()

        one_pass()  # touch the pages first
        started = time.perf_counter()
        for _ in range(calls):
            one_pass()
        seconds = time.perf_counter() - started
    return calls * 3 * a.nbytes / seconds


# ----------------------------------------------------------------------------- main
def median(values) -> float:
    return float(np.median(values)) if values else float("nan")


def paired_ratios(record: dict, numerator: str, denominator: str) -> str:
    """``median [min, max]`` of ``numerator / denominator`` taken repeat by repeat."""
    if numerator not in record or denominator not in record:
        return "n/a"
    ratios = [a / b for a, b in zip(record[numerator], record[denominator])]
    return f"{median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--threads", type=int, default=2, help="PyTorch's and the GEMMs' threads (and mlplab's)"
    )
    parser.add_argument(
        "--mlplab-threads",
        default="auto",
        help="mlplab's threads: a number, or 'auto' for fit's default choice (at most the cores)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ablation", action="store_true", help="time each device switched off")
    parser.add_argument("--cases", default="", help="comma-separated case numbers (1-4)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print every measurement")
    parser.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args()

    x, y = load_mnist()
    ours = None if args.mlplab_threads == "auto" else int(args.mlplab_threads)
    cases = [CASES[int(i) - 1] for i in args.cases.split(",")] if args.cases else CASES
    variants = ["mlplab"] + ([f"without {d}" for d in DEVICES] if args.ablation else [])
    times = {case.label: {} for case in cases}
    bandwidths = []
    started = time.perf_counter()
    for case in cases:  # warm up: BLAS threads, page faults, imports
        mlplab_run(Case("", case.architecture, case.optimizer, case.learning_rate, 1), x, y, ours)
    for repeat in range(args.repeats):
        bandwidths.append(stream_bandwidth(args.threads))
        for case in cases:
            record = times[case.label]
            record.setdefault("gemm", []).append(gemm_run(case, args.threads))
            for variant in variants:
                device = variant.removeprefix("without ")
                if device in DEVICES:
                    DEVICES[device](False)
                try:
                    seconds = mlplab_run(case, x, y, ours)
                finally:
                    if device in DEVICES:
                        DEVICES[device](True)
                record.setdefault(variant, []).append(seconds)
            seconds, accuracy = numpy_floor_run(case, x, y, mlplab_threads(case, ours))
            record.setdefault("numpy floor", []).append(seconds)
            if not args.no_torch:
                seconds, measuring = torch_run(case, x, y, args.threads)
                record.setdefault("torch", []).append(seconds)
                record.setdefault("torch loop alone", []).append(seconds - measuring)
                if args.threads > 1:  # shows how much of the gain one thread alone explains
                    seconds, _ = torch_run(case, x, y, 1)
                    record.setdefault("torch 1 thread", []).append(seconds)
            if args.verbose:
                print(case.label, {k: round(v[-1], 2) for k, v in record.items()}, flush=True)
                print(f"  the NumPy floor's training accuracy: {accuracy:.4f}", flush=True)
        print(
            f"repeat {repeat + 1}/{args.repeats} done after {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    bandwidth = median(bandwidths)

    torch_version = "" if args.no_torch else f", PyTorch {__import__('torch').__version__}"
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"({len(os.sched_getaffinity(0))} usable); PyTorch and the GEMMs on {args.threads} "
        f"threads, mlplab on {args.mlplab_threads} threads; NumPy "
        f"{np.__version__}{torch_version}; stream bandwidth {bandwidth / 1e9:.1f} GB/s "
        f"(median of {args.repeats}). Medians of {args.repeats} interleaved repeats, batch "
        f"{BATCH}, 60,000 MNIST images per epoch. Total {time.perf_counter() - started:.0f} s.",
        "",
        "| case | mlplab threads | mlplab s | PyTorch s | PyTorch loop alone s "
        "| PyTorch 1 thread s | GEMMs alone s | state pass s | bound s | mlplab / PyTorch "
        "| mlplab / PyTorch loop alone | mlplab / PyTorch 1 thread | mlplab / bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    bounds = {}
    for case in cases:
        m = {k: median(v) for k, v in times[case.label].items()}
        state_pass = steps(case) * STATE_ARRAYS[case.optimizer] * 2 * 4
        state_pass = state_pass * n_params(case.architecture) / bandwidth
        bound = bounds[case.label] = m["gemm"] + state_pass
        torch_s, loop_s = m.get("torch", nan), m.get("torch loop alone", nan)
        one_s = m.get("torch 1 thread", nan)
        lines.append(
            f"| {case.label} | {mlplab_threads(case, ours)} | {m['mlplab']:.2f} | {torch_s:.2f} "
            f"| {loop_s:.2f} | {one_s:.2f} | {m['gemm']:.2f} | {state_pass:.2f} | {bound:.2f} "
            f"| {m['mlplab'] / torch_s:.2f} | {m['mlplab'] / loop_s:.2f} "
            f"| {m['mlplab'] / one_s:.2f} | {m['mlplab'] / bound:.2f} |"
        )
    lines += [
        "",
        "The NumPy floor: the same training as one plain NumPy function (`numpy_floor_run`), on"
        " mlplab's threads. The last three columns are ratios taken within each repeat (the"
        " contenders ran seconds apart), their median and range over the repeats.",
        "",
        "| case | NumPy floor s | mlplab / NumPy floor | NumPy floor / PyTorch "
        "| NumPy floor / bound | per repeat: mlplab / PyTorch | NumPy floor / PyTorch "
        "| mlplab / NumPy floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        record = times[case.label]
        m = {k: median(v) for k, v in record.items()}
        floor, torch_s = m["numpy floor"], m.get("torch", nan)
        per_repeat = [
            paired_ratios(record, "mlplab", "torch"),
            paired_ratios(record, "numpy floor", "torch"),
            paired_ratios(record, "mlplab", "numpy floor"),
        ]
        lines.append(
            f"| {case.label} | {floor:.2f} | {m['mlplab'] / floor:.2f} | {floor / torch_s:.2f} "
            f"| {floor / bounds[case.label]:.2f} | " + " | ".join(per_repeat) + " |"
        )
    if args.ablation:
        lines += [
            "",
            "Ablation: gain of each speed device, `median time without it / median time with it"
            " - 1` (negative: the engine is faster without it).",
            "",
            "| case | " + " | ".join(DEVICES) + " |",
            "|---|" + "---|" * len(DEVICES),
        ]
        for case in cases:
            m = {k: median(v) for k, v in times[case.label].items()}
            gains = [m[f"without {d}"] / m["mlplab"] - 1 for d in DEVICES]
            lines.append(f"| {case.label} | " + " | ".join(f"{g:+.1%}" for g in gains) + " |")
    lines += ["", "Raw seconds per repeat:", ""]
    for case in cases:
        raw = {k: [round(t, 2) for t in v] for k, v in times[case.label].items()}
        lines.append(f"- {case.label}: {raw}")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_results(Path(__file__).with_name("RESULTS.md"), table)


def write_results(path: Path, table: str) -> None:
    """Replace the block between ``<!-- results -->`` and the next ``## `` heading (or the end),
    leaving the other benchmarks' sections of the file as they are."""
    text = path.read_text() if path.exists() else "<!-- results -->\n"
    head, _, rest = text.partition("<!-- results -->\n")
    tail = rest[rest.index("\n## ") + 1 :] if "\n## " in rest else ""
    path.write_text(head + "<!-- results -->\n" + table + "\n" + ("\n" + tail if tail else ""))


if __name__ == "__main__":
    main()
