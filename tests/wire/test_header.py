"""The header format under ``wire.encode`` / ``wire.decode``: round trips, and every way a
hostile or broken sender is turned away (the messages' fields: ``test_messages.py``)."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterator

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
from tests.wire.frames import Frames, header_of, with_header
from wire import (
    ALLOWED_DTYPES,
    PROTOCOL_VERSION,
    SUPPORTED_CODECS,
    AnyMessage,
    FieldError,
    Hello,
    InferRequest,
    Limits,
    Ping,
    Result,
    Tensor,
    decode,
    encode,
    error_code,
    parse_codec,
    tensors_of,
)

ACT = np.maximum(np.random.default_rng(0).standard_normal((1, 16, 32, 32)), 0).astype(np.float32)
DEFAULT_LIMITS = Limits()


def reject(
    frames: Frames, error: type[WireError], phrase: str, limits: Limits = DEFAULT_LIMITS
) -> str:
    with pytest.raises(error) as info:
        decode(frames, limits)
    assert phrase in str(info.value), str(info.value)
    return str(info.value)


def arrays_of(frames: Frames) -> dict[str, np.ndarray]:
    message = decode(frames)
    assert isinstance(message, InferRequest | Result)
    return message.arrays()


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("codec", SUPPORTED_CODECS)
def test_round_trip_through_the_header(codec: str) -> None:
    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    request = InferRequest(2**64 - 1, "b" * 64, "layer3", tensors_of({"act": ACT, "ids": ids}))
    frames = encode(request, codec)
    assert len(frames) == 3
    header = header_of(frames)
    assert (header["v"], header["k"], header["id"]) == (PROTOCOL_VERSION, "infer", 2**64 - 1)
    assert header["m"] == {"bundle": "b" * 64, "cut": "layer3"}
    assert [t["n"] for t in header["t"]] == ["act", "ids"]
    assert header["t"][0]["c"] == codec

    message = decode(frames)
    assert isinstance(message, InferRequest)
    assert (message.request_id, message.bundle, message.cut) == (2**64 - 1, "b" * 64, "layer3")
    out = message.arrays()
    assert list(out) == ["act", "ids"]
    np.testing.assert_array_equal(out["ids"], ids)
    tolerance = {"raw": 0.0, "fp16": 2**-11 * float(ACT.max()), "int8": float(ACT.max()) / 510}
    assert np.max(np.abs(out["act"] - ACT)) <= tolerance[parse_codec(codec).quantizer] * 1.001


def test_unknown_meta_keys_of_every_scalar_type_are_read_and_ignored() -> None:
    extra = {"exit": 2, "threshold": 0.8, "final": False, "note": None, "tag": "x"}
    message = decode(with_header(valid_frames(), lambda h: h["m"].update(extra)))
    assert isinstance(message, InferRequest)
    assert (message.bundle, message.cut) == ("b", "layer3")


def test_frames_as_bytearray_memoryview_and_zmq_frame_like() -> None:
    frames = encode(Result(9, (Tensor("act", ACT),)), codec="raw")

    class FrameLike:  # what pyzmq's recv_multipart(copy=False) hands back
        def __init__(self, data: bytes) -> None:
            self.buffer = memoryview(data)

    wraps: list[Callable[[bytes], object]] = [bytes, bytearray, memoryview, FrameLike]
    for wrap in wraps:
        result = decode([wrap(bytes(f)) for f in frames])
        assert isinstance(result, Result)
        np.testing.assert_array_equal(result.arrays()["act"], ACT)


def test_real_zmq_sockets_zero_copy() -> None:
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        push.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind("inproc://wire-test")
        push.connect("inproc://wire-test")
        push.send_multipart(encode(InferRequest(1, "b", "c", (Tensor("act", ACT),)), "int8+lz4"))
        assert pull.poll(5000)
        received = pull.recv_multipart(copy=False)
        assert isinstance(received[0], zmq.Frame)
        (descriptor,) = header_of(received)["t"]
        assert descriptor["c"] == "int8+lz4"
        arrays = arrays_of(received)
        assert np.max(np.abs(arrays["act"] - ACT)) <= descriptor["q"] / 2 * 1.001
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


# --- outgoing validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "codec", "error", "phrase"),
    [
        (Ping(-1), "raw", HeaderError, "request_id=-1"),
        (Ping(2**64), "raw", HeaderError, "must be an int in [0, 2**64)"),
        (Ping(True), "raw", HeaderError, "request_id=True"),
        (Ping(1.0), "raw", HeaderError, "request_id=1.0"),  # type: ignore[arg-type]
        (Hello(1, requests=2**64), "raw", FieldError, "does not fit in 64 bits"),
        (InferRequest(1, "b", "c", (Tensor("act", ACT),)), "int4", PayloadError, "codec 'int4'"),
        (InferRequest(1, tensors=ACT), "raw", FieldError, "must be a tuple of tensors"),  # type: ignore[arg-type]
        (
            InferRequest(1, "b", "c", (Tensor("x", np.zeros(2, np.complex128)),)),
            "raw",
            PayloadError,
            "cannot be sent",
        ),
    ],
)
def test_encode_rejects(
    message: AnyMessage, codec: str, error: type[WireError], phrase: str
) -> None:
    with pytest.raises(error) as info:
        encode(message, codec)
    assert phrase in str(info.value)


# --- incoming validation: one test per way a header can be wrong -------------------------


def valid_frames(codec: str = "raw") -> Frames:
    return encode(InferRequest(7, "b", "layer3", (Tensor("act", ACT),)), codec=codec)


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


def test_descriptors_not_a_list() -> None:
    frames = with_header(valid_frames(), lambda h: h.update(t={"n": "act"}))
    reject(frames, HeaderError, "header 't' is a dict, expected a list")


def test_bad_request_id_and_meta() -> None:
    reject(with_header(valid_frames(), lambda h: h.update(id=-3)), HeaderError, "request_id=-3")
    reject(with_header(valid_frames(), lambda h: h.update(m=[1])), HeaderError, "meta is a list")
    many = {f"k{i}": i for i in range(33)}
    reject(with_header(valid_frames(), lambda h: h.update(m=many)), HeaderError, "max_map_len")
    few = Limits(max_meta_entries=2)
    three = {"a": 1, "b": 2, "c": 3}
    frames = with_header(valid_frames(), lambda h: h.update(m=three))
    reject(frames, HeaderError, "entries=3, over max_meta_entries=2", few)


@pytest.mark.parametrize(
    ("meta", "phrase"),
    [
        ({"k" * 65: 1}, "1..64 characters"),
        ({"": 1}, "1..64 characters"),
        ({1: 1}, "not valid msgpack"),  # msgpack's strict_map_key: keys are strings
        ({"a": [1]}, "value of type list"),
        ({"a": {"b": 1}}, "value of type dict"),
        ({"a": b"x"}, "exceeds max_bin_len"),  # bin: never valid
    ],
)
def test_a_meta_map_of_anything_but_named_scalars_is_refused(
    meta: dict[object, object], phrase: str
) -> None:
    reject(with_header(valid_frames(), lambda h: h.update(m=meta)), HeaderError, phrase)


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
    # Within msgpack's list bound, max(max_tensors + 1, max_ndim), the explicit check names it.
    frames = with_header(valid_frames(), lambda h: h["t"][0].update(s=[1] * 17, b=4))
    reject(frames, PayloadError, "ndim=17 exceeds max_ndim=8")
    # A list longer than every list the limits allow is refused while unpacking.
    frames = with_header(valid_frames(), lambda h: h["t"][0].update(s=[1] * 18, b=4))
    reject(frames, HeaderError, "18 exceeds max_array_len(17)")


def test_duplicate_names() -> None:
    frames = encode(InferRequest(1, tensors=tensors_of({"a": ACT, "b": ACT})))
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


def many(count: int) -> Frames:
    """A request of ``count`` tiny tensors."""
    return encode(InferRequest(1, tensors=tensors_of({f"t{i}": np.zeros(1) for i in range(count)})))


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, Limits(max_tensors=2), Limits(max_ndim=30)])
def test_one_tensor_over_max_tensors_is_refused_by_name(limits: Limits) -> None:
    n = limits.max_tensors
    message = decode(many(n), limits)
    assert isinstance(message, InferRequest) and len(message.arrays(limits)) == n
    # Not msgpack's "exceeds max_array_len": the list bound leaves room for one more.
    reject(many(n + 1), HeaderError, f"tensors={n + 1} exceeds max_tensors={n}", limits)


def test_tensor_count_and_size_limits() -> None:
    reject(many(17), HeaderError, "tensors=17 exceeds max_tensors=16")
    # Past max_tensors + 1 (and max_ndim), msgpack refuses the list while unpacking: nothing
    # unbounded is allocated, and it is a HeaderError all the same.
    reject(many(18), HeaderError, "18 exceeds max_array_len(17)")
    limits = Limits(max_tensors=2, max_ndim=2)
    reject(many(3), HeaderError, "tensors=3 exceeds max_tensors=2", limits)
    reject(many(4), HeaderError, "4 exceeds max_array_len(3)", limits)
    limits = Limits(max_tensor_bytes=ACT.nbytes - 1)
    reject(valid_frames(), PayloadError, "over max_tensor_bytes=65535", limits)
    two = encode(InferRequest(1, tensors=tensors_of({"a": ACT, "b": ACT})), codec="int8")
    limits = Limits(max_total_bytes=ACT.nbytes * 2 - 1)
    reject(two, PayloadError, "total=131072 bytes, over max_total_bytes=131071", limits)


def test_limits_validate_their_fields() -> None:
    with pytest.raises(ConfigError, match="Limits.max_tensors must be a positive int, got 0"):
        Limits(max_tensors=0)
    with pytest.raises(ConfigError, match="Limits.max_dim"):
        Limits(max_dim=1.5)  # type: ignore[arg-type]


def test_error_code() -> None:
    assert error_code(HeaderError("x")) == "header"
    assert error_code(FieldError("hello", "name", "x")) == "header"
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
@pytest.mark.parametrize("encoded", [False, True])
def test_decompression_bomb_is_rejected_without_allocating(
    bombs: dict[str, bytes], which: str, encoded: bool
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
            # encoded: admitted by its length (the cloud's ingress), refused where decoded.
            request = decode(frames, encoded=encoded)
            assert isinstance(request, InferRequest)
            request.arrays()
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
    request = InferRequest(3, tensors=(Tensor("x", array),))
    if quantizer == "int8" and is_float and not np.all(np.isfinite(array)):
        with pytest.raises(PayloadError, match="int8 cannot represent NaN or inf"):
            encode(request, codec=codec)
        return
    frames = encode(request, codec=codec)
    got = arrays_of(frames)["x"]
    assert got.dtype == np.dtype(array.dtype.name) and got.shape == array.shape
    if quantizer == "raw" or not is_float:
        assert got.tobytes() == array.astype(got.dtype).tobytes()  # bit-exact, NaNs included
    elif quantizer == "fp16":
        with np.errstate(over="ignore"):  # beyond +-65504 becomes inf, as documented
            expected = array.astype(np.float16).astype(got.dtype)
        np.testing.assert_array_equal(got, expected)
    else:
        scale = header_of(frames)["t"][0]["q"]
        diff = np.abs(got.astype(np.float64) - array.astype(np.float64))
        slack = scale * (0.5 + 1e-4) + np.finfo(array.dtype).eps * np.abs(array.astype(np.float64))
        assert np.all(diff <= slack)


def _valid_messages() -> list[Frames]:
    rng = np.random.default_rng(3)
    act = np.maximum(rng.standard_normal((2, 4, 5)), 0).astype(np.float32)
    tensors = tensors_of({"act": act, "mask": act > 0.5})
    messages = [encode(InferRequest(11, "b", "c", tensors), codec) for codec in SUPPORTED_CODECS]
    messages.append(encode(Result(12, (Tensor("logits", rng.standard_normal(10)),))))
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
        arrays = arrays_of(frames)
    except WireError:
        return
    declared = [(t["n"], tuple(t["s"]), np.dtype(t["d"])) for t in header_of(frames)["t"]]
    assert [(name, a.shape, a.dtype) for name, a in arrays.items()] == declared
