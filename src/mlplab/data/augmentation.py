"""Data augmentation of image batches: translations, small affine maps, elastic distortions, flips.

Everything is vectorized over the batch; no Python loop runs over images. A batch is augmented in
three steps:

1. For every output pixel ``p = (row, col)`` of every image, find where it comes from in the
   input. The forward map of an image moves a point ``q`` (relative to the image centre ``c``) to
   ``A q + c + t``, with ``A = rotation @ shear @ scale`` and ``t`` a translation; so output pixel
   ``p`` reads the input at the inverse map ``A^-1 (p - c - t) + c`` (:func:`affine_grid`).
2. Add an elastic displacement field ``d(p)`` to those coordinates (:func:`elastic_displacement`,
   Simard, Steinkraus and Platt 2003): uniform(-1, 1) noise smoothed by a Gaussian and scaled.
3. Read the input at the resulting real-valued coordinates with ONE bilinear interpolation
   (:func:`sample_bilinear`); a coordinate outside the image reads the blank ``fill`` value.

Interpolating once, after composing every transformation into one map, blurs an image less than
applying the transformations one after another would.

Randomness comes only from the generator passed in: the training loop makes one per batch from the
batch's position, ``np.random.default_rng([augment_seed, epoch, batch_index])``, so a resumed run
augments every batch exactly as an uninterrupted one.

Angles are in degrees; a positive rotation turns the image counterclockwise as displayed (row 0 at
the top), so a rotation of 90 degrees is ``np.rot90``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from mlplab.errors import ConfigError

# Ranges beyond which a "small" transformation no longer keeps a digit recognisable, and the maps
# stop being invertible (a scale of 1 could shrink an image to a point, a shear of 90 degrees is
# infinite).
MAX_ROTATION = 180.0
MAX_SCALE = 0.5
MAX_SHEAR = 45.0
# The keys of an [augmentation] config table, in the order they are documented.
SETTING_KEYS = ("shift", "rotation", "scale", "shear", "elastic_alpha", "elastic_sigma", "hflip")
# The settings that turn a transformation on (elastic_sigma only shapes the elastic one).
TRANSFORMATION_KEYS = tuple(key for key in SETTING_KEYS if key != "elastic_sigma")


def check_settings(
    shift: float = 0.0,
    rotation: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    elastic_alpha: float = 0.0,
    elastic_sigma: float = 4.0,
    hflip: bool = False,
) -> None:
    """Refuse augmentation settings that are out of range, with a ConfigError naming the key.

    Raises
    ------
    ConfigError
        For a value that is not a finite number in its range, or a non-boolean ``hflip``.
    """
    ranges = {
        "shift": (shift, math.inf, "pixels"),
        "rotation": (rotation, MAX_ROTATION, "degrees"),
        "scale": (scale, MAX_SCALE, "relative change, 0.1 for factors in [0.9, 1.1]"),
        "shear": (shear, MAX_SHEAR, "degrees"),
        "elastic_alpha": (elastic_alpha, math.inf, "pixels"),
    }
    for key, (value, largest, unit) in ranges.items():
        if (
            not isinstance(value, (int, float, np.integer, np.floating))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not 0 <= value <= largest
        ):
            bound = "" if largest == math.inf else f" and at most {largest:g}"
            raise ConfigError(
                f"augmentation {key} must be a number >= 0{bound} ({unit}; 0 is off), got {value!r}"
            )
    if (
        not isinstance(elastic_sigma, (int, float, np.integer, np.floating))
        or isinstance(elastic_sigma, bool)
        or not math.isfinite(elastic_sigma)
        or elastic_sigma <= 0
    ):
        raise ConfigError(
            "augmentation elastic_sigma must be a positive number of pixels (the smoothness of "
            f"the elastic field, 4 to 6 is usual), got {elastic_sigma!r}"
        )
    if not isinstance(hflip, (bool, np.bool_)):
        raise ConfigError(f"augmentation hflip must be true or false, got {hflip!r}")


@dataclass(frozen=True)
class Augmentation:
    """Random transformations of training images, drawn independently for every image.

    Parameters
    ----------
    shift : float
        Largest translation in pixels: each axis moves by uniform(-shift, shift).
    rotation : float
        Largest rotation in degrees: the angle is uniform(-rotation, rotation).
    scale : float
        Largest relative change of size: the factor is uniform(1 - scale, 1 + scale), the same
        for both axes.
    shear : float
        Largest horizontal shear angle in degrees: uniform(-shear, shear).
    elastic_alpha : float
        Root-mean-square elastic displacement of each pixel along each axis, in pixels (0: off).
        Simard et al.'s alpha = 34 with sigma = 4 (a Gaussian kernel summing to 1) is about
        ``elastic_alpha = 1.4`` here.
    elastic_sigma : float
        Standard deviation in pixels of the Gaussian that smooths the elastic field: small values
        give ragged strokes, large ones a nearly uniform shift.
    hflip : bool
        Mirror half of the images left-right (for clothes, not for digits).
    image_shape : (int, int)
        ``(height, width)`` of the images, whose rows of features are ``height * width`` long.
    fill : float
        The feature value of a blank pixel, read where a transformation moves the image away.

    Examples
    --------
    >>> augmentation = Augmentation(shift=2, rotation=10, image_shape=(28, 28))
    >>> batch = augmentation.augment(x[:128], np.random.default_rng([0, 0, 0]))  # doctest: +SKIP
    """

    shift: float = 0.0
    rotation: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    hflip: bool = False
    image_shape: tuple[int, int] = (28, 28)
    fill: float = 0.0

    def __post_init__(self) -> None:
        check_settings(**{key: getattr(self, key) for key in SETTING_KEYS})
        shape = tuple(self.image_shape)
        if len(shape) != 2 or not all(
            isinstance(size, (int, np.integer)) and size >= 1 for size in shape
        ):
            raise ConfigError(f"augmentation needs an image shape (height, width), got {shape!r}")
        object.__setattr__(self, "image_shape", (int(shape[0]), int(shape[1])))
        if self.shift >= min(shape):
            raise ConfigError(
                f"augmentation shift {self.shift:g} would move {shape[0]}x{shape[1]} images out "
                f"of view; use less than {min(shape)} (1 to 3 pixels is usual for 28x28)"
            )
        if not math.isfinite(self.fill):
            raise ConfigError(f"augmentation fill must be a finite number, got {self.fill!r}")
        object.__setattr__(self, "fill", float(self.fill))

    @property
    def active(self) -> bool:
        """False when every transformation is off, so that augmenting changes nothing."""
        return any(getattr(self, key) for key in TRANSFORMATION_KEYS)

    def settings(self) -> dict:
        """Every field as plain JSON values (checkpoints record them)."""
        value = asdict(self)
        value["image_shape"] = list(self.image_shape)
        value["hflip"] = bool(self.hflip)
        return value

    def augment(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augmented copies of a batch of flattened images.

        Parameters
        ----------
        images : numpy.ndarray
            Shape ``(batch, height * width)``, float features (already scaled and standardized).
        rng : numpy.random.Generator
            The only source of randomness; the same generator state gives the same output.

        Returns
        -------
        numpy.ndarray
            A new array of the same shape and dtype (the input is never modified); the input
            itself when nothing is active.
        """
        height, width = self.image_shape
        images = np.asarray(images)
        if images.ndim != 2 or images.shape[1] != height * width:
            raise ConfigError(
                f"augmentation of {height}x{width} images needs rows of {height * width} "
                f"features, got an array of shape {images.shape}"
            )
        if not self.active or len(images) == 0:
            return images
        batch = len(images)
        # The draws come in a fixed order, one array per transformation that is on.
        shifts = rng.uniform(-self.shift, self.shift, (batch, 2)) if self.shift else None
        angles = rng.uniform(-self.rotation, self.rotation, batch) if self.rotation else 0.0
        scales = rng.uniform(1 - self.scale, 1 + self.scale, batch) if self.scale else 1.0
        shears = rng.uniform(-self.shear, self.shear, batch) if self.shear else 0.0
        flips = rng.random(batch) < 0.5 if self.hflip else False
        rows, cols = affine_grid(
            (batch, height, width),
            angles=angles,
            scales=scales,
            shears=shears,
            shifts=shifts,
            flips=flips,
        )
        if self.elastic_alpha:
            d_rows, d_cols = elastic_displacement(
                rng, (batch, height, width), self.elastic_alpha, self.elastic_sigma
            )
            rows += d_rows
            cols += d_cols
        output = sample_bilinear(images.reshape(batch, height, width), rows, cols, self.fill)
        return output.reshape(batch, height * width)


