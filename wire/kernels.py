"""Vectorized float kernels of the codecs: float16 conversions and affine int8.

numpy converts to and from float16 one value at a time; the kernels here do it
in a handful of vectorized passes (ufuncs with ``out=``), 3 to 7 times faster,
with the same bits as numpy's casts (tests/wire/test_codec_kernels.py compares
them: every float16, every rounding case). Neither direction goes through
float64 unless the tensor is float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgesplit.errors import PayloadError

INT8_MIN, INT8_MAX = -128, 127

# numpy converts to and from float16 one value at a time; the kernels below do it in a
# handful of vectorized passes (ufuncs with ``out=``), 3 to 7 times faster, and give the
# same bits as numpy's casts (tests/wire/test_codec_kernels.py compares them: every float16,
# every rounding case). A kernel that needs scratch runs over chunks of ``_CHUNK``
# elements, so its scratch stays small whatever the tensor's size; smaller chunks would
# cost more in per-call overhead than they save in cache misses. A C-contiguous native
# float32/float64 input is read in place; any other layout or byte order is copied once.

_CHUNK = 65_536
"""Elements per kernel pass where a kernel needs scratch (256 KiB of float32)."""

_F32 = np.float32
_U16, _U32 = np.uint16, np.uint32
_HALF_SLOW_FROM = _U32(0x47800000)
"""Bits of 65536.0: a chunk holding a larger |x|, inf or NaN goes through numpy's cast."""


