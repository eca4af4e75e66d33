"""Turning uint8 images into float32 feature rows: scale, standardize, crop, pixel subsets.

The order is fixed: crop a border, keep a pixel subset, convert to float32 (the only full-size
allocation: full MNIST is ~190 MB as float32), scale to [0, 1], standardize with statistics of the
*training* images. Statistics are computed in float64 in chunks, so fitting never holds a float
copy of the whole training set.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from mlplab.errors import ConfigError, DataError

STANDARDIZE_MODES = (None, "global", "per-pixel")
# A standard deviation below this is a constant pixel (MNIST's border): divide by 1 instead of ~0.
MIN_STD = 1e-6
# Images per chunk when fitting statistics: bounds the float64 temporaries to ~50 MB.
_FIT_CHUNK = 8192


@dataclass(frozen=True)
class Preprocessing:
    """Settings of the image-to-features transformation, before fitting.

    Parameters
    ----------
    scale : bool
        Divide pixel values (0..255) by 255.
    standardize : {None, "global", "per-pixel"}
        Subtract the training mean and divide by the training standard deviation, over all pixels
        (``"global"``) or for each pixel position (``"per-pixel"``; constant pixels get std 1).
    crop_border : int
        Pixels cut from every side: 28x28 becomes (28 - 2k)x(28 - 2k).
    pixel_subset : int, optional
        Keep only this many pixel positions, the same seeded random choice for every image,
        chosen after cropping and kept in row-major order.
    pixel_subset_seed : int
        Seed of that choice.

    Examples
    --------
    >>> prep = Preprocessing(standardize="per-pixel", crop_border=2)  # doctest: +SKIP
    >>> fitted = prep.fit(data.train_images)  # doctest: +SKIP
    >>> fitted.transform(data.test_images).shape  # doctest: +SKIP
    (10000, 576)
    """

    scale: bool = True
    standardize: str | None = None
    crop_border: int = 0
    pixel_subset: int | None = None
    pixel_subset_seed: int = 0

    def __post_init__(self) -> None:
        if self.standardize not in STANDARDIZE_MODES:
            raise ConfigError(
                f"standardize must be one of None, 'global', 'per-pixel', not {self.standardize!r}"
            )
        if not _is_int(self.crop_border) or self.crop_border < 0:
            raise ConfigError(
                f"crop_border must be a non-negative integer, not {self.crop_border!r}"
            )
        if self.pixel_subset is not None and (
            not _is_int(self.pixel_subset) or self.pixel_subset < 1
        ):
            raise ConfigError(
                f"pixel_subset must be a positive pixel count, not {self.pixel_subset!r}"
            )
        if not _is_int(self.pixel_subset_seed):
            raise ConfigError(
                f"pixel_subset_seed must be an integer, not {self.pixel_subset_seed!r}"
            )

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict) -> Preprocessing:
        """Settings from :meth:`to_dict`'s output; unknown keys are rejected."""
        unknown = set(settings) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown preprocessing settings: {', '.join(sorted(unknown))}")
        return cls(**settings)

    def fit(self, train_images: np.ndarray) -> FittedPreprocessing:
        """Choose the pixel subset and compute training statistics.

        Parameters
        ----------
        train_images : numpy.ndarray
            Training images, shape ``(N, height, width)``, pixel values 0..255.

        Returns
        -------
        FittedPreprocessing
        """
        images = np.asarray(train_images)
        if images.ndim != 3 or len(images) == 0:
            raise DataError(
                f"fit needs a non-empty stack of images (N, height, width), not {images.shape}"
            )
        height, width = images.shape[1:]
        k = self.crop_border
        if 2 * k >= min(height, width):
            raise ConfigError(
                f"crop_border {k} leaves nothing of {height}x{width} images; use at most"
                f" {(min(height, width) - 1) // 2}"
            )
        n_pixels = (height - 2 * k) * (width - 2 * k)
        pixel_indices = None
        if self.pixel_subset is not None:
            if self.pixel_subset > n_pixels:
                raise ConfigError(
                    f"pixel_subset {self.pixel_subset} exceeds the {n_pixels} pixels left after"
                    f" cropping {k} from {height}x{width} images"
                )
            rng = np.random.default_rng(self.pixel_subset_seed)
            pixel_indices = np.sort(rng.choice(n_pixels, size=self.pixel_subset, replace=False))
        fitted = FittedPreprocessing(self, (height, width), pixel_indices, None, None)
        if self.standardize is None:
            return fitted
        total = np.zeros(fitted.n_features)
        total_sq = np.zeros(fitted.n_features)
        for start in range(0, len(images), _FIT_CHUNK):
            chunk = fitted.transform(images[start : start + _FIT_CHUNK]).astype(np.float64)
            total += chunk.sum(axis=0)
            total_sq += np.einsum("ij,ij->j", chunk, chunk)
        count = len(images)
        if self.standardize == "global":
            total, total_sq, count = total.sum(), total_sq.sum(), count * fitted.n_features
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        std = np.where(std < MIN_STD, 1.0, std)
        return FittedPreprocessing(
            self,
            (height, width),
            pixel_indices,
            np.asarray(mean, dtype=np.float32),
            np.asarray(std, dtype=np.float32),
        )


