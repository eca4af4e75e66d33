"""The network itself, in plain NumPy: layers with explicit forward and backward passes,
activations, normalization, initializers, losses, optimizers, regularizers, graphs of layers,
architecture strings, and the gradient checker. Nothing here reads files or draws plots.
"""
