"""Typed messages: every kind round-trips, every field is checked both ways, bytes as before."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wire
from edgesplit.errors import HeaderError, PayloadError, WireError
from tests.wire.frames import header_of, raw_frames, with_header

ACT = np.maximum(np.random.default_rng(0).standard_normal((2, 8, 4, 4)), 0).astype(np.float32)
MASK = np.random.default_rng(1).random((2, 1, 4, 4)) > 0.5
LOGITS = np.random.default_rng(2).standard_normal((2, 10)).astype(np.float32)

SAMPLES: list[wire.AnyMessage] = [
    wire.InferRequest(2**64 - 1, "b" * 64, "c03", (wire.Tensor("act", ACT),)),
    wire.Result(7, (wire.Tensor("logits", LOGITS),), 0.25, 0.5, "c03", 4),
    wire.Busy(8, queue_s=0.125, depth=3, message="queue full"),
    wire.ErrorReply(9, code="shape", message="batch=0 outside 1..16"),
    wire.Ping(0),
    wire.Pong(10, "a" * 64, "a" * 64 + "," + "b" * 64, "onnxruntime", 0.01),
    wire.Hello(11, "gate-1", "a" * 64, "1", "probation", 500, 2, 3.0, None, "b" * 64, "ok"),
    wire.Welcome(12, "b" * 64, "2", "B", "c" * 64, 1_000_000, 262_144, "https://x/r.tar", None),
    wire.Fetch(13, "b" * 64, 262_144, 4096, "gate-1"),
    wire.Chunk(14, 262_144, bytes(range(256)) * 3),
    wire.FleetQuery(15, "status", None, "gate-1", 500),
    wire.FleetReport(16, b'{"edges": []}'),
]


def _fields(message: wire.AnyMessage) -> dict[str, Any]:
    """A message's fields, arrays by name (messages holding arrays compare by identity)."""
    out = {}
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if f.name == "tensors":
            value = {t.name: np.asarray(t.array).tolist() for t in value}
        out[f.name] = value
    return out


def with_meta(frames: list[Any], **meta: Any) -> list[Any]:
    return with_header(frames, lambda h: h["m"].update(meta))


# --- round trips ------------------------------------------------------------------------


def test_one_type_per_kind_in_the_order_of_kinds() -> None:
    assert tuple(cls.kind for cls in wire.MESSAGE_TYPES) == wire.KINDS
    assert [type(m) for m in SAMPLES] == list(wire.MESSAGE_TYPES)


@pytest.mark.parametrize("message", SAMPLES, ids=[m.kind for m in SAMPLES])
def test_every_kind_round_trips(message: wire.AnyMessage) -> None:
    again = wire.decode(wire.encode(message))
    assert type(again) is type(message)
    assert _fields(again) == _fields(message)


@pytest.mark.parametrize("message", SAMPLES, ids=[m.kind for m in SAMPLES])
def test_a_message_is_frozen(message: wire.AnyMessage) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.request_id = 1  # type: ignore[misc]


@pytest.mark.parametrize("cls", wire.MESSAGE_TYPES, ids=[c.kind for c in wire.MESSAGE_TYPES])
def test_a_message_of_defaults_round_trips(cls: type[wire.AnyMessage]) -> None:
    message = cls(3)
    assert _fields(wire.decode(wire.encode(message))) == _fields(message)


@pytest.mark.parametrize("codec", wire.SUPPORTED_CODECS)
def test_a_request_with_several_tensors_round_trips(codec: str) -> None:
    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    tensors = wire.tensors_of({"act": ACT, "mask": MASK, "ids": ids})
    request = wire.InferRequest(4, "b" * 64, "c05", tensors)
    frames = wire.encode(request, codec)
    assert len(frames) == 4
    assert [t["n"] for t in header_of(frames)["t"]] == ["act", "mask", "ids"]
    got = wire.decode(frames)
    assert isinstance(got, wire.InferRequest)
    arrays = got.arrays()
    assert list(arrays) == ["act", "mask", "ids"]
    np.testing.assert_array_equal(arrays["mask"], MASK)
    np.testing.assert_array_equal(arrays["ids"], ids)
    tolerance = {"raw": 0.0, "fp16": 2**-11 * float(ACT.max()), "int8": float(ACT.max()) / 510}
    quantizer = wire.parse_codec(codec).quantizer
    assert np.max(np.abs(arrays["act"] - ACT)) <= tolerance[quantizer] * 1.001