@dataclass(frozen=True, eq=False)
class FittedPreprocessing:
    """A :class:`Preprocessing` with its pixel subset and training statistics fixed.

    Attributes
    ----------
    config : Preprocessing
        The settings.
    image_shape : tuple of int
        ``(height, width)`` of the images it was fitted on, before cropping.
    pixel_indices : numpy.ndarray or None
        Sorted positions kept, in the row-major flattened cropped image; None keeps all.
    mean, std : numpy.ndarray or None
        float32 training statistics of the features, shape ``()`` for ``"global"`` and
        ``(n_features,)`` for ``"per-pixel"``; None without standardization.
    """

    config: Preprocessing
    image_shape: tuple[int, int]
    pixel_indices: np.ndarray | None
    mean: np.ndarray | None
    std: np.ndarray | None

    @property
    def cropped_shape(self) -> tuple[int, int]:
        """``(height, width)`` after cropping."""
        k = self.config.crop_border
        return self.image_shape[0] - 2 * k, self.image_shape[1] - 2 * k

    @property
    def n_features(self) -> int:
        """Length of one feature row."""
        if self.pixel_indices is not None:
            return len(self.pixel_indices)
        height, width = self.cropped_shape
        return height * width

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Turn images into float32 feature rows.

        Parameters
        ----------
        images : numpy.ndarray
            Shape ``(N, height, width)`` or flattened ``(N, height * width)``, pixel values 0..255,
            of the size the preprocessing was fitted on.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(N, n_features)``, a new array (the input is never modified).
        """
        images = np.asarray(images)
        height, width = self.image_shape
        if images.ndim == 2 and images.shape[1] == height * width:
            images = images.reshape(len(images), height, width)
        if images.ndim != 3 or images.shape[1:] != (height, width):
            raise DataError(
                f"images of shape {images.shape} do not match the {height}x{width} images this"
                " preprocessing was fitted on"
            )
        k = self.config.crop_border
        cropped = images[:, k : height - k, k : width - k]
        n = len(images)
        if self.pixel_indices is not None:
            # Pick the pixels while still uint8, so the float conversion is of the kept ones only.
            features = cropped.reshape(n, -1)[:, self.pixel_indices].astype(np.float32)
        else:
            features = np.empty((n, self.n_features), dtype=np.float32)
            features.reshape(cropped.shape)[...] = cropped  # converts and crops in one pass
        if self.config.scale:
            features /= np.float32(255)
        if self.mean is not None:
            features -= self.mean
            features /= self.std
        return features

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild this object, as named arrays for ``np.savez``.

        The settings travel as a JSON string in a 0-d unicode array, so the result loads with
        ``allow_pickle=False``.
        """
        state = {
            "config": np.array(json.dumps(self.config.to_dict())),
            "image_shape": np.array(self.image_shape, dtype=np.int64),
        }
        for key in ("pixel_indices", "mean", "std"):
            if getattr(self, key) is not None:
                state[key] = getattr(self, key)
        return state

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> FittedPreprocessing:
        """Rebuild from :meth:`state`'s output (or an ``np.load`` of it), checking every part.

        Raises
        ------
        DataError
            If a part is missing, damaged or inconsistent with the settings: statistics of the
            wrong shape, NaN or non-positive, a crop that leaves nothing, pixel indices out of
            range. The message starts with "saved preprocessing".
        """
        try:
            config = Preprocessing.from_dict(json.loads(str(state["config"])))
            image_shape = np.asarray(state["image_shape"])
            if image_shape.shape != (2,) or not np.issubdtype(image_shape.dtype, np.integer):
                raise ValueError(f"image_shape {image_shape.tolist()} is not (height, width)")
            height, width = (int(size) for size in image_shape)
            if min(height, width) < 1:
                raise ValueError(f"image_shape {height}x{width} is empty")
        except KeyError as error:
            raise DataError(f"saved preprocessing lacks {error}") from None
        except (ValueError, TypeError, ConfigError) as error:
            raise DataError(f"saved preprocessing is damaged ({error})") from None
        k = config.crop_border
        if 2 * k >= min(height, width):
            raise DataError(
                f"saved preprocessing is damaged (crop_border {k} leaves nothing of"
                f" {height}x{width} images)"
            )
        pixel_indices = _saved_pixel_indices(state, config, (height - 2 * k) * (width - 2 * k))
        fitted = cls(config, (height, width), pixel_indices, None, None)
        mean, std = (
            _saved_statistic(state, key, config, fitted.n_features) for key in ("mean", "std")
        )
        if std is not None and not (std > 0).all():
            raise DataError("saved preprocessing is damaged (std has values <= 0)")
        return cls(config, (height, width), pixel_indices, mean, std)


