"""Thread settings belong to one training: fork-safe, restored afterwards, and safe to share.

Every test trains 784-100(relu)-10 with Adam on 600 fixture images, batch 32, two epochs: 38
steps, in float32.
"""

from __future__ import annotations

import gzip
import multiprocessing
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from mlplab.engine.architecture import build_network
from mlplab.engine.losses import SoftmaxCrossEntropy
from mlplab.engine.optimizers import make_optimizer
from mlplab.errors import ConfigError
from mlplab.training.loop import fit
from mlplab.training.threads import available_cores, thread_limit, training_threads

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
TIMEOUT = 120  # seconds; a deadlocked worker would hang forever


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of bytes (read here so that these tests depend on the engine only)."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = np.frombuffer(raw, ">u4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="module")
def data():
    images = read_idx(MNIST_SMALL / "train-images-idx3-ubyte.gz")[:600]
    labels = read_idx(MNIST_SMALL / "train-labels-idx1-ubyte.gz")[:600]
    return images.reshape(600, -1).astype(np.float32) / 255, labels.astype(np.int64)


def train(data, threads, callbacks=(), architecture="100:relu", batch_size=32, epochs=2):
    """Weights after a seeded training with ``threads`` threads, as a dict of arrays."""
    network = build_network(architecture, 784, 10, seed=3)
    fit(
        network,
        SoftmaxCrossEntropy(),
        *data,
        optimizer=make_optimizer("adam", 1e-3),
        epochs=epochs,
        batch_size=batch_size,
        threads=threads,
        progress=False,
        callbacks=callbacks,
    )
    return {name: array.copy() for name, array in network.params.items()}


def assert_same_weights(actual, expected):
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def _train_in_child(data, threads, connection):
    connection.send(train(data, threads))
    connection.close()


def _run_forked_child(data, threads):
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_train_in_child, args=(data, threads, sender))
    child.start()
    try:
        if not receiver.poll(TIMEOUT):
            pytest.fail(f"a child forked after training did not finish within {TIMEOUT} s")
        weights = receiver.recv()
    finally:
        child.join(TIMEOUT)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    return weights


def test_a_child_forked_after_the_parent_trained_trains_to_the_same_weights(data):
    parent = train(data, threads=2)  # sets two BLAS threads, then restores the count
    assert_same_weights(_run_forked_child(data, threads=2), parent)


def test_a_child_forked_during_a_training_trains_to_the_same_weights(data):
    expected = train(data, threads=2)
    children = []

    class ForkNow:
        def on_epoch_end(self, epoch, record):
            if epoch == 1:  # the parent's BLAS setting is the training's right now
                assert blas_threads() == [2] * len(blas_threads())
                children.append(_run_forked_child(data, threads=2))

    assert_same_weights(train(data, threads=2, callbacks=[ForkNow()]), expected)
    assert_same_weights(children[0], expected)


