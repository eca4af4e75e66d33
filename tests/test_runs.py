"""The library API of one run: named seeds, the shared DataCache, prepare_run and train_run,
the memory estimate, and what train_run writes (or does not write)."""

from __future__ import annotations

import copy
import errno
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from mlplab.errors import ConfigError, MlplabError
from mlplab.training import runs
from mlplab.training.config import RunConfig
from mlplab.training.runs import (
    DataCache,
    PreparedRun,
    RunResult,
    estimate_memory,
    prepare_run,
    train_run,
)

MNIST_SMALL = Path(__file__).resolve().parent / "fixtures" / "mnist-small"
SEED_PARTS = ("split", "init", "order", "dropout", "augment")


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv("MLPLAB_DATA", raising=False)


def small_config(**training) -> RunConfig:
    config = RunConfig()
    config.data.dataset = str(MNIST_SMALL)
    config.data.validation = 200
    config.model.architecture = "16:relu"
    config.training.epochs = 1
    config.training.batch_size = 64
    config.training.threads = 1
    for key, value in training.items():
        setattr(config.training, key, value)
    return config


@pytest.fixture(scope="module")
def cache() -> DataCache:
    return DataCache()


def first_weights(prepared: PreparedRun) -> np.ndarray:
    """Every parameter of the network, flattened into one array (a copy)."""
    params = prepared.model.network.params
    return np.concatenate([params[name].ravel() for name in sorted(params)])


# ------------------------------------------------------------------ seeds
def test_derived_seeds_differ_from_each_other_and_follow_the_master_seed():
    seeds = small_config(seed=0).resolved_seeds()
    assert seeds["seed"] == 0 and set(seeds) == {"seed", *SEED_PARTS}
    assert len({seeds[part] for part in SEED_PARTS}) == len(SEED_PARTS)
    assert small_config(seed=0).resolved_seeds() == seeds  # deterministic
    other = small_config(seed=1).resolved_seeds()
    assert all(other[part] != seeds[part] for part in SEED_PARTS)


def test_an_explicit_part_seed_is_used_as_given_and_the_others_stay_derived():
    seeds = small_config(seed=7, split_seed=0).resolved_seeds()
    assert seeds["split"] == 0
    assert seeds["init"] == small_config(seed=7).resolved_seeds()["init"]


@pytest.mark.parametrize("key, value", [("seed", -1), ("seed", -5), ("init_seed", -2)])
def test_negative_seeds_are_refused_naming_the_setting(key, value):
    with pytest.raises(ConfigError, match=key):
        small_config(**{key: value}).resolved_seeds()


def test_a_fixed_split_seed_holds_the_split_while_the_master_seed_varies_the_weights(cache):
    first = prepare_run(small_config(seed=1, split_seed=0), data_cache=cache, progress=False)
    second = prepare_run(small_config(seed=2, split_seed=0), data_cache=cache, progress=False)
    np.testing.assert_array_equal(first.split.train, second.split.train)
    assert first.data is second.data  # one split, preprocessed once, shared
    assert not np.array_equal(first_weights(first), first_weights(second))


def test_a_fixed_init_seed_holds_the_weights_while_the_master_seed_varies_the_split(cache):
    first = prepare_run(small_config(seed=1, init_seed=3), data_cache=cache, progress=False)
    second = prepare_run(small_config(seed=2, init_seed=3), data_cache=cache, progress=False)
    assert not np.array_equal(first.split.validation, second.split.validation)
    np.testing.assert_array_equal(first_weights(first), first_weights(second))


def test_the_order_seed_alone_changes_the_trained_weights(cache):
    results = [
        train_run(
            prepare_run(
                small_config(split_seed=0, init_seed=0, order_seed=order),
                data_cache=cache,
                progress=False,
            ),
            progress=False,
        )
        for order in (0, 0, 1)
    ]
    np.testing.assert_array_equal(results[0].test_probabilities, results[1].test_probabilities)
    assert not np.array_equal(results[0].test_probabilities, results[2].test_probabilities)


# ------------------------------------------------------------------ DataCache
def test_data_cache_loads_a_dataset_once_and_preprocesses_each_setting_once(monkeypatch):
    calls = []
    real_load = runs.load_dataset

    def counting_load(*args, **kwargs):
        calls.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(runs, "load_dataset", counting_load)
    cache = DataCache()
    a = prepare_run(small_config(seed=0), data_cache=cache, progress=False)
    b = prepare_run(small_config(seed=0, init_seed=9), data_cache=cache, progress=False)
    c = prepare_run(small_config(seed=1), data_cache=cache, progress=False)
    assert len(calls) == 1
    assert a.data is b.data and a.data is not c.data and len(cache) == 2


