"""Turning images into float32 features: cropping, pixel subsets, scaling, standardizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlplab.data import FittedPreprocessing, Preprocessing, load_dataset
from mlplab.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def images():
    data = load_dataset(str(Path(__file__).parent / "fixtures" / "mnist-small"))
    return data.train_images, data.test_images


def test_default_scales_to_unit_interval_as_float32_rows(images):
    train, _ = images
    features = Preprocessing().fit(train).transform(train)
    assert features.dtype == np.float32 and features.shape == (2000, 784)
    assert features.min() == 0.0 and features.max() == 1.0
    assert np.array_equal(features, train.reshape(2000, -1) / np.float32(255))


def test_scale_false_keeps_pixel_values(images):
    train, _ = images
    features = Preprocessing(scale=False).fit(train).transform(train[:3])
    assert np.array_equal(features, train[:3].reshape(3, -1).astype(np.float32))


def test_crop_border_3_gives_22_by_22(images):
    train, _ = images
    fitted = Preprocessing(crop_border=3).fit(train)
    features = fitted.transform(train[:5])
    assert fitted.cropped_shape == (22, 22) and features.shape == (5, 484)
    assert np.array_equal(features * 255, train[:5, 3:25, 3:25].reshape(5, -1))


@pytest.mark.parametrize("border", [14, 20])
def test_crop_leaving_nothing_is_refused(images, border):
    with pytest.raises(ConfigError, match="crop_border"):
        Preprocessing(crop_border=border).fit(images[0])


def test_pixel_subset_is_the_same_for_every_image_and_fixed_by_the_seed(images):
    train, test = images
    fitted = Preprocessing(pixel_subset=100, pixel_subset_seed=5, crop_border=2, scale=False).fit(
        train
    )
    assert fitted.n_features == 100 and np.all(np.diff(fitted.pixel_indices) > 0)
    flat = train[:, 2:26, 2:26].reshape(len(train), -1)
    assert np.array_equal(fitted.transform(train), flat[:, fitted.pixel_indices])
    same = Preprocessing(pixel_subset=100, pixel_subset_seed=5, crop_border=2).fit(test)
    other = Preprocessing(pixel_subset=100, pixel_subset_seed=6, crop_border=2).fit(train)
    assert np.array_equal(same.pixel_indices, fitted.pixel_indices)
    assert not np.array_equal(other.pixel_indices, fitted.pixel_indices)


def test_pixel_subset_larger_than_the_image_is_refused(images):
    with pytest.raises(ConfigError, match="pixel_subset 600 exceeds the 576 pixels"):
        Preprocessing(pixel_subset=600, crop_border=2).fit(images[0])


def test_global_standardization_uses_training_statistics(images):
    train, test = images
    fitted = Preprocessing(standardize="global").fit(train)
    scaled = train.astype(np.float64) / 255
    assert fitted.mean == pytest.approx(scaled.mean(), rel=1e-6)
    assert fitted.std == pytest.approx(scaled.std(), rel=1e-6)
    features = fitted.transform(train)
    assert features.mean() == pytest.approx(0, abs=1e-5) and features.std() == pytest.approx(
        1, rel=1e-4
    )
    # Test images are shifted by the *training* statistics, not their own.
    expected = ((test.astype(np.float64) / 255 - scaled.mean()) / scaled.std()).reshape(
        len(test), -1
    )
    assert np.allclose(fitted.transform(test), expected, atol=1e-5)


def test_per_pixel_standardization_gives_constant_pixels_std_one(images):
    train, _ = images
    fitted = Preprocessing(standardize="per-pixel").fit(train)
    flat = train.reshape(len(train), -1).astype(np.float64) / 255
    constant = flat.std(axis=0) == 0
    assert constant.any()  # MNIST's corners are always black
    assert np.all(fitted.std[constant] == 1)
    assert np.allclose(fitted.mean, flat.mean(axis=0), atol=1e-6)
    assert np.allclose(fitted.std[~constant], flat.std(axis=0)[~constant], rtol=1e-5)
    features = fitted.transform(train)
    assert np.all(np.isfinite(features))
    assert np.allclose(features[:, ~constant].std(axis=0), 1, atol=1e-3)


def test_transform_leaves_its_input_untouched_and_accepts_flat_rows(images):
    train, _ = images
    before = train[:10].copy()
    fitted = Preprocessing(standardize="per-pixel").fit(train)
    from_flat = fitted.transform(train[:10].reshape(10, -1))
    assert np.array_equal(train[:10], before)
    assert np.array_equal(from_flat, fitted.transform(train[:10]))


def test_transform_refuses_images_of_another_size(images):
    fitted = Preprocessing(crop_border=1).fit(images[0])
    with pytest.raises(DataError, match="do not match the 28x28"):
        fitted.transform(np.zeros((2, 20, 20), dtype=np.uint8))


@pytest.mark.parametrize(
    "settings",
    [
        {"standardize": "minmax"},
        {"crop_border": -1},
        {"crop_border": 1.5},
        {"pixel_subset": 0},
        {"pixel_subset": True},
    ],
)
def test_invalid_settings_are_config_errors(settings):
    with pytest.raises(ConfigError):
        Preprocessing(**settings)


def test_fitted_state_round_trips_through_npz_without_pickle(images, tmp_path):
    train, test = images
    fitted = Preprocessing(standardize="per-pixel", crop_border=2, pixel_subset=300).fit(train)
    np.savez(tmp_path / "state.npz", **fitted.state())
    with np.load(tmp_path / "state.npz", allow_pickle=False) as stored:
        restored = FittedPreprocessing.from_state(dict(stored))
    assert restored.config == fitted.config
    assert np.array_equal(restored.transform(test), fitted.transform(test))


def _damaged(state: dict, **changes) -> dict:
    state = dict(state)
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"config": None}, "lacks 'config'"),
        ({"config": np.array("[1, 2]")}, "damaged"),
        ({"image_shape": np.array([28, 28, 1])}, "image_shape .* is not"),
        ({"mean": None}, "lacks 'mean'"),
        ({"std": np.ones(5, dtype=np.float32)}, r"std is float32 of shape \(5,\)"),
        ({"mean": np.full(300, np.nan, dtype=np.float32)}, "mean holds NaN"),
        ({"std": np.zeros(300, dtype=np.float32)}, "std has values <= 0"),
        ({"pixel_indices": np.arange(300) + 10_000}, "pixel_indices must be 300 sorted"),
        ({"image_shape": np.array([4, 4])}, "crop_border 2 leaves nothing of 4x4"),
    ],
)
def test_damaged_saved_state_is_refused_by_name(images, changes, message):
    fitted = Preprocessing(standardize="per-pixel", crop_border=2, pixel_subset=300).fit(images[0])
    with pytest.raises(DataError, match=f"saved preprocessing .*{message}"):
        FittedPreprocessing.from_state(_damaged(fitted.state(), **changes))
