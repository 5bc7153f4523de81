"""The vectorized fp16 and int8 kernels against straightforward references, bit for bit.

The references are what the codecs computed before issue 18 (numpy's own float16 casts;
int8 through a whole-array division, rint and clip): the wire bytes and the decoded
values must not change, and decoding must go straight to the declared dtype.
"""

from __future__ import annotations

import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from edgesplit.errors import PayloadError
from wire import SUPPORTED_CODECS, Limits, TensorMeta, decode_tensor, encode_tensor
from wire.kernels import _CHUNK, _SMALL

LIMITS = Limits()
FLOATS = ("float16", "float32", "float64")


# --- references ----------------------------------------------------------------------------


def reference_fp16(array: np.ndarray) -> bytes:
    """numpy's own cast: to nearest, ties to even, beyond +-65504 inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(array, dtype="<f2").tobytes()


def reference_int8(array: np.ndarray) -> tuple[bytes, float, int]:
    """Codes, scale and zero point, the whole array at once: q = clip(rint(x / s) + zp)."""
    if array.size == 0:
        return b"", 1.0, 0
    work = array.astype(np.float64 if array.dtype.itemsize == 8 else np.float32)
    lo, hi = min(float(work.min()), 0.0), max(float(work.max()), 0.0)
    scale = max(hi / 255 - lo / 255, float(np.finfo(work.dtype).tiny)) if hi > lo else 1.0
    zero_point = min(max(-128 - round(lo / scale), -128), 127)
    q = np.rint(work / work.dtype.type(scale)) + work.dtype.type(zero_point)
    return np.clip(q, -128, 127).astype(np.int8).tobytes(), scale, zero_point


def reference_dequantize(codes: bytes, dtype: str, scale: float, zero_point: int) -> np.ndarray:
    """(q - zp) * scale in float32 (float64 for float64), clipped to the dtype, then cast."""
    work = np.float64 if dtype == "float64" else np.float32
    q = np.frombuffer(codes, dtype=np.int8)
    with np.errstate(over="ignore"):
        y = (q.astype(work) - work(zero_point)) * work(scale)
    finite_max = float(np.finfo(dtype).max)
    if 255 * scale > finite_max:
        y = np.clip(y, -finite_max, finite_max)
    return y.astype(dtype)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes: NaN payloads and the sign of zero included."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check_fp16(array: np.ndarray, codec: str = "fp16") -> None:
    meta, payload = encode_tensor("act", array, codec)
    out = decode_tensor(meta, bytes(payload), LIMITS)
    if codec == "fp16":
        assert bytes(payload) == reference_fp16(array)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = array.astype("<f2").astype(array.dtype.name)
    assert same_bits(out, expected)


def check_int8(array: np.ndarray, codec: str = "int8") -> None:
    meta, payload = encode_tensor("act", array, codec)
    codes, scale, zero_point = reference_int8(array)
    assert (meta.scale, meta.zero_point) == (scale, zero_point)
    out = decode_tensor(meta, bytes(payload), LIMITS)
    if codec == "int8":
        assert bytes(payload) == codes
    expected = reference_dequantize(codes, array.dtype.name, scale, zero_point)
    assert same_bits(out, expected.reshape(array.shape))


# --- fp16 ------------------------------------------------------------------------------------


def every_half() -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fp16_decodes_every_code_exactly(dtype: str) -> None:
    codes = every_half()
    finite = np.isfinite(codes.view(np.float16))
    for chosen in (codes[finite], codes):  # the vectorized path, then one with inf and NaN
        meta = TensorMeta("act", dtype, (chosen.size,), "fp16", chosen.nbytes)
        out = decode_tensor(meta, chosen.astype("<u2").tobytes(), LIMITS)
        assert same_bits(out, chosen.view(np.float16).astype(dtype))


def rounding_cases() -> np.ndarray:
    """Every finite float16 as float32, the midpoints between neighbours (ties), and the
    float32 values on either side of each midpoint, both signs, subnormals included."""
    halves = every_half()[:0x7C00].view(np.float16).astype(np.float32)  # 0 .. 65504
    upper = np.append(halves[1:], np.float32(65536.0))
    mid = ((halves.astype(np.float64) + upper) / 2).astype(np.float32)  # exact: a tie
    below = np.nextafter(mid, np.float32(0))
    above = np.nextafter(mid, np.float32(np.inf))
    tiny = np.array([1e-45, 2.0**-25, 2.0**-26, 3 * 2.0**-26, 2.0**-14 * 0.75], np.float32)
    cases = np.concatenate([halves, mid, below, above, tiny, [65519.996, 65520.0, 65535.996]])
    cases = cases[cases < 65536].astype(np.float32)
    return np.concatenate([cases, -cases])


def test_fp16_encode_rounds_every_tie_and_neighbour_like_numpy() -> None:
    cases = rounding_cases()
    assert cases.size > 2 * _CHUNK  # several chunks ...
    assert np.abs(cases).max() < 65536  # ... and every one takes the vectorized path
    check_fp16(cases)
    check_fp16(cases[~np.signbit(cases)])  # no sign bit anywhere: the kernel's shorter path


def test_fp16_negative_zero_among_positives_keeps_its_sign() -> None:
    x = np.array([0.0, 1.5, -0.0, 3.0], dtype=np.float32)  # what a ReLU may leave
    meta, payload = encode_tensor("act", x, "fp16")
    assert np.frombuffer(payload, "<u2").tolist() == [0x0000, 0x3E00, 0x8000, 0x4200]
    check_fp16(x)


@pytest.mark.parametrize(
    "values",
    [
        [np.nan, 1.0, -2.5],
        [np.inf, -np.inf, 0.0],
        [65536.0, -1e6, 3.4e38, 1.0],
        [-0.0, 0.0, 5.960464477539063e-08],
    ],
)
def test_fp16_non_finite_and_overflow_like_numpy(values: list[float]) -> None:
    check_fp16(np.array(values, dtype=np.float32))


def test_fp16_chunks_are_independent() -> None:
    # Several kernel chunks; one of them holds inf and so takes numpy's cast, the others not.
    x = np.random.default_rng(3).standard_normal(3 * _CHUNK + 77).astype(np.float32) * 300
    x[_CHUNK + 5] = np.inf
    x[2 * _CHUNK + 9] = 1e9
    check_fp16(x)
    check_fp16(x, "fp16+lz4")


@settings(max_examples=150, deadline=None)
@given(
    arrays(
        dtype=st.sampled_from(["<f2", "<f4", ">f4", "<f8"]),
        shape=array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
    )
)
def test_fp16_property_matches_numpy(array: np.ndarray) -> None:
    check_fp16(array)


# --- int8 ------------------------------------------------------------------------------------


def adversarial(dtype: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    top = float(np.finfo(dtype).max)
    tiny = float(np.finfo(dtype).smallest_subnormal)
    return {
        "zeros": np.zeros((4, 5), dtype),
        "constant": np.full(9, 3.25, dtype),
        "negative_constant": np.full(9, -3.25, dtype),
        "negative_only": -np.abs(rng.standard_normal(50)).astype(dtype) - 1,
        "positive_only": np.abs(rng.standard_normal(50)).astype(dtype) + 1,
        "relu": np.maximum(rng.standard_normal((3, 8, 8)), 0).astype(dtype),
        "near_max": np.array([-top, top, 0.0, top / 3, -top / 7], dtype),
        "positive_max": np.array([top, top * 0.999, 1.0], dtype),
        "subnormal": np.array([tiny, -tiny, 0.0, 3 * tiny], dtype),
        "wide": (rng.standard_normal(64) * 10.0 ** rng.uniform(-4, 4, 64)).astype(dtype),
        "size_0": np.zeros((0, 3), dtype),
        "zero_d": np.array(-1.5, dtype),
    }


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", sorted(adversarial("float32")))
def test_int8_adversarial_matches_reference(dtype: str, case: str) -> None:
    check_int8(adversarial(dtype)[case])


TIE_SHIFTS = range(40)


def ties(shift: int) -> np.ndarray:
    """k / 2 for k in -shift .. 510 - shift: the scale is 1.0 and every other x / scale is a tie."""
    return np.arange(-shift, 511 - shift, dtype=np.float32) / 2


@pytest.mark.parametrize("shift", TIE_SHIFTS)
def test_int8_exact_ties_round_like_the_reference(shift: int) -> None:
    for dtype in FLOATS:
        check_int8(ties(shift).astype(dtype))


def test_int8_tie_cases_hit_both_zero_point_parities() -> None:
    parities = set()
    for shift in TIE_SHIFTS:
        meta, _ = encode_tensor("act", ties(shift), "int8")
        assert meta.scale == 1.0 and meta.zero_point is not None
        parities.add(meta.zero_point % 2)
    assert parities == {0, 1}  # an odd zero point takes the kernel's extra +1 pass


def near_ties(dtype: str, top: float) -> np.ndarray:
    """Values a few ulps around each (k + 1/2) * scale, where x / scale and
    x * (1 / scale) can round to different codes; ``top`` fixes the scale."""
    work = np.float64 if dtype == "float64" else np.float32
    scale = work(top / 255)  # what the codec computes from min 0 and max ``top``
    centre = (np.arange(255, dtype=work) + work(0.5)) * scale
    steps = [centre]
    for _ in range(3):
        steps = [np.nextafter(steps[0], work(0)), *steps, np.nextafter(steps[-1], work(np.inf))]
    return np.concatenate([*steps, [top]]).astype(dtype)


@pytest.mark.parametrize("top", [0.3, 1.7, 100.0 / 3, 9876.5])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_int8_divides_rather_than_multiplying_by_the_reciprocal(dtype: str, top: float) -> None:
    x = near_ties(dtype, top)
    work = np.dtype(dtype).type
    meta, _ = encode_tensor("act", x, "int8")
    divided, multiplied = np.rint(x / work(meta.scale)), np.rint(x * (1 / work(meta.scale)))
    assert not np.array_equal(divided, multiplied)  # the data tells the two apart
    check_int8(x)


@pytest.mark.parametrize(
    "layout",
    ["strided", "fortran", "big_endian", "broadcast", "reversed"],
)
@pytest.mark.parametrize("dtype", FLOATS)
def test_int8_and_fp16_any_layout(layout: str, dtype: str) -> None:
    base = np.random.default_rng(11).standard_normal((6, 10)).astype(dtype) * 7
    array = {
        "strided": base[:, ::3],
        "fortran": np.asfortranarray(base),
        "big_endian": base.astype(np.dtype(dtype).newbyteorder(">")),
        "broadcast": np.broadcast_to(base[:1], (4, 10)),
        "reversed": base[::-1, ::-1],
    }[layout]
    check_int8(array)
    check_fp16(array)


def test_int8_chunks_match_one_pass() -> None:
    x = np.random.default_rng(5).standard_normal((3, _CHUNK + 13)).astype(np.float32)
    x[1, 7] = 40.0  # one outlier sets the scale for every chunk
    check_int8(x)
    check_int8(x.astype(np.float16))
    for codec in ("int8+lz4", "int8+zstd"):
        if codec in SUPPORTED_CODECS:
            check_int8(x, codec)


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        dtype=st.sampled_from(["<f2", "<f4", ">f4", "<f8"]),
        shape=array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
        elements={"allow_nan": False, "allow_infinity": False},
    )
)
def test_int8_property_matches_reference(array: np.ndarray) -> None:
    check_int8(array)


@pytest.mark.parametrize("dtype", FLOATS)
def test_int8_decode_is_the_work_dtype_computation_bit_for_bit(dtype: str) -> None:
    # Through float64 with the header's (float64) scale, some values would differ in the
    # last bit: the result must be the float32 (float64 for float64) computation.
    x = np.random.default_rng(2).uniform(-3, 11, 4096).astype(dtype)
    meta, payload = encode_tensor("act", x, "int8")
    assert meta.scale is not None and meta.zero_point is not None
    out = decode_tensor(meta, payload, LIMITS)
    assert out.dtype == np.dtype(dtype)
    expected = reference_dequantize(bytes(payload), dtype, meta.scale, meta.zero_point)
    assert same_bits(out, expected)
    if dtype == "float32":
        q = np.frombuffer(payload, dtype=np.int8).astype(np.float64)
        via_float64 = ((q - meta.zero_point) * meta.scale).astype(np.float32)
        assert not np.array_equal(out, via_float64)  # the check above can tell them apart


# --- small tensors: numpy's casts and one-pass int8 below _SMALL elements ----------------------

# Either side of each path's boundary: empty, one element, just below, at and just above
# _SMALL (fp16: numpy's casts below, the kernels from it on), and for int8 around _CHUNK
# (one whole-array pass up to it for float32 and float64, chunks beyond).
FP16_SIZES = (0, 1, 2, _SMALL - 1, _SMALL, _SMALL + 1)
INT8_SIZES = (*FP16_SIZES, _CHUNK, _CHUNK + 1)
LAYOUTS = ("contiguous", "strided", "reversed", "big_endian", "column")


@contextmanager
def no_warnings() -> Iterator[None]:
    """Fail on any warning: overflow to inf is the codecs' documented behaviour, not news."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def laid_out(x: np.ndarray, layout: str) -> np.ndarray:
    """``x``'s values (1-D) in the layout named: a copy, a view, or another byte order."""
    if layout == "strided":
        base = np.empty(2 * x.size, x.dtype)
        base[::2] = x
        return base[::2]
    if layout == "reversed":
        return x[::-1].copy()[::-1]
    if layout == "big_endian":
        return x.astype(x.dtype.newbyteorder(">"))
    if layout == "column":  # a column of a C-ordered matrix: 2-D, not contiguous
        base = np.zeros((x.size, 3), x.dtype)
        base[:, 1] = x
        return base[:, 1:2]
    return x


