"""Tensor codecs: round trips per codec, dtype and memory layout; strict descriptors."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from edgesplit.errors import DecompressionError, HeaderError, PayloadError
from wire import (
    ALL_CODECS,
    ALLOWED_DTYPES,
    DEFAULT_CODEC,
    SUPPORTED_CODECS,
    Codec,
    Limits,
    TensorMeta,
    decode_tensor,
    encode_tensor,
    parse_codec,
)

LIMITS = Limits()
FLOATS = ("float16", "float32", "float64")


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values that exercise each dtype: signs, zeros, the integer range's ends."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return np.asarray(rng.random(shape) > 0.5)
    if dtype in FLOATS:
        x = rng.standard_normal(shape) * 10
        return np.where(x < -5, 0.0, x).astype(dtype)  # some exact zeros, like a ReLU's
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


# Each layout turns a dtype into an array whose memory is laid out one particular way.
LAYOUTS: dict[str, Callable[[str], np.ndarray]] = {
    "contiguous": lambda dt: sample(dt, (2, 3, 4)),
    "strided": lambda dt: sample(dt, (3, 8))[:, ::2],
    "reversed": lambda dt: sample(dt, (5, 3))[::-1],
    "fortran": lambda dt: np.asfortranarray(sample(dt, (4, 5))),
    "broadcast": lambda dt: np.broadcast_to(sample(dt, (1, 5)), (3, 5)),
    "big_endian": lambda dt: sample(dt, (2, 6)).astype(np.dtype(dt).newbyteorder(">")),
    "zero_d": lambda dt: sample(dt, ()),
    "empty": lambda dt: sample(dt, (0, 3)),
}


def assert_decoded(codec: Codec, meta: TensorMeta, array: np.ndarray, out: np.ndarray) -> None:
    """Check ``out`` against ``array`` with the tolerance the codec promises."""
    assert out.dtype == np.dtype(array.dtype.name)
    assert out.shape == array.shape
    if meta.codec.startswith("raw"):
        np.testing.assert_array_equal(out, array)
    elif codec.quantizer == "fp16":
        expected = array.astype(np.float16).astype(array.dtype.name)
        np.testing.assert_array_equal(out, expected)
        # fp16 keeps 11 significant bits: relative error <= 2**-11, absolute 2**-24 near 0
        np.testing.assert_allclose(out, array, rtol=2**-11, atol=2**-24)
    else:
        assert meta.scale is not None
        bound = int8_bound(meta.scale, array)
        assert np.all(np.abs(out.astype(np.float64) - array.astype(np.float64)) <= bound)


def int8_bound(scale: float, array: np.ndarray) -> np.ndarray:
    """Half a step, plus float32 division slack, plus the output dtype's rounding."""
    eps = np.finfo(array.dtype).eps if array.dtype.kind == "f" else 0.0
    return scale * (0.5 + 1e-4) + eps * np.abs(array.astype(np.float64))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", ALLOWED_DTYPES)
@pytest.mark.parametrize("codec_name", SUPPORTED_CODECS)
def test_round_trip(codec_name: str, dtype: str, layout: str) -> None:
    array = LAYOUTS[layout](dtype)
    codec = parse_codec(codec_name)
    meta, payload = encode_tensor("act", array, codec_name)
    assert meta.nbytes == len(payload)
    assert meta.dtype == dtype
    assert meta.shape == array.shape
    out = decode_tensor(meta, bytes(payload), LIMITS)
    assert_decoded(codec, meta, array, out)


@pytest.mark.parametrize("codec_name", SUPPORTED_CODECS)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64", "bool"])
def test_non_float_tensors_fall_back_to_raw_with_same_compressor(
    codec_name: str, dtype: str
) -> None:
    meta, _ = encode_tensor("ids", sample(dtype, (7,)), codec_name)
    codec = parse_codec(codec_name)
    assert meta.codec == Codec("raw", codec.compressor).name
    assert meta.scale is None and meta.zero_point is None


@pytest.mark.parametrize("dtype", FLOATS)
def test_raw_contiguous_payload_is_zero_copy(dtype: str) -> None:
    array = sample(dtype, (4, 8))
    _, payload = encode_tensor("act", array, "raw")
    assert isinstance(payload, memoryview)
    assert np.shares_memory(np.frombuffer(payload, dtype=np.uint8), array)
    array[0, 0] = 1234  # a view: the caller's later writes show in the frame
    assert np.frombuffer(payload, dtype=dtype)[0] == 1234


