"""Messages: one msgpack header frame, then one payload frame per tensor.

Frame 0 is the header ``{"v": 1, "k": kind, "id": request_id, "m": meta,
"t": [tensor descriptors]}``; frame ``i + 1`` carries tensor ``i``. The frames
go to ``socket.send_multipart(frames, copy=False)`` as they are.

``decode_message`` treats every frame as hostile: the header's length is
checked before it is unpacked, msgpack's own limits bound every string, map
and list, and all tensor sizes are checked against ``Limits`` before any
tensor is decoded. Every rejection is a ``WireError`` whose message says what
and where as ``key=value``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import msgpack
import numpy as np

from edgesplit.errors import (
    ConfigError,
    DecompressionError,
    HeaderError,
    PayloadError,
    WireError,
)
from wire.codecs import (
    TensorMeta,
    byte_view,
    decode_tensor,
    decoded_nbytes,
    encode_tensor,
    parse_codec,
    sized_view,
)

PROTOCOL_VERSION = 1
KINDS: tuple[str, ...] = (
    "infer",
    "result",
    "busy",
    "error",
    "ping",
    "pong",
    # Fleet and over-the-air updates (edge_node.update, cloud_node.fleet): an edge's
    # heartbeat and the cloud's answer (which may offer a release), a release chunk asked
    # for and sent (one uint8 tensor), and a fleet query with its JSON report.
    "hello",
    "welcome",
    "fetch",
    "chunk",
    "fleet",
    "report",
)

MetaValue = str | int | float | bool | None
"""A value in a message's ``meta`` map: a msgpack scalar."""

MAX_META_KEY_LEN = 64
_HEADER_KEYS = frozenset({"v", "k", "id", "m", "t"})
_MAX_REQUEST_ID = 2**64
_DESCRIPTOR_MAX_KEYS = 7  # n, d, s, c, b, q, z
_HEADER_MAX_KEYS = len(_HEADER_KEYS)


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts; every size is checked before anything is allocated.

    Attributes:
        max_header_bytes: length of the header frame, checked before unpacking.
        max_tensors: tensors in one message.
        max_ndim: dimensions of one tensor.
        max_dim: size of one dimension.
        max_tensor_bytes: bytes of one decoded tensor (the array returned).
        max_total_bytes: bytes of all decoded tensors of one message.
        max_meta_entries: entries in the header's ``meta`` map.
        max_string_len: UTF-8 bytes of any header string (names, meta values).

    msgpack enforces string lengths, and bounds lists to max(max_tensors, max_ndim)
    and maps to max(max_meta_entries, 7) items while unpacking: an oversize
    container found there is a ``HeaderError`` like any malformed header.
    """

    max_header_bytes: int = 64 * 1024
    max_tensors: int = 16
    max_ndim: int = 8
    max_dim: int = 1 << 24
    max_tensor_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    max_meta_entries: int = 32
    max_string_len: int = 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"Limits.{f.name} must be a positive int, got {value!r}")


_DEFAULT_LIMITS = Limits()


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

    ``raw`` payloads of C-contiguous little-endian arrays are views of the
    arrays: leave them unmodified until the frames are sent.

    Args:
        kind: one of ``KINDS``.
        request_id: an int in [0, 2**64), echoed by the answer.
        arrays: the tensors by name, sent in this order.
        codec: one of ``SUPPORTED_CODECS``, applied to every tensor.
        meta: small scalar fields (keys of at most 64 characters).

    Raises:
        HeaderError: a bad kind, request_id or meta.
        PayloadError: an unknown codec or an array that cannot be encoded.
    """
    _check_kind(kind)
    _check_request_id(request_id)
    meta_dict = _check_meta_map({} if meta is None else meta, limits=None)
    parsed = parse_codec(codec)
    descriptors: list[dict[str, Any]] = []
    frames: list[bytes | memoryview] = [b""]
    for name, array in (arrays or {}).items():
        tensor_meta, payload = encode_tensor(name, array, parsed)
        descriptors.append(tensor_meta.to_dict())
        frames.append(payload)
    header = {"v": PROTOCOL_VERSION, "k": kind, "id": request_id, "m": meta_dict, "t": descriptors}
    frames[0] = msgpack.packb(header, use_bin_type=True)
    return frames


