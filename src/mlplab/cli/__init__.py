"""The ``mlplab`` command line.

Each group of subcommands lives in its own module with a ``register(subparsers)`` function that
adds its parsers and sets ``func`` on them. ``main`` turns :class:`~mlplab.errors.MlplabError`
into one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from mlplab import __version__
from mlplab.errors import MlplabError

# Modules under mlplab.cli that contribute subcommands, in the order --help lists them.
COMMAND_MODULES = [
    "data",
    "engine",
    "train",
    "predict",
    "sweep",
    "experiments",
    "report",
    "reproduce",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlplab",
        description="Code-level experiments with multi-layer neural networks on MNIST-family data.",
    )
    parser.add_argument("--version", action="version", version=f"mlplab {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"mlplab.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"mlplab.cli.{name}":
                raise
            continue  # that group of commands has not landed yet
        module.register(subparsers)
    return parser


# OpenBLAS's worker threads spin for a while after each matrix product, holding a core that the
# optimizer's update threads then fight over: on two cores an Adam epoch of 784-1000-10 took
# 0.86 s of update time with the default spin and 0.59 s with a short one. OpenBLAS reads the
# setting once, when NumPy loads it, so only the command's entry point can choose it for its own
# process (the library never changes the environment); a value the user set wins.
OPENBLAS_SPIN = ("OPENBLAS_THREAD_TIMEOUT", "4")


def main(argv: list[str] | None = None) -> int:
    if "numpy" not in sys.modules:  # in-process callers (tests) have loaded it: nothing to do
        os.environ.setdefault(*OPENBLAS_SPIN)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MlplabError as error:
        print(f"mlplab: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("mlplab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mlplab ... | head` closed the pipe: not an error worth a trace
        # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
