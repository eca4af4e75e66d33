"""Presentation: plots and tables drawn from results that training and experiments stored.

Nothing in the engine or the training loop imports this package, so training never waits on
matplotlib.
"""

from mlplab.report.plots import plot_confusion_matrix, plot_curves, plot_misclassified

__all__ = ["plot_confusion_matrix", "plot_curves", "plot_misclassified"]