@pytest.mark.parametrize("layout", ["strided", "fortran", "big_endian", "broadcast"])
def test_raw_non_contiguous_or_big_endian_payload_is_a_copy(layout: str) -> None:
    array = LAYOUTS[layout]("float32")
    _, payload = encode_tensor("act", array, "raw")
    assert not np.shares_memory(np.frombuffer(payload, dtype=np.uint8), array)
    assert len(payload) == array.size * 4


def test_raw_decode_is_a_view_of_the_payload() -> None:
    array = sample("float32", (3, 5))
    meta, payload = encode_tensor("act", array, "raw")
    frame = bytes(payload)
    out = decode_tensor(meta, frame, LIMITS)
    assert np.shares_memory(out, np.frombuffer(frame, dtype=np.uint8))
    assert not out.flags.writeable


def test_big_endian_bytes_on_the_wire_are_little_endian() -> None:
    array = np.array([1.0, -2.5], dtype=">f4")
    _, payload = encode_tensor("act", array, "raw")
    assert bytes(payload) == np.array([1.0, -2.5], dtype="<f4").tobytes()


@pytest.mark.parametrize("compressor", ["", "+lz4", "+zstd"])
def test_int8_is_affine_with_exact_zero_and_half_step_error(compressor: str) -> None:
    codec = "int8" + compressor
    if codec not in SUPPORTED_CODECS:
        pytest.skip(f"{codec} not installed")
    x = np.maximum(np.random.default_rng(1).standard_normal((64, 64)), 0).astype(np.float32)
    meta, payload = encode_tensor("act", x, codec)
    assert meta.scale == pytest.approx(float(x.max()) / 255)  # min is 0: scale = (max-min)/255
    assert meta.zero_point == -128  # 0.0 is the lowest code
    out = decode_tensor(meta, payload, LIMITS)
    assert np.all(out[x == 0] == 0)
    assert np.max(np.abs(out - x)) <= meta.scale / 2 * (1 + 1e-4)
    assert np.max(np.abs(out - x)) > 0  # it is lossy: the bound above is not vacuous


def test_int8_payload_holds_one_byte_per_value() -> None:
    meta, payload = encode_tensor("act", sample("float64", (10, 10)), "int8")
    assert meta.nbytes == len(payload) == 100


@pytest.mark.parametrize(("value", "expected"), [(5.0, -128), (-5.0, 127), (0.0, -128)])
def test_int8_constant_tensor(value: float, expected: int) -> None:
    x = np.full((3, 3), value, dtype=np.float32)
    meta, payload = encode_tensor("act", x, "int8")
    assert meta.zero_point == expected
    np.testing.assert_allclose(decode_tensor(meta, payload, LIMITS), x, atol=1e-6)
    if value == 0.0:
        assert meta.scale == 1.0  # max == min: scale 1.0


def test_int8_extreme_and_tiny_ranges_stay_finite() -> None:
    for x in (
        np.array([-3.4e38, 3.4e38, 0.0], dtype=np.float32),
        np.array([-1.7e308, 1.7e308], dtype=np.float64),
        np.array([1e-45, -1e-45, 0.0], dtype=np.float32),  # subnormals
    ):
        meta, payload = encode_tensor("act", x, "int8")
        out = decode_tensor(meta, payload, LIMITS)
        assert np.all(np.isfinite(out))
        assert np.all(np.abs(out.astype(np.float64) - x) <= int8_bound(meta.scale or 0.0, x))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_int8_rejects_non_finite_values(bad: float) -> None:
    x = np.array([0.0, 1.0, bad], dtype=np.float32)
    with pytest.raises(PayloadError, match="int8 cannot represent NaN or inf.*raw or fp16"):
        encode_tensor("act", x, "int8+lz4")


def test_fp16_overflows_to_inf_without_warning() -> None:
    x = np.array([1e5, -1e6, 1.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meta, payload = encode_tensor("act", x, "fp16")
    out = decode_tensor(meta, payload, LIMITS)
    assert out.dtype == np.float32
    assert out.tolist() == [np.inf, -np.inf, 1.0]


def test_fp16_and_raw_carry_nan_and_inf() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 2.0], dtype=np.float64)
    for codec in ("raw", "fp16", "raw+lz4"):
        meta, payload = encode_tensor("act", x, codec)
        np.testing.assert_array_equal(decode_tensor(meta, payload, LIMITS), x)


