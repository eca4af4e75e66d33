import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlplab.data.images import (
    _INK,
    background_estimate,
    ink_image,
    load_image,
    load_images,
    save_input_image,
)
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


def one_line(error: DataError) -> str:
    message = str(error)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("paper", [0, 255, 128])
def test_blank_image_is_refused_as_having_no_ink(tmp_path, paper):
    path = tmp_path / "blank.png"
    Image.new("L", (50, 50), paper).save(path)
    with pytest.raises(DataError, match="blank.png has no ink") as caught:
        load_image(path)
    one_line(caught.value)


@pytest.mark.parametrize("shading", ["gradient", "shadow in the middle"])
def test_blank_photo_with_noise_and_uneven_light_is_refused(tmp_path, shading):
    # Paper under uneven light with sensor noise: no ink, however the contrast stretches. The
    # second shading makes the border brighter than the rest, so the image is inverted.
    rng = np.random.default_rng(0)
    rows, columns = np.indices((150, 200))
    if shading == "gradient":
        light = 240 - 120 * columns / 200
    else:
        light = 240 - 100 * np.exp(-((rows - 75) ** 2 + (columns - 100) ** 2) / 8000)
    path = tmp_path / "paper.jpg"
    noisy = np.clip(light + rng.normal(0, 3, light.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, quality=85)
    with pytest.raises(DataError, match="paper.jpg has no ink"):
        load_image(path)


def test_light_on_dark_photo_with_uneven_light_keeps_only_the_strokes(tmp_path):
    # Chalk on a board lit from the left: the background is subtracted, not divided out.
    rows, columns = np.indices((200, 200))
    board = 20 + 90 * (1 - columns / 200)
    image = Image.fromarray(board.astype(np.uint8))
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=235, width=12)
    image.save(tmp_path / "chalk.png")
    mask = ink_image(tmp_path / "chalk.png") > _INK
    stroke = np.zeros_like(mask)
    stroke[30:171, 94:107] = True
    assert mask[~stroke].mean() < 0.001 and mask[35:165, 96:104].all()


def test_single_speck_on_blank_paper_is_refused_as_no_ink(tmp_path):
    image = Image.new("L", (60, 60), 255)
    image.putpixel((30, 30), 0)
    path = tmp_path / "speck.png"
    image.save(path)
    with pytest.raises(DataError, match="speck.png has no ink"):
        load_image(path)


@pytest.mark.parametrize("size", [(1, 1), (5, 40), (40, 7)])
def test_tiny_image_is_refused_naming_its_size(tmp_path, size):
    path = tmp_path / "tiny.png"
    Image.new("L", size, 255).save(path)
    with pytest.raises(DataError, match=rf"tiny.png is only {size[0]}x{size[1]} pixels") as caught:
        load_image(path)
    assert "8x8" in one_line(caught.value)


def test_smallest_allowed_image_with_ink_loads(tmp_path):
    path = tmp_path / "small.png"
    image = Image.new("L", (8, 8), 0)
    ImageDraw.Draw(image).line([(4, 1), (4, 6)], fill=255)
    image.save(path)
    vector = load_image(path).reshape(28, 28)
    assert vector.max() > 0.5 and (vector > 0.25).sum() >= 10  # a vertical bar, scaled up


@pytest.mark.parametrize("mode, paper", [("RGBA", (0, 0, 0, 0)), ("LA", (255, 0))])
def test_fully_transparent_image_is_refused(tmp_path, mode, paper):
    # Strokes drawn in the colour channels but with alpha 0 everywhere: nothing is visible.
    ink = (255, 255, 255, 0) if mode == "RGBA" else (0, 0)
    path = draw_digit(tmp_path / "clear.png", ink=ink, paper=paper, mode=mode)
    with pytest.raises(DataError, match="clear.png is fully transparent") as caught:
        load_image(path)
    one_line(caught.value)


def test_palette_image_with_a_transparent_colour_is_read_as_white_paper(tmp_path):
    path = draw_digit(tmp_path / "digit.png", ink=0, paper=255)
    palette = Image.open(path).convert("P")
    palette.save(tmp_path / "palette.png", transparency=palette.getpixel((0, 0)))
    np.testing.assert_allclose(load_image(tmp_path / "palette.png"), load_image(path), atol=1e-6)


