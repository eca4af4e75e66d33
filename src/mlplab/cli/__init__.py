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


# Settings the `mlplab` command makes for its own process before NumPy loads (and so for the
# worker processes it starts, which inherit them). Both are read once, when NumPy loads, so only
# the command's entry point can choose them; the library never changes the environment, and a
# value the user set wins.
PROCESS_ENVIRONMENT = {
    # NumPy asks the kernel for huge pages for every array of 4 MB or more, and on the 2-core
    # virtual machines we measure on a fresh huge page is slow to get: splitting and
    # preprocessing MNIST (220 MB of float32) took 1.45 s with them and 0.35 s without, a cost
    # every run and every sweep worker pays per data setting. Training does not miss them: an
    # Adam epoch of 784-1200-1200-10 (5.8 MB weight matrices) took the same time either way
    # (median ratio 1.00 over 5 alternated pairs; benchmarks/RESULTS.md).
    "NUMPY_MADVISE_HUGEPAGE": "0",
    # Not set: OPENBLAS_THREAD_TIMEOUT. A short OpenBLAS spin once freed a core for the
    # optimizer's update threads (since removed); it no longer paid even then, and it
    # makes small networks on 2 threads wait for their BLAS threads to wake (a 5-epoch run of
    # 784-[32]x4-10 took 7.2-8.0 s with it, 6.3 s without; benchmarks/RESULTS.md).
}


def set_process_environment() -> None:
    """Make :data:`PROCESS_ENVIRONMENT`'s settings (those the user has not set) for this process;
    for entry points (the command, the benchmarks), before NumPy is imported."""
    for name, value in PROCESS_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def main(argv: list[str] | None = None) -> int:
    if "numpy" not in sys.modules:  # in-process callers (tests) have loaded it: nothing to do
        set_process_environment()
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