def test_blas_results_depend_on_the_thread_count_so_trainings_must_not_share_one():
    """Why trainings with other counts wait for each other (see training/threads.py)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 784), dtype=np.float32)
    w = rng.standard_normal((784, 100), dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):
        one = x @ w
    with threadpool_limits(2, user_api="blas"):
        two = x @ w
    if np.array_equal(one, two):
        pytest.skip("this BLAS gives thread-count-independent products; the waiting is harmless")
    assert np.allclose(one, two, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("counts", [(1, 2), (2, 2), (2, 1, 2)])
def test_concurrent_trainings_match_single_runs_with_their_own_thread_counts(data, counts):
    expected = {n: train(data, threads=n) for n in set(counts)}
    results, errors = [None] * len(counts), []
    start = threading.Barrier(len(counts))

    def worker(index, threads):
        try:
            start.wait()
            results[index] = train(data, threads)
        except BaseException as error:  # reported below, in the test's own thread
            errors.append(error)

    workers = [threading.Thread(target=worker, args=item) for item in enumerate(counts)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in workers), "a training hung"
    assert not errors, errors
    for threads, weights in zip(counts, results):
        assert_same_weights(weights, expected[threads])


def test_importing_mlplab_changes_no_environment_variable_thread_or_blas_setting():
    script = (
        "import os, threading\n"
        "from threadpoolctl import threadpool_info\n"
        "import numpy\n"
        "environ, threads = dict(os.environ), threading.active_count()\n"
        "blas = [lib['num_threads'] for lib in threadpool_info()]\n"
        "import mlplab, mlplab.training.loop, mlplab.training.threads, mlplab.engine.optimizers\n"
        "import mlplab.cli\n"
        "assert dict(os.environ) == environ, set(os.environ.items()) ^ set(environ.items())\n"
        "assert threading.active_count() == threads\n"
        "assert [lib['num_threads'] for lib in threadpool_info()] == blas\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("users_value", [None, "1"], ids=["unset", "set by the user"])
def test_the_command_makes_its_process_settings_before_numpy_loads_and_the_users_values_win(
    users_value,
):
    setting = (
        "" if users_value is None else f"os.environ['NUMPY_MADVISE_HUGEPAGE'] = '{users_value}'"
    )
    expected = users_value or "0"
    script = (
        "import os, contextlib, io\n"
        "os.environ.pop('NUMPY_MADVISE_HUGEPAGE', None)\n"
        f"{setting}\n"
        "os.environ['OPENBLAS_THREAD_TIMEOUT'] = '7'\n"  # not one of the command's settings
        "from mlplab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main([]) == 0\n"
        "assert os.environ['OPENBLAS_THREAD_TIMEOUT'] == '7'\n"
        f"assert os.environ['NUMPY_MADVISE_HUGEPAGE'] == '{expected}'\n"
        "try:\n"
        "    from numpy._core.multiarray import _get_madvise_hugepage\n"
        "except ImportError:\n"  # NumPy 1.x
        "    from numpy.core.multiarray import _get_madvise_hugepage\n"
        f"assert _get_madvise_hugepage() is {expected == '1'}\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_blas_limits_are_restored_after_fit_and_fit_starts_no_thread(data):
    with threadpool_limits(1, user_api="blas"):  # a setting of the caller's, not the default
        before, threads_before = blas_threads(), threading.active_count()
        seen = []

        class Look:
            def on_epoch_end(self, epoch, record):
                seen.append((blas_threads(), threading.active_count()))

        train(data, threads=2, callbacks=[Look()])
        assert seen[0] == ([2] * len(before), threads_before)
        assert blas_threads() == before


def test_by_default_a_small_network_trains_on_one_thread_and_a_large_one_on_the_cores(data):
    """The default count pays for itself: one BLAS thread per 2^24 multiply-adds of a batch's
    forward pass, up to the cores; an explicit count is always obeyed."""
    small, large = build_network("100:relu", 784, 10), build_network("1000:relu", 784, 10)
    assert training_threads(None, small, 32) == 1  # 2.5 million multiply-adds a batch
    assert training_threads(None, large, 128) == min(available_cores(), 6)  # 101.7 million
    assert training_threads(None, large, 1) == 1
    assert training_threads(2, small, 32) == 2
    seen = []

    class Look:
        def on_epoch_end(self, epoch, record):
            seen.append(blas_threads())

    train(data, threads=None, callbacks=[Look()])
    train(data, None, callbacks=[Look()], architecture="1000:relu", batch_size=128, epochs=1)
    cores = min(available_cores(), 6)
    assert seen == [[1] * len(blas_threads())] * 2 + [[cores] * len(blas_threads())]


def test_a_training_nested_in_another_with_another_count_is_a_config_error(data):
    with thread_limit(2):
        with pytest.raises(ConfigError, match="same number of threads"), thread_limit(1):
            pass
        with thread_limit(2):  # the same count joins
            assert blas_threads() == [2] * len(blas_threads())


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_thread_counts_are_config_errors(threads):
    with pytest.raises(ConfigError, match="number of threads"), thread_limit(threads):
        pass
