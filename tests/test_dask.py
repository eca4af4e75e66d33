"""Sweeps on a real Dask cluster (a scheduler and two workers on 127.0.0.1) give the same results
as local worker processes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mlplab.cli import main
from mlplab.experiments.runner import run_sweep
from mlplab.experiments.store import Store
from mlplab.experiments.sweep import load_sweep

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
DASK = Path(sys.executable).parent / "dask"
if not DASK.exists() and shutil.which("dask"):
    DASK = Path(shutil.which("dask"))

pytestmark = pytest.mark.skipif(
    not DASK.exists(), reason="the `dask` command (pip install distributed) is not installed"
)

TINY = f"""
    name = "tiny-dask"
    seeds = 2
    [base]
    data = {{ dataset = "{MNIST_SMALL}", validation = 200 }}
    optimizer = {{ name = "sgd", learning_rate = 0.1 }}
    schedule = {{ name = "constant" }}
    training = {{ epochs = 1, batch_size = 32 }}
    [parameters."model.architecture"]
    values = ["16:relu", "8:sigmoid,8:sigmoid", "8:relu:dropout(0.5)"]
"""


def _start(command: list[str], log: Path) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "MLPLAB_DATA"}
    with open(log, "w") as file:
        # Its own process group, so that teardown stops the nanny's worker process too.
        return subprocess.Popen(
            command, stdout=file, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers; yields the scheduler's tcp:// address."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    processes = [
        _start(
            [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)],
            folder / "scheduler.log",
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert processes[0].poll() is None, (folder / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the Dask scheduler did not start in 60 s"
            time.sleep(0.1)
        time.sleep(0.2)  # the file may be half written
        address = json.loads(scheduler_file.read_text())["address"]
        for index in range(2):
            processes.append(
                _start(
                    [str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1",
                     "--no-dashboard", "--local-directory", str(folder / f"w{index}")],
                    folder / f"worker{index}.log",
                )
            )  # fmt: skip
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)


def test_a_sweep_on_dask_matches_the_local_run_trial_for_trial(dask_cluster, tmp_path):
    sweep_file = tmp_path / "tiny.toml"
    sweep_file.write_text(textwrap.dedent(TINY))
    trials = load_sweep(sweep_file).trials()
    with Store(tmp_path / "local.db") as store:
        local = run_sweep(trials, store, workers=2, threads_per_worker=1, progress=False)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            ["sweep", str(sweep_file), "--dask", dask_cluster, "--store",
             f"sqlite:///{tmp_path / 'dask.db'}", "--quiet"]
        )  # fmt: skip
    assert code == 0
    assert f"6 run now ({dask_cluster})" in stdout.getvalue()
    with Store(tmp_path / "dask.db", create=False) as store:
        remote = {record.trial_key: record for record in store.trials("tiny-dask")}
    assert len(local.records) == 6 and remote.keys() == {t.trial_key for t in trials}
    pids = {record.timings["pid"] for record in remote.values()}
    assert os.getpid() not in pids  # the trials ran on the Dask workers
    for record in local.records:
        other = remote[record.trial_key]
        assert other.status == record.status == "done"
        assert other.metrics == record.metrics and other.seeds == record.seeds
        np.testing.assert_array_equal(other.predictions, record.predictions)
    # A re-run against the same store finds everything done and sends nothing to the cluster.
    with Store(tmp_path / "dask.db") as store:
        again = run_sweep(trials, store, dask_address=dask_cluster, progress=False)
    assert again.records == [] and again.skipped == 6


def test_an_unreachable_scheduler_is_one_line_naming_the_address(tmp_path, monkeypatch, capsys):
    from mlplab.experiments import runner

    monkeypatch.setattr(runner, "DASK_CONNECT_TIMEOUT", "1s")
    sweep_file = tmp_path / "tiny.toml"
    sweep_file.write_text(textwrap.dedent(TINY))
    assert main(["sweep", str(sweep_file), "--dask", "tcp://127.0.0.1:9", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlplab: error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert err.count("\n") == 1
