"""The untyped message API and the header format: round trips, and every way a hostile or
broken sender is turned away (the typed messages: ``test_messages.py``)."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgesplit.errors import (
    ConfigError,
    DecompressionError,
    HeaderError,
    PayloadError,
    WireError,
)
from wire import (
    ALLOWED_DTYPES,
    KINDS,
    PROTOCOL_VERSION,
    SUPPORTED_CODECS,
    InferRequest,
    Limits,
    Message,
    decode,
    decode_header,
    decode_message,
    encode_message,
    encoded_tensors,
    error_code,
    parse_codec,
)

ACT = np.maximum(np.random.default_rng(0).standard_normal((1, 16, 32, 32)), 0).astype(np.float32)
Frames = list[Any]


def header_of(frames: Frames) -> dict[str, Any]:
    return msgpack.unpackb(bytes(frames[0]), raw=False)


def with_header(frames: Frames, edit: Callable[[dict[str, Any]], object]) -> Frames:
    """The same message with its header changed by ``edit`` (which mutates in place)."""
    header = header_of(frames)
    edit(header)
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]


DEFAULT_LIMITS = Limits()


def reject(
    frames: Frames, error: type[WireError], phrase: str, limits: Limits = DEFAULT_LIMITS
) -> str:
    with pytest.raises(error) as info:
        decode_message(frames, limits)
    assert phrase in str(info.value), str(info.value)
    return str(info.value)


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("codec", SUPPORTED_CODECS)
def test_round_trip_message(codec: str) -> None:
    arrays = {"act": ACT, "ids": np.arange(6, dtype=np.int64).reshape(2, 3)}
    meta = {"cut": "layer3", "exit": 2, "threshold": 0.8, "final": False, "note": None}
    frames = encode_message("infer", 2**64 - 1, arrays, codec=codec, meta=meta)
    assert len(frames) == 3
    header = header_of(frames)
    assert header["v"] == PROTOCOL_VERSION and header["k"] == "infer"
    assert [t["n"] for t in header["t"]] == ["act", "ids"]

    message, out = decode_message(frames)
    assert message.kind == "infer"
    assert message.request_id == 2**64 - 1
    assert dict(message.meta) == meta
    assert [t.name for t in message.tensors] == ["act", "ids"]
    assert message.tensors[0].codec == codec
    assert list(out) == ["act", "ids"]
    np.testing.assert_array_equal(out["ids"], arrays["ids"])
    tolerance = {"raw": 0.0, "fp16": 2**-11 * float(ACT.max()), "int8": float(ACT.max()) / 510}
    assert np.max(np.abs(out["act"] - ACT)) <= tolerance[parse_codec(codec).quantizer] * 1.001


@pytest.mark.parametrize("kind", KINDS)
def test_message_without_tensors(kind: str) -> None:
    frames = encode_message(kind, 0)
    assert len(frames) == 1
    message, arrays = decode_message(frames)
    assert message == Message(kind, 0, {}, ())
    assert arrays == {}


def test_message_meta_is_read_only_and_message_hashable() -> None:
    message, _ = decode_message(encode_message("error", 5, meta={"reason": "busy"}))
    with pytest.raises(TypeError):
        message.meta["reason"] = "x"  # type: ignore[index]
    assert hash(message) == hash(Message("error", 5, {}, ()))


def test_frames_as_bytearray_memoryview_and_zmq_frame_like() -> None:
    frames = encode_message("result", 9, {"act": ACT}, codec="raw")

    class FrameLike:  # what pyzmq's recv_multipart(copy=False) hands back
        def __init__(self, data: bytes) -> None:
            self.buffer = memoryview(data)

    for wrap in (bytes, bytearray, lambda f: memoryview(bytes(f)), lambda f: FrameLike(bytes(f))):
        _, arrays = decode_message([wrap(f) for f in frames])
        np.testing.assert_array_equal(arrays["act"], ACT)


def test_real_zmq_sockets_zero_copy() -> None:
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        push.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind("inproc://wire-test")
        push.connect("inproc://wire-test")
        push.send_multipart(encode_message("infer", 1, {"act": ACT}, "int8+lz4"), copy=False)
        assert pull.poll(5000)
        received = pull.recv_multipart(copy=False)
        assert isinstance(received[0], zmq.Frame)
        message, arrays = decode_message(received)
        assert message.tensors[0].codec == "int8+lz4"
        assert np.max(np.abs(arrays["act"] - ACT)) <= (message.tensors[0].scale or 0) / 2 * 1.001
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


# --- outgoing validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "phrase"),
    [
        ({"kind": "inference"}, HeaderError, "unknown message kind='inference'"),
        ({"request_id": -1}, HeaderError, "request_id=-1"),
        ({"request_id": 2**64}, HeaderError, "must be an int in [0, 2**64)"),
        ({"request_id": True}, HeaderError, "request_id=True"),
        ({"request_id": 1.0}, HeaderError, "request_id=1.0"),
        ({"meta": {"k" * 65: 1}}, HeaderError, "1..64 characters"),
        ({"meta": {1: 1}}, HeaderError, "meta key 1"),
        ({"meta": {"a": [1]}}, HeaderError, "value of type list"),
        ({"meta": {"a": b"x"}}, HeaderError, "value of type bytes"),
        ({"meta": {"a": 2**64}}, HeaderError, "does not fit in 64 bits"),
        ({"codec": "int4"}, PayloadError, "unknown codec 'int4'"),
        ({"arrays": {"x": np.zeros(2, np.complex128)}}, PayloadError, "cannot be sent"),
    ],
)
def test_encode_rejects(kwargs: dict[str, Any], error: type[WireError], phrase: str) -> None:
    args: dict[str, Any] = {"kind": "infer", "request_id": 1, **kwargs}
    with pytest.raises(error) as info:
        encode_message(**args)
    assert phrase in str(info.value)


# --- incoming validation: one test per way a header can be wrong -------------------------


def valid_frames(codec: str = "raw") -> Frames:
    return encode_message("infer", 7, {"act": ACT}, codec=codec, meta={"cut": "layer3"})


def test_no_frames() -> None:
    reject([], HeaderError, "frames=0")


def test_header_oversize_is_rejected_before_unpacking() -> None:
    huge = msgpack.packb({"v": 1, "pad": "x" * 100_000})
    text = reject([huge], HeaderError, "over max_header_bytes=65536")
    assert f"header frame has {len(huge)} bytes" in text


@pytest.mark.parametrize("version", [0, 2, "1", 1.0, True, None])
def test_wrong_version(version: object) -> None:
    frames = with_header(valid_frames(), lambda h: h.update(v=version))
    reject(frames, HeaderError, f"unsupported protocol version got={version!r} supported=1")


def test_missing_version() -> None:
    frames = with_header(valid_frames(), lambda h: h.pop("v"))
    reject(frames, HeaderError, "got=None supported=1")


def test_unknown_kind() -> None:
    frames = with_header(valid_frames(), lambda h: h.update(k="train"))
    reject(frames, HeaderError, "unknown message kind='train'; known kinds: infer")


def test_unknown_and_missing_header_keys() -> None:
    reject(with_header(valid_frames(), lambda h: h.update(x=1)), HeaderError, "unexpected=['x']")
    reject(with_header(valid_frames(), lambda h: h.pop("m")), HeaderError, "missing=['m']")


def test_bad_request_id_and_meta() -> None:
    reject(with_header(valid_frames(), lambda h: h.update(id=-3)), HeaderError, "request_id=-3")
    reject(with_header(valid_frames(), lambda h: h.update(m=[1])), HeaderError, "meta is a list")
    many = {f"k{i}": i for i in range(33)}
    reject(with_header(valid_frames(), lambda h: h.update(m=many)), HeaderError, "max_map_len")
    few = Limits(max_meta_entries=2)
    three = {"a": 1, "b": 2, "c": 3}
    frames = with_header(valid_frames(), lambda h: h.update(m=three))
    reject(frames, HeaderError, "entries=3, over max_meta_entries=2", few)


def test_header_not_a_map_or_not_msgpack() -> None:
    reject([msgpack.packb([1, 2])], HeaderError, "header is a msgpack list, expected a map")
    reject([b"\xc1"], HeaderError, "not valid msgpack")
    reject([msgpack.packb({"v": 1}) + b"\x00"], HeaderError, "not valid msgpack")
    reject([msgpack.packb({b"v": 1})], HeaderError, "exceeds max_bin_len")  # bin: never valid
    reject([object()], HeaderError, "header frame: expected a bytes-like frame, got object")


def test_header_string_over_max_string_len() -> None:
    frames = with_header(valid_frames(), lambda h: h["m"].update(note="x" * 2000))
    reject(frames, HeaderError, "exceeds max_str_len")


def test_unknown_codec() -> None:
    frames = with_header(valid_frames(), lambda h: h["t"][0].update(c="brotli"))
    reject(frames, PayloadError, "tensor 'act' (index 0): unknown codec 'brotli'; supported")


def test_unknown_dtype() -> None:
    frames = with_header(valid_frames(), lambda h: h["t"][0].update(d="bfloat16"))
    reject(frames, PayloadError, "tensor 'act' (index 0): unknown dtype 'bfloat16'")


def test_negative_dims() -> None:
    frames = with_header(valid_frames(), lambda h: h["t"][0].update(s=[1, 16, -32, -32]))
    reject(frames, PayloadError, "has dim=-32 at axis=2")


def test_ndim_over_limit() -> None:
    frames = with_header(valid_frames(), lambda h: h["t"][0].update(s=[1] * 5, b=4))
    reject(frames, PayloadError, "ndim=5 exceeds max_ndim=4", Limits(max_ndim=4))
    # A list longer than every list the limits allow is refused while unpacking.
    frames = with_header(valid_frames(), lambda h: h["t"][0].update(s=[1] * 17, b=4))
    reject(frames, HeaderError, "17 exceeds max_array_len(16)")


def test_duplicate_names() -> None:
    frames = encode_message("infer", 1, {"a": ACT, "b": ACT})
    frames = with_header(frames, lambda h: h["t"][1].update(n="a"))
    reject(frames, HeaderError, "tensor 'a' (index 1): duplicate name, first at index 0")


@pytest.mark.parametrize("extra", [-1, 1])
def test_frames_tensors_count_mismatch(extra: int) -> None:
    frames = valid_frames()
    frames = frames[:-1] if extra < 0 else [*frames, b"x"]
    reject(frames, PayloadError, f"frames={len(frames)} tensors=1")


def test_int8_missing_scale() -> None:
    frames = with_header(valid_frames("int8"), lambda h: h["t"][0].pop("q"))
    reject(frames, PayloadError, "tensor 'act' (index 0): codec int8 needs a scale (key 'q')")


def test_payload_shorter_than_shape_needs() -> None:
    frames = valid_frames()
    frames[1] = bytes(frames[1])[:1000]
    text = reject(frames, PayloadError, "payload has 1000 bytes")
    assert text == (
        "tensor 'act' (index 0): payload has 1000 bytes, "
        "shape (1, 16, 32, 32) float32 with codec raw needs 65536"
    )


def test_tensor_count_and_size_limits() -> None:
    frames = encode_message("infer", 1, {f"t{i}": np.zeros(1) for i in range(3)})
    reject(frames, HeaderError, "tensors=3 exceeds max_tensors=2", Limits(max_tensors=2))
    # With max_ndim as small, msgpack refuses the list while unpacking: a HeaderError all the same.
    limits = Limits(max_tensors=2, max_ndim=2)
    reject(frames, HeaderError, "3 exceeds max_array_len(2)", limits)
    limits = Limits(max_tensor_bytes=ACT.nbytes - 1)
    reject(valid_frames(), PayloadError, "over max_tensor_bytes=65535", limits)
    two = encode_message("infer", 1, {"a": ACT, "b": ACT}, codec="int8")
    limits = Limits(max_total_bytes=ACT.nbytes * 2 - 1)
    reject(two, PayloadError, "total=131072 bytes, over max_total_bytes=131071", limits)


def test_limits_validate_their_fields() -> None:
    with pytest.raises(ConfigError, match="Limits.max_tensors must be a positive int, got 0"):
        Limits(max_tensors=0)
    with pytest.raises(ConfigError, match="Limits.max_dim"):
        Limits(max_dim=1.5)  # type: ignore[arg-type]


def test_error_code() -> None:
    assert error_code(HeaderError("x")) == "header"
    assert error_code(PayloadError("x")) == "payload"
    assert error_code(DecompressionError("x")) == "decompression"
    assert error_code(WireError("x")) == "wire"


# --- decompression bombs ----------------------------------------------------------------

BOMB_BYTES = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def bombs() -> Iterator[dict[str, bytes]]:
    """200 MB of zeros, compressed every way a sender could."""
    zeros = bytes(BOMB_BYTES)
    found: dict[str, bytes] = {}
    if "raw+lz4" in SUPPORTED_CODECS:
        import lz4.block

        found["lz4"] = lz4.block.compress(zeros, store_size=False)
    if "raw+zstd" in SUPPORTED_CODECS:
        import zstandard

        found["zstd"] = zstandard.compress(zeros)  # declares its 200 MB content size
        params = zstandard.ZstdCompressionParameters.from_level(
            3, window_log=27, write_content_size=False
        )
        found["zstd-unsized"] = zstandard.ZstdCompressor(compression_params=params).compress(zeros)
    del zeros
    yield found


@pytest.mark.parametrize("which", ["lz4", "zstd", "zstd-unsized"])
def test_decompression_bomb_is_rejected_without_allocating(
    bombs: dict[str, bytes], which: str
) -> None:
    if which not in bombs:
        pytest.skip(f"{which} not installed")
    payload = bombs[which]
    compressor = which.split("-")[0]
    header = {
        "v": 1,
        "k": "infer",
        "id": 1,
        "m": {},
        "t": [{"n": "act", "d": "float32", "s": [16], "c": f"raw+{compressor}", "b": len(payload)}],
    }
    frames = [msgpack.packb(header), payload]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(DecompressionError, match="tensor 'act' \\(index 0\\)"):
            decode_message(frames)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"peak={peak} bytes"
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("codec", ["raw+lz4", "raw+zstd", "int8+zstd", "raw"])
def test_huge_declared_shape_is_rejected_before_allocating(codec: str) -> None:
    if codec not in SUPPORTED_CODECS:
        pytest.skip(f"{codec} not installed")
    huge = [1 << 24, 1 << 24, 1 << 24]
    frames = with_header(valid_frames(codec), lambda h: h["t"][0].update(s=huge))
    tracemalloc.start()
    try:
        reject(frames, PayloadError, "over max_tensor_bytes=67108864")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"peak={peak} bytes"


# --- property tests ---------------------------------------------------------------------

LAYOUT_CHANGES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as_is": lambda a: a,
    "transposed": lambda a: a.T,
    "reversed": lambda a: a[::-1] if a.ndim else a,
    "strided": lambda a: a[..., ::2] if a.ndim else a,
    "big_endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
}


@settings(max_examples=300, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(ALLOWED_DTYPES),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    ),
    layout=st.sampled_from(sorted(LAYOUT_CHANGES)),
    codec=st.sampled_from(SUPPORTED_CODECS),
)
def test_property_round_trip(array: np.ndarray, layout: str, codec: str) -> None:
    array = LAYOUT_CHANGES[layout](array)
    quantizer = parse_codec(codec).quantizer
    is_float = array.dtype.kind == "f"
    if quantizer == "int8" and is_float and not np.all(np.isfinite(array)):
        with pytest.raises(PayloadError, match="int8 cannot represent NaN or inf"):
            encode_message("infer", 3, {"x": array}, codec=codec)
        return
    message, out = decode_message(encode_message("infer", 3, {"x": array}, codec=codec))
    got = out["x"]
    assert got.dtype == np.dtype(array.dtype.name) and got.shape == array.shape
    if quantizer == "raw" or not is_float:
        assert got.tobytes() == array.astype(got.dtype).tobytes()  # bit-exact, NaNs included
    elif quantizer == "fp16":
        with np.errstate(over="ignore"):  # beyond +-65504 becomes inf, as documented
            expected = array.astype(np.float16).astype(got.dtype)
        np.testing.assert_array_equal(got, expected)
    else:
        scale = message.tensors[0].scale
        assert scale is not None
        diff = np.abs(got.astype(np.float64) - array.astype(np.float64))
        slack = scale * (0.5 + 1e-4) + np.finfo(array.dtype).eps * np.abs(array.astype(np.float64))
        assert np.all(diff <= slack)


@settings(max_examples=500, deadline=None)
@given(header=st.binary(max_size=300), payloads=st.lists(st.binary(max_size=64), max_size=3))
def test_property_random_header_bytes_raise_only_wire_errors(
    header: bytes, payloads: list[bytes]
) -> None:
    try:
        decode_message([header, *payloads])
    except WireError:
        pass


def _valid_messages() -> list[Frames]:
    rng = np.random.default_rng(3)
    act = np.maximum(rng.standard_normal((2, 4, 5)), 0).astype(np.float32)
    messages = [
        encode_message("infer", 11, {"act": act, "mask": act > 0.5}, codec=codec, meta={"c": 1})
        for codec in SUPPORTED_CODECS
    ]
    messages.append(encode_message("result", 12, {"logits": rng.standard_normal(10)}))
    return [[bytes(f) for f in frames] for frames in messages]


VALID_MESSAGES = _valid_messages()


@st.composite
def damaged_messages(draw: st.DrawFn) -> Frames:
    frames = list(draw(st.sampled_from(VALID_MESSAGES)))
    index = draw(st.integers(0, len(frames) - 1))
    frame = bytearray(frames[index])
    how = draw(st.sampled_from(["truncate", "extend", "flip"]))
    if how == "truncate":
        del frame[draw(st.integers(0, max(len(frame) - 1, 0))) :]
    elif how == "extend":
        frame += draw(st.binary(min_size=1, max_size=16))
    elif frame:
        position = draw(st.integers(0, len(frame) - 1))
        frame[position] ^= 1 << draw(st.integers(0, 7))
    frames[index] = bytes(frame)
    return frames


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=damaged_messages())
def test_property_damaged_frames_decode_as_declared_or_raise_wire_error(frames: Frames) -> None:
    try:
        message, arrays = decode_message(frames)
    except WireError:
        return
    assert list(arrays) == [t.name for t in message.tensors]
    for meta in message.tensors:
        assert arrays[meta.name].shape == meta.shape
        assert arrays[meta.name].dtype == np.dtype(meta.dtype)


def test_the_untyped_reader_keeps_tensors_encoded_as_the_typed_one_does() -> None:
    frames = encode_message("infer", 1, {"act": ACT}, "int8+lz4", {"bundle": "b", "cut": "c"})
    (legacy,) = encoded_tensors(decode_header(frames), frames)
    typed = decode(frames, encoded=True)
    assert isinstance(typed, InferRequest)
    assert legacy.meta == typed.tensors[0].meta  # type: ignore[union-attr]
    np.testing.assert_array_equal(legacy.decode(), typed.arrays()["act"])
