"""A deterministic, offline image classification task with easy and hard samples.

The task is scikit-learn's bundled digits (1797 images of 8x8 pixels, 10 classes).
The ORIGINAL images are split 60/20/20 (stratified, fixed seed) into train, val and
test before anything else, so no digit image leaks across splits. Each sample is
one original image upscaled to 32x32 (bilinear) and augmented with a per-sample
difficulty ``d`` in [0, 1]: stroke thickness jitter, rotation (up to +-30 deg * d),
scale, shift, contrast reduction, clutter (line segments and blobs, only when d is
high) and Gaussian noise whose sigma grows with d. Easy samples stay close to the
clean digit; hard ones are a real challenge even for a trained CNN, which is what
makes an early-exit confidence threshold a trade-off.

Samples are generated in fixed-size chunks, each from its own seeded generator, so
the same arguments give bit-identical arrays and a smaller ``n`` gives a prefix of
the full split. This module needs numpy, scipy and scikit-learn only (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import ndimage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SplitName = Literal["train", "val", "test"]

INPUT_SHAPE: tuple[int, int, int] = (1, 32, 32)
"""Shape of one sample without the batch axis: channels, height, width."""

CLASS_NAMES: tuple[str, ...] = tuple("0123456789")
"""Label ``i`` is the digit ``CLASS_NAMES[i]``."""

DATASET_VERSION = 1
"""Bump when the generated samples change, so caches keyed on it are rebuilt."""

DEFAULT_SIZES: dict[str, int] = {"train": 24000, "val": 2000, "test": 2000}
"""Number of augmented samples in each split when ``n`` is not given."""

PIXEL_MEAN = 0.35
"""Fixed mean subtracted from every pixel (close to the train split's mean)."""

PIXEL_STD = 0.35
"""Fixed standard deviation every pixel is divided by (close to the train split's)."""

_SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}
_SPLIT_SEED = 20240521  # fixes which original images go to which split
_CHUNK = 512  # samples drawn from one generator; fixed so that prefixes are stable
_SIDE = INPUT_SHAPE[1]
_MAX_SEGMENTS = 4
_MAX_BLOBS = 2


