"""A typed message to frames and back: ``encode`` and ``decode``, the format's one way in and out.

Frame 0 is the header (:mod:`wire.header`); frame ``i + 1`` carries tensor
``i``. The frames go to ``socket.send_multipart(frames, copy=False)`` as they
are. What a kind carries besides its scalar fields:

- ``infer`` and ``result``: any tensors (``tensors``);
- ``chunk`` and ``report``: one ``uint8`` vector, the tensor ``data`` or ``json``;
- every other kind: none.

``decode`` treats every frame as hostile (header, descriptors, fields, then
payloads); ``decode(..., encoded=True)`` reads an ``infer`` or ``result``'s
tensors only as far as their lengths (``EncodedTensor``) and decompresses no
``chunk`` or ``report`` payload, so that the cloud's ingress admits a request
without decompressing or dequantizing anything.

A receiver that must answer before the body is read decodes in two steps:
``read_envelope`` checks the header alone (the kind and request id it can
trust, the tensors declared), ``decode_body`` the rest; ``decode`` is both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesplit.errors import DecompressionError, HeaderError, PayloadError, WireError
from wire.codecs import decode_tensor, encode_tensor, sized_view
from wire.descriptor import TensorMeta, tensor_where
from wire.fields import FieldError, FieldSpec, field_specs, read_fields, write_fields
from wire.frame import byte_view
from wire.header import KINDS, Header, MetaValue, check_unique, pack_header, read_header
from wire.limits import DEFAULT_LIMITS, Limits
from wire.messages import (
    MESSAGE_TYPES,
    AnyMessage,
    Busy,
    Chunk,
    FleetReport,
    InferRequest,
    Result,
)
from wire.registry import parse_codec
from wire.tensors import EncodedTensor, Tensor

Frames = list[bytes | memoryview]
"""What ``encode`` returns: the header frame, then one payload frame per tensor."""

Check = Callable[[AnyMessage], None]
"""Called by ``decode_body`` with the message before its payloads are checked."""


@dataclass(frozen=True, eq=False)  # holds frames: no field-by-field equality
class Envelope:
    """A received message whose header is checked and whose body is not read yet.

    What ``read_envelope`` returns and ``decode_body`` reads on: a receiver
    routes or refuses by ``kind`` and answers errors with ``request_id``
    before any field or payload is read.

    Attributes:
        kind: one of ``KINDS``.
        request_id: the sender's id in [0, 2**64), checked.
        tensors: the descriptors of the tensors declared (checked against the
            limits), one per payload frame.
    """

    kind: str
    request_id: int
    tensors: tuple[TensorMeta, ...]
    _header: Header = field(repr=False)
    _frames: Sequence[object] = field(repr=False)


_BY_KIND: dict[str, type[AnyMessage]] = {cls.kind: cls for cls in MESSAGE_TYPES}
_KIND_OF: dict[type, str] = {cls: kind for kind, cls in _BY_KIND.items()}
assert tuple(_BY_KIND) == KINDS, "one message type per kind, in the order of KINDS"

# Where each kind keeps what travels in frames: a tuple of tensors, or the bytes of
# one uint8 tensor of that name; kinds not named here carry none.
_TENSORS = "tensors"
_BYTES_FIELD: dict[str, str] = {Chunk.kind: "data", FleetReport.kind: "json"}
_PAYLOAD_FIELD: dict[str, str] = {"infer": _TENSORS, "result": _TENSORS, **_BYTES_FIELD}
# Written into the meta of every message of the kind, before its fields (never read).
_FIXED: dict[str, dict[str, MetaValue]] = {Busy.kind: {"code": Busy.code}}

_SPECS: dict[str, tuple[FieldSpec, ...]] = {
    kind: field_specs(cls, frozenset({"request_id", _PAYLOAD_FIELD.get(kind, "")}))
    for kind, cls in _BY_KIND.items()
}


def encode(message: AnyMessage, codec: str = "raw") -> Frames:
    """Encode a message as frames for ``send_multipart(frames, copy=False)``.

    Arrays (:class:`Tensor`) are encoded with ``codec``; an :class:`EncodedTensor`
    goes as it is (its own codec). ``raw`` payloads of C-contiguous
    little-endian arrays are views of the arrays: leave them unmodified until
    the frames are sent.

    Raises:
        HeaderError: not a message of the format, a bad request_id, or two
            tensors of one name.
        FieldError: a field of the wrong type or out of range (names the field).
        PayloadError: an unknown codec or an array that cannot be encoded.
    """
    kind = _kind_of(message)
    meta = dict(_FIXED.get(kind, {}))
    meta.update(write_fields(kind, _SPECS[kind], message))
    parsed = parse_codec(codec)
    descriptors: list[TensorMeta] = []
    frames: Frames = [b""]
    for tensor in _outgoing(message):
        if isinstance(tensor, EncodedTensor):
            descriptors.append(tensor.meta)
            frames.append(tensor.payload.data)
        else:
            tensor_meta, payload = encode_tensor(tensor.name, tensor.array, parsed)
            descriptors.append(tensor_meta)
            frames.append(payload)
    check_unique([d.name for d in descriptors])
    frames[0] = pack_header(kind, message.request_id, meta, descriptors)
    return frames


def decode(
    frames: Sequence[object], limits: Limits = DEFAULT_LIMITS, *, encoded: bool = False
) -> AnyMessage:
    """Decode and check received frames as the message of their kind.

    ``decode_body(read_envelope(frames, limits), limits, encoded=encoded)``.

    Args:
        frames: the header frame then the payload frames: ``bytes``,
            ``memoryview``, zmq ``Frame`` (anything with ``.buffer``) or any
            object with the buffer protocol.
        limits: the receiver's limits.
        encoded: keep an ``infer`` or ``result``'s tensors as received
            (:class:`EncodedTensor`, each payload's length checked, nothing
            decoded) and decompress no ``chunk`` or ``report`` payload
            (one not sent ``raw`` is refused); otherwise they are decoded
            (:class:`Tensor`; uncompressed ``raw`` arrays are read-only views
            of their frames).

    Raises:
        HeaderError: the header frame is oversized, not msgpack, or malformed.
        FieldError: a field of the wrong type or out of range (names the field),
            or tensors the kind does not carry.
        PayloadError: a tensor's descriptor or frame is invalid.
        DecompressionError: a compressed frame is corrupt or expands wrongly.
    """
    return decode_body(read_envelope(frames, limits), limits, encoded=encoded)


def read_envelope(frames: Sequence[object], limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Check the header of received frames (kind, request id, descriptors); read no body.

    No field is read and no payload touched: a receiver can refuse a kind it
    does not serve, and answer any later error with the request's id, at the
    cost of the header frame alone.

    Raises:
        HeaderError: the header frame is oversized, not msgpack, or malformed.
        PayloadError: a descriptor is invalid, the sizes exceed ``limits``, or
            the frame count disagrees with the descriptors.
    """
    header = read_header(frames, limits)
    return Envelope(header.kind, header.request_id, header.tensors, header, frames)


