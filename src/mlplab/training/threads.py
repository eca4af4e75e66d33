"""Thread settings of one training: its BLAS threads.

Nothing here outlives a training. :func:`thread_limit` sets the BLAS thread count through
threadpoolctl for its block, then restores it. Everything else a step does (activations, the
loss, the optimizer's element-wise update) runs on the calling thread.

The BLAS thread count is one setting for the whole process, and OpenBLAS's float32 products come
out slightly different (last bits) with 1, 2, 3 or 4 threads, even for the 128-row products of a
training step (measured with OpenBLAS 0.3.31; ``tests/test_threads.py`` checks what follows). So
that a run's weights depend only on its own seed and thread count, trainings that run at the
same time in one process share the BLAS setting: those asking for the same count run together,
and one asking for another count waits until they have finished. A process forked during or after
a training starts with no training running.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from contextvars import ContextVar

from mlplab.errors import ConfigError


def available_cores() -> int:
    """The number of cores this process may run on (its CPU affinity), else the CPU count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


# Multiply-adds of a batch's forward pass per BLAS thread a training uses by default. A second
# OpenBLAS thread costs the rest of the step even when idle: it spins, waiting for the next
# product, and on these machines the gather, the loss and the update ran up to twice as slowly
# beside it. Measured on 2 cores (benchmarks/RESULTS.md), an epoch at batch 128 was faster on
# one thread up to 784-128-10 (13 million multiply-adds a batch) and on two from 784-256-10 (26
# million) on.
MULTIPLY_ADDS_PER_THREAD = 1 << 24


def training_threads(threads: int | None, network, batch_size: int) -> int:
    """The threads a training of ``network`` at ``batch_size`` uses: ``threads`` when given;
    by default one per :data:`MULTIPLY_ADDS_PER_THREAD` multiply-adds of a batch's forward pass
    (parameters x batch size, rounded), at least one and at most :func:`available_cores`.

    The default depends only on the network and the batch size, never on a timing, so reruns
    and resumed runs choose the same count and stay bit-identical.
    """
    if threads is not None:
        return threads
    wanted = round(network.n_params * batch_size / MULTIPLY_ADDS_PER_THREAD)
    return max(1, min(available_cores(), wanted))


@contextmanager
def thread_limit(threads: int | None = None):
    """Use ``threads`` BLAS threads for the block; default: :func:`available_cores`.

    The setting is restored at the end of the block. The same count gives bit-identical
    reruns; another count gives slightly different last bits (BLAS sums in another order).
    """
    if threads is None:
        threads = available_cores()
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError(f"the number of threads must be a whole number >= 1, got {threads!r}")
    with _blas_threads(threads):
        yield


class _BlasSetting:
    """The process's BLAS thread count while trainings run: who uses it, and how to undo it."""

    def __init__(self):
        self.changed = threading.Condition()
        self.threads: int | None = None  # the count the running trainings use
        self.users = 0
        self.limiter = None  # threadpoolctl's record of the counts before the first user


_blas = _BlasSetting()
# The count this thread's (context's) own training holds, so that a training nested in another
# one (say, from a callback) joins it instead of waiting for itself; with the pid, because a
# forked child inherits the context but not the training.
_held: ContextVar[tuple[int, int] | None] = ContextVar("mlplab_blas_held", default=None)


def _forget_trainings_of_the_parent() -> None:
    global _blas
    _blas = _BlasSetting()  # also a fresh lock: another parent thread may have held the old one


os.register_at_fork(after_in_child=_forget_trainings_of_the_parent)


@contextmanager
def _blas_threads(threads: int):
    setting = _blas
    held = _held.get()
    if held is not None and held[0] == os.getpid() and held[1] != threads:
        raise ConfigError(
            f"a training started inside another one must use the same number of threads "
            f"({held[1]}, not {threads}): BLAS threads are one setting for the whole process"
        )
    with setting.changed:
        while setting.users and setting.threads != threads:
            setting.changed.wait()
        if setting.users == 0:
            setting.limiter = _as_any_thread(_set_blas_threads, threads)
            setting.threads = threads
        setting.users += 1
    token = _held.set((os.getpid(), threads))
    try:
        yield
    finally:
        _held.reset(token)
        with setting.changed:
            setting.users -= 1
            if setting.users == 0:  # the last training out restores, from whichever thread
                _as_any_thread(setting.limiter.restore_original_limits)
                setting.limiter, setting.threads = None, None
                setting.changed.notify_all()


def _set_blas_threads(threads: int):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def _as_any_thread(function, *args):
    """Run a threadpoolctl call that must take effect whichever thread makes it.

    threadpoolctl (3.6 and later) lets only one "controlling" thread change OpenBLAS's
    process-wide thread count and silently ignores the others; our setting is process-wide on
    purpose (see above), changed under our lock, so we take control for the call and give it up.
    """
    import threadpoolctl

    openblas = getattr(threadpoolctl, "OpenBLASController", None)
    clear = getattr(openblas, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
    try:
        return function(*args)
    finally:
        if clear is not None:
            clear()