def test_encoded_tensors_are_kept_as_received_and_sent_as_they_are() -> None:
    request = wire.InferRequest(5, "b" * 64, "c05", wire.tensors_of({"act": ACT, "mask": MASK}))
    frames = wire.encode(request, "int8+lz4")
    kept = wire.decode(frames, encoded=True)
    assert isinstance(kept, wire.InferRequest)
    assert all(isinstance(t, wire.EncodedTensor) for t in kept.tensors)
    assert [(t.name, t.dtype, t.shape) for t in kept.tensors] == [
        ("act", "float32", ACT.shape),
        ("mask", "bool", MASK.shape),
    ]
    # Forwarded under another id: the same payloads, not encoded again.
    forwarded = wire.encode(dataclasses.replace(kept, request_id=6), "raw")
    assert [bytes(f) for f in forwarded[1:]] == [bytes(f) for f in frames[1:]]
    np.testing.assert_array_equal(kept.arrays()["mask"], MASK)


def test_an_encoded_payload_of_another_length_is_refused_before_decoding() -> None:
    frames = wire.encode(wire.InferRequest(5, "b", "c", (wire.Tensor("act", ACT),)), "int8+lz4")
    with pytest.raises(PayloadError, match=r"tensor 'act' \(index 0\): payload has 3 bytes"):
        wire.decode([frames[0], b"abc"], encoded=True)


def test_encoded_once_and_sent_under_new_ids() -> None:
    once = wire.EncodedTensor.from_array("act", ACT, "fp16+zstd")
    first = wire.encode(wire.InferRequest(1, "b", "c", (once,)))
    second = wire.encode(wire.InferRequest(2, "b", "c", (once,)))
    assert bytes(first[1]) == bytes(second[1]) and header_of(second)["id"] == 2


def test_the_bytes_are_those_of_the_documented_header() -> None:
    """``{"v", "k", "id", "m", "t"}`` in that order, fields by name in declaration order.

    Every peer that reads the protocol-1 header (an older edge, a cloud) reads these bytes.
    """
    assert bytes(wire.encode(wire.Ping(1))[0]) == bytes.fromhex(
        "85a17601a16ba470696e67a2696401a16d80a17490"  # {"v":1,"k":"ping","id":1,"m":{},"t":[]}
    )
    typed = wire.encode(wire.InferRequest(3, "b" * 64, "c03", (wire.Tensor("act", ACT),)), "int8")
    by_hand = raw_frames("infer", 3, {"bundle": "b" * 64, "cut": "c03"}, {"act": ACT}, "int8")
    assert [bytes(f) for f in typed] == [bytes(f) for f in by_hand]
    meta = {"queue_s": 0.5, "compute_s": 0.25, "cut": "c03", "batch": 2}
    by_hand = raw_frames("result", 4, meta, {"logits": LOGITS})
    typed = wire.encode(wire.Result(4, (wire.Tensor("logits", LOGITS),), 0.5, 0.25, "c03", 2))
    assert [bytes(f) for f in typed] == [bytes(f) for f in by_hand]
    busy = {"code": "busy", "queue_s": 0.5, "depth": 3, "message": "m"}
    typed = wire.encode(wire.Busy(5, 0.5, 3, "m"))
    assert bytes(typed[0]) == bytes(raw_frames("busy", 5, busy)[0])
    assert header_of(typed)["m"]["code"] == "busy"  # what a reader of the map finds


def test_missing_fields_take_their_defaults_and_unknown_keys_are_ignored() -> None:
    frames = raw_frames("hello", 2, {"name": "e", "future": 1, "p50_ms": None})
    hello = wire.decode(frames)
    assert hello == wire.Hello(2, name="e")
    assert wire.decode(raw_frames("fleet", 1)) == wire.FleetQuery(1, op="status")


def test_busy_and_error_replies_both_say_their_code_and_message() -> None:
    for reply in (wire.Busy(1, message="m"), wire.ErrorReply(1, "shape", "m")):
        got = wire.decode(wire.encode(reply))
        assert isinstance(got, wire.Busy | wire.ErrorReply)
        assert (got.code, got.message) == (reply.code, "m")


def test_a_pong_says_which_bundles_it_serves() -> None:
    assert wire.Pong(1, "a", "a,b").served == ("a", "b")
    assert wire.Pong(1, "a").served == ("a",)


def test_an_int_is_taken_where_a_float_is_declared() -> None:
    frames = raw_frames("result", 1, {"queue_s": 2, "compute_s": 0})
    result = wire.decode(frames)
    assert isinstance(result, wire.Result)
    assert result.queue_s == 2.0 and isinstance(result.queue_s, float)


# --- refusals ---------------------------------------------------------------------------


