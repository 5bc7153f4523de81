"""The header frame: ``{"v": 1, "k": kind, "id": request_id, "m": meta, "t": [descriptors]}``.

Frame 0 of every message is this msgpack map; frame ``i + 1`` carries tensor
``i``. Reading one treats it as hostile: its length is checked before it is
unpacked, msgpack's own limits bound every string, map and list, and every
descriptor and the total of the declared sizes are checked against ``Limits``
before any tensor is decoded. Every rejection is a ``WireError`` whose message
says what and where as ``key=value``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from edgesplit.errors import HeaderError, PayloadError
from wire.descriptor import DESCRIPTOR_MAX_KEYS, TensorMeta, decoded_nbytes
from wire.frame import byte_view
from wire.limits import Limits

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
"""A value in a header's ``meta`` map: a msgpack scalar."""

MAX_META_KEY_LEN = 64
MAX_REQUEST_ID = 2**64
_HEADER_KEYS = frozenset({"v", "k", "id", "m", "t"})


@dataclass(frozen=True)
class Header:
    """A checked header frame: what was asked or answered, and the tensors declared.

    Attributes:
        kind: one of ``KINDS``.
        request_id: the sender's id in [0, 2**64); an answer echoes its request's.
        meta: the scalar fields by key (checked as scalars; their meaning is the
            kind's, :mod:`wire.messages`).
        tensors: one descriptor per payload frame, in frame order.
    """

    kind: str
    request_id: int
    meta: Mapping[str, MetaValue]
    tensors: tuple[TensorMeta, ...]


def pack_header(
    kind: str,
    request_id: int,
    meta: Mapping[str, MetaValue],
    descriptors: Sequence[TensorMeta],
) -> bytes:
    """The header frame of an outgoing message, its kind, id and meta checked.

    Raises:
        HeaderError: a bad kind, request_id or meta.
    """
    check_kind(kind)
    check_request_id(request_id)
    fields = check_meta_map(meta, limits=None)
    header = {
        "v": PROTOCOL_VERSION,
        "k": kind,
        "id": request_id,
        "m": fields,
        "t": [d.to_dict() for d in descriptors],
    }
    return bytes(msgpack.packb(header, use_bin_type=True))


def read_header(frames: Sequence[object], limits: Limits) -> Header:
    """Decode and check the header of received frames; decode no tensor.

    Every descriptor is checked against ``limits`` (dtype, codec, shape, sizes,
    the total) and the frame count against the descriptors, so that a receiver
    can check the declared tensors against what it serves before paying for
    any decompression.

    Raises:
        HeaderError: the header frame is oversized, not msgpack, or malformed.
        PayloadError: a descriptor is invalid, or the sizes exceed ``limits``.
    """
    if len(frames) == 0:
        raise HeaderError("message has frames=0, expected a header frame")
    header = _read(frames[0], len(frames), limits)
    total = sum(decoded_nbytes(t) for t in header.tensors)
    if total > limits.max_total_bytes:
        raise PayloadError(
            f"tensors decode to total={total} bytes, over max_total_bytes={limits.max_total_bytes}"
        )
    return header


def _read(frame: object, n_frames: int, limits: Limits) -> Header:
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
    if header.keys() != _HEADER_KEYS:
        missing = sorted(_HEADER_KEYS - header.keys())
        unknown = sorted(map(repr, header.keys() - _HEADER_KEYS))
        raise HeaderError(f"header keys missing={missing} unexpected=[{', '.join(unknown)}]")
    check_kind(header["k"])
    check_request_id(header["id"])
    meta = check_meta_map(header["m"], limits)
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
    check_unique([t.name for t in tensors])
    return Header(header["k"], header["id"], meta, tensors)


def check_unique(names: Sequence[str]) -> None:
    """Refuse a message whose tensors share a name.

    Raises:
        HeaderError: naming the duplicate and both indices.
    """
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise HeaderError(
                f"tensor {name!r} (index {i}): duplicate name, first at index {seen[name]}"
            )
        seen[name] = i


def _unpack(data: memoryview, limits: Limits) -> object:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=max(limits.max_string_len, MAX_META_KEY_LEN),
            max_bin_len=0,
            max_ext_len=0,
            # One more than max_tensors: a list of max_tensors + 1 descriptors unpacks, so
            # that _read's check refuses it by name; any longer list is refused here.
            max_array_len=max(limits.max_tensors + 1, limits.max_ndim),
            max_map_len=max(limits.max_meta_entries, DESCRIPTOR_MAX_KEYS, len(_HEADER_KEYS)),
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise HeaderError(
            f"header frame of {len(data)} bytes is not valid msgpack within limits: {exc}"
        ) from exc


def check_kind(kind: object) -> None:
    """Refuse a kind that is not one of ``KINDS``.

    Raises:
        HeaderError: naming the kind and the known ones.
    """
    if kind not in KINDS or not isinstance(kind, str):
        raise HeaderError(f"unknown message kind={kind!r}; known kinds: {', '.join(KINDS)}")


def check_request_id(request_id: object) -> None:
    """Refuse a request id that is not an int in [0, 2**64).

    Raises:
        HeaderError: naming the value.
    """
    if (
        not isinstance(request_id, int)
        or isinstance(request_id, bool)
        or not 0 <= request_id < MAX_REQUEST_ID
    ):
        raise HeaderError(f"request_id={request_id!r} must be an int in [0, 2**64)")


def check_meta_map(meta: object, limits: Limits | None) -> dict[str, Any]:
    """Check a meta map's keys and scalar values; ``limits`` None skips the entry limit.

    Raises:
        HeaderError: not a map, too many entries, a bad key, or a value that is
            not a 64-bit int, float, str, bool or None.
    """
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
        if isinstance(value, int) and not -(2**63) <= value < MAX_REQUEST_ID:
            raise HeaderError(f"meta {key!r}: int value={value} does not fit in 64 bits")
        if value is not None and not isinstance(value, (str, int, float)):
            raise HeaderError(
                f"meta {key!r}: value of type {type(value).__name__} is not a "
                "str, int, float, bool or None"
            )
    return dict(meta)
