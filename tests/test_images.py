import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlplab.data.images import load_image, load_images
from mlplab.errors import DataError


def draw_digit(path, ink=255, paper=0, size=(120, 160), mode="L", **save_options):
    """A '9'-like stroke: a loop and a tail, off-centre on a non-square canvas."""
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    draw.ellipse([20, 20, 60, 60], outline=ink, width=7)
    draw.line([(58, 40), (50, 130)], fill=ink, width=7)
    image.save(path, **save_options)
    return path


def centre_and_border_means(vector, side=28):
    image = vector.reshape(side, side)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return image[7:21, 7:21].mean(), border.mean()


def test_loaded_image_is_a_flat_float32_vector_in_unit_range(tmp_path):
    vector = load_image(draw_digit(tmp_path / "digit.png"))
    assert vector.shape == (784,) and vector.dtype == np.float32
    assert vector.min() >= 0.0 and vector.max() <= 1.0


def test_white_on_black_stays_light_on_dark(tmp_path):
    centre, border = centre_and_border_means(load_image(draw_digit(tmp_path / "digit.png")))
    assert border < 0.01 and centre > 0.1


def test_black_on_white_is_inverted_to_light_on_dark(tmp_path):
    vector = load_image(draw_digit(tmp_path / "digit.png", ink=0, paper=255))
    centre, border = centre_and_border_means(vector)
    assert border < 0.01 and centre > 0.1


def test_both_polarities_give_the_same_input(tmp_path):
    light = load_image(draw_digit(tmp_path / "light.png"))
    dark = load_image(draw_digit(tmp_path / "dark.png", ink=0, paper=255))
    np.testing.assert_allclose(light, dark, atol=1e-6)


def test_grey_paper_becomes_a_black_background(tmp_path):
    vector = load_image(draw_digit(tmp_path / "digit.png", ink=40, paper=170))
    centre, border = centre_and_border_means(vector)
    assert border < 0.01 and vector.max() > 0.9


def test_digit_is_cropped_to_mnist_size_and_centred_by_its_centre_of_mass(tmp_path):
    image = load_image(draw_digit(tmp_path / "digit.png", size=(400, 400))).reshape(28, 28)
    rows, columns = np.nonzero(image > 0.25)
    assert rows.max() - rows.min() + 1 in range(18, 23)  # the tall side fills about 20 of 28 pixels
    grid_rows, grid_columns = np.indices(image.shape)
    # MNIST centres digits by centre of mass; whole-pixel shifts leave at most half a pixel.
    assert abs((grid_rows * image).sum() / image.sum() - 13.5) <= 0.5
    assert abs((grid_columns * image).sum() / image.sum() - 13.5) <= 0.5


def test_without_crop_the_whole_image_keeps_its_aspect_ratio(tmp_path):
    # A 20-pixel-wide bar, top to bottom of an 80 x 160 canvas: padded to 160 x 160, it becomes
    # about 3.5 of 28 pixels wide; stretching the canvas to a square would make it 7.
    path = tmp_path / "bar.png"
    image = Image.new("L", (80, 160), 0)
    ImageDraw.Draw(image).rectangle([30, 0, 49, 159], fill=255)
    image.save(path)
    vector = load_image(path, crop=False).reshape(28, 28)
    assert (vector[:, 13] > 0.5).all()
    assert 3 <= (vector[14] > 0.5).sum() <= 4


def test_output_size_follows_the_requested_size(tmp_path):
    assert load_image(draw_digit(tmp_path / "digit.png"), size=(16, 16)).shape == (256,)


def test_jpeg_and_rgb_images_load_like_the_png(tmp_path):
    png = load_image(draw_digit(tmp_path / "digit.png", ink=0, paper=255))
    black, white = (0, 0, 0), (255, 255, 255)
    path = draw_digit(tmp_path / "digit.jpg", ink=black, paper=white, mode="RGB", quality=90)
    jpeg = load_image(path)
    assert np.abs(png - jpeg).mean() < 0.02


def test_transparent_background_counts_as_white_paper(tmp_path):
    path = draw_digit(tmp_path / "digit.png", ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA")
    vector = load_image(path)
    centre, border = centre_and_border_means(vector)
    assert border < 0.01 and centre > 0.1


def test_blank_image_gives_zeros_not_a_division_by_zero(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(path)
    assert not load_image(path).any()


def test_text_file_named_png_raises_data_error_naming_it(tmp_path):
    path = tmp_path / "not-an-image.png"
    path.write_text("hello")
    with pytest.raises(DataError, match="not-an-image.png") as caught:
        load_image(path)
    assert "\n" not in str(caught.value) and "PNG or JPEG" in str(caught.value)


def test_truncated_png_raises_data_error(tmp_path):
    whole = draw_digit(tmp_path / "whole.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cut.png"):
        load_image(path)


def test_missing_file_and_directory_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(DataError, match="not a file"):
        load_image(tmp_path)


def test_load_images_stacks_one_row_per_file(tmp_path):
    paths = [draw_digit(tmp_path / "a.png"), draw_digit(tmp_path / "b.png", ink=0, paper=255)]
    assert load_images(paths).shape == (2, 784)
    assert load_images([]).shape == (0, 784)