def test_an_unknown_kind_is_refused() -> None:
    header = header_of(wire.encode(wire.Ping(1)))
    header["k"] = "train"
    with pytest.raises(HeaderError, match="unknown message kind='train'; known kinds: infer"):
        wire.decode([msgpack.packb(header)])


def test_an_object_that_is_no_message_is_not_encoded() -> None:
    @dataclasses.dataclass(frozen=True)
    class Impostor:
        kind = "ping"
        request_id: int = 1

    with pytest.raises(wire.FieldError, match="Impostor is not a message type"):
        wire.encode(Impostor())  # type: ignore[arg-type]


BAD_FIELDS: list[tuple[str, str, object, str]] = [
    # (kind, field, value, phrase)
    ("infer", "bundle", 5, "must be a str, got int 5"),
    ("infer", "cut", 1.5, "must be a str, got float"),
    ("result", "queue_s", "0.1", "must be a float, got str"),
    ("result", "queue_s", -0.5, "must be >= 0, got -0.5"),
    ("result", "compute_s", math.inf, "must be finite, got inf"),
    ("result", "compute_s", math.nan, "must be finite, got nan"),
    ("result", "batch", 0, "must be >= 1, got 0"),
    ("result", "batch", 1.0, "must be an int, got float"),
    ("result", "cut", True, "must be a str, got bool"),
    ("busy", "queue_s", -1, "must be >= 0"),
    ("busy", "depth", -1, "must be >= 0"),
    ("busy", "message", 3, "must be a str"),
    ("error", "code", 404, "must be a str, got int 404"),
    ("error", "message", False, "must be a str, got bool"),
    ("pong", "bundle", 1, "must be a str"),
    ("pong", "bundles", 2.0, "must be a str"),
    ("pong", "backend", True, "must be a str"),
    ("pong", "queue_s", math.nan, "must be finite"),
    ("hello", "name", 7, "must be a str"),
    ("hello", "bundle", 7, "must be a str"),
    ("hello", "version", 7, "must be a str"),
    ("hello", "state", 7, "must be a str"),
    ("hello", "requests", -3, "must be >= 0"),
    ("hello", "requests", True, "must be an int, got bool"),
    ("hello", "requests", "9", "must be an int, got str"),
    ("hello", "errors", -1, "must be >= 0"),
    ("hello", "p50_ms", -4.0, "must be >= 0"),
    ("hello", "p95_ms", math.inf, "must be finite"),
    ("hello", "p50_ms", "3", "must be a float, got str"),
    ("hello", "candidate", 1, "must be a str"),
    ("hello", "note", 1, "must be a str"),
    ("welcome", "assigned", 1, "must be a str"),
    ("welcome", "version", 1, "must be a str"),
    ("welcome", "group", 1, "must be a str"),
    ("welcome", "sha256", 1, "must be a str"),
    ("welcome", "size", -1, "must be >= 0"),
    ("welcome", "size", "10", "must be an int"),
    ("welcome", "chunk", 0, "must be >= 1"),
    ("welcome", "url", 1, "must be a str"),
    ("welcome", "note", 1, "must be a str"),
    ("fetch", "bundle", 1, "must be a str"),
    ("fetch", "offset", -1, "must be >= 0"),
    ("fetch", "offset", True, "must be an int, got bool"),
    ("fetch", "length", 2.5, "must be an int"),
    ("fetch", "name", 1, "must be a str"),
    ("chunk", "offset", -1, "must be >= 0"),
    ("fleet", "op", 1, "must be a str"),
    ("fleet", "fraction", "half", "must be a float"),
    ("fleet", "after", 5, "must be a str"),
    ("fleet", "limit", 1.5, "must be an int"),
]


@pytest.mark.parametrize(("kind", "field", "value", "phrase"), BAD_FIELDS)
def test_a_received_field_of_the_wrong_type_or_range_is_refused_by_name(
    kind: str, field: str, value: object, phrase: str
) -> None:
    cls = next(c for c in wire.MESSAGE_TYPES if c.kind == kind)
    frames = with_meta(wire.encode(next(m for m in SAMPLES if type(m) is cls)), **{field: value})
    with pytest.raises(wire.FieldError) as info:
        wire.decode(frames)
    assert (info.value.kind, info.value.field) == (kind, field)
    assert f"{kind} field {field!r}: {phrase}" in str(info.value)
    assert wire.error_code(info.value) == "header"


