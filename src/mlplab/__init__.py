"""mlplab: code-level experiments with multi-layer neural networks on MNIST-family data.

The engine is plain NumPy: layers with explicit forward and backward passes, directed acyclic
graphs of layers, stable losses, optimizers, and a gradient checker.
"""

import os

__version__ = "0.1.0"

# OpenBLAS's worker threads spin for a while after each matrix product, holding a core that our
# element-wise threads (the optimizer update) then fight over; on two cores that made an epoch
# 20% slower. A short spin must be set before NumPy loads OpenBLAS, hence here. A value the user
# set wins; importing NumPy before mlplab leaves OpenBLAS's default.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from mlplab.errors import ConfigError, DataError, DivergenceError, MlplabError

__all__ = ["ConfigError", "DataError", "DivergenceError", "MlplabError", "__version__"]
