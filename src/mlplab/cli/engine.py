"""``mlplab summary`` and ``mlplab gradcheck``: look at a network and check its gradients."""

from __future__ import annotations

import argparse
import textwrap

from mlplab.engine.architecture import build_network, read_architecture

ARCH_HELP = (
    "the network: an architecture string such as '950:relu,50:sigmoid' or '5x32:sigmoid' "
    "(the grammar is below), or a .toml/.json file holding a graph spec or a [model] table"
)

ARCHITECTURE_GRAMMAR = """\
architecture strings
  A comma-separated list of the hidden layers; the input layer (--input-size features) and the
  output layer (--classes logits) are added around them. Each item is

    UNITS[:step]...        a Dense layer of UNITS units, then its steps in order
    COUNTxUNITS[:step]...  the same, COUNT times (5x32:sigmoid = five 32:sigmoid layers)
    step                   a step on its own, e.g. dropout(0.2) on the input

  steps: linear sigmoid tanh relu leaky-relu(slope) shifted-relu(floor, default -1)
         elu(alpha) softmax dropout(rate) layernorm(eps) batchnorm(momentum)
  An item with units but no activation gets relu; write linear for none. "" (or none) means
  no hidden layer: softmax regression. Layers are named by type, each type counted on its own
  (dense1, relu1, dense2, ...).

examples
  mlplab summary 100:sigmoid                      the book's 784-100-10 network
  mlplab summary 950:relu,50:sigmoid              the forum's 784-950-50-10 network
  mlplab summary 5x32:sigmoid                     five sigmoid layers of 32 units
  mlplab summary dropout(0.2),2x800:relu:dropout(0.5)
  mlplab summary 3x64:batchnorm:relu,10:layernorm:tanh
  mlplab summary examples/skip_concat.toml        a graph with a skip connection
  mlplab summary runs/forum/model.npz             a saved model
"""

GRADCHECK_EPILOG = (
    """\
how errors are measured
  Each tensor's error is max|analytic - numeric| / (scale + noise / 1e-6), scale being the
  tensor's own largest gradient and noise what central differences cannot resolve; a tensor
  passes below 1e-6. Tensors whose gradients are too small for the step 1e-6 (the first layers
  of a deep sigmoid stack) are measured again with the steps 1e-2 and 5e-3. The exit status is
  0 when every check passes, 1 when one fails.

examples
  mlplab gradcheck                                the built-in suite (every layer type)
  mlplab gradcheck 16x16:sigmoid --input-size 12 --classes 5
  mlplab gradcheck examples/skip_concat.toml --entries 50

"""
    + ARCHITECTURE_GRAMMAR
)


def register(subparsers) -> None:
    summary = subparsers.add_parser(
        "summary",
        help="print a network's layers, output shapes and parameter counts",
        description=textwrap.fill(
            "Print a table of a network's layers (with their names), the nodes each reads "
            "from, output shapes and parameter counts, like Keras's summary(). Nothing is "
            "trained and no data is read; an architecture too big for the available memory is "
            "refused before anything is allocated.",
            width=92,
        ),
        epilog=ARCHITECTURE_GRAMMAR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    summary.add_argument(
        "architecture",
        metavar="ARCH",
        help=ARCH_HELP + ", or a saved model (.npz)",
    )
    _size_options(summary)
    summary.set_defaults(func=run_summary)

    gradcheck = subparsers.add_parser(
        "gradcheck",
        help="compare analytic gradients with central differences (float64)",
        description=textwrap.fill(
            "Compare the backward pass with central differences in float64 for every "
            "parameter tensor and the input, on a random batch. Without ARCH, run the built-in "
            "suite that covers every layer type, both losses, the penalties and a graph with a "
            "skip connection and a concat of two differently activated branches.",
            width=92,
        ),
        epilog=GRADCHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gradcheck.add_argument(
        "architecture",
        metavar="ARCH",
        nargs="?",
        help=ARCH_HELP + " (default: the built-in suite)",
    )
    _size_options(gradcheck)
    gradcheck.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="examples in the random batch the loss is computed on (default 8)",
    )
    gradcheck.add_argument(
        "--entries",
        type=int,
        default=200,
        help="check at most this many random entries per tensor (default 200)",
    )
    gradcheck.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the initial weights, the random batch and the entries sampled (default 0)",
    )
    gradcheck.set_defaults(func=run_gradcheck)


def _size_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input-size",
        type=int,
        default=784,
        help="input features per example (default 784, a 28x28 image)",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=10,
        help="output classes, the width of the output layer (default 10)",
    )


def run_summary(args) -> int:
    if args.architecture.endswith(".npz"):
        from mlplab.saving import load_model

        network = load_model(args.architecture)[0]
    else:
        network = build_network(read_architecture(args.architecture), args.input_size, args.classes)
    print(network.summary())
    return 0


def run_gradcheck(args) -> int:
    from mlplab.engine import gradcheck

    if args.architecture is None:
        results = gradcheck.run_suite(seed=args.seed)
    else:
        results = [
            gradcheck.check_architecture(
                read_architecture(args.architecture),
                args.input_size,
                args.classes,
                batch_size=args.batch_size,
                seed=args.seed,
                max_entries=args.entries,
            )
        ]
    for result in results:
        print(result.report())
    failed = [r.name for r in results if not r.passed]
    print(
        f"{len(results) - len(failed)} of {len(results)} gradient checks passed"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0