@pytest.mark.parametrize(("kind", "field", "value", "phrase"), BAD_FIELDS)
def test_a_field_of_the_wrong_type_or_range_is_not_sent(
    kind: str, field: str, value: object, phrase: str
) -> None:
    sample = next(m for m in SAMPLES if m.kind == kind)
    with pytest.raises(wire.FieldError, match=f"{kind} field {field!r}: "):
        wire.encode(dataclasses.replace(sample, **{field: value}))


def test_a_request_id_out_of_range_is_refused_both_ways() -> None:
    for bad in (-1, 2**64, True):
        with pytest.raises(HeaderError, match="request_id"):
            wire.encode(wire.Ping(bad))  # type: ignore[arg-type]
    header = header_of(wire.encode(wire.Ping(1)))
    header["id"] = -1
    with pytest.raises(HeaderError, match="request_id=-1"):
        wire.decode([msgpack.packb(header)])


def test_tensors_on_a_kind_that_carries_none_are_refused() -> None:
    frames = raw_frames("hello", 1, {"name": "e"}, {"x": np.zeros(2)})
    with pytest.raises(wire.FieldError, match="hello field 'tensors': a hello carries no tensors"):
        wire.decode(frames)


@pytest.mark.parametrize(
    "arrays",
    [
        {},
        {"data": np.zeros(4, np.float32)},
        {"data": np.zeros((2, 2), np.uint8)},
        {"bytes": np.zeros(4, np.uint8)},
        {"data": np.zeros(4, np.uint8), "more": np.zeros(4, np.uint8)},
    ],
)
def test_a_chunk_is_one_uint8_vector_named_data(arrays: dict[str, np.ndarray]) -> None:
    frames = raw_frames("chunk", 1, {"offset": 0}, arrays)
    with pytest.raises(wire.FieldError, match="chunk field 'data': a chunk carries one uint8"):
        wire.decode(frames)


def test_a_sent_tensor_must_be_a_tensor_and_names_unique() -> None:
    with pytest.raises(wire.FieldError, match="infer field 'tensors': item 0 is a ndarray"):
        wire.encode(wire.InferRequest(1, "b", "c", (ACT,)))  # type: ignore[arg-type]
    twice = (wire.Tensor("act", ACT), wire.Tensor("act", ACT))
    with pytest.raises(HeaderError, match="duplicate name"):
        wire.encode(wire.InferRequest(1, "b", "c", twice))
    with pytest.raises(wire.FieldError, match="chunk field 'data': must be bytes"):
        wire.encode(wire.Chunk(1, 0, "text"))  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="unknown codec 'int4'"):
        wire.encode(wire.InferRequest(1, "b", "c", (wire.Tensor("act", ACT),)), "int4")


# --- hostile bytes ----------------------------------------------------------------------

VALID = [[bytes(f) for f in wire.encode(m, "int8+lz4")] for m in SAMPLES]


@settings(max_examples=500, deadline=None)
@given(header=st.binary(max_size=300), payloads=st.lists(st.binary(max_size=64), max_size=3))
def test_property_random_bytes_raise_only_wire_errors(header: bytes, payloads: list[bytes]) -> None:
    for encoded in (False, True):
        try:
            wire.decode([header, *payloads], encoded=encoded)
        except WireError:
            pass


@st.composite
def damaged(draw: st.DrawFn) -> list[bytes]:
    frames = list(draw(st.sampled_from(VALID)))
    index = draw(st.integers(0, len(frames) - 1))
    frame = bytearray(frames[index])
    how = draw(st.sampled_from(["truncate", "extend", "flip"]))
    if how == "truncate":
        del frame[draw(st.integers(0, max(len(frame) - 1, 0))) :]
    elif how == "extend":
        frame += draw(st.binary(min_size=1, max_size=16))
    elif frame:
        frame[draw(st.integers(0, len(frame) - 1))] ^= 1 << draw(st.integers(0, 7))
    frames[index] = bytes(frame)
    return frames


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=damaged(), encoded=st.booleans())
def test_property_damaged_frames_decode_as_their_kind_or_raise_wire_errors(
    frames: list[bytes], encoded: bool
) -> None:
    try:
        message = wire.decode(frames, encoded=encoded)
    except WireError:
        return
    assert type(message) in wire.MESSAGE_TYPES
    # Whatever got through holds what its fields declare.
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if f.name in ("queue_s", "compute_s") or (f.name.endswith("_ms") and value is not None):
            assert math.isfinite(value) and value >= 0
        if f.name in ("requests", "errors", "depth", "offset", "length"):
            assert isinstance(value, int) and value >= 0
    if isinstance(message, wire.InferRequest | wire.Result):
        for t in message.tensors:
            assert isinstance(t, wire.EncodedTensor if encoded else wire.Tensor)
