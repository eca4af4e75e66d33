"""Presentation: plots and tables drawn from results that training and experiments stored.

Nothing in the engine or the training loop imports this package, so training never waits on
matplotlib. :func:`plot_run` draws every plot of a run folder from the data files in it.
"""

from mlplab.report.plots import (
    confusion_figure,
    curves_figure,
    misclassified_figure,
    plot_confusion_matrix,
    plot_curves,
    plot_misclassified,
)
from mlplab.report.run_folder import StoredRun, plot_run, read_run

__all__ = [
    "StoredRun",
    "confusion_figure",
    "curves_figure",
    "misclassified_figure",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_misclassified",
    "plot_run",
    "read_run",
]
