from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import NearestCentroid

from partitioner.datasets import (
    CLASS_NAMES,
    DEFAULT_SIZES,
    INPUT_SHAPE,
    Split,
    load_digits_task,
    source_indices,
)

N_DIGITS = 1797  # images in sklearn's bundled digits


@cache
def _split(name: str, n: int, seed: int = 0) -> Split:
    return load_digits_task(name, n=n, seed=seed)  # type: ignore[arg-type]


def _same(a: Split, b: Split) -> bool:
    return all(
        x.dtype == y.dtype and x.tobytes() == y.tobytes()
        for x, y in (
            (a.images, b.images),
            (a.labels, b.labels),
            (a.difficulty, b.difficulty),
            (a.source_index, b.source_index),
        )
    )


def test_shapes_and_dtypes() -> None:
    split = _split("val", 700)
    assert split.images.shape == (700, *INPUT_SHAPE)
    assert split.images.dtype == np.float32
    assert split.labels.shape == (700,) and split.labels.dtype == np.int64
    assert split.difficulty.shape == (700,) and split.difficulty.dtype == np.float32
    assert split.source_index.dtype == np.int64
    assert len(split) == 700
    assert set(np.unique(split.labels)) == set(range(len(CLASS_NAMES)))
    assert 0.0 <= split.difficulty.min() and split.difficulty.max() <= 1.0
    assert np.isfinite(split.images).all()


def test_default_sizes() -> None:
    assert len(load_digits_task("test")) == DEFAULT_SIZES["test"] == 2000


def test_normalized_roughly_standard() -> None:
    images = _split("train", 2000).images
    assert abs(float(images.mean())) < 0.1  # fixed PIXEL_MEAN/PIXEL_STD, not per-call stats
    assert 0.8 < float(images.std()) < 1.2


def test_same_arguments_give_identical_arrays() -> None:
    assert _same(load_digits_task("val", n=600), load_digits_task("val", n=600))


def test_seed_changes_the_samples() -> None:
    a, b = _split("val", 600, 0), _split("val", 600, 1)
    assert not np.array_equal(a.images, b.images)


@settings(max_examples=8, deadline=None)
@given(n=st.integers(min_value=0, max_value=1100))
def test_smaller_n_is_a_prefix(n: int) -> None:
    full = _split("val", 1100)  # crosses two generation chunks
    part = load_digits_task("val", n=n)
    prefix = Split(full.images[:n], full.labels[:n], full.difficulty[:n], full.source_index[:n])
    assert _same(part, prefix)


def test_original_images_do_not_leak_across_splits() -> None:
    pools = source_indices()
    train, val, test = (set(pools[k].tolist()) for k in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == N_DIGITS
    assert (len(train), len(val), len(test)) == (1078, 359, 360)  # 60/20/20
    for name, n in (("train", 3000), ("val", 600), ("test", 600)):
        used = set(_split(name, n).source_index.tolist())
        assert used <= set(pools[name].tolist())


def test_splits_are_stratified() -> None:
    for name in ("train", "val", "test"):
        counts = np.bincount(_split(name, 2000).labels, minlength=10)
        assert counts.min() > 0.8 * counts.mean()


def test_every_original_image_is_used_evenly() -> None:
    split = _split("test", 720)  # two full passes over the 360 test images
    counts = np.bincount(split.source_index, minlength=N_DIGITS)[source_indices()["test"]]
    assert set(counts.tolist()) == {2}


def test_difficulty_hurts_a_simple_classifier() -> None:
    train, test = _split("train", 3000), _split("test", 2000)
    clf = NearestCentroid().fit(train.images.reshape(len(train), -1), train.labels)
    correct = clf.predict(test.images.reshape(len(test), -1)) == test.labels
    low, high = np.quantile(test.difficulty, [1 / 3, 2 / 3])
    easy = correct[test.difficulty < low].mean()
    hard = correct[test.difficulty >= high].mean()
    # Measured: easy ~0.8, hard ~0.4.
    assert easy > hard + 0.2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        load_digits_task("training")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n=-1"):
        load_digits_task("val", n=-1)