# --- codec names -------------------------------------------------------------------------


def test_codec_names() -> None:
    assert len(ALL_CODECS) == len(set(ALL_CODECS)) == 9
    assert {"raw", "fp16+lz4", "int8+zstd"} <= set(ALL_CODECS)
    assert set(SUPPORTED_CODECS) <= set(ALL_CODECS)
    assert DEFAULT_CODEC == "int8+lz4"
    assert parse_codec("int8+lz4") == Codec("int8", "lz4")
    assert parse_codec("raw") == Codec("raw", None)
    assert all(parse_codec(name).name == name for name in SUPPORTED_CODECS)


@pytest.mark.parametrize("name", ["gzip", "int4", "raw+", "+lz4", "INT8", "raw+lz4+zstd", ""])
def test_unknown_codec_is_rejected_with_the_supported_list(name: str) -> None:
    with pytest.raises(
        PayloadError, match=rf"unknown codec '{re.escape(name)}'.*supported codecs: raw"
    ):
        parse_codec(name)


def test_unknown_codec_in_encode() -> None:
    with pytest.raises(PayloadError, match="unknown codec 'bf16'"):
        encode_tensor("act", np.zeros(3, np.float32), "bf16")


def test_missing_compression_library_drops_its_codecs() -> None:
    # A fresh interpreter where `import lz4.block` fails, as it would without the package.
    code = (
        "import sys; sys.modules['lz4'] = None\n"
        "import wire\n"
        "from edgesplit.errors import PayloadError\n"
        "print(','.join(wire.SUPPORTED_CODECS))\n"
        "try:\n"
        "    wire.parse_codec('int8+lz4')\n"
        "except PayloadError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    supported, error = done.stdout.splitlines()
    assert supported.split(",") == [c for c in ALL_CODECS if "lz4" not in c]
    assert "needs the 'lz4' package, which is not installed" in error


# --- encode refuses what it cannot send ----------------------------------------------------


@pytest.mark.parametrize(
    "array", [np.zeros(3, np.complex64), np.zeros(3, "U4"), np.zeros(3, np.uint16)]
)
def test_encode_rejects_unsupported_dtypes(array: np.ndarray) -> None:
    with pytest.raises(PayloadError, match="cannot be sent; allowed: float16"):
        encode_tensor("act", array, "raw")


def test_encode_rejects_non_arrays_and_bad_names() -> None:
    with pytest.raises(PayloadError, match="expected a numpy array, got list"):
        encode_tensor("act", [1.0, 2.0], "raw")  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="non-empty string"):
        encode_tensor("", np.zeros(2), "raw")


# --- decode validates the descriptor before touching the payload --------------------------


def good_meta(**changes: object) -> dict[str, object]:
    meta, _ = encode_tensor("act", np.zeros((1, 16, 32, 32), np.float32), "raw")
    d = meta.to_dict()
    d.update(changes)
    return d


def test_descriptor_dict_round_trip() -> None:
    meta, _ = encode_tensor("act", sample("float32", (2, 3)), "int8+zstd")
    d = meta.to_dict()
    assert set(d) == {"n", "d", "s", "c", "b", "q", "z"}
    assert TensorMeta.from_dict(d, LIMITS) == meta
    raw_meta, _ = encode_tensor("act", sample("float32", (2, 3)), "raw")
    assert set(raw_meta.to_dict()) == {"n", "d", "s", "c", "b"}


