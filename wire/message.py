"""The untyped message API: a kind, an id, a ``meta`` map and tensors by name.

Kept while callers move to the typed messages (``wire.encode`` /
``wire.decode``, :mod:`wire.messages`); the bytes on the wire are the same
(:mod:`wire.header`). New code uses the typed API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from wire.codecs import decode_tensor, encode_tensor, sized_view
from wire.descriptor import TensorMeta
from wire.header import MetaValue, pack_header, read_header
from wire.limits import DEFAULT_LIMITS, Limits
from wire.registry import parse_codec
from wire.tensors import EncodedTensor

__all__ = [
    "Message",
    "MetaValue",
    "decode_header",
    "decode_message",
    "decode_tensors",
    "encode_message",
    "encoded_tensors",
]


@dataclass(frozen=True)
class Message:
    """A decoded header: what was asked or answered, and which tensors came with it.

    Attributes:
        kind: one of ``KINDS``.
        request_id: the sender's id in [0, 2**64); an answer echoes its request's.
        meta: read-only scalar fields (not part of the hash).
        tensors: one descriptor per payload frame, in frame order.
    """

    kind: str
    request_id: int
    meta: Mapping[str, MetaValue] = field(hash=False)
    tensors: tuple[TensorMeta, ...]


def encode_message(
    kind: str,
    request_id: int,
    arrays: Mapping[str, np.ndarray] | None = None,
    codec: str = "raw",
    meta: Mapping[str, MetaValue] | None = None,
) -> list[bytes | memoryview]:
    """Encode a message as frames for ``send_multipart(frames, copy=False)``.

    Raises:
        HeaderError: a bad kind, request_id or meta.
        PayloadError: an unknown codec or an array that cannot be encoded.
    """
    parsed = parse_codec(codec)
    descriptors: list[TensorMeta] = []
    frames: list[bytes | memoryview] = [b""]
    for name, array in (arrays or {}).items():
        tensor_meta, payload = encode_tensor(name, array, parsed)
        descriptors.append(tensor_meta)
        frames.append(payload)
    frames[0] = pack_header(kind, request_id, {} if meta is None else meta, descriptors)
    return frames


def decode_message(
    frames: Sequence[object], limits: Limits = DEFAULT_LIMITS
) -> tuple[Message, dict[str, np.ndarray]]:
    """Decode and validate received frames: the message and its arrays by name.

    Raises:
        HeaderError: the header frame is oversized, not msgpack, or malformed.
        PayloadError: a tensor's descriptor or frame is invalid.
        DecompressionError: a compressed frame is corrupt or expands wrongly.
    """
    message = decode_header(frames, limits)
    return message, decode_tensors(message, frames, limits)


def decode_header(frames: Sequence[object], limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode and validate the header of received frames; decode no tensor.

    Raises:
        HeaderError: the header frame is oversized, not msgpack, or malformed.
        PayloadError: a descriptor is invalid, or the sizes exceed ``limits``.
    """
    header = read_header(frames, limits)
    return Message(
        header.kind, header.request_id, MappingProxyType(dict(header.meta)), header.tensors
    )


def decode_tensors(
    message: Message, frames: Sequence[object], limits: Limits = DEFAULT_LIMITS
) -> dict[str, np.ndarray]:
    """The arrays of a message whose header :func:`decode_header` returned, by name.

    Raises:
        PayloadError: a frame disagrees with its descriptor.
        DecompressionError: a compressed frame is corrupt or expands wrongly.
    """
    return {
        t.name: decode_tensor(t, frames[i + 1], limits, index=i)
        for i, t in enumerate(message.tensors)
    }


def encoded_tensors(message: Message, frames: Sequence[object]) -> tuple[EncodedTensor, ...]:
    """The tensors of a message whose header :func:`decode_header` returned, undecoded.

    Raises:
        PayloadError: a frame's length disagrees with its descriptor.
    """
    return tuple(
        EncodedTensor(meta, np.frombuffer(sized_view(meta, frames[i + 1], i), dtype=np.uint8))
        for i, meta in enumerate(message.tensors)
    )