def test_data_cache_shares_the_book_split_across_split_seeds():
    cache = DataCache()
    configs = [small_config(seed=seed) for seed in (0, 1)]
    for config in configs:
        config.data.protocol = "book"
    first, second = (prepare_run(c, data_cache=cache, progress=False) for c in configs)
    assert first.data is second.data  # the book split uses no seed


def test_shared_arrays_are_read_only_so_no_run_can_change_another_runs_data(cache):
    prepared = prepare_run(small_config(), data_cache=cache, progress=False)
    for array in (prepared.x_train, prepared.y_train, prepared.x_test, *prepared.validation):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0


def test_data_cache_prepares_a_setting_once_when_threads_ask_at_the_same_time(monkeypatch):
    calls = []
    real_load = runs.load_dataset
    barrier = threading.Barrier(4)

    def slow_load(*args, **kwargs):
        calls.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(runs, "load_dataset", slow_load)
    cache, results = DataCache(), []

    def worker():
        barrier.wait()
        results.append(cache.prepared(small_config().data, 0, progress=False))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 4
    assert all(result is results[0] for result in results)


# ------------------------------------------------------------------ prepare_run
def test_prepare_run_never_changes_the_config_it_is_given(cache, monkeypatch):
    monkeypatch.chdir(MNIST_SMALL.parent)
    config = small_config()
    config.data.dataset = "mnist-small"  # relative: the run's copy makes it absolute
    before = copy.deepcopy(config)
    prepared = prepare_run(config, data_cache=cache, progress=False)
    assert config == before
    assert prepared.config is not config and Path(prepared.config.data.dataset).is_absolute()


def test_settings_are_refused_before_the_data_is_read(monkeypatch):
    monkeypatch.setattr(runs, "load_dataset", pytest.fail)
    for config in (small_config(seed=-1), small_config(epochs=0)):
        with pytest.raises(ConfigError):
            prepare_run(config, progress=False)
    config = small_config()
    config.model.architecture = "16:sigmod"
    with pytest.raises(ConfigError, match="sigmod"):
        prepare_run(config, progress=False)
    config = small_config()
    config.optimizer.options["betta1"] = 0.9
    with pytest.raises(ConfigError, match="betta1"):
        prepare_run(config, progress=False)


# ------------------------------------------------------------------ memory
def test_memory_estimate_counts_weights_gradients_and_adam_slots_of_a_huge_layer():
    config = small_config()
    config.model.architecture = "1000000:relu"
    estimate = estimate_memory(config, 784, 10, data_bytes=0)
    params = 785 * 1_000_000 + 1_000_001 * 10
    assert estimate >= params * 4 * 4  # weights, gradients and two Adam moments, float32
    assert estimate < params * 4 * 4 + 1000 * 1_000_010 * 4 * 8


def test_a_run_larger_than_the_available_memory_is_refused_unless_allowed(cache, monkeypatch):
    monkeypatch.setattr(runs, "available_memory_bytes", lambda: 1_000_000)
    with pytest.raises(ConfigError) as error:
        prepare_run(small_config(), data_cache=cache, progress=False)
    message = str(error.value)
    assert "--allow-large" in message and "allow_large" in message and "976.6 KiB" in message
    prepared = prepare_run(small_config(allow_large=True), data_cache=cache, progress=False)
    assert prepared.memory_estimate > 1_000_000


