"""Vectorized float kernels of the codecs: float16 conversions and affine int8.

numpy converts to and from float16 one value at a time; the kernels here do it
in a handful of vectorized passes (ufuncs with ``out=``), 3 to 7 times faster,
with the same bits as numpy's casts (tests/wire/test_codec_kernels.py compares
them: every float16, every rounding case). Neither direction goes through
float64 unless the tensor is float64. A small tensor (below ``_SMALL`` elements)
skips them: there a dozen numpy calls cost more than numpy's own cast.
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
# Below ``_SMALL`` elements, what counts is the number of numpy calls (each costs a
# microsecond or so whatever its size): the float16 conversions are numpy's casts, and int8
# takes one whole-array pass, as it does up to ``_CHUNK`` for float32 and float64.

_CHUNK = 65_536
"""Elements per kernel pass where a kernel needs scratch (256 KiB of float32)."""

_SMALL = 3072
"""Below this many elements the float16 conversions are numpy's casts, which then cost
less than the kernels' dozen calls, and a float16 tensor is int8-quantized in one
whole-array pass (numpy widening it) rather than through the float16 kernel. The
crossovers, measured on ReLU-like float32 (benchmarks/multi_tensor_wire.py's tensors):
encode about 2800 elements, decode to float32 about 3000; int8 to and from float16 about
4500, and float16 to float64 about 30000 (one threshold for all: a few us either way)."""

_F32 = np.float32
_U16, _U32 = np.uint16, np.uint32
_LE_U16 = np.dtype("<u2")
_HALF_SLOW_FROM = 0x47800000
"""Bits of 65536.0: a chunk holding a larger |x|, inf or NaN goes through numpy's cast."""
# The kernels' constants, made once: a numpy scalar costs a few hundred ns to build.
_ABS_BITS, _EXPONENT_BITS, _KEEP_BITS = _U32(0x7FFFFFFF), _U32(0x7F800000), _U32(0x8FFFFFFF)
_HALF_MIN_NORMAL, _HALF_OVER = _F32(2.0**-14), _F32(65536.0)
_U32_13, _U32_16, _EXPONENT_13 = _U32(13), _U32(16), _U32(13 << 23)
_SIGN_BIT_16, _TWO_10 = _U32(0x8000), _U32(2 << 10)
_HALF_TO_F32 = _F32(2.0**112)
_F32_TINY, _F64_TINY = float(np.finfo(_F32).tiny), float(np.finfo(np.float64).tiny)
_F32_ROUND, _F64_ROUND = 1.5 * 2.0**23, 1.5 * 2.0**52
"""Added to y, these leave rint(y) in the sum's low bits (``quantize_int8``)."""
_ONE = np.uint8(1)
_FINITE_MAX: dict[str, float] = {c: float(np.finfo(c).max) for c in "efd"}
"""The largest finite float16, float32, float64 (by type code)."""


def _spans(size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``_CHUNK`` elements covering ``range(size)``."""
    return (slice(start, min(start + _CHUNK, size)) for start in range(0, size, _CHUNK))


def _flat(array: np.ndarray, dtype: type[np.floating[Any]]) -> np.ndarray:
    """``array`` as a flat C-ordered native ``dtype`` array: itself where it is one, else a copy."""
    return np.ascontiguousarray(array, dtype=dtype).reshape(-1)


def encode_fp16(array: np.ndarray) -> np.ndarray:
    """``array`` as little-endian float16, to nearest (ties to even); |x| >= 65520 becomes inf."""
    # float16 is copied as is; float64 rounds once, in numpy; a small float32 tensor too.
    if array.dtype.itemsize != 4 or array.size < _SMALL:
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(array, dtype="<f2")
    x = _flat(array, _F32)
    wire = np.empty(array.shape, dtype="<f2")
    codes = wire.reshape(-1).view(_LE_U16)  # the kernel writes native uint16: copyto orders bytes
    # One allocation for both scratch rows: two separate ones of this size each cost page
    # faults anew whenever the allocator hands back fresh pages (seen: 2x the whole encode).
    scratch = np.empty((2, min(x.size, _CHUNK)), dtype=_U32)
    if x.size <= _CHUNK:  # one chunk: no slicing
        _float32_to_half_bits(x, codes, scratch[0], scratch[1])
        return wire
    for span in _spans(x.size):
        n = span.stop - span.start
        _float32_to_half_bits(x[span], codes[span], scratch[0, :n], scratch[1, :n])
    return wire


def decode_fp16(wire: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """float16 wire values as a new ``dtype`` array, exactly (every float16 is a float32)."""
    if dtype == np.float16:
        return wire.astype(dtype, copy=False)
    if wire.size < _SMALL:  # numpy's cast: exact, NaN payloads as the kernel's fallback keeps them
        return wire.astype(dtype, order="C")
    codes = wire.reshape(-1).view(_LE_U16).astype(_U16, copy=False)  # a view on little-endian
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
    size = array.size
    if not size:
        return np.empty(array.shape, dtype=np.int8), 1.0, 0
    itemsize = array.dtype.itemsize
    wide = itemsize == 8
    work: type[np.floating[Any]] = np.float64 if wide else _F32
    # A tensor of at most a chunk (float16: a small one) is divided in one pass, in place of
    # a copy whatever its layout or byte order (numpy widens float16 to float32 exactly).
    whole = size < _SMALL or (size <= _CHUNK and itemsize != 2)
    if whole:  # argmin and argmax (a NaN's index if any): a fraction of min and max's cost
        low, high = int(array.argmin()), int(array.argmax())
        lo, hi = float(array.item(low)), float(array.item(high))
    else:
        lo, hi = float(array.min()), float(array.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise PayloadError(
            f"tensor {name!r}: int8 cannot represent NaN or inf (min={lo} max={hi}); "
            "use codec raw or fp16 for this tensor"
        )
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    # hi / 255 - lo / 255, not (hi - lo) / 255, which overflows near the float max;
    # a scale below the smallest normal of the work dtype would divide by zero.
    scale = max(hi / 255 - lo / 255, _F64_TINY if wide else _F32_TINY) if hi > lo else 1.0
    zero_point = INT8_MIN - round(lo / scale)
    zero_point = min(max(zero_point, INT8_MIN), INT8_MAX)
    divisor = work(scale)
    # rint(y) + zero_point in one add: adding 1.5 * 2**23 (float64: 1.5 * 2**52) rounds y
    # to an integer, to nearest even, and leaves it in the sum's low bits, which a cast to
    # uint8 keeps (mod 256: the int8 code's two's complement). An even zero point joins
    # the add (ties round the same way); an odd one leaves 1 to add to the codes.
    odd = zero_point & 1
    magic = work((_F64_ROUND if wide else _F32_ROUND) + (zero_point - odd))
    bits = np.uint64 if wide else _U32
    # Division by a positive number and rint are monotone: the codes of lo and hi bound all
    # others, so the clip pass runs only where rounding at the range's ends leaves [-128, 127].
    # (Python's round() breaks ties to even, as np.rint does.) Where lo or hi is 0.0, not an
    # element, its code is the zero point, in range: the extreme elements' codes decide alike.
    if whole:
        y = np.empty(array.shape, dtype=work)
        np.divide(array, divisor, out=y)
        ends = y.item(low), y.item(high)
    else:
        ends = float(work(lo) / divisor), float(work(hi) / divisor)
    clip = not (INT8_MIN <= round(ends[0]) + zero_point and round(ends[1]) + zero_point <= INT8_MAX)
    bounds = (work(INT8_MIN - zero_point), work(INT8_MAX - zero_point)) if clip else None
    codes = np.empty(array.shape, dtype=np.uint8)  # the int8 codes' two's complement
    if whole:
        _round_to_codes(y, codes, bounds, magic, bits, odd)
        return codes.view(np.int8), scale, zero_point
    x, flat = _flat(array, np.float16 if itemsize == 2 else work), codes.reshape(-1)
    buffer = np.empty(min(size, _CHUNK), dtype=work)
    for span in _spans(size):
        y = buffer[: span.stop - span.start]
        if itemsize == 2:  # widened to float32 first, exactly
            _half_bits_to_float32(x[span].view(_U16), y)
            np.divide(y, divisor, out=y)
        else:
            np.divide(x[span], divisor, out=y)
        _round_to_codes(y, flat[span], bounds, magic, bits, odd)
    return codes.view(np.int8), scale, zero_point


def _round_to_codes(
    y: np.ndarray,
    codes: np.ndarray,
    bounds: tuple[np.floating[Any], np.floating[Any]] | None,
    magic: np.floating[Any],
    bits: type[np.unsignedinteger[Any]],
    odd: int,
) -> None:
    """``codes`` (uint8) = rint(``y``) + zero point, ``y`` clipped first to ``bounds`` if any.

    ``y`` (overwritten) and ``codes`` have one shape; ``bits`` is the unsigned dtype of
    ``y``'s width. ``magic`` holds the zero point, less ``odd`` (``quantize_int8``).
    """
    if bounds is not None:  # integer bounds commute with rounding
        y.clip(*bounds, out=y)
    np.add(y, magic, out=y)
    np.copyto(codes, y.view(bits), casting="unsafe")
    if odd:
        np.add(codes, _ONE, out=codes)


def dequantize_int8(
    q: np.ndarray, dtype: np.dtype[Any], scale: float, zero_point: int
) -> np.ndarray:
    """(q - zero_point) * scale written straight into a new array of ``dtype``.

    Three passes over the result, and no other allocation (float16: chunk-sized
    scratch, or below ``_SMALL`` elements a float32 array cast by numpy): no
    float64 round trip. float16 and float32 compute in float32 (``q - zero_point``
    is exact there; the product is rounded once, for float16 once more into the
    result), float64 in float64. Values stay within the dtype's finite range.
    """
    wide = dtype == np.float64
    work: type[np.floating[Any]] = np.float64 if wide else _F32
    finite_max = _FINITE_MAX[dtype.char]
    # Near the float max the top code rounds past it; float16 clips in float32, then rounds.
    bound = work(finite_max) if 255 * scale > finite_max else None
    # Only a product near the work dtype's max can overflow (to inf, which bound clips).
    overflow = 255 * scale > _FINITE_MAX["d" if wide else "f"] / 2
    if dtype != np.float16:
        out = q.astype(dtype, order="C")  # the codes, exactly
        _affine(out, work(zero_point), work(scale), bound, overflow)
        return out
    if q.size < _SMALL:  # numpy's cast rounds as the kernel does (|x| <= 65504 after the clip)
        y = q.astype(_F32, order="C")
        _affine(y, _F32(zero_point), _F32(scale), bound, overflow)
        return y.astype(dtype)
    out = np.empty(q.shape, dtype=dtype)
    codes, flat = q.reshape(-1), out.reshape(-1)
    size = min(q.size, _CHUNK)
    buffer, scratch = np.empty(size, dtype=_F32), np.empty((2, size), dtype=_U32)
    for span in _spans(q.size):
        n = span.stop - span.start
        np.copyto(buffer[:n], codes[span])
        _affine(buffer[:n], _F32(zero_point), _F32(scale), bound, overflow)
        _float32_to_half_bits(buffer[:n], flat[span].view(_U16), scratch[0, :n], scratch[1, :n])
    return out


def _affine(
    out: np.ndarray,
    zero_point: np.floating[Any],
    scale: np.floating[Any],
    bound: np.floating[Any] | None,
    overflow: bool,
) -> None:
    """``out`` = (out - zero_point) * scale in place, clipped to +-``bound`` unless None.

    ``out`` holds the int8 codes as floats; ``overflow``: the product may overflow (to inf,
    silently).
    """
    np.subtract(out, zero_point, out=out)  # |q - zero_point| <= 255: exact in every float dtype
    if overflow:
        with np.errstate(over="ignore"):
            np.multiply(out, scale, out=out)
    else:
        np.multiply(out, scale, out=out)
    if bound is not None:
        out.clip(-bound, bound, out=out)


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
    # The largest bits, by argmax and item (cheaper than max): below 65536.0's, no sign bit
    # (not even -0.0), as after a ReLU.
    signed = bits.item(bits.argmax()) >= _HALF_SLOW_FROM
    if signed:
        np.bitwise_and(bits, _ABS_BITS, out=a)
        if a.item(a.argmax()) >= _HALF_SLOW_FROM:
            with np.errstate(over="ignore"):
                np.copyto(out, x.astype(np.float16).view(_U16))
            return
    magnitude, magic = a.view(_F32) if signed else x, m.view(_F32)
    magnitude.clip(_HALF_MIN_NORMAL, _HALF_OVER, out=magic)  # two bounds: the fast clip
    np.bitwise_and(m, _EXPONENT_BITS, out=m)
    np.add(m, _EXPONENT_13, out=m)  # 2**(e + 13)
    np.add(magic, magnitude, out=magic)  # the rounding
    np.right_shift(m, _U32_13, out=a)
    np.add(a, m, out=a)  # exponent << 10 (mod 2**16) + fraction
    if signed:
        np.right_shift(bits, _U32_16, out=m)
        np.bitwise_and(m, _SIGN_BIT_16, out=m)  # the sign
        np.add(a, m, out=a)
    np.add(a, _TWO_10, out=a)
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
    np.left_shift(bits, _U32_13, out=bits)
    np.bitwise_and(bits, _KEEP_BITS, out=bits)
    np.multiply(out, _HALF_TO_F32, out=out)
    # Bits below 65536.0's: no sign bit, no inf or NaN (one argmax, as after a ReLU).
    if not out.size or bits.item(bits.argmax()) < _HALF_SLOW_FROM:
        return True
    if out.max() >= 65536 or out.min() <= -65536:
        np.copyto(out, h.view(np.float16))
        return False
    return True
