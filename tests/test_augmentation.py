"""Data augmentation: exact transforms, seeded and resumable batches, and where it may apply."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers import resume_data

from mlplab.data import Preprocessing, load_dataset
from mlplab.data.augmentation import (
    Augmentation,
    affine_grid,
    augmentation_for,
    elastic_displacement,
    sample_bilinear,
)
from mlplab.engine.optimizers import make_optimizer
from mlplab.errors import ConfigError
from mlplab.training.config import RunConfig
from mlplab.training.loop import HISTORY_COLUMNS, evaluate_loss
from mlplab.training.model import Model
from mlplab.training.runs import DataCache, prepare_run, train_run
from mlplab.training.threads import thread_limit

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MNIST_SMALL = FIXTURES / "mnist-small"
CLASSES = [str(i) for i in range(10)]
TYPICAL = {
    "shift": 2,
    "rotation": 10.0,
    "scale": 0.1,
    "shear": 10.0,
    "elastic_alpha": 1.5,
    "elastic_sigma": 5.0,
}


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """600 fixture digits as float32 images (600, 28, 28) in [0, 1]."""
    dataset = load_dataset(MNIST_SMALL)
    return dataset.train_images[:600].astype(np.float32) / 255


@pytest.fixture(scope="module")
def data():
    return resume_data()


def read(images, fill=0.0, **transform) -> np.ndarray:
    """``images`` (B, H, W) under explicit per-image affine parameters."""
    rows, cols = affine_grid(images.shape, **transform)
    return sample_bilinear(images, rows, cols, fill=fill)


# ------------------------------------------------------------------ exact transforms
def test_augmentation_with_everything_off_returns_the_batch_unchanged(digits):
    batch = digits[:8].reshape(8, -1)
    augmentation = Augmentation()
    assert not augmentation.active
    assert augmentation.augment(batch, np.random.default_rng(0)) is batch
    # The identity map through the interpolation is exact too.
    assert np.array_equal(read(digits[:8]), digits[:8])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_augmented_batch_keeps_its_shape_and_dtype_and_the_input_is_untouched(digits, dtype):
    batch = digits[:16].reshape(16, -1).astype(dtype)
    before = batch.copy()
    out = Augmentation(**TYPICAL, hflip=True).augment(batch, np.random.default_rng(1))
    assert out.shape == batch.shape and out.dtype == dtype
    assert np.array_equal(batch, before)
    assert np.isfinite(out).all() and not np.array_equal(out, batch)


def test_integer_shift_moves_a_digit_by_exactly_that_many_pixels(digits):
    images = digits[:4]
    moved = read(images, shifts=np.tile([2.0, -3.0], (4, 1)))  # 2 rows down, 3 columns left
    rolled = np.roll(images, (2, -3), axis=(1, 2))
    assert np.array_equal(moved[:, 2:, :-3], rolled[:, 2:, :-3])
    # What came into view is blank, not wrapped around as np.roll wraps it.
    assert (moved[:, :2, :] == 0).all() and (moved[:, :, -3:] == 0).all()


def test_rotation_by_90_degrees_is_rot90_counterclockwise(digits):
    images = digits[:4]
    rotated = read(images, angles=90.0)
    np.testing.assert_allclose(rotated, np.rot90(images, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(read(images, angles=-90.0), np.rot90(images, -1, (1, 2)), atol=1e-5)


def test_each_image_gets_its_own_parameters(digits):
    images = digits[:2]
    out = read(images, angles=np.array([0.0, 180.0]))
    assert np.array_equal(out[0], images[0])
    np.testing.assert_allclose(out[1], images[1, ::-1, ::-1], atol=1e-5)


def test_scale_reads_the_input_at_the_centre_plus_the_offset_over_the_factor():
    rows, cols = affine_grid((1, 5, 7), scales=2.0)
    i, j = np.mgrid[0:5, 0:7]
    np.testing.assert_allclose(rows[0], 2 + (i - 2) / 2, atol=1e-6)
    np.testing.assert_allclose(cols[0], 3 + (j - 3) / 2, atol=1e-6)


def test_shear_moves_columns_in_proportion_to_the_row_and_keeps_rows():
    rows, cols = affine_grid((1, 5, 5), shears=45.0)
    i, j = np.mgrid[0:5, 0:5]
    np.testing.assert_allclose(rows[0], i, atol=1e-6)
    np.testing.assert_allclose(cols[0], j - (i - 2), atol=1e-6)  # x = x' - tan(45) y'


def test_flip_mirrors_exactly_the_flagged_images(digits):
    images = digits[:3]
    out = read(images, flips=np.array([True, False, True]))
    assert np.array_equal(out[0], images[0, :, ::-1]) and np.array_equal(out[2], images[2, :, ::-1])
    assert np.array_equal(out[1], images[1])


def test_bilinear_at_half_pixels_averages_the_neighbours_and_blank_is_the_fill():
    image = np.arange(12, dtype=np.float64).reshape(1, 3, 4)
    rows, cols = np.array([[[0.5, 1.0, -5.0]]]), np.array([[[1.5, 0.5, 1.0]]])
    out = sample_bilinear(image, rows, cols, fill=-7.0)
    assert out[0, 0, 0] == pytest.approx((1 + 2 + 5 + 6) / 4)
    assert out[0, 0, 1] == pytest.approx((4 + 5) / 2)
    assert out[0, 0, 2] == -7.0  # far outside the image
    # Half a pixel outside, the value is half the border pixel, half blank.
    edge = sample_bilinear(image, np.array([[[-0.5]]]), np.array([[[0.0]]]), fill=-7.0)
    assert edge[0, 0, 0] == pytest.approx((0 - 7) / 2)


def test_an_image_moved_out_of_view_is_all_fill(digits):
    out = read(digits[:2], shifts=np.array([[0.0, 30.0], [-40.0, 0.0]]), fill=-0.5)
    assert (out == -0.5).all()


def test_elastic_field_of_strength_zero_is_no_displacement_and_its_rms_is_alpha():
    rng = np.random.default_rng(0)
    zero_rows, zero_cols = elastic_displacement(rng, (4, 28, 28), 0.0, 4.0)
    assert not zero_rows.any() and not zero_cols.any()
    d_rows, d_cols = elastic_displacement(rng, (512, 28, 28), 2.0, 4.0)
    for field in (d_rows, d_cols):
        assert field.shape == (512, 28, 28)
        rms = np.sqrt((field**2).mean(axis=0))  # at every position, over the images
        assert np.all(np.abs(rms - 2.0) < 0.3), (rms.min(), rms.max())
    # Smooth: neighbouring pixels move almost together (uniform noise would be uncorrelated).
    correlation = np.corrcoef(d_rows[:, :, :-1].ravel(), d_rows[:, :, 1:].ravel())[0, 1]
    assert correlation > 0.9


def test_augmentation_draws_independent_parameters_for_each_image(digits):
    batch = np.repeat(digits[:1].reshape(1, -1), 16, axis=0)  # one digit 16 times
    out = Augmentation(**TYPICAL).augment(batch, np.random.default_rng(5))
    assert len({row.tobytes() for row in out}) == 16


def test_hflip_mirrors_about_half_of_the_images(digits):
    batch = digits[:400].reshape(400, -1)
    out = Augmentation(hflip=True).augment(batch, np.random.default_rng(2)).reshape(-1, 28, 28)
    mirrored = np.array([np.array_equal(o, d[:, ::-1]) for o, d in zip(out, digits[:400])])
    unchanged = np.array([np.array_equal(o, d) for o, d in zip(out, digits[:400])])
    assert (mirrored | unchanged).all() and 150 < mirrored.sum() < 250


# ------------------------------------------------------------------ seeds
def test_same_generator_seed_gives_the_same_batch_and_another_position_another(digits):
    batch = digits[:32].reshape(32, -1)
    augmentation = Augmentation(**TYPICAL)

    def at(epoch, index):
        return augmentation.augment(batch, np.random.default_rng([7, epoch, index]))

    assert np.array_equal(at(0, 3), at(0, 3))
    assert not np.array_equal(at(0, 3), at(0, 4))
    assert not np.array_equal(at(0, 3), at(1, 3))


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"shift": -1}, "shift"),
        ({"rotation": 200}, "rotation"),
        ({"scale": 0.9}, "scale"),
        ({"shear": float("nan")}, "shear"),
        ({"elastic_alpha": -2}, "elastic_alpha"),
        ({"elastic_alpha": 2, "elastic_sigma": 0}, "elastic_sigma"),
        ({"hflip": 1}, "hflip"),
        ({"shift": 28}, "shift"),
        ({"image_shape": (28,)}, "image shape"),
    ],
)
def test_settings_out_of_range_are_refused_naming_the_key(settings, named):
    with pytest.raises(ConfigError, match=named) as error:
        Augmentation(**settings)
    assert "\n" not in str(error.value)


def test_features_of_another_image_size_are_refused(digits):
    augmentation = Augmentation(shift=1, image_shape=(24, 24))
    with pytest.raises(ConfigError, match="24x24 images needs rows of 576 features"):
        augmentation.augment(digits[:2].reshape(2, -1), np.random.default_rng(0))


def test_augmentation_for_a_preprocessing_takes_its_cropped_shape_and_blank_value(digits):
    images = (digits * 255).astype(np.uint8)
    fitted = Preprocessing(standardize="global", crop_border=2).fit(images)
    augmentation = augmentation_for(fitted, shift=1.0)
    assert augmentation.image_shape == (24, 24)
    assert augmentation.fill == pytest.approx(float(-fitted.mean / fitted.std))
    assert augmentation_for(fitted, shift=0.0, elastic_sigma=3.0) is None  # all off
    with pytest.raises(ConfigError, match="per-pixel"):
        augmentation_for(Preprocessing(standardize="per-pixel").fit(images), rotation=5.0)
    with pytest.raises(ConfigError, match="pixel_subset"):
        augmentation_for(Preprocessing(pixel_subset=100).fit(images), rotation=5.0)


def config_with(augmentation: dict, **data) -> RunConfig:
    config = RunConfig.from_dict({"augmentation": augmentation, "data": data})
    return config


def test_hflip_is_refused_for_digits_and_allowed_for_clothes():
    with pytest.raises(ConfigError, match="digits are not mirror-symmetric"):
        config_with({"hflip": True}, dataset="mnist").validate()
    config_with({"hflip": True}, dataset="fashion-mnist").validate()


def test_augmentation_with_per_pixel_standardization_or_a_pixel_subset_is_refused():
    with pytest.raises(ConfigError, match="standardize = 'per-pixel'"):
        config_with({"shift": 2}, standardize="per-pixel").validate()
    with pytest.raises(ConfigError, match="pixel_subset"):
        config_with({"rotation": 5}, pixel_subset=100).validate()
    # Off, augmentation refuses nothing.
    config_with({"elastic_sigma": 6}, standardize="per-pixel", pixel_subset=100).validate()


def test_an_unknown_augmentation_key_is_refused():
    with pytest.raises(ConfigError, match=r"\[augmentation\]: unknown key 'rotate'"):
        RunConfig.from_dict({"augmentation": {"rotate": 5}})


def test_augmentation_config_round_trips_through_toml(tmp_path):
    config = config_with({**TYPICAL, "hflip": True}, dataset="fashion-mnist")
    config.training.augment_seed = 12
    path = tmp_path / "run.toml"
    path.write_text(config.to_toml())
    again = RunConfig.from_toml(path)
    assert again == config and again.augmentation.hflip is True
    assert again.resolved_seeds()["augment"] == 12
    assert RunConfig().resolved_seeds()["augment"] != RunConfig().resolved_seeds()["order"]


# ------------------------------------------------------------------ in training
def train(data, epochs, augmentation, checkpoint=None, resume=False, **options):
    """A fresh small model trained on the fixture; returns (model, history)."""
    x, y, x_val, y_val = data
    model = Model.build("32:relu:dropout(0.2)", 784, CLASSES, seed=3)
    history = model.fit(
        x,
        y,
        optimizer=make_optimizer("adam", 2e-3),
        epochs=epochs,
        batch_size=40,
        validation_data=(x_val, y_val),
        order_seed=11,
        threads=1,
        checkpoint_path=checkpoint,
        resume=resume,
        progress=False,
        augmentation=augmentation,
        augment_seed=21,
        **options,
    )
    return model, history


def same_weights(a, b) -> bool:
    params_a, params_b = a.network.params, b.network.params
    return all(np.array_equal(params_a[name], params_b[name]) for name in params_a)


@pytest.mark.parametrize("max_steps", [7, 23])
def test_resume_inside_an_epoch_with_augmentation_is_bit_identical(data, tmp_path, max_steps):
    augmentation = Augmentation(**TYPICAL)
    reference, reference_history = train(data, 2, augmentation)
    checkpoint = tmp_path / "checkpoint.npz"
    stopped, _ = train(data, 2, augmentation, checkpoint, max_steps=max_steps)
    assert not same_weights(stopped, reference)
    resumed, resumed_history = train(data, 2, augmentation, checkpoint, resume=True)
    assert same_weights(resumed, reference)
    for column in HISTORY_COLUMNS:
        if column != "seconds":
            assert resumed_history[column] == reference_history[column], column


def test_resume_with_other_augmentation_is_refused_naming_it(data, tmp_path):
    checkpoint = tmp_path / "checkpoint.npz"
    train(data, 2, Augmentation(shift=1), checkpoint, max_steps=5)
    with pytest.raises(ConfigError, match="augmentation was"):
        train(data, 2, Augmentation(shift=2), checkpoint, resume=True)
    with pytest.raises(ConfigError, match="augmentation was"):
        train(data, 2, None, checkpoint, resume=True)


def test_augmentation_changes_training_but_never_what_is_measured(data):
    x, y, x_val, y_val = data
    plain, _ = train(data, 2, None)
    model, history = train(data, 2, Augmentation(**TYPICAL))
    assert not same_weights(model, plain)  # the batches were augmented
    # The recorded validation and training figures are those of the final weights on the data as
    # given: neither set is augmented when measured (600 training examples: all measured).
    network, loss = model.network, model.loss
    with thread_limit(1):  # as in training: BLAS's last bits depend on the thread count
        val_loss, val_accuracy = evaluate_loss(network, loss, x_val, y_val)
        train_loss, _ = evaluate_loss(network, loss, x, y)
    assert (history["val_loss"][-1], history["val_accuracy"][-1]) == (val_loss, val_accuracy)
    assert history["train_loss"][-1] == train_loss


def test_augmentation_with_everything_off_trains_exactly_as_none(data):
    off, off_history = train(data, 1, Augmentation(elastic_sigma=6.0))
    plain, plain_history = train(data, 1, None)
    assert same_weights(off, plain) and off_history["val_loss"] == plain_history["val_loss"]


def test_a_run_config_with_augmentation_trains_on_cropped_images(tmp_path, monkeypatch):
    monkeypatch.delenv("MLPLAB_DATA", raising=False)
    seen = []
    original = Augmentation.augment

    def recording(self, images, rng):
        seen.append((self.image_shape, self.fill, images.shape))
        return original(self, images, rng)

    monkeypatch.setattr(Augmentation, "augment", recording)
    config = RunConfig.from_dict(
        {
            "data": {"dataset": str(MNIST_SMALL), "validation": 200, "crop_border": 2},
            "model": {"architecture": "16:relu"},
            "training": {"epochs": 1, "batch_size": 100, "threads": 1},
            "augmentation": {"shift": 1.5, "rotation": 8.0},
        }
    )
    result = train_run(prepare_run(config, data_cache=DataCache(), progress=False), tmp_path)
    assert seen and {entry[:2] for entry in seen} == {((24, 24), 0.0)}
    assert seen[0][2] == (100, 576)
    assert 0.1 < result.evaluation["accuracy"] <= 1.0
    saved = RunConfig.from_toml(tmp_path / "config.toml")
    assert saved.augmentation == config.augmentation
    assert result.seeds["augment"] == config.resolved_seeds()["augment"]


def test_preview_figure_shows_each_image_beside_its_augmented_versions(digits):
    from mlplab.data.augmentation import preview_figure

    figure = preview_figure(digits[:3].reshape(3, -1), Augmentation(**TYPICAL), variants=4)
    assert len(figure.axes) == 3 * 5
    assert [ax.get_title() for ax in figure.axes[:5]][0] == "original"


def test_augmentation_settings_are_plain_json_values():
    settings = Augmentation(**TYPICAL, image_shape=(24, 24), fill=-0.4).settings()
    assert settings["image_shape"] == [24, 24] and settings["fill"] == -0.4
    assert set(settings) == {f.name for f in dataclasses.fields(Augmentation)}