def relu_like(size: int, dtype: str, seed: int = 0) -> np.ndarray:
    """Mostly ReLU output, a few negatives, values well inside every float dtype."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal(size) + 0.52, 0) * 300
    x[rng.random(size) < 0.05] *= -1.5
    return x.astype(dtype)


def check_decoded_layout(array: np.ndarray, codec: str) -> None:
    """A decoded float tensor is a new C-ordered writable array of the sent shape."""
    meta, payload = encode_tensor("act", array, codec)
    out = decode_tensor(meta, bytes(payload), LIMITS)
    assert out.shape == array.shape and out.dtype == array.dtype.newbyteorder("=")
    if not (codec.startswith("fp16") and array.dtype.itemsize == 2):  # float16 as sent: a view
        assert out.flags.c_contiguous and out.flags.writeable


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", FP16_SIZES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_fp16_either_side_of_small_matches_numpy(dtype: str, size: int, layout: str) -> None:
    array = laid_out(relu_like(size, dtype), layout)
    with no_warnings():
        check_fp16(array)
        check_fp16(array, "fp16+lz4")
        check_decoded_layout(array, "fp16")


NON_FINITE_F32 = np.array(
    [0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FA5A5A5, 0xFFFFFFFF, 0x7F800000, 0xFF800000],
    dtype=np.uint32,
).view(np.float32)  # quiet NaN both signs, signalling NaN, NaN payloads, +-inf
OVERFLOW_F32 = np.array([65520.0, -65520.0, 65519.996, 1e9, -3.4e38, 65504.0], np.float32)


@pytest.mark.parametrize("size", [1, 16, _SMALL - 1, _SMALL, _SMALL + 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fp16_nan_inf_and_overflow_either_side_of_small(dtype: str, size: int) -> None:
    specials = np.concatenate([NON_FINITE_F32, OVERFLOW_F32])
    for at in (0, max(size - specials.size, 0)):  # at the front, then at the back
        x = relu_like(size, "float32")
        n = min(size, specials.size)
        x[at : at + n] = specials[:n]
        with np.errstate(invalid="ignore"):  # float64 quiets a signalling NaN
            array = x.astype(dtype)
        with no_warnings():  # overflow to inf is silent, on either path
            check_fp16(array)
            check_fp16(laid_out(array, "big_endian"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("piece", [_SMALL - 1, _SMALL])
def test_fp16_decodes_every_code_either_side_of_small(dtype: str, piece: int) -> None:
    codes = every_half()  # NaN payloads and infinities included
    for start in range(0, codes.size, piece):
        chosen = codes[start : start + piece]
        meta = TensorMeta("act", dtype, (chosen.size,), "fp16", chosen.nbytes)
        with no_warnings():
            out = decode_tensor(meta, chosen.astype("<u2").tobytes(), LIMITS)
        assert same_bits(out, chosen.view(np.float16).astype(dtype))


def test_fp16_small_encode_rounds_every_tie_and_neighbour_like_numpy() -> None:
    cases = rounding_cases()
    for start in range(0, cases.size, _SMALL - 1):
        piece = cases[start : start + _SMALL - 1]
        meta, payload = encode_tensor("act", piece, "fp16")
        assert bytes(payload) == reference_fp16(piece)


@pytest.mark.parametrize("layout", ["contiguous", "strided", "big_endian", "column"])
@pytest.mark.parametrize("size", INT8_SIZES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_int8_either_side_of_small_and_chunk_matches_reference(
    dtype: str, size: int, layout: str
) -> None:
    array = laid_out(relu_like(size, dtype, seed=size), layout)
    with no_warnings():
        check_int8(array)
        if "int8+lz4" in SUPPORTED_CODECS:
            check_int8(array, "int8+lz4")
        check_decoded_layout(array, "int8")


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
@pytest.mark.parametrize("size", [1, 600, _SMALL - 1, _SMALL + 1, _CHUNK + 1])
@pytest.mark.parametrize("dtype", FLOATS)
def test_int8_ties_and_zero_point_parity_on_every_path(dtype: str, size: int, shift: int) -> None:
    x = np.resize(ties(shift), size).astype(dtype)  # the ties repeated: scale 1.0 once size > 510
    check_int8(x)


@pytest.mark.parametrize("size", [1, 5, _SMALL - 1, _SMALL + 1, _CHUNK + 1])
@pytest.mark.parametrize("dtype", FLOATS)
def test_int8_near_the_float_max_on_every_path(dtype: str, size: int) -> None:
    # The scale's top code rounds past the max: decoding clips, and overflows silently.
    top = float(np.finfo(dtype).max)
    x = np.resize(np.array([-top, top, 0.0, top / 3, -top / 7], dtype), size)
    with no_warnings():
        check_int8(x)
        check_int8(np.resize(np.array([top, top * 0.999, 1.0], dtype), size))


@pytest.mark.parametrize("size", [1, 3, _SMALL - 1, _SMALL + 1, _CHUNK + 1])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf, "nan_and_inf"])
def test_int8_refuses_nan_and_inf_alike_on_every_path(
    dtype: str, size: int, special: float | str
) -> None:
    x = relu_like(size, dtype)
    if special == "nan_and_inf":
        x[-1], x[0] = np.inf, np.nan
    else:
        x[size // 2] = special
    # What the message says: the array's min and max, as numpy's reductions give them.
    lo, hi = float(np.min(x)), float(np.max(x))
    with pytest.raises(PayloadError) as info:
        encode_tensor("act", x, "int8")
    assert f"int8 cannot represent NaN or inf (min={lo} max={hi})" in str(info.value)


# --- memory ------------------------------------------------------------------------------------


def peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


N = 16 * _CHUNK  # float32: 4 MiB
SLACK = 128 << 10  # small objects, and lz4's worst case beyond the input size


@pytest.mark.parametrize(
    ("codec", "encode_budget", "decode_budget"),
    # What each call returns, plus its scratch (a chunk or two), never a full-size copy:
    # before issue 18, int8 encode took a float32 copy (4 * N) beside the codes.
    [
        ("int8", N + 4 * _CHUNK, 4 * N),
        ("fp16", 2 * N + 8 * _CHUNK, 4 * N),
        # the codes, then lz4's worst-case buffer and the frame it is trimmed to
        ("int8+lz4", 3 * N + 4 * _CHUNK, N + 4 * N),
    ],
)
def test_codecs_make_no_full_size_temporaries(
    codec: str, encode_budget: int, decode_budget: int
) -> None:
    if codec not in SUPPORTED_CODECS:
        pytest.skip(f"{codec} not installed")
    x = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    meta, payload = encode_tensor("act", x, codec)
    frame = bytes(payload)
    assert peak_bytes(lambda: encode_tensor("act", x, codec)) <= encode_budget + SLACK
    assert peak_bytes(lambda: decode_tensor(meta, frame, LIMITS)) <= decode_budget + SLACK
