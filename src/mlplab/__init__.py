"""mlplab: code-level experiments with multi-layer neural networks on MNIST-family data.

The engine is plain NumPy: layers with explicit forward and backward passes, directed acyclic
graphs of layers, stable losses, optimizers, and a gradient checker.

Importing mlplab changes no global state (no environment variable, no thread, no BLAS setting);
thread settings belong to a training (:func:`mlplab.training.threads.thread_limit`).
"""

__version__ = "0.1.0"

from mlplab.errors import ConfigError, DataError, DivergenceError, MlplabError

__all__ = ["ConfigError", "DataError", "DivergenceError", "MlplabError", "__version__"]
