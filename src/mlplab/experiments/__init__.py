"""The experiment harness: sweeps over architectures and hyperparameters, many seeds, an SQLite
results store, significance tests, local worker processes and Dask clusters."""
