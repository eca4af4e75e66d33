"""Reading the user's own images for ``mlplab predict``, prepared to look like MNIST inputs.

MNIST digits are light strokes on a black background, scaled to fit a 20x20 box and centred in a
28x28 image. A phone photo or a drawing-app export is usually the opposite: a dark stroke on
white paper, unevenly lit, off-centre, in some other size. :func:`load_image` undoes those
differences:

1. grayscale (transparent pixels count as white paper, as in drawing apps);
2. invert when the border is brighter than the image as a whole, i.e. dark ink on light paper;
3. flatten the lighting: estimate the paper's brightness at every point from the darkest (in
   MNIST's polarity) part of each neighbourhood and divide it out, so a shadow across the page
   does not become part of the digit;
4. stretch the contrast so the background is 0 and the brightest ink 1 (grey paper is not ink);
5. crop to the ink and pad to a square with an MNIST-like margin (or, with ``crop=False``,
   just pad the whole image to a square), keeping the aspect ratio;
6. resize to the network's input side.

Images a network would classify with false confidence are refused with a one-line
:class:`~mlplab.errors.DataError`: blank ones (no ink), tiny ones (a 1x1 pixel "image") and
fully transparent ones. So are images too large to decode safely (decompression bombs).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageOps, UnidentifiedImageError

from mlplab.errors import DataError
from mlplab.saving import atomic_path

# MNIST fits each digit in 20x20 pixels of a 28x28 image: the square around the ink is 28/20 of it.
_MARGIN = 28 / 20
# After the contrast stretch, pixels above this count as ink when finding the digit's bounding box.
_INK = 0.25
# Smaller images hold no recognisable digit (MNIST's strokes alone are 2-3 pixels wide).
MIN_SIDE = 8
# More pixels than this are refused before decoding: a 48-megapixel phone photo still fits, a
# decompression bomb (a small file that declares a gigapixel canvas) does not. Pillow's own limit,
# Image.MAX_IMAGE_PIXELS, applies too when it is lower.
MAX_PIXELS = 50_000_000
# Images are shrunk to at most this side before processing: the network sees 28 pixels anyway.
_WORKING_SIDE = 1024
# Ink must differ from the paper by this much (0..1 scale, ~40 grey levels; faint pencil in a
# photo still reaches 0.3) and cover at least this many pixels; anything less is a blank page,
# sensor or JPEG noise, or a speck of dust. The ink's level is the mean of its brightest
# _INK_SAMPLE pixels, so one noisy pixel cannot pass for ink.
_MIN_CONTRAST = 0.15
_MIN_INK_PIXELS = 4
_INK_SAMPLE = 16
# Lighting is flattened on images at least this large (photos); small images such as MNIST's
# own 28x28 PNGs are already evenly lit, and are passed through exactly.
_LIGHTING_MIN_SIDE = 64
# The background is estimated on a grid of _BLOCKS blocks along the long side; a neighbourhood of
# (2 * _REACH + 1) blocks is wider than any pen stroke, so it always contains some paper.
_BLOCKS = 16
_REACH = 1
# A block whose background level is this much above its neighbourhood's is covered by ink, not
# in shadow: lighting changes by less than this from one block (1/16 of the image) to the next.
_INK_STEP = 0.1


def _pixel_limit() -> int:
    pillow = Image.MAX_IMAGE_PIXELS
    return min(MAX_PIXELS, pillow) if pillow else MAX_PIXELS


def _read_grayscale(path: Path) -> np.ndarray:
    """Pixels of the image at ``path`` as float32 in [0, 1], or DataError if it is unreadable,
    too large, too small or fully transparent."""
    if not path.exists():
        raise DataError(f"image file {path} does not exist; check the path")
    if not path.is_file():
        raise DataError(f"{path} is not a file; give the path of a PNG or JPEG file")
    limit = _pixel_limit()
    try:
        # Pillow warns (rather than fails) between its limit and twice it; a warning must not
        # leak to the user's terminal, nor let a bomb through, so it is raised like the error.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > limit:
                    raise DataError(
                        f"{path} declares {width}x{height} pixels, more than the {limit:,} mlplab "
                        "decodes (a decompression bomb?); shrink the image"
                    )
                if min(width, height) < MIN_SIDE:
                    raise DataError(
                        f"{path} is only {width}x{height} pixels, too small to hold a digit; give "
                        f"an image at least {MIN_SIDE}x{MIN_SIDE}"
                    )
                image = ImageOps.exif_transpose(image)  # phone photos store rotation in EXIF
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    rgba = image.convert("RGBA")
                    if rgba.getchannel("A").getextrema()[1] == 0:
                        raise DataError(
                            f"{path} is fully transparent: it has no visible pixels; export the "
                            "drawing with its strokes visible"
                        )
                    image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
                gray = image.convert("L")
                if max(gray.size) > _WORKING_SIDE:
                    scale = _WORKING_SIDE / max(gray.size)
                    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
                    gray = gray.resize(new_size, Image.Resampling.BOX)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        message = (
            f"{path} is too large to decode safely (Pillow's decompression-bomb limit of "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels); shrink the image"
        )
        raise DataError(message) from None
    except UnidentifiedImageError:
        message = f"{path} is not in an image format Pillow knows; give a PNG or JPEG file"
        raise DataError(message) from None
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = f"cannot read {path} as an image ({reason}); give a PNG or JPEG file"
        raise DataError(message) from None
    return np.asarray(gray, dtype=np.float32) / 255.0


def background_estimate(pixels: np.ndarray) -> np.ndarray:
    """The background level at every pixel of a light-on-dark image, ignoring the strokes.

    Each block of a coarse grid gives its 10th-percentile value (the background, robust to
    noise). A block that ink covers almost entirely stands out above its neighbours by more
    than ``_INK_STEP``; it takes the value of a grey-scale opening over neighbouring blocks
    (minimum, then maximum), which removes such peaks while keeping a smooth lighting gradient.
    Linear interpolation between block centres brings the grid back to full size.

    A shadow or blot narrower than about three blocks (3/16 of the image) cannot be told from a
    thick stroke and is kept; wider, smooth shadows, gradients and vignetting are removed.

    Parameters
    ----------
    pixels : ndarray of float, shape (H, W)

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    height, width = pixels.shape
    side = max(1, -(-max(height, width) // _BLOCKS))  # block side in pixels, rounded up
    padded = np.pad(pixels, ((0, -height % side), (0, -width % side)), mode="edge")
    rows, columns = padded.shape[0] // side, padded.shape[1] // side
    blocks = padded.reshape(rows, side, columns, side).transpose(0, 2, 1, 3)
    level = np.percentile(blocks.reshape(rows, columns, side * side), 10, axis=2)

    def neighbourhood(grid, reduce):
        window = 2 * _REACH + 1
        return reduce(sliding_window_view(np.pad(grid, _REACH, mode="edge"), (window, window)))

    opened = neighbourhood(neighbourhood(level, _minimum), _maximum)
    # The opening also shaves a few hundredths off the lighting where it peaks (a dark corner);
    # only a block standing well above its neighbourhood is ink, and only there is it replaced.
    level = np.where(level - opened > _INK_STEP, opened, level)
    # Linear between block centres and extrapolated beyond them: a shadow that deepens towards
    # the edge keeps deepening over the outer half-blocks instead of levelling off.
    full = _interpolate(
        _interpolate(level, padded.shape[0], side, axis=0), padded.shape[1], side, 1
    )
    return full[:height, :width].astype(np.float32)


def _minimum(windows):
    return windows.min(axis=(2, 3))


def _maximum(windows):
    return windows.max(axis=(2, 3))


def _interpolate(values: np.ndarray, length: int, side: int, axis: int) -> np.ndarray:
    """Values given at the centres of blocks of ``side`` pixels, linearly interpolated (and
    extrapolated at both ends) to ``length`` pixels along ``axis``."""
    n = values.shape[axis]
    if n == 1:
        return np.repeat(values, length, axis=axis)
    centres = (np.arange(n) + 0.5) * side - 0.5
    positions = np.arange(length)
    left = np.clip(((positions - centres[0]) // side).astype(int), 0, n - 2)
    weight = (positions - centres[left]) / side  # below 0 or above 1 where extrapolating
    shape = [1, 1]
    shape[axis] = length
    weight = weight.reshape(shape)
    lower = np.take(values, left, axis=axis)
    upper = np.take(values, left + 1, axis=axis)
    return lower * (1.0 - weight) + upper * weight


def flatten_lighting(pixels: np.ndarray, inverted: bool) -> np.ndarray:
    """Remove uneven lighting from a light-on-dark image in [0, 1].

    Parameters
    ----------
    pixels : ndarray of float, shape (H, W)
    inverted : bool
        The image was dark ink on light paper, inverted. In the photo, paper = lighting and
        ink = lighting x ink darkness, so dividing by the local paper brightness leaves the ink
        alone; after inversion (``x = 1 - p``) that division reads ``(x - b) / (1 - b)`` with
        ``b`` the background estimate. A light-on-dark original (chalk on a board, a screen)
        has a dark background, and dividing by it would multiply the noise: the background is
        subtracted instead.
    """
    background = background_estimate(pixels)
    if not inverted:
        return np.clip(pixels - background, 0.0, 1.0)
    # A background near 1 means the whole neighbourhood is ink; don't divide by almost nothing.
    return np.clip((pixels - background) / np.maximum(1.0 - background, 0.05), 0.0, 1.0)


def ink_image(path) -> np.ndarray:
    """Steps 1-4 of the module docstring: the image as light ink on a black background in [0, 1].

    Raises
    ------
    DataError
        If the file is unreadable, too large, too small, fully transparent, or has no ink.
    """
    path = Path(path)
    pixels = _read_grayscale(path)

    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    inverted = bool(border.mean() > pixels.mean())  # the background is lighter: dark on light
    if inverted:
        pixels, border = 1.0 - pixels, 1.0 - border
    if max(pixels.shape) >= _LIGHTING_MIN_SIDE:
        pixels = flatten_lighting(pixels, inverted)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])

    background, brightest = float(np.median(border)), float(pixels.max())
    flat = pixels.ravel()
    sample = min(_INK_SAMPLE, flat.size)
    contrast = float(np.partition(flat, flat.size - sample)[-sample:].mean()) - background
    if contrast < _MIN_CONTRAST:
        raise DataError(
            f"{path} has no ink: it is blank (contrast {max(contrast, 0.0):.2f} of 1, "
            f"less than {_MIN_CONTRAST}); give an image of a digit"
        )
    pixels = np.clip((pixels - background) / (brightest - background), 0.0, 1.0)
    n_ink = int(np.count_nonzero(pixels > _INK))
    if n_ink < _MIN_INK_PIXELS:
        raise DataError(
            f"{path} has no ink: only {n_ink} pixel(s) stand out from the background; "
            "give an image of a digit"
        )
    return pixels


def _pad_to_square(pixels: np.ndarray, side: int) -> np.ndarray:
    """Centre ``pixels`` on a black ``side`` x ``side`` square."""
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - pixels.shape[0]) // 2, (side - pixels.shape[1]) // 2
    square[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
    return square


def load_image(path, size: tuple[int, int] = (28, 28), *, crop: bool = True) -> np.ndarray:
    """Read a PNG or JPEG as a flattened, MNIST-like input vector.

    Parameters
    ----------
    path : str or Path
    size : (int, int)
        Output (height, width) in pixels: the side of the model's input images.
    crop : bool
        Crop to the ink and re-centre it with MNIST's margin; turn off for images already framed
        like MNIST's.

    Returns
    -------
    ndarray of float32, shape (height * width,)
        Light digit on a dark background, values in [0, 1].

    Raises
    ------
    DataError
        If the file is missing or not a readable image, or one no prediction should be made for:
        blank (no ink), smaller than ``MIN_SIDE`` pixels, fully transparent, or larger than
        ``MAX_PIXELS`` (a decompression bomb).
    """
    pixels = ink_image(path)
    if crop:
        rows, columns = np.nonzero(pixels > _INK)
        pixels = pixels[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
        side = int(round(max(pixels.shape) * _MARGIN))
    else:
        side = max(pixels.shape)
    square = Image.fromarray(_pad_to_square(pixels, side))  # float32 -> mode "F"
    # Pillow's bilinear resize filters over the whole footprint when shrinking, so it anti-aliases.
    resized = square.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    result = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    if crop:
        result = _centre_of_mass_to_middle(result)
    return result.ravel()


def _centre_of_mass_to_middle(pixels: np.ndarray) -> np.ndarray:
    """Shift the image by whole pixels so that its centre of ink is in the middle.

    MNIST centred each digit by its centre of mass, not its bounding box; a model trained on it
    loses a third of its accuracy on digits centred the other way.
    """
    total = pixels.sum()
    if total == 0:
        return pixels
    rows, columns = np.indices(pixels.shape)
    shift_rows = int(round((pixels.shape[0] - 1) / 2 - (rows * pixels).sum() / total))
    shift_columns = int(round((pixels.shape[1] - 1) / 2 - (columns * pixels).sum() / total))
    shifted = np.zeros_like(pixels)
    height, width = pixels.shape
    source_rows = slice(max(0, -shift_rows), min(height, height - shift_rows))
    source_columns = slice(max(0, -shift_columns), min(width, width - shift_columns))
    target_rows = slice(max(0, shift_rows), min(height, height + shift_rows))
    target_columns = slice(max(0, shift_columns), min(width, width + shift_columns))
    shifted[target_rows, target_columns] = pixels[source_rows, source_columns]
    return shifted


def load_images(paths, size: tuple[int, int] = (28, 28), *, crop: bool = True) -> np.ndarray:
    """:func:`load_image` for each path, stacked into shape (len(paths), height * width)."""
    vectors = [load_image(path, size, crop=crop) for path in paths]
    return np.stack(vectors) if vectors else np.zeros((0, size[0] * size[1]), dtype=np.float32)


def save_input_image(pixels: np.ndarray, path) -> Path:
    """Write an input image (values in [0, 1], shape (H, W)) as an 8-bit grayscale PNG, atomically.

    This is the picture the network is given, light digit on black as in MNIST, so a user can see
    what a prediction was made from.
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 2:
        raise ValueError(f"expected an (H, W) image, got shape {pixels.shape}")
    as_bytes = np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        Image.fromarray(as_bytes).save(file, format="PNG")
    return Path(path)