def _spans(size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``_CHUNK`` elements covering ``range(size)``."""
    return (slice(start, min(start + _CHUNK, size)) for start in range(0, size, _CHUNK))


def _flat(array: np.ndarray, dtype: type[np.floating[Any]]) -> np.ndarray:
    """``array`` as a flat C-ordered native ``dtype`` array: itself where it is one, else a copy."""
    return np.ascontiguousarray(array, dtype=dtype).reshape(-1)


def encode_fp16(array: np.ndarray) -> np.ndarray:
    """``array`` as little-endian float16, to nearest (ties to even); |x| >= 65520 becomes inf."""
    if array.dtype.itemsize != 4:  # float16 is copied as is; float64 rounds once, in numpy
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(array, dtype="<f2")
    x = _flat(array, _F32)
    wire = np.empty(array.shape, dtype="<f2")
    codes = wire.reshape(-1).view("<u2")  # the kernel writes native uint16: copyto orders bytes
    scratch = np.empty((2, min(x.size, _CHUNK)), dtype=_U32)
    for span in _spans(x.size):
        n = span.stop - span.start
        _float32_to_half_bits(x[span], codes[span], scratch[0, :n], scratch[1, :n])
    return wire


def decode_fp16(wire: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """float16 wire values as a new ``dtype`` array, exactly (every float16 is a float32)."""
    if dtype == np.float16:
        return wire.astype(dtype, copy=False)
    codes = wire.reshape(-1).view("<u2").astype(_U16, copy=False)  # a view on little-endian hosts
    out = np.empty(wire.shape, dtype=dtype)
    if dtype == np.float32:
        _half_bits_to_float32(codes, out.reshape(-1))
        return out
    flat, widened = out.reshape(-1), np.empty(min(wire.size, _CHUNK), dtype=_F32)
    for span in _spans(wire.size):  # float64: through float32, exactly
        y = widened[: span.stop - span.start]
        if _half_bits_to_float32(codes[span], y):
            np.copyto(flat[span], y)
        else:  # inf or NaN: numpy's own cast, which keeps a NaN's payload as it is
            np.copyto(flat[span], codes[span].view(np.float16))
    return out


def quantize_int8(name: str, array: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Affine int8 with the range widened to hold 0: q = clip(rint(x / scale) + zp).

    float16 and float32 compute in float32, float64 in float64: the division is the
    one rounding, as ``x / scale`` on the whole array does it, and 0.0 maps to zp.
    """
    if array.size == 0:
        return np.empty(array.shape, dtype=np.int8), 1.0, 0
    work: type[np.floating[Any]] = np.float64 if array.dtype.itemsize == 8 else _F32
    lo, hi = float(array.min()), float(array.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise PayloadError(
            f"tensor {name!r}: int8 cannot represent NaN or inf (min={lo} max={hi}); "
            "use codec raw or fp16 for this tensor"
        )
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    # hi / 255 - lo / 255, not (hi - lo) / 255, which overflows near the float max;
    # a scale below the smallest normal of the work dtype would divide by zero.
    scale = max(hi / 255 - lo / 255, float(np.finfo(work).tiny)) if hi > lo else 1.0
    zero_point = INT8_MIN - round(lo / scale)
    zero_point = min(max(zero_point, INT8_MIN), INT8_MAX)
    divisor = work(scale)
    # Division by a positive number and rint are monotone: the codes of lo and hi bound all
    # others, so the clip pass runs only where rounding at the range's ends leaves [-128, 127].
    # (Python's round() breaks ties to even, as np.rint does.)
    clip = not (
        INT8_MIN <= round(float(work(lo) / divisor)) + zero_point
        and round(float(work(hi) / divisor)) + zero_point <= INT8_MAX
    )
    # rint(y) + zero_point in one add: adding 1.5 * 2**23 (float64: 1.5 * 2**52) rounds y
    # to an integer, to nearest even, and leaves it in the sum's low bits, which a cast to
    # uint8 keeps (mod 256: the int8 code's two's complement). An even zero point joins
    # the add (ties round the same way); an odd one leaves 1 to add to the codes.
    odd = zero_point & 1
    magic = work(1.5 * 2.0 ** np.finfo(work).nmant + zero_point - odd)
    bits = np.uint64 if work is np.float64 else _U32
    half = array.dtype.itemsize == 2
    x = _flat(array, np.float16 if half else work)
    q = np.empty(array.shape, dtype=np.int8)
    codes, buffer = q.reshape(-1).view(np.uint8), np.empty(min(x.size, _CHUNK), dtype=work)
    for span in _spans(x.size):
        y = buffer[: span.stop - span.start]
        if half:  # widened to float32 first, exactly
            _half_bits_to_float32(x[span].view(_U16), y)
            np.divide(y, divisor, out=y)
        else:
            np.divide(x[span], divisor, out=y)
        if clip:  # integer bounds commute with rounding
            np.clip(y, work(INT8_MIN - zero_point), work(INT8_MAX - zero_point), out=y)
        np.add(y, magic, out=y)
        np.copyto(codes[span], y.view(bits), casting="unsafe")
        if odd:
            np.add(codes[span], np.uint8(1), out=codes[span])
    return q, scale, zero_point


def dequantize_int8(
    q: np.ndarray, dtype: np.dtype[Any], scale: float, zero_point: int
) -> np.ndarray:
    """(q - zero_point) * scale written straight into a new array of ``dtype``.

    Three passes over the result, and no other allocation (float16: chunk-sized
    scratch): no float64 round trip. float16 and float32 compute in float32
    (``q - zero_point`` is exact there; the product is rounded once, for float16
    once more into the result), float64 in float64. Values stay within the
    dtype's finite range.
    """
    out = np.empty(q.shape, dtype=dtype)
    work: type[np.floating[Any]] = np.float64 if dtype == np.float64 else _F32
    finite_max = float(np.finfo(dtype).max)
    # Near the float max the top code rounds past it; float16 clips in float32, then rounds.
    bound = work(finite_max) if 255 * scale > finite_max else None
    codes, flat = q.reshape(-1), out.reshape(-1)
    if dtype != np.float16:
        _affine(codes, flat, work(zero_point), work(scale), bound)
        return out
    size = min(q.size, _CHUNK)
    buffer, scratch = np.empty(size, dtype=_F32), np.empty((2, size), dtype=_U32)
    for span in _spans(q.size):
        n = span.stop - span.start
        _affine(codes[span], buffer[:n], _F32(zero_point), _F32(scale), bound)
        _float32_to_half_bits(buffer[:n], flat[span].view(_U16), scratch[0, :n], scratch[1, :n])
    return out


def _affine(
    codes: np.ndarray,
    out: np.ndarray,
    zero_point: np.floating[Any],
    scale: np.floating[Any],
    bound: np.floating[Any] | None,
) -> None:
    """``out`` = (codes - zero_point) * scale, clipped to +-``bound`` unless None."""
    np.copyto(out, codes)  # |q - zero_point| <= 255: exact in every float dtype
    np.subtract(out, zero_point, out=out)
    with np.errstate(over="ignore"):
        np.multiply(out, scale, out=out)
    if bound is not None:
        np.clip(out, -bound, bound, out=out)


def _float32_to_half_bits(x: np.ndarray, out: np.ndarray, a: np.ndarray, m: np.ndarray) -> None:
    """Write the float16 codes of float32 ``x`` into ``out``, rounded as numpy's cast rounds.

    Adding |x| to ``2**(e + 13)``, where e is |x|'s binary exponent but at least -14
    (float16's smallest normal), leaves float16's 10 fraction bits of |x| in the sum's
    low bits, rounded to nearest even by the FPU; the sum's exponent (mod 64) and its
    low 12 bits then add up to the code, less 2 << 10. ``a`` and ``m`` are uint32
    scratch of ``x``'s length.
    """
    if not x.size:
        return
    bits = x.view(_U32)
    signed = bits.max() >= _HALF_SLOW_FROM  # else no sign bit (not even -0.0), as after a ReLU
    if signed:
        np.bitwise_and(bits, _U32(0x7FFFFFFF), out=a)
        if a.max() >= _HALF_SLOW_FROM:
            with np.errstate(over="ignore"):
                np.copyto(out, x.astype(np.float16).view(_U16))
            return
    magnitude, magic = a.view(_F32) if signed else x, m.view(_F32)
    np.clip(magnitude, _F32(2.0**-14), _F32(65536.0), out=magic)  # two bounds: the fast clip
    np.bitwise_and(m, _U32(0x7F800000), out=m)
    np.add(m, _U32(13 << 23), out=m)  # 2**(e + 13)
    np.add(magic, magnitude, out=magic)  # the rounding
    np.right_shift(m, _U32(13), out=a)
    np.add(a, m, out=a)  # exponent << 10 (mod 2**16) + fraction
    if signed:
        np.right_shift(bits, _U32(16), out=m)
        np.bitwise_and(m, _U32(0x8000), out=m)  # the sign
        np.add(a, m, out=a)
    np.add(a, _U32(2 << 10), out=a)
    np.copyto(out, a, casting="unsafe")  # the low 16 bits


def _half_bits_to_float32(h: np.ndarray, out: np.ndarray) -> bool:
    """Write the float32 values of native float16 codes ``h`` into ``out``, exactly.

    The sign-extended code shifted left by 13, its three extra sign bits cleared,
    is a float32 with the code's sign, exponent and fraction, 2**112 times too
    small, subnormals included: multiplying by 2**112 is exact. Inf and NaN come
    out as |x| >= 65536, which no finite float16 reaches; then numpy's cast redoes
    it, and the result is False.
    """
    bits = out.view(_U32)
    np.copyto(out.view(np.int32), h.view(np.int16))
    np.left_shift(bits, _U32(13), out=bits)
    np.bitwise_and(bits, _U32(0x8FFFFFFF), out=bits)
    np.multiply(out, _F32(2.0**112), out=out)
    if out.size and (out.max() >= 65536 or out.min() <= -65536):
        np.copyto(out, h.view(np.float16))
        return False
    return True
