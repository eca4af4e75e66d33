"""Thread settings of one training: BLAS threads and the optimizer's update threads."""

from __future__ import annotations

from contextlib import contextmanager

from mlplab.engine import optimizers


@contextmanager
def thread_limit(threads: int | None):
    """Use ``threads`` BLAS and element-wise threads for the duration of training."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = optimizers.get_threads()
    optimizers.set_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        optimizers.set_threads(before)