def decode_body(
    envelope: Envelope,
    limits: Limits = DEFAULT_LIMITS,
    *,
    encoded: bool = False,
    check: Check | None = None,
) -> AnyMessage:
    """The message of a checked header: its fields, then its payloads (as :func:`decode`).

    Args:
        envelope: what :func:`read_envelope` returned for the frames.
        limits: the receiver's limits (those the envelope was read with).
        encoded: as :func:`decode`.
        check: with ``encoded``, called with the message once its fields are
            read and before any payload is checked (an ``infer`` or
            ``result``'s tensors are then :class:`EncodedTensor` views of their
            frames, their lengths not yet checked); without, once decoded.
            What it raises propagates: a receiver refuses what it cannot serve
            before a bad payload is reported.

    Raises:
        As :func:`decode`, and whatever ``check`` raises.
    """
    header, frames = envelope._header, envelope._frames
    kind = header.kind
    values: dict[str, Any] = read_fields(kind, _SPECS[kind], header.meta)
    where = _PAYLOAD_FIELD.get(kind)
    if where == _TENSORS and encoded:
        values[_TENSORS] = tuple(
            EncodedTensor(meta, np.frombuffer(_view(meta, frames[i + 1], i), dtype=np.uint8))
            for i, meta in enumerate(header.tensors)
        )
        message = _BY_KIND[kind](header.request_id, **values)
        if check is not None:
            check(message)
        for i, meta in enumerate(header.tensors):
            sized_view(meta, frames[i + 1], i)
        return message
    if where == _TENSORS:
        values[_TENSORS] = _tensors(header, frames, limits)
    elif where is not None:
        values[where] = _bytes(header, frames, limits, where, encoded)
    elif header.tensors:
        raise FieldError(kind, _TENSORS, f"a {kind} carries no tensors, got {len(header.tensors)}")
    message = _BY_KIND[kind](header.request_id, **values)
    if check is not None:
        check(message)
    return message