@pytest.mark.parametrize(
    ("changes", "error", "phrase"),
    [
        ({"d": "complex64"}, PayloadError, "unknown dtype 'complex64'"),
        ({"c": "lzma"}, PayloadError, "unknown codec 'lzma'"),
        ({"s": [1, -16, 32, 32]}, PayloadError, "dim=-16 at axis=1"),
        ({"s": [1] * 9, "b": 4}, PayloadError, "ndim=9 exceeds max_ndim=8"),
        ({"s": [1 << 25], "b": 4 << 25}, PayloadError, "dim=33554432 at axis=0"),
        ({"s": [1 << 24, 8]}, PayloadError, "over max_tensor_bytes=67108864"),
        ({"b": 1000}, PayloadError, "nbytes=1000"),
        ({"q": 0.5, "z": 0}, PayloadError, "codec raw takes no scale or zero_point"),
        ({"c": "int8", "b": 16384}, PayloadError, "needs a scale (key 'q')"),
        ({"c": "int8", "b": 16384, "q": 0.0, "z": 0}, PayloadError, "scale must be finite"),
        ({"c": "int8", "b": 16384, "q": 1.0, "z": 300}, PayloadError, "zero_point=300"),
        ({"d": "int32", "c": "fp16", "b": 32768}, PayloadError, "float tensors only"),
        ({"s": "1x16"}, HeaderError, "shape (key 's') must be a list of ints"),
        ({"s": [1.0, 16]}, HeaderError, "must be a list of ints"),
        ({"s": [True, 16]}, HeaderError, "must be a list of ints"),
        ({"b": "65536"}, HeaderError, "nbytes (key 'b') has wrong type"),
        ({"n": ""}, HeaderError, "non-empty string"),
        ({"x": 1}, HeaderError, "unexpected=['x']"),
    ],
)
def test_bad_descriptor(changes: dict[str, object], error: type, phrase: str) -> None:
    with pytest.raises(error) as info:
        TensorMeta.from_dict(good_meta(**changes), LIMITS, index=3)
    assert phrase in str(info.value)
    assert "(index 3)" in str(info.value)


def test_descriptor_missing_key_and_not_a_map() -> None:
    d = good_meta()
    del d["s"]
    with pytest.raises(HeaderError, match=r"missing=\['s'\]"):
        TensorMeta.from_dict(d, LIMITS)
    with pytest.raises(HeaderError, match="descriptor is a list, expected a map"):
        TensorMeta.from_dict([1, 2], LIMITS)


def test_payload_size_mismatch_names_tensor_shape_and_codec() -> None:
    meta = TensorMeta.from_dict(good_meta(), LIMITS)
    with pytest.raises(PayloadError) as info:
        decode_tensor(meta, b"\0" * 1000, LIMITS, index=0)
    assert str(info.value) == (
        "tensor 'act' (index 0): payload has 1000 bytes, "
        "shape (1, 16, 32, 32) float32 with codec raw needs 65536"
    )


def test_bool_payload_must_hold_zeros_and_ones() -> None:
    meta, _ = encode_tensor("mask", np.array([True, False]), "raw")
    assert decode_tensor(meta, b"\x01\x00", LIMITS).tolist() == [True, False]
    with pytest.raises(PayloadError, match="other than 0 and 1"):
        decode_tensor(meta, b"\x01\x02", LIMITS)


@pytest.mark.parametrize("compressor", ["lz4", "zstd"])
def test_corrupt_compressed_payload(compressor: str) -> None:
    codec = f"raw+{compressor}"
    if codec not in SUPPORTED_CODECS:
        pytest.skip(f"{codec} not installed")
    meta, payload = encode_tensor("act", sample("float32", (32, 32)), codec)
    garbage = bytes(len(payload))
    with pytest.raises(DecompressionError, match=f"tensor 'act': {compressor} payload"):
        decode_tensor(meta, garbage, LIMITS)


def test_zstd_trailing_bytes_are_rejected() -> None:
    if "raw+zstd" not in SUPPORTED_CODECS:
        pytest.skip("zstandard not installed")
    meta, payload = encode_tensor("act", sample("float32", (8,)), "raw+zstd")
    padded = bytes(payload) + b"junk"
    meta = TensorMeta(meta.name, meta.dtype, meta.shape, meta.codec, len(padded))
    with pytest.raises(DecompressionError, match="unused data"):
        decode_tensor(meta, padded, LIMITS)


def test_compressed_payload_length_must_match_nbytes() -> None:
    meta, payload = encode_tensor("act", sample("float32", (8,)), "raw+lz4")
    with pytest.raises(
        PayloadError, match=f"payload has {len(payload) - 1} bytes, header declares"
    ):
        decode_tensor(meta, bytes(payload)[:-1], LIMITS)


def test_compressed_payload_that_expands_short_is_rejected() -> None:
    # A valid lz4 block of 16 bytes where the header's shape needs 32.
    _, short = encode_tensor("act", np.zeros(4, np.float32), "raw+lz4")
    meta = TensorMeta("act", "float32", (8,), "raw+lz4", len(short))
    with pytest.raises(DecompressionError, match="decompresses to 16 bytes.*needs 32"):
        decode_tensor(meta, short, LIMITS)
