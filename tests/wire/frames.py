"""Frames written by hand, as any sender could: the header map packed with msgpack, unchecked.

What a typed sender cannot write (an unknown meta key, a field of the wrong
type, tensors on a kind that carries none) is what a receiver must refuse or
ignore; the tests build it here, beside the format's documented map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import numpy as np

import wire

Frames = list[Any]


def raw_frames(
    kind: str,
    request_id: int,
    meta: Mapping[str, object] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    codec: str = "raw",
) -> Frames:
    """``{"v": 1, "k": kind, "id": request_id, "m": meta, "t": [...]}`` then one frame a tensor."""
    descriptors: list[dict[str, Any]] = []
    payloads: Frames = []
    for name, array in (arrays or {}).items():
        descriptor, payload = wire.encode_tensor(name, array, codec)
        descriptors.append(descriptor.to_dict())
        payloads.append(payload)
    header = {"v": 1, "k": kind, "id": request_id, "m": dict(meta or {}), "t": descriptors}
    return [msgpack.packb(header, use_bin_type=True), *payloads]


def header_of(frames: Frames) -> dict[str, Any]:
    """The header map of ``frames``, unpacked without any limit or check."""
    return msgpack.unpackb(bytes(frames[0]), raw=False)


def with_header(frames: Frames, edit: Callable[[dict[str, Any]], object]) -> Frames:
    """The same message with its header changed by ``edit`` (which mutates in place)."""
    header = header_of(frames)
    edit(header)
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]