def decode_message(
    frames: Sequence[object], limits: Limits = _DEFAULT_LIMITS
) -> tuple[Message, dict[str, np.ndarray]]:
    """Decode and validate received frames.

    Args:
        frames: the header frame then the payload frames: ``bytes``,
            ``memoryview``, zmq ``Frame`` (anything with ``.buffer``) or any
            object with the buffer protocol.
        limits: the receiver's limits.

    Returns:
        The message and its arrays by name, in header order. Uncompressed
        ``raw`` arrays are read-only views of their frames.

    Raises:
        HeaderError: the header frame is oversized, not msgpack, or malformed.
        PayloadError: a tensor's descriptor or frame is invalid.
        DecompressionError: a compressed frame is corrupt or expands wrongly.
    """
    message = decode_header(frames, limits)
    return message, decode_tensors(message, frames, limits)


def decode_header(frames: Sequence[object], limits: Limits = _DEFAULT_LIMITS) -> Message:
    """Decode and validate the header of received frames; decode no tensor.

    Every descriptor is checked against ``limits`` (dtype, codec, shape, sizes,
    the total) and the frame count against the descriptors, so that a receiver
    can check the declared tensors against what it serves before paying for
    any decompression (:func:`decode_tensors`).

    Raises:
        HeaderError: the header frame is oversized, not msgpack, or malformed.
        PayloadError: a descriptor is invalid, or the sizes exceed ``limits``.
    """
    if len(frames) == 0:
        raise HeaderError("message has frames=0, expected a header frame")
    message = _decode_header(frames[0], len(frames), limits)
    total = sum(decoded_nbytes(t) for t in message.tensors)
    if total > limits.max_total_bytes:
        raise PayloadError(
            f"tensors decode to total={total} bytes, over max_total_bytes={limits.max_total_bytes}"
        )
    return message


