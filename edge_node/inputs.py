"""Where the edge's inputs come from: the bundle's test set, or a folder of .npy files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesplit.bundle import Bundle
from edgesplit.errors import ConfigError


@dataclass(frozen=True)
class InputSet:
    """Inputs ``[N, *shape]`` and their labels when known."""

    inputs: np.ndarray
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batches(self) -> Iterator[np.ndarray]:
        """One batch-of-one request per input."""
        for i in range(len(self)):
            yield self.inputs[i : i + 1]


def load_inputs(spec: str, bundle: Bundle, limit: int | None = None) -> InputSet:
    """``bundle`` (the bundle's test set) or a folder of ``.npy`` files, one input each.

    Raises:
        ConfigError: no test set in the bundle, an empty folder, or an input of
            the wrong shape (the message names the file).
    """
    shape = tuple(bundle.manifest.model.input.shape)
    if spec == "bundle":
        path = bundle.root / "data" / "test.npz"
        if not path.is_file():
            raise ConfigError(f"{bundle.root}: this bundle ships no test set; give --inputs DIR")
        with np.load(path) as data:
            inputs, labels = data["inputs"], data["labels"]
        source = f"{path} ({len(labels)} samples)"
    else:
        folder = Path(spec)
        if not folder.is_dir():
            raise ConfigError(f"--inputs {spec}: not 'bundle' and not a directory")
        files = sorted(folder.glob("*.npy"))
        if not files:
            raise ConfigError(f"--inputs {spec}: no .npy files in this directory")
        arrays = []
        for f in files[:limit]:
            try:
                value = np.load(f, allow_pickle=False).astype(np.float32)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{f}: cannot be read as a .npy array: {exc}") from exc
            if value.shape == (1, *shape):
                value = value[0]
            if value.shape != shape:
                raise ConfigError(f"{f}: shape {value.shape}, the model takes {shape}")
            arrays.append(value)
        inputs, labels, source = np.stack(arrays), None, f"{folder} ({len(arrays)} .npy files)"
    if inputs.shape[1:] != shape:
        raise ConfigError(f"{source}: inputs of shape {inputs.shape[1:]}, the model takes {shape}")
    if limit is not None:
        inputs = inputs[:limit]
        labels = None if labels is None else labels[:limit]
    return InputSet(np.ascontiguousarray(inputs, dtype=np.float32), labels, source)