@pytest.mark.parametrize("limit_factor", [0.9, 0.4])
def test_decompression_bomb_warning_and_error_become_one_data_error(
    tmp_path, monkeypatch, recwarn, limit_factor
):
    # Pillow warns above MAX_IMAGE_PIXELS and fails above twice it; with the limit lowered, a
    # 120 x 160 image stands in for a bomb (0.9: the warning range; 0.4: the error range). Our own
    # cap checks the declared size first, so MAX_PIXELS is raised to let Pillow's checks run.
    monkeypatch.setattr("mlplab.data.images.MAX_PIXELS", 10**12)
    path = draw_digit(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(120 * 160 * limit_factor))
    with pytest.raises(DataError, match="bomb.png is too large to decode safely") as caught:
        load_image(path)
    one_line(caught.value)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_image_over_the_pixel_cap_is_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr("mlplab.data.images.MAX_PIXELS", 100 * 100)
    path = draw_digit(tmp_path / "huge.png")
    with pytest.raises(DataError, match=r"huge.png declares 120x160 pixels, more than the 10,000"):
        load_image(path)


def draw_photo(path, lighting, width=18, size=(300, 400)):
    """A dark '9' on white paper, photographed under ``lighting(x, y)`` (values in 0..1).

    Light multiplies reflectance: paper reflects everything, ink 8%.
    """
    reflectance = Image.new("L", size, 255)
    draw = ImageDraw.Draw(reflectance)
    draw.ellipse([60, 60, 190, 190], outline=0, width=width)
    draw.line([(185, 125), (160, 360)], fill=0, width=width)
    reflectance = np.asarray(reflectance, dtype=np.float32) / 255 * 0.92 + 0.08
    rows, columns = np.indices(reflectance.shape)
    photo = reflectance * lighting(columns / size[0], rows / size[1]) * 255
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(path)
    return path, reflectance < 0.5


def shadow(x, y):
    """Bright at the left, a shadow deepening to a third of the light at the bottom right."""
    return 1.0 - 0.7 * x * (0.5 + 0.5 * y)


def test_uneven_lighting_does_not_become_part_of_the_digit(tmp_path, monkeypatch):
    evenly_lit, ink = draw_photo(tmp_path / "even.png", lambda x, y: np.ones_like(x))
    shadowed, _ = draw_photo(tmp_path / "shadow.png", shadow)
    mask = ink_image(shadowed) > _INK
    assert (mask == ink).mean() > 0.995
    assert not mask[~ink].any(), "shadowed paper was taken for ink"
    np.testing.assert_allclose(load_image(shadowed), load_image(evenly_lit), atol=0.1)
    assert np.abs(load_image(shadowed) - load_image(evenly_lit)).mean() < 0.01
    # The test can tell: without flattening, the shadow (after inversion) is taken for ink.
    monkeypatch.setattr("mlplab.data.images._LIGHTING_MIN_SIDE", 10**6)
    assert (ink_image(shadowed) > _INK)[~ink].mean() > 0.05


def test_thick_strokes_survive_the_background_estimate(tmp_path):
    # Strokes 40 pixels wide cover whole 25-pixel blocks of the background grid.
    path, ink = draw_photo(tmp_path / "thick.png", shadow, width=40)
    mask = ink_image(path) > 0.5
    assert mask[ink].mean() > 0.99 and not mask[~ink].any()


def test_background_estimate_follows_a_smooth_gradient_and_ignores_strokes():
    rows, columns = np.indices((200, 240))
    gradient = (0.1 + 0.5 * columns / 240 + 0.2 * rows / 200).astype(np.float32)
    with_strokes = gradient.copy()
    with_strokes[50:150, 100:115] = 0.95  # a bright stroke in MNIST's polarity
    np.testing.assert_allclose(background_estimate(with_strokes), gradient, atol=0.03)


def test_save_input_image_writes_the_network_input_as_an_8_bit_png(tmp_path):
    vector = load_image(draw_digit(tmp_path / "digit.png"))
    path = save_input_image(vector.reshape(28, 28), tmp_path / "out" / "digit.input.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "L" and image.size == (28, 28)
        saved = np.asarray(image, dtype=np.float32) / 255
    np.testing.assert_allclose(saved.ravel(), vector, atol=0.5 / 255 + 1e-6)
    assert [p.name for p in path.parent.iterdir()] == ["digit.input.png"]  # no temporary left


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
