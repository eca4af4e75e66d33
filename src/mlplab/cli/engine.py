"""``mlplab summary`` and ``mlplab gradcheck``: look at a network and check its gradients."""

from __future__ import annotations

import argparse

from mlplab.engine.architecture import build_network, read_architecture

ARCH_HELP = (
    "architecture string such as '950:relu,50:sigmoid' (see `mlplab summary --help`), "
    "or a .toml/.json file holding a graph"
)


def register(subparsers) -> None:
    summary = subparsers.add_parser(
        "summary",
        help="print a network's layers, output shapes and parameter counts",
        description="Print a table of a network's layers, output shapes and parameter counts.",
        epilog="Architecture strings: comma-separated hidden layers 'UNITS[:step]...', steps "
        "being activations (linear sigmoid tanh relu leaky-relu(s) shifted-relu(c) elu "
        "softmax), dropout(rate), layernorm, batchnorm. Example: "
        "'dropout(0.2),800:relu:dropout(0.5),100:layernorm:tanh'.",
    )
    summary.add_argument("architecture", help=ARCH_HELP + ", or a saved model (.npz)")
    _size_options(summary)
    summary.set_defaults(func=run_summary)

    gradcheck = subparsers.add_parser(
        "gradcheck",
        help="compare analytic gradients with central differences (float64)",
        description="Compare the backward pass with central differences in float64 for every "
        "parameter tensor and the input; without ARCH, run the built-in suite that "
        "covers every layer type, both losses, the penalties and a graph with a skip "
        "connection and a concat of two differently activated branches.",
    )
    gradcheck.add_argument("architecture", nargs="?", help=ARCH_HELP)
    _size_options(gradcheck)
    gradcheck.add_argument("--batch-size", type=int, default=8)
    gradcheck.add_argument(
        "--entries",
        type=int,
        default=200,
        help="check at most this many random entries per tensor (default 200)",
    )
    gradcheck.add_argument("--seed", type=int, default=0)
    gradcheck.set_defaults(func=run_gradcheck)


def _size_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-size", type=int, default=784, help="input features (784)")
    parser.add_argument("--classes", type=int, default=10, help="output classes (10)")


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