@dataclass(frozen=True)
class Split:
    """One split of the digits task.

    Attributes:
        images: Normalized images, float32 of shape [N, 1, 32, 32].
        labels: Class indices, int64 of shape [N].
        difficulty: Per-sample augmentation strength in [0, 1], float32 of shape [N].
        source_index: Index of the original image in ``sklearn.datasets.load_digits``
            each sample was made from, int64 of shape [N]; disjoint across splits.
    """

    images: np.ndarray
    labels: np.ndarray
    difficulty: np.ndarray
    source_index: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_digits_task(split: SplitName, n: int | None = None, seed: int = 0) -> Split:
    """Generate one split of the augmented digits task.

    Args:
        split: Which split: ``"train"``, ``"val"`` or ``"test"``.
        n: Number of samples; defaults to ``DEFAULT_SIZES[split]``. A smaller ``n``
            gives the first ``n`` samples of the larger split.
        seed: Seed of the augmentation draws (the image split itself is fixed).

    Returns:
        The split, bit-identical for the same arguments.

    Raises:
        ValueError: If ``split`` is unknown or ``n`` is negative.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split={split!r}; expected one of {tuple(_SPLIT_CODES)}")
    count = DEFAULT_SIZES[split] if n is None else n
    if count < 0:
        raise ValueError(f"n={count} must be >= 0")
    base_images, base_labels = _upscaled_digits()
    pool = source_indices()[split]
    sources = _assign_sources(pool, count, seed, _SPLIT_CODES[split])
    images = np.empty((count, *INPUT_SHAPE), dtype=np.float32)
    difficulty = np.empty(count, dtype=np.float32)
    for chunk, start in enumerate(range(0, count, _CHUNK)):
        stop = min(start + _CHUNK, count)
        rng = np.random.default_rng((seed, _SPLIT_CODES[split], chunk))
        d = rng.uniform(0.0, 1.0, size=_CHUNK).astype(np.float32)[: stop - start]
        images[start:stop, 0] = _augment(base_images[sources[start:stop]], d, rng)
        difficulty[start:stop] = d
    images -= PIXEL_MEAN
    images /= PIXEL_STD
    return Split(
        images=images,
        labels=base_labels[sources].astype(np.int64),
        difficulty=difficulty,
        source_index=sources.astype(np.int64),
    )


def source_indices() -> dict[str, np.ndarray]:
    """Indices of the original digit images in each split (stratified 60/20/20).

    Returns:
        Sorted, disjoint int64 index arrays keyed by split name.
    """
    labels = load_digits().target
    every = np.arange(labels.shape[0])
    train, rest = train_test_split(every, test_size=0.4, stratify=labels, random_state=_SPLIT_SEED)
    val, test = train_test_split(
        rest, test_size=0.5, stratify=labels[rest], random_state=_SPLIT_SEED
    )
    return {
        name: np.sort(idx).astype(np.int64)
        for name, idx in (("train", train), ("val", val), ("test", test))
    }


@lru_cache(maxsize=1)
def _upscaled_digits() -> tuple[np.ndarray, np.ndarray]:
    """All original digits upscaled to 32x32 (bilinear) in [0, 1], and their labels."""
    digits = load_digits()
    clean = digits.images.astype(np.float32) / 16.0
    factor = _SIDE / clean.shape[1]
    upscaled = ndimage.zoom(
        clean, (1.0, factor, factor), order=1, grid_mode=True, mode="grid-constant"
    )
    upscaled = np.clip(upscaled, 0.0, 1.0).astype(np.float32)
    upscaled.setflags(write=False)
    return upscaled, digits.target.astype(np.int64)


def _assign_sources(pool: np.ndarray, count: int, seed: int, code: int) -> np.ndarray:
    """Original image of each sample: the pool in a fresh random order on every pass."""
    passes = -(-count // pool.shape[0]) if count else 0
    rng = np.random.default_rng((seed, code, 1_000_003))
    order = [rng.permutation(pool) for _ in range(passes)]
    return np.concatenate(order)[:count] if order else np.empty(0, dtype=np.int64)


def _augment(base: np.ndarray, d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Augment clean [B, 32, 32] images in [0, 1] with strengths ``d`` in [0, 1].

    Every draw has a fixed size of ``_CHUNK`` (sliced to B) so that the generator
    advances identically whatever B is.
    """
    b = base.shape[0]

    def draw(low: float, high: float, *shape: int) -> np.ndarray:
        return rng.uniform(low, high, size=(_CHUNK, *shape)).astype(np.float32)[:b]

    thickness = draw(-1.0, 1.0)
    angle = np.deg2rad(30.0) * d * draw(-1.0, 1.0)
    log_scale = 0.08 * draw(-1.0, 1.0) + 0.25 * d * draw(-1.0, 1.0)
    shift = (1.0 + 4.0 * d[:, None]) * draw(-1.0, 1.0, 2)
    contrast = 1.0 - 0.6 * d * draw(0.0, 1.0)
    background = 0.3 * d * draw(0.0, 1.0)
    noise_sigma = 0.03 + 0.35 * d**2
    noise = rng.standard_normal(size=(_CHUNK, _SIDE, _SIDE), dtype=np.float32)[:b]

    images = _jitter_thickness(base, thickness)
    images = _warp(images, angle, np.exp(log_scale), shift)
    images = images * contrast[:, None, None] + background[:, None, None]
    images = images + _clutter(d, rng)
    images = images + noise_sigma[:, None, None] * noise
    return images.astype(np.float32)