def decode_tensors(
    message: Message, frames: Sequence[object], limits: Limits = _DEFAULT_LIMITS
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


@dataclass(frozen=True, eq=False)  # a payload is an array: no field-by-field equality
class EncodedTensor:
    """One tensor as it came off the wire: its descriptor and its payload, not decoded.

    The payload is a ``uint8`` view of the received frame (no copy);
    the pair travels as it is to wherever the tensor is decoded (a worker, a
    Ray replica: numpy arrays cross processes as out-of-band buffers).
    """

    meta: TensorMeta
    payload: np.ndarray

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Compact across processes: the descriptor's values, not its class and field names.
        m = self.meta
        values = (m.name, m.dtype, m.shape, m.codec, m.nbytes, m.scale, m.zero_point)
        return _rebuild_encoded, (values, self.payload)

    @property
    def nbytes(self) -> int:
        """Bytes of the payload as sent (compressed, quantized)."""
        return int(self.payload.nbytes)

    def decode(self, limits: Limits = _DEFAULT_LIMITS, index: int | None = None) -> np.ndarray:
        """The array, decoded straight into its declared dtype.

        Raises:
            PayloadError: the payload disagrees with the descriptor.
            DecompressionError: a compressed payload is corrupt or expands wrongly.
        """
        return decode_tensor(self.meta, self.payload, limits, index=index)


def _rebuild_encoded(values: tuple[Any, ...], payload: np.ndarray) -> EncodedTensor:
    return EncodedTensor(TensorMeta(*values), payload)


def encoded_tensors(message: Message, frames: Sequence[object]) -> tuple[EncodedTensor, ...]:
    """The tensors of a message whose header :func:`decode_header` returned, undecoded.

    Only what costs nothing is checked here: each payload's length against its
    descriptor. Decompression and dequantization happen where the tensor is
    used (:meth:`EncodedTensor.decode`).

    Raises:
        PayloadError: a frame's length disagrees with its descriptor.
    """
    return tuple(
        EncodedTensor(meta, np.frombuffer(sized_view(meta, frames[i + 1], i), dtype=np.uint8))
        for i, meta in enumerate(message.tensors)
    )


def _decode_header(frame: object, n_frames: int, limits: Limits) -> Message:
    data = byte_view(frame, "header frame", HeaderError)
    if len(data) > limits.max_header_bytes:
        raise HeaderError(
            f"header frame has {len(data)} bytes, over max_header_bytes={limits.max_header_bytes}"
        )
    header = _unpack(data, limits)
    if not isinstance(header, dict):
        raise HeaderError(f"header is a msgpack {type(header).__name__}, expected a map")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise HeaderError(
            f"unsupported protocol version got={version!r} supported={PROTOCOL_VERSION}"
        )
    missing = sorted(_HEADER_KEYS - header.keys())
    unknown = sorted(map(repr, header.keys() - _HEADER_KEYS))
    if missing or unknown:
        raise HeaderError(f"header keys missing={missing} unexpected=[{', '.join(unknown)}]")
    _check_kind(header["k"])
    _check_request_id(header["id"])
    meta = _check_meta_map(header["m"], limits)
    descriptors = header["t"]
    if not isinstance(descriptors, list):
        raise HeaderError(f"header 't' is a {type(descriptors).__name__}, expected a list")
    if len(descriptors) != n_frames - 1:
        raise PayloadError(
            f"frame count does not match the header: frames={n_frames} "
            f"tensors={len(descriptors)} (expected frames = tensors + 1)"
        )
    if len(descriptors) > limits.max_tensors:
        raise HeaderError(f"tensors={len(descriptors)} exceeds max_tensors={limits.max_tensors}")
    tensors = tuple(TensorMeta.from_dict(d, limits, index=i) for i, d in enumerate(descriptors))
    seen: dict[str, int] = {}
    for i, t in enumerate(tensors):
        if t.name in seen:
            raise HeaderError(
                f"tensor {t.name!r} (index {i}): duplicate name, first at index {seen[t.name]}"
            )
        seen[t.name] = i
    return Message(header["k"], header["id"], MappingProxyType(meta), tensors)


def _unpack(data: memoryview, limits: Limits) -> object:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=max(limits.max_string_len, MAX_META_KEY_LEN),
            max_bin_len=0,
            max_ext_len=0,
            max_array_len=max(limits.max_tensors, limits.max_ndim),
            max_map_len=max(limits.max_meta_entries, _DESCRIPTOR_MAX_KEYS, _HEADER_MAX_KEYS),
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise HeaderError(
            f"header frame of {len(data)} bytes is not valid msgpack within limits: {exc}"
        ) from exc


def _check_kind(kind: object) -> None:
    if kind not in KINDS or not isinstance(kind, str):
        raise HeaderError(f"unknown message kind={kind!r}; known kinds: {', '.join(KINDS)}")


def _check_request_id(request_id: object) -> None:
    if (
        not isinstance(request_id, int)
        or isinstance(request_id, bool)
        or not 0 <= request_id < _MAX_REQUEST_ID
    ):
        raise HeaderError(f"request_id={request_id!r} must be an int in [0, 2**64)")


def _check_meta_map(meta: object, limits: Limits | None) -> dict[str, MetaValue]:
    """Check a meta map's keys and scalar values; ``limits`` None skips the entry limit."""
    if not isinstance(meta, Mapping):
        raise HeaderError(f"meta is a {type(meta).__name__}, expected a map")
    if limits is not None and len(meta) > limits.max_meta_entries:
        raise HeaderError(
            f"meta has entries={len(meta)}, over max_meta_entries={limits.max_meta_entries}"
        )
    for key, value in meta.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_META_KEY_LEN:
            raise HeaderError(
                f"meta key {key!r} must be a string of 1..{MAX_META_KEY_LEN} characters"
            )
        if isinstance(value, int) and not -(2**63) <= value < _MAX_REQUEST_ID:
            raise HeaderError(f"meta {key!r}: int value={value} does not fit in 64 bits")
        if value is not None and not isinstance(value, (str, int, float)):
            raise HeaderError(
                f"meta {key!r}: value of type {type(value).__name__} is not a "
                "str, int, float, bool or None"
            )
    return dict(meta)


def error_code(exc: WireError) -> str:
    """A short stable label for a rejected message, for metrics.

    Returns:
        ``"decompression"``, ``"payload"``, ``"header"``, or ``"wire"`` for a
        plain ``WireError``.
    """
    for error, code in (
        (DecompressionError, "decompression"),
        (PayloadError, "payload"),
        (HeaderError, "header"),
    ):
        if isinstance(exc, error):
            return code
    return "wire"