def _kind_of(message: object) -> str:
    kind = _KIND_OF.get(type(message))
    if kind is None:
        name = type(message).__name__
        raise FieldError(name, "kind", f"{name} is not a message type of wire (wire.KINDS)")
    return kind


def _outgoing(message: AnyMessage) -> tuple[Tensor | EncodedTensor, ...]:
    """The tensors ``message`` sends, each checked to be a tensor."""
    if isinstance(message, Chunk | FleetReport):
        name, data = (
            ("data", message.data) if isinstance(message, Chunk) else ("json", message.json)
        )
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FieldError(message.kind, name, f"must be bytes, got {type(data).__name__}")
        return (Tensor(name, np.frombuffer(data, dtype=np.uint8)),)
    if not isinstance(message, InferRequest | Result):
        return ()
    tensors: object = message.tensors
    if not isinstance(tensors, tuple | list):
        raise FieldError(
            message.kind, _TENSORS, f"must be a tuple of tensors, got {type(tensors).__name__}"
        )
    for i, tensor in enumerate(tensors):
        if not isinstance(tensor, Tensor | EncodedTensor):
            raise FieldError(
                message.kind,
                _TENSORS,
                f"item {i} is a {type(tensor).__name__}, not a Tensor or EncodedTensor",
            )
    return tuple(tensors)


def _view(meta: TensorMeta, frame: object, index: int) -> memoryview:
    """A byte view of a payload frame, its length not checked (``sized_view`` does)."""
    return byte_view(frame, tensor_where(meta.name, index))


def _tensors(header: Header, frames: Sequence[object], limits: Limits) -> tuple[Tensor, ...]:
    return tuple(
        Tensor(meta.name, decode_tensor(meta, frames[i + 1], limits, index=i))
        for i, meta in enumerate(header.tensors)
    )


def _bytes(
    header: Header, frames: Sequence[object], limits: Limits, name: str, encoded: bool
) -> bytes:
    """The bytes of the one ``uint8`` vector named ``name`` that ``header`` declares.

    ``encoded``: nothing is decompressed (a payload not sent ``raw`` is refused).
    """
    declared = [(t.name, t.dtype, len(t.shape)) for t in header.tensors]
    if declared != [(name, "uint8", 1)]:
        raise FieldError(
            header.kind,
            name,
            f"a {header.kind} carries one uint8 vector named {name!r}, got "
            f"{[f'{n} {d} ndim={k}' for n, d, k in declared]}",
        )
    meta = header.tensors[0]
    if encoded:
        if meta.codec != "raw":
            raise PayloadError(
                f"{header.kind} {name!r}: codec={meta.codec!r} is not decompressed when "
                "decoding with encoded=True (only raw)"
            )
        return bytes(sized_view(meta, frames[1], 0))
    return decode_tensor(meta, frames[1], limits, index=0).tobytes()


def error_code(exc: WireError) -> str:
    """A short stable label for a rejected message, for metrics and ``ErrorReply.code``.

    Returns:
        ``"decompression"``, ``"payload"``, ``"header"`` (a :class:`FieldError`
        too), or ``"wire"`` for a plain ``WireError``.
    """
    for error, code in (
        (DecompressionError, "decompression"),
        (PayloadError, "payload"),
        (HeaderError, "header"),
    ):
        if isinstance(exc, error):
            return code
    return "wire"