def _jitter_thickness(images: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Blend toward a dilated (amount > 0) or eroded (amount < 0) copy of each image."""
    thick = ndimage.grey_dilation(images, size=(1, 3, 3))
    thin = ndimage.grey_erosion(images, size=(1, 3, 3))
    grow = np.clip(amount, 0.0, None)[:, None, None]
    shrink = np.clip(-amount, 0.0, None)[:, None, None]
    return images + grow * (thick - images) + shrink * (thin - images)


def _warp(
    images: np.ndarray, angle: np.ndarray, scale: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Rotate (radians), scale and shift (pixels) each image about its center.

    Bilinear sampling of the inverse map, zero outside the image; vectorized over
    the batch.
    """
    b, h, w = images.shape
    center = (h - 1) / 2.0
    ys, xs = np.meshgrid(
        np.arange(h, dtype=np.float32) - center,
        np.arange(w, dtype=np.float32) - center,
        indexing="ij",
    )
    cos = (np.cos(angle) / scale)[:, None, None]
    sin = (np.sin(angle) / scale)[:, None, None]
    oy = ys[None] - shift[:, 0, None, None]
    ox = xs[None] - shift[:, 1, None, None]
    src_y = cos * oy - sin * ox + center
    src_x = sin * oy + cos * ox + center

    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    y0 = np.floor(src_y)
    x0 = np.floor(src_x)
    wy = (src_y - y0).astype(np.float32)
    wx = (src_x - x0).astype(np.float32)
    # Shift by one for the zero border; anything further out reads the border.
    y0 = np.clip(y0.astype(np.int64) + 1, 0, h + 1)
    x0 = np.clip(x0.astype(np.int64) + 1, 0, w + 1)
    y1 = np.clip(y0 + 1, 0, h + 1)
    x1 = np.clip(x0 + 1, 0, w + 1)
    flat = padded.reshape(b, -1)
    row = w + 2

    def gather(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
        return np.take_along_axis(flat, (yi * row + xi).reshape(b, -1), axis=1).reshape(b, h, w)

    top = gather(y0, x0) * (1.0 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1.0 - wx) + gather(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


def _clutter(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random line segments and Gaussian blobs, more and brighter as ``d`` grows.

    Samples with d < 0.4 get none; the count rises to ``_MAX_SEGMENTS`` segments and
    ``_MAX_BLOBS`` blobs at d = 1.
    """
    b = d.shape[0]

    def draw(low: float, high: float, *shape: int) -> np.ndarray:
        return rng.uniform(low, high, size=(_CHUNK, *shape)).astype(np.float32)[:b]

    strength = np.clip((d - 0.4) / 0.6, 0.0, 1.0)
    seg_ends = draw(0.0, _SIDE - 1.0, _MAX_SEGMENTS, 2, 2)  # [B, K, end, (y, x)]
    seg_on = draw(0.0, 1.0, _MAX_SEGMENTS) < strength[:, None]
    seg_level = draw(0.3, 0.8, _MAX_SEGMENTS) * seg_on
    blob_at = draw(0.0, _SIDE - 1.0, _MAX_BLOBS, 2)
    blob_sigma = draw(1.0, 3.0, _MAX_BLOBS)
    blob_on = draw(0.0, 1.0, _MAX_BLOBS) < strength[:, None]
    blob_level = draw(0.3, 0.9, _MAX_BLOBS) * blob_on

    clutter = np.zeros((b, _SIDE * _SIDE), dtype=np.float32)
    busy = np.flatnonzero(seg_on.any(axis=1) | blob_on.any(axis=1))  # skip clean samples
    grid = np.stack(
        np.meshgrid(
            np.arange(_SIDE, dtype=np.float32), np.arange(_SIDE, dtype=np.float32), indexing="ij"
        ),
        -1,
    )
    pixels = grid.reshape(1, 1, -1, 2)  # [1, 1, P, 2]
    start = seg_ends[busy, :, None, 0]  # [B', K, 1, 2]
    along = seg_ends[busy, :, None, 1] - start
    length2 = np.maximum((along**2).sum(-1), 1e-6)
    t = np.clip(((pixels - start) * along).sum(-1) / length2, 0.0, 1.0)
    dist = np.sqrt((((start + t[..., None] * along) - pixels) ** 2).sum(-1))
    lines = np.clip(1.5 - dist, 0.0, 1.0) * seg_level[busy, :, None]  # ~2 px wide
    dist2 = ((pixels - blob_at[busy, :, None]) ** 2).sum(-1)
    blobs = np.exp(-dist2 / (2.0 * blob_sigma[busy, :, None] ** 2)) * blob_level[busy, :, None]
    clutter[busy] = np.maximum(lines.max(axis=1), blobs.max(axis=1))
    return clutter.reshape(b, _SIDE, _SIDE)


__all__ = [
    "CLASS_NAMES",
    "DATASET_VERSION",
    "DEFAULT_SIZES",
    "INPUT_SHAPE",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "Split",
    "SplitName",
    "load_digits_task",
    "source_indices",
]