def _saved_pixel_indices(state: dict, config: Preprocessing, n_pixels: int) -> np.ndarray | None:
    """The saved pixel subset, checked against the settings and the cropped image size."""
    if config.pixel_subset is None:
        if "pixel_indices" in state:
            raise DataError("saved preprocessing is damaged (pixel_indices without pixel_subset)")
        return None
    if "pixel_indices" not in state:
        raise DataError("saved preprocessing lacks 'pixel_indices'")
    indices = np.asarray(state["pixel_indices"])
    if (
        indices.shape != (config.pixel_subset,)
        or not np.issubdtype(indices.dtype, np.integer)
        or (indices.size and (indices[0] < 0 or indices[-1] >= n_pixels))
        or (np.diff(indices) <= 0).any()
    ):
        raise DataError(
            f"saved preprocessing is damaged (pixel_indices must be {config.pixel_subset} sorted"
            f" distinct positions in 0..{n_pixels - 1})"
        )
    return indices.astype(np.int64)


def _saved_statistic(
    state: dict, key: str, config: Preprocessing, n_features: int
) -> np.ndarray | None:
    """The saved ``mean`` or ``std``: present exactly when standardizing, right shape, finite."""
    if config.standardize is None:
        if key in state:
            raise DataError(f"saved preprocessing is damaged ({key} without standardize)")
        return None
    if key not in state:
        raise DataError(f"saved preprocessing lacks {key!r} for standardize={config.standardize!r}")
    value = np.asarray(state[key])
    shape = () if config.standardize == "global" else (n_features,)
    if value.shape != shape or value.dtype.kind != "f":
        raise DataError(
            f"saved preprocessing is damaged ({key} is {value.dtype} of shape {value.shape};"
            f" {config.standardize} standardization needs floats of shape {shape})"
        )
    if not np.isfinite(value).all():
        raise DataError(f"saved preprocessing is damaged ({key} holds NaN or infinite values)")
    return value.astype(np.float32)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