def augmentation_for(preprocessing, **settings) -> Augmentation | None:
    """The :class:`Augmentation` of features made by a fitted preprocessing, or None when off.

    The image shape is the preprocessing's (cropped) one, and ``fill`` the feature value it gives
    a blank (0) pixel: 0 when scaled to [0, 1], ``-mean / std`` with global standardization.

    Parameters
    ----------
    preprocessing : mlplab.data.preprocessing.FittedPreprocessing
    **settings
        Any of :data:`SETTING_KEYS`.

    Raises
    ------
    ConfigError
        For settings out of range, or a preprocessing whose features are not whole images
        (``pixel_subset``) or are standardized pixel by pixel (a moved pixel would keep the
        statistics of the position it left).
    """
    check_settings(**settings)
    if not any(settings.get(key) for key in SETTING_KEYS if key != "elastic_sigma"):
        return None  # everything off
    config = preprocessing.config
    if config.pixel_subset is not None:
        raise ConfigError(
            "augmentation moves pixels within an image, and pixel_subset leaves no image; "
            "set pixel_subset = 0 or turn augmentation off"
        )
    if config.standardize == "per-pixel":
        raise ConfigError(
            "augmentation with standardize = 'per-pixel' would standardize a moved pixel with "
            "another position's statistics; use standardize = 'global' or 'none'"
        )
    height, width = preprocessing.image_shape
    blank = preprocessing.transform(np.zeros((1, height, width), dtype=np.uint8))
    return Augmentation(
        **settings, image_shape=preprocessing.cropped_shape, fill=float(blank[0, 0])
    )


