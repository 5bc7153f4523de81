"""Tensor codecs: how one numpy array becomes one payload frame, and back.

The codec names and the dtypes allowed are in :mod:`wire.registry`; the
descriptor each payload travels with is :class:`~wire.descriptor.TensorMeta`.
``fp16`` and ``int8`` apply to float tensors only: other tensors go ``raw``
with the same compressor, and their ``TensorMeta`` says so.

Decoding trusts nothing: sizes are checked against ``Limits`` before anything
is allocated, and a compressed frame never expands past the exact size its
shape requires. A frame that disagrees with its descriptor is a
``PayloadError``; a frame the compression library rejects is a
``DecompressionError``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgesplit.errors import DecompressionError, PayloadError
from wire.descriptor import TensorMeta, check_descriptor, tensor_where
from wire.frame import byte_view
from wire.kernels import decode_fp16, dequantize_int8, encode_fp16, quantize_int8
from wire.limits import Limits
from wire.registry import (
    ALLOWED_DTYPES,
    DTYPE_NAMES,
    QUANTIZERS,
    Codec,
    lz4_block,
    parse_codec,
    wire_dtype,
    zstd,
)

ZSTD_LEVEL = 3
"""zstd compression level used by ``encode_tensor`` (zstd's own default)."""

# Per tensor, every call below counts on a small tensor: numpy dtypes are looked up here,
# not built (np.dtype() and newbyteorder() cost a few hundred ns each).
_DTYPES: dict[str, np.dtype[Any]] = {name: np.dtype(name) for name in ALLOWED_DTYPES}
_WIRE_DTYPES: dict[tuple[str, str], np.dtype[Any]] = {
    (q, name): wire_dtype(Codec(q), name) for q in QUANTIZERS for name in ALLOWED_DTYPES
}
"""``wire_dtype`` by (quantizer, dtype name)."""
_NO_BYTES = memoryview(b"")


def encode_tensor(
    name: str, array: np.ndarray, codec: str | Codec
) -> tuple[TensorMeta, memoryview | bytes]:
    """Encode one array as a descriptor and a payload frame.

    The payload is a zero-copy view of ``array`` for ``raw`` on a C-contiguous
    little-endian array: do not modify the array until the frame is sent.
    Otherwise it is a contiguous little-endian copy. ``fp16`` turns |x| >= 65520
    into inf (65504 < |x| < 65520 round to 65504). ``int8`` maps [min(x, 0),
    max(x, 0)] onto 256 codes, so 0.0 is exact and each value is off by at most
    scale / 2.

    Raises:
        PayloadError: an unknown codec, a dtype outside ``ALLOWED_DTYPES``, or
            NaN/inf values with ``int8``.
    """
    parsed = parse_codec(codec.name if isinstance(codec, Codec) else codec)
    if not isinstance(name, str) or not name:
        raise PayloadError(f"tensor name must be a non-empty string, got {name!r}")
    if not isinstance(array, np.ndarray):
        raise PayloadError(f"tensor {name!r}: expected a numpy array, got {type(array).__name__}")
    dtype = DTYPE_NAMES.get(array.dtype.char) or array.dtype.name
    if dtype not in ALLOWED_DTYPES:
        raise PayloadError(
            f"tensor {name!r}: dtype={array.dtype} cannot be sent; "
            f"allowed: {', '.join(ALLOWED_DTYPES)}"
        )
    if parsed.quantizer != "raw" and array.dtype.kind != "f":
        parsed = Codec("raw", parsed.compressor)
    scale: float | None = None
    zero_point: int | None = None
    if parsed.quantizer == "int8":
        wire, scale, zero_point = quantize_int8(name, array)
    elif parsed.quantizer == "fp16":
        wire = encode_fp16(array)
    else:
        wire = np.ascontiguousarray(array, dtype=_WIRE_DTYPES["raw", dtype])
    flat = _byte_view(wire)
    payload = flat if parsed.compressor is None else compress(parsed.compressor, flat)
    meta = TensorMeta(name, dtype, array.shape, parsed.name, len(payload), scale, zero_point)
    return meta, payload


def _byte_view(wire: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array as a flat memoryview: no copy."""
    if not wire.size:
        return _NO_BYTES
    if wire.dtype.isnative:  # memoryview casts from native formats only (any, on little-endian)
        return wire.data.cast("B")
    return wire.reshape(-1).view(np.uint8).data


def compress(compressor: str, data: memoryview) -> bytes:
    """``data`` compressed with ``compressor`` (``lz4`` block or one ``zstd`` frame)."""
    if compressor == "lz4":
        return bytes(lz4_block.compress(data, store_size=False))
    return zstd.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def decode_tensor(
    meta: TensorMeta, payload: object, limits: Limits, *, index: int | None = None
) -> np.ndarray:
    """Decode one payload frame into an array of ``meta.dtype`` and ``meta.shape``.

    For ``raw`` without compression the result is a read-only zero-copy view of
    ``payload``: anything with the buffer protocol, or a zmq ``Frame`` (anything
    with a ``.buffer``). ``index``, the tensor's position in its message, only
    goes into error messages.

    Raises:
        PayloadError: ``meta`` is invalid under ``limits`` or the payload's size
            disagrees with it.
        DecompressionError: the compressed payload is corrupt or does not expand
            to exactly the declared size.
    """
    codec, wire = wire_array(meta, payload, limits, index)
    quantizer = codec.quantizer
    if quantizer == "int8":
        assert meta.scale is not None and meta.zero_point is not None  # by check_descriptor
        return dequantize_int8(wire, _DTYPES[meta.dtype], meta.scale, meta.zero_point)
    if quantizer == "fp16":
        return decode_fp16(wire, _DTYPES[meta.dtype])
    return wire if wire.dtype.isnative else wire.astype(_DTYPES[meta.dtype])


def wire_array(
    meta: TensorMeta, payload: object, limits: Limits, index: int | None = None
) -> tuple[Codec, np.ndarray]:
    """A payload's codec and its values as sent (decompressed, still quantized).

    Checks ``meta`` against ``limits`` and the payload against ``meta``: the
    first half of :func:`decode_tensor`, with the same errors.
    """
    where = tensor_where(meta.name, index)
    codec = check_descriptor(meta, limits, where)
    count = math.prod(meta.shape)
    dtype = _WIRE_DTYPES[codec.quantizer, meta.dtype]
    expected = count * dtype.itemsize
    if codec.compressor is None:
        raw: memoryview | bytes = byte_view(payload, where)
    else:
        data = sized_view(meta, payload, index)
        raw = _decompress(codec.compressor, data, expected, where)
    if len(raw) != expected:
        error = DecompressionError if codec.compressor else PayloadError
        action = "decompresses to" if codec.compressor else "has"
        raise error(
            f"{where}: payload {action} {len(raw)} bytes, shape {meta.shape} {meta.dtype} "
            f"with codec {meta.codec} needs {expected}"
        )
    if meta.dtype == "bool" and count and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise PayloadError(f"{where}: bool payload holds bytes other than 0 and 1")
    return codec, np.ndarray(meta.shape, dtype, raw)  # a view of ``raw``, as np.frombuffer


def sized_view(meta: TensorMeta, payload: object, index: int | None = None) -> memoryview:
    """A byte view of ``payload``, checked to be the ``nbytes`` its descriptor declares.

    Raises:
        PayloadError: not a bytes-like frame, or of another length.
    """
    where = tensor_where(meta.name, index)
    data = byte_view(payload, where)
    if len(data) != meta.nbytes:
        raise PayloadError(
            f"{where}: payload has {len(data)} bytes, header declares nbytes={meta.nbytes}"
        )
    return data


def _decompress(compressor: str, data: memoryview, expected: int, where: str) -> bytes:
    """Expand ``data`` to at most ``expected`` bytes; never allocates more."""
    if compressor == "lz4":
        try:
            return bytes(lz4_block.decompress(data, uncompressed_size=expected))
        except (lz4_block.LZ4BlockError, ValueError) as exc:
            raise DecompressionError(
                f"{where}: lz4 payload of {len(data)} bytes is corrupt or expands past "
                f"{expected} bytes: {exc}"
            ) from exc
    try:
        # zstd allocates a declared content size whatever max_output_size says: check it first.
        declared = zstd.frame_content_size(data)
        if declared not in (-1, expected):
            raise DecompressionError(
                f"{where}: zstd frame declares content size {declared} bytes, expected {expected}"
            )
        # With no declared size, max_output_size is the buffer zstd decodes into: no more.
        decompressor = zstd.ZstdDecompressor()
        return decompressor.decompress(data, max_output_size=expected, allow_extra_data=False)
    except zstd.ZstdError as exc:
        raise DecompressionError(
            f"{where}: zstd payload of {len(data)} bytes is corrupt or expands past "
            f"{expected} bytes: {exc}"
        ) from exc
