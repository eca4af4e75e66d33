"""mlplab: code-level experiments with multi-layer neural networks on MNIST-family data.

The engine is plain NumPy: layers with explicit forward and backward passes, directed acyclic
graphs of layers, stable losses, optimizers, and a gradient checker.
"""

__version__ = "0.1.0"

from mlplab.errors import ConfigError, DataError, DivergenceError, MlplabError  # noqa: E402

__all__ = ["ConfigError", "DataError", "DivergenceError", "MlplabError", "__version__"]
