"""A model's inputs by name: checked against what the model takes, one line per problem.

A model may take several inputs (``input_ids`` and ``attention_mask``, an
image and its size). Everywhere inputs travel together they are a *feeds*
mapping, name -> array with the batch first; a single-input model's plain
array is the same thing with one entry (:func:`as_feeds`). An ``.npz`` file
holds one array per input name (:func:`load_npz_feeds`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgesplit.errors import ModelError

if TYPE_CHECKING:
    from edgesplit.manifest import TensorSpec

Feeds = Mapping[str, np.ndarray]
"""Input name -> array, batch first."""


def batch_of(feeds: Feeds) -> int:
    """The batch size of ``feeds`` (every array's first axis)."""
    return int(next(iter(feeds.values())).shape[0]) if feeds else 0


def check_feeds(feeds: Feeds, specs: Sequence[TensorSpec], where: str) -> dict[str, np.ndarray]:
    """``feeds`` checked against ``specs``: every name, dtype, per-sample shape, one batch.

    Floats of another precision are converted; any other dtype mismatch is refused.

    Raises:
        ModelError: a missing or unknown name, a wrong dtype or shape, batches
            that differ, naming ``where``.
    """
    names = [s.name for s in specs]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise ModelError(f"{where}: no array for input(s) {missing}; the model takes {names}")
    unknown = sorted(set(feeds) - set(names))
    if unknown:
        raise ModelError(f"{where}: arrays {unknown} are not inputs; the model takes {names}")
    checked: dict[str, np.ndarray] = {}
    batch = None
    for spec in specs:
        value = np.asarray(feeds[spec.name])
        want = np.dtype(spec.dtype)
        if value.dtype != want:
            same_kind = value.dtype.kind == want.kind == "f" or (
                value.dtype.kind in "iu" and want.kind in "iu"
            )
            if not same_kind:
                raise ModelError(
                    f"{where}: input {spec.name!r} has dtype {value.dtype}, the model takes {want}"
                )
            value = value.astype(want)
        if value.ndim != len(spec.shape) + 1 or tuple(value.shape[1:]) != tuple(spec.shape):
            raise ModelError(
                f"{where}: input {spec.name!r} has shape {tuple(value.shape)}, the model takes "
                f"(batch, {', '.join(map(str, spec.shape))})"
            )
        if batch is not None and value.shape[0] != batch:
            raise ModelError(
                f"{where}: input {spec.name!r} has {value.shape[0]} rows, the others {batch}"
            )
        batch = value.shape[0]
        checked[spec.name] = np.ascontiguousarray(value)
    return checked


def as_feeds(x: np.ndarray | Feeds, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """A single-input model's array, or a feeds mapping, as a feeds mapping (not checked)."""
    if isinstance(x, Mapping):
        return dict(x)
    if len(specs) != 1:
        raise ModelError(
            f"the model takes {len(specs)} inputs {[s.name for s in specs]}: give one array "
            "per name (an .npz file)"
        )
    return {specs[0].name: x}


def read_npz(path: Path, where: str = "", limit: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (its first ``limit`` rows), by name; not checked.

    Raises:
        ModelError: not a readable ``.npz`` (named as ``where``, else the path), or empty.
    """
    where = where or str(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name][:limit] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"{where}: cannot be read as .npz: {exc}") from None
    if not arrays:
        raise ModelError(f"{where}: holds no arrays")
    return arrays


def load_npz_feeds(path: Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Read an ``.npz`` with one array per input name, checked against ``specs``.

    Raises:
        ModelError: not a readable ``.npz``, or its arrays do not match the inputs.
    """
    return check_feeds(read_npz(path), specs, str(path))


def slice_feeds(feeds: Feeds, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows ``start:stop`` of every array."""
    return {name: value[start:stop] for name, value in feeds.items()}


__all__ = [
    "Feeds",
    "as_feeds",
    "batch_of",
    "check_feeds",
    "load_npz_feeds",
    "read_npz",
    "slice_feeds",
]