# ------------------------------------------------------------------ train_run
def test_train_run_without_a_folder_writes_no_file_and_returns_everything(
    cache, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    prepared = prepare_run(small_config(), data_cache=cache, progress=False)
    result = train_run(prepared, progress=False)
    assert isinstance(result, RunResult) and list(tmp_path.iterdir()) == []
    assert result.folder is None and result.seeds == prepared.seeds
    assert result.test_predictions.dtype == np.uint8 and result.test_predictions.shape == (500,)
    assert result.test_probabilities.dtype == np.float32
    assert result.test_probabilities.shape == (500, 10)
    np.testing.assert_allclose(result.test_probabilities.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(result.test_predictions, result.test_probabilities.argmax(axis=1))
    evaluation = result.evaluation
    assert evaluation["accuracy"] == np.mean(result.test_predictions == prepared.y_test)
    assert {"first_half", "last_half", "loss"} <= set(evaluation)
    assert evaluation["seeds"] == prepared.seeds and len(result.history) == 1


def test_a_prepared_run_is_trained_only_once(cache):
    prepared = prepare_run(small_config(), data_cache=cache, progress=False)
    train_run(prepared, progress=False)
    with pytest.raises(ConfigError, match="prepare_run again"):
        train_run(prepared, progress=False)


def test_train_run_writes_data_files_only_with_pickle_free_predictions(cache, tmp_path):
    out = tmp_path / "run"
    prepared = prepare_run(small_config(), data_cache=cache, progress=False)
    result = train_run(prepared, out, progress=False)
    names = {path.name for path in out.iterdir()}
    assert names == {
        ".lock",
        "config.toml",
        "checkpoint.npz",
        "model.npz",
        "history.json",
        "history.csv",
        "evaluation.json",
        "evaluation.txt",
        "predictions.npz",
    }
    with np.load(out / "predictions.npz", allow_pickle=False) as stored:
        assert set(stored.files) == {"predicted", "probabilities", "labels"}
        np.testing.assert_array_equal(stored["predicted"], result.test_predictions)
        np.testing.assert_array_equal(stored["probabilities"], result.test_probabilities)
        np.testing.assert_array_equal(stored["labels"], prepared.y_test)
        assert stored["predicted"].dtype == stored["labels"].dtype == np.uint8
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["seeds"] == prepared.seeds
    saved = RunConfig.from_toml(out / "config.toml")
    assert saved.training.split_seed == -1 and saved.resolved_seeds() == prepared.seeds


def test_resume_without_a_folder_is_refused(cache):
    prepared = prepare_run(small_config(), data_cache=cache, progress=False)
    with pytest.raises(ConfigError, match="resume"):
        train_run(prepared, resume=True, progress=False)


def test_resume_through_the_api_refuses_changed_settings_and_changes_no_file(cache, tmp_path):
    out = tmp_path / "run"
    train_run(prepare_run(small_config(), data_cache=cache, progress=False), out, progress=False)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    changed = small_config(epochs=2)
    changed.optimizer.learning_rate = 0.5
    with pytest.raises(ConfigError, match=r"optimizer\.learning_rate") as error:
        train_run(
            prepare_run(changed, data_cache=cache, progress=False),
            out,
            resume=True,
            progress=False,
        )
    differing = str(error.value).split("differ from it:")[1].split(";")[0]
    assert differing.strip() == "optimizer.learning_rate"  # epochs may change
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_resume_may_add_epochs_and_records_them_in_the_saved_config(cache, tmp_path):
    out = tmp_path / "run"
    config = small_config()
    config.schedule.name = "constant"  # a schedule that does not depend on the run's length
    train_run(prepare_run(config, data_cache=cache, progress=False), out, progress=False)
    config.training.epochs = 2
    prepared = prepare_run(config, data_cache=cache, progress=False)
    result = train_run(prepared, out, resume=True, progress=False)
    assert len(result.history) == 2
    assert RunConfig.from_toml(out / "config.toml").training.epochs == 2


def test_resume_from_a_damaged_checkpoint_leaves_the_saved_config_as_it_was(cache, tmp_path):
    out = tmp_path / "run"
    train_run(prepare_run(small_config(), data_cache=cache, progress=False), out, progress=False)
    checkpoint = out / "checkpoint.npz"
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    config_before = (out / "config.toml").read_bytes()
    prepared = prepare_run(small_config(epochs=3), data_cache=cache, progress=False)
    with pytest.raises(MlplabError, match="checkpoint"):
        train_run(prepared, out, resume=True, progress=False)
    assert (out / "config.toml").read_bytes() == config_before


def test_a_full_disk_while_writing_is_one_error_naming_the_folder(cache, tmp_path, monkeypatch):
    def full_disk(path, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "write_json", full_disk)
    out = tmp_path / "run"
    prepared = prepare_run(small_config(), data_cache=cache, progress=False)
    with pytest.raises(MlplabError) as error:
        train_run(prepared, out, progress=False)
    message = str(error.value)
    assert str(out) in message and "No space left" in message and "\n" not in message


# ------------------------------------------------------------------ import cost
def test_importing_the_runs_module_does_not_import_matplotlib():
    code = "import sys, mlplab.training.runs; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def test_unscaled_pixels_reach_the_network_raw_and_are_cached_apart(cache):
    scaled = prepare_run(small_config(), data_cache=cache, progress=False)
    raw_config = small_config()
    raw_config.data.scale = False
    raw = prepare_run(raw_config, data_cache=cache, progress=False)
    assert scaled.x_train.max() <= 1.0
    assert raw.x_train.max() == 255.0  # the Keras tutorial's inputs: no preprocessing at all
    np.testing.assert_allclose(raw.x_train, scaled.x_train * 255, rtol=1e-6)
