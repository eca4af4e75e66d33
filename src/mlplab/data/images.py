"""Reading the user's own images for ``mlplab predict``, prepared to look like MNIST inputs.

MNIST digits are light strokes on a black background, scaled to fit a 20x20 box and centred in a
28x28 image. A phone photo or a drawing-app export is usually the opposite: a dark stroke on
white paper, off-centre, in some other size. :func:`load_image` undoes those differences:

1. grayscale (transparent pixels count as white paper, as in drawing apps);
2. invert when the border is brighter than the image as a whole, i.e. dark ink on light paper;
3. stretch the contrast so the background is 0 and the brightest ink 1 (grey paper is not ink);
4. crop to the ink and pad to a square with an MNIST-like margin (or, with ``crop=False``,
   just pad the whole image to a square), keeping the aspect ratio;
5. resize to the network's input side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlplab.errors import DataError

# MNIST fits each digit in 20x20 pixels of a 28x28 image: the square around the ink is 28/20 of it.
_MARGIN = 28 / 20
# After the contrast stretch, pixels above this count as ink when finding the digit's bounding box.
_INK = 0.25


def _read_grayscale(path: Path) -> np.ndarray:
    """Pixels of the image at ``path`` as float32 in [0, 1], or DataError if it is unreadable."""
    if not path.exists():
        raise DataError(f"image file {path} does not exist; check the path")
    if not path.is_file():
        raise DataError(f"{path} is not a file; give the path of a PNG or JPEG file")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            gray = image.convert("L")
    except UnidentifiedImageError:
        message = f"{path} is not in an image format Pillow knows; give a PNG or JPEG file"
        raise DataError(message) from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = f"cannot read {path} as an image ({reason}); give a PNG or JPEG file"
        raise DataError(message) from None
    return np.asarray(gray, dtype=np.float32) / 255.0


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
        If the file is missing or is not a readable image.
    """
    path = Path(path)
    pixels = _read_grayscale(path)

    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > pixels.mean():  # the background is lighter than the ink: dark on light
        pixels, border = 1.0 - pixels, 1.0 - border

    background, brightest = float(np.median(border)), float(pixels.max())
    if brightest - background < 1e-3:  # a blank image: no ink to find
        return np.zeros(size[0] * size[1], dtype=np.float32)
    pixels = np.clip((pixels - background) / (brightest - background), 0.0, 1.0)

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