def affine_grid(
    shape: tuple[int, int, int],
    *,
    angles=0.0,
    scales=1.0,
    shears=0.0,
    shifts=None,
    flips=False,
) -> tuple[np.ndarray, np.ndarray]:
    """Input coordinates that each output pixel reads under per-image affine maps.

    The forward map of image ``b`` scales, shears, rotates about the centre ``c = ((H-1)/2,
    (W-1)/2)``, translates by ``shifts[b]``, and optionally mirrors left-right first. In ``(x, y)
    = (col, row)`` coordinates relative to the centre (y pointing down)::

        scale S = [[s, 0], [0, s]]     shear H = [[1, tan(phi)], [0, 1]]
        rotation R = [[cos a, sin a], [-sin a, cos a]]  (counterclockwise as displayed)
        forward:  p = R H S q + c + t          inverse:  q = (R H S)^-1 (p - c - t) + c

    Parameters
    ----------
    shape : (batch, height, width)
    angles, shears : float or array of shape (batch,)
        Degrees.
    scales : float or array of shape (batch,)
        Size factors (1: unchanged).
    shifts : array of shape (batch, 2), optional
        ``(rows, cols)`` translation of each image in pixels: +1 row moves it down.
    flips : bool or array of shape (batch,)
        Mirror these images left-right before the other transformations.

    Returns
    -------
    rows, cols : numpy.ndarray
        float32, each ``(batch, height, width)``: output pixel ``[b, i, j]`` reads the input of
        image ``b`` at ``(rows[b, i, j], cols[b, i, j])``.
    """
    batch, height, width = shape
    centre_row, centre_col = (height - 1) / 2, (width - 1) / 2

    def per_image(value):
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (batch,))

    angle, shear = np.radians(per_image(angles)), np.radians(per_image(shears))
    size = per_image(scales)
    if not (size > 0).all():
        raise ConfigError(f"affine_grid needs positive scale factors, got {scales!r}")
    # The forward matrix A = R @ H @ S, written out:
    cos, sin, tan = np.cos(angle), np.sin(angle), np.tan(shear)
    a00, a01 = cos * size, (cos * tan + sin) * size
    a10, a11 = -sin * size, (-sin * tan + cos) * size
    # Its inverse by the 2x2 formula [[d, -b], [-c, a]] / det; det = s^2 (rotation and shear
    # preserve area), never 0 for s > 0.
    det = a00 * a11 - a01 * a10
    m00, m01, m10, m11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    # Mirroring the input first is x -> -x after the inverse map: negate the x (column) row.
    mirror = np.where(np.broadcast_to(np.asarray(flips, dtype=bool), (batch,)), -1.0, 1.0)
    m00, m01 = m00 * mirror, m01 * mirror
    if shifts is None:
        shift_row = shift_col = np.zeros(batch)
    else:
        shifts = np.asarray(shifts, dtype=np.float64).reshape(batch, 2)
        shift_row, shift_col = shifts[:, 0], shifts[:, 1]
    # p - c - t for every output pixel, (batch, H, 1) and (batch, 1, W): broadcast, not tiled.
    y = np.arange(height, dtype=np.float64)[None, :, None] - centre_row - shift_row[:, None, None]
    x = np.arange(width, dtype=np.float64)[None, None, :] - centre_col - shift_col[:, None, None]

    def column(values):
        return values.astype(np.float32)[:, None, None]

    # float32 from here: coordinates below a few hundred pixels keep ~1e-5 pixel precision, and
    # the (batch, H, W) arrays cost half as much; integer coordinates stay exact.
    x, y = x.astype(np.float32), y.astype(np.float32)

    cols = column(m00) * x + column(m01) * y + np.float32(centre_col)
    rows = column(m10) * x + column(m11) * y + np.float32(centre_row)
    return rows, cols


