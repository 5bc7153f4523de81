"""Inputs by name: an .npz or a mapping checked against what the model takes, one line each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesplit.errors import ModelError
from edgesplit.feeds import as_feeds, check_feeds, load_npz_feeds
from edgesplit.manifest import TensorSpec

SPECS = (TensorSpec("input_ids", (8,), "int64"), TensorSpec("attention_mask", (8,), "int64"))


def _good(rows: int = 3) -> dict[str, np.ndarray]:
    return {s.name: np.ones((rows, *s.shape), dtype=s.dtype) for s in SPECS}


def test_an_npz_of_every_input_is_read(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", **_good())
    feeds = load_npz_feeds(tmp_path / "x.npz", SPECS)
    assert list(feeds) == ["input_ids", "attention_mask"] and feeds["input_ids"].shape == (3, 8)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.pop("attention_mask"), r"no array for input\(s\) \['attention_mask'\]"),
        (lambda f: f.update(extra=np.ones(3)), r"arrays \['extra'\] are not inputs"),
        (
            lambda f: f.update(input_ids=np.ones((3, 8), np.float32)),
            r"input 'input_ids' has dtype float32, the model takes int64",
        ),
        (
            lambda f: f.update(input_ids=np.ones((3, 9), np.int64)),
            r"input 'input_ids' has shape \(3, 9\), the model takes \(batch, 8\)",
        ),
        (
            lambda f: f.update(attention_mask=np.ones((2, 8), np.int64)),
            r"input 'attention_mask' has 2 rows, the others 3",
        ),
    ],
)
def test_a_mismatch_is_one_line_naming_the_input(tmp_path: Path, edit, message: str) -> None:
    feeds = _good()
    edit(feeds)
    np.savez(tmp_path / "x.npz", **feeds)
    with pytest.raises(ModelError, match=message) as caught:
        load_npz_feeds(tmp_path / "x.npz", SPECS)
    assert str(tmp_path / "x.npz") in str(caught.value) and "\n" not in str(caught.value)


def test_an_unreadable_npz_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match=r"x.npz: cannot be read as .npz"):
        load_npz_feeds(tmp_path / "x.npz", SPECS)


def test_floats_of_another_precision_are_converted() -> None:
    spec = (TensorSpec("image", (2,), "float32"),)
    checked = check_feeds({"image": np.ones((1, 2), np.float64)}, spec, "here")
    assert checked["image"].dtype == np.float32


def test_a_bare_array_is_the_single_input() -> None:
    assert list(as_feeds(np.ones((1, 8)), SPECS[:1])) == ["input_ids"]
    with pytest.raises(ModelError, match="the model takes 2 inputs"):
        as_feeds(np.ones((1, 8)), SPECS)