@lru_cache(maxsize=16)
def _smoothing(size: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The (size, size) Gaussian matrix G (G @ f smooths f along one axis) and, per position,
    the root of the sum of its squared row, which sets the smoothed noise's spread there."""
    positions = np.arange(size, dtype=np.float64)
    matrix = np.exp(-((positions[:, None] - positions[None, :]) ** 2) / (2 * sigma**2))
    row_norms = np.sqrt((matrix**2).sum(axis=1))
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    row_norms.flags.writeable = False
    return matrix, row_norms


def elastic_displacement(
    rng: np.random.Generator, shape: tuple[int, int, int], alpha: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Random smooth displacement fields (Simard et al. 2003), one per image and axis.

    Each field is uniform(-1, 1) noise ``F`` smoothed by a Gaussian of standard deviation
    ``sigma`` along both axes, ``G_rows @ F @ G_cols.T``, then divided by its standard deviation
    at each position and multiplied by ``alpha``: every pixel moves by ``alpha`` pixels
    root-mean-square along each axis, whatever ``sigma`` (with a kernel that sums to 1, as
    Simard's, the strength would shrink as sigma grows).

    Returns
    -------
    d_rows, d_cols : numpy.ndarray
        float32, each ``(batch, height, width)`` (views of one array).
    """
    batch, height, width = shape
    g_rows, norm_rows = _smoothing(height, float(sigma))
    g_cols, norm_cols = _smoothing(width, float(sigma))
    # The noise of all 2 * batch fields laid out as (height, 2 * batch * width), so that each
    # smoothing is ONE matrix product (BLAS) rather than one small product per field.
    noise = rng.random((height, 2 * batch * width), dtype=np.float32)
    noise *= 2
    noise -= 1
    smooth = (g_rows @ noise).reshape(height * 2 * batch, width) @ g_cols.T
    # Var(sum_k w_k u_k) = sum_k w_k^2 / 3 for independent u_k ~ uniform(-1, 1), and the weights
    # of pixel (i, j) are the outer product of row i of G_rows and row j of G_cols.
    spread = np.sqrt(1.0 / 3.0) * norm_rows[:, None] * norm_cols[None, :]
    scale = (alpha / spread).astype(np.float32)[:, None, :]
    fields = smooth.reshape(height, 2 * batch, width) * scale  # (height, 2 * batch, width)
    fields = fields.transpose(1, 0, 2)  # (2 * batch, height, width), a view
    return fields[:batch], fields[batch:]


def sample_bilinear(images: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill: float = 0.0):
    """Read each image at real-valued coordinates by bilinear interpolation.

    ``out = (1-fr)(1-fc) v00 + (1-fr) fc v01 + fr (1-fc) v10 + fr fc v11``, where ``v`` are the 4
    neighbouring pixels around ``(rows, cols)`` and ``fr, fc`` the fractional parts. A neighbour
    outside the image reads ``fill``, so an image moved partly out of view is padded with blank.
    At integer coordinates the result is the pixel itself, exactly.

    Parameters
    ----------
    images : numpy.ndarray
        ``(batch, height, width)``.
    rows, cols : numpy.ndarray
        ``(batch, out_height, out_width)`` coordinates into each image, in pixels.
    fill : float

    Returns
    -------
    numpy.ndarray
        ``(batch, out_height, out_width)``, of the images' dtype.
    """
    batch, height, width = images.shape
    dtype = images.dtype if images.dtype.kind == "f" else np.dtype(np.float64)
    # Coordinates clipped to [-1, size] read the same values: beyond the image everything is
    # blank. A blank border of one pixel before and two after each axis then holds every
    # neighbour: floor(-1) - the border - and up to floor(size) + 1 = size + 1.
    rows = np.clip(rows, -1, height)
    cols = np.clip(cols, -1, width)
    row_floor, col_floor = np.floor(rows), np.floor(cols)
    frac_row = (rows - row_floor).astype(dtype, copy=False)
    frac_col = (cols - col_floor).astype(dtype, copy=False)
    padded_width = width + 3
    padded = np.full((batch, height + 3, padded_width), fill, dtype=dtype)
    padded[:, 1 : height + 1, 1 : width + 1] = images
    flat = padded.ravel()
    # Flat index of each top-left neighbour in padded.ravel(); image b starts at b (H+3)(W+3).
    # int32 (half the memory traffic of int64) holds it for any batch of a sane size.
    index_type = np.int32 if flat.size < 2**31 else np.intp
    top_left = row_floor.astype(index_type)
    top_left += 1
    top_left *= padded_width
    top_left += col_floor.astype(index_type)
    top_left += (np.arange(batch, dtype=index_type) * ((height + 3) * padded_width) + 1)[
        :, None, None
    ]
    # Two linear interpolations along the columns, then one along the rows:
    # upper = v00 + fc (v01 - v00), lower = v10 + fc (v11 - v10), out = upper + fr (lower - upper)
    # (the same weights as the four-term form, and exact at integer coordinates).
    upper = _lerp(flat, top_left, 1, frac_col)
    lower = _lerp(flat, top_left + padded_width, 1, frac_col)
    lower -= upper
    lower *= frac_row
    upper += lower
    return upper


def _lerp(flat: np.ndarray, index: np.ndarray, step: int, fraction: np.ndarray) -> np.ndarray:
    """``flat[index] + fraction * (flat[index + step] - flat[index])``, with few temporaries."""
    start = flat[index]
    result = flat[index + step]
    result -= start
    result *= fraction
    result += start
    return result


def preview_figure(
    images: np.ndarray, augmentation: Augmentation, seed: int = 0, variants: int = 6
):
    """A grid of original images (first column) and augmented versions of each (the rest).

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, height * width)`` features, as the augmentation sees them.
    augmentation : Augmentation
    seed : int
        Seeds the augmented versions.
    variants : int
        Augmented versions per image.

    Returns
    -------
    matplotlib.figure.Figure
        Save it with :func:`mlplab.report.plots.save_figure`.
    """
    from mlplab.report.plots import new_figure  # matplotlib only when a figure is drawn

    height, width = augmentation.image_shape
    images = np.asarray(images)
    n = len(images)
    rng = np.random.default_rng(seed)
    columns = [images] + [augmentation.augment(images, rng) for _ in range(variants)]
    figure = new_figure(1.2 * (variants + 1), 1.2 * n)
    axes = figure.subplots(n, variants + 1, squeeze=False)
    low, high = float(images.min()), float(images.max())
    for row in range(n):
        for column, batch in enumerate(columns):
            ax = axes[row, column]
            ax.imshow(batch[row].reshape(height, width), cmap="gray_r", vmin=low, vmax=high)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("original", fontsize=8)
    for column in range(1, variants + 1):
        axes[0, column].set_title(f"augmented {column}", fontsize=8)
    figure.tight_layout()
    return figure


__all__ = [
    "Augmentation",
    "SETTING_KEYS",
    "affine_grid",
    "augmentation_for",
    "check_settings",
    "elastic_displacement",
    "preview_figure",
    "sample_bilinear",
]
