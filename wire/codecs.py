"""Tensor codecs: how one numpy array becomes one payload frame, and back.

A codec name is a quantizer, ``raw`` (the array's own dtype), ``fp16`` or
``int8`` (affine, one scale and zero point per tensor), optionally followed by
a compressor, ``+lz4`` (LZ4 block) or ``+zstd`` (one zstd frame). ``fp16`` and
``int8`` apply to float tensors only: other tensors go ``raw`` with the same
compressor, and their ``TensorMeta`` says so. Wire bytes are little-endian.

Decoding trusts nothing: sizes are checked against ``Limits`` before anything
is allocated, and a compressed frame never expands past the exact size its
shape requires. A descriptor that is not a map of the known keys and types is
a ``HeaderError``; a declared value that cannot be decoded (dtype, codec,
shape, size, quantization) or a frame that disagrees with it is a
``PayloadError``; a frame the compression library rejects is a
``DecompressionError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgesplit.errors import DecompressionError, HeaderError, PayloadError, WireError
from wire.kernels import (
    INT8_MAX,
    INT8_MIN,
    decode_fp16,
    dequantize_int8,
    encode_fp16,
    quantize_int8,
)

if TYPE_CHECKING:
    from wire.message import Limits

try:
    import lz4.block as _lz4_block
except ImportError:  # pragma: no cover - exercised in a subprocess test
    _lz4_block = None  # type: ignore[assignment]

try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover - exercised in a subprocess test
    _zstd = None  # type: ignore[assignment]

QUANTIZERS: tuple[str, ...] = ("raw", "fp16", "int8")
COMPRESSORS: tuple[str, ...] = ("lz4", "zstd")

ALL_CODECS: tuple[str, ...] = tuple(
    name for q in QUANTIZERS for name in (q, *(f"{q}+{c}" for c in COMPRESSORS))
)
"""Every codec name the format defines, whether or not its library is installed."""

_INSTALLED_COMPRESSORS: frozenset[str] = frozenset(
    name for name, module in (("lz4", _lz4_block), ("zstd", _zstd)) if module is not None
)
_COMPRESSOR_PACKAGE = {"lz4": "lz4", "zstd": "zstandard"}

SUPPORTED_CODECS: tuple[str, ...] = tuple(
    name for name in ALL_CODECS if "+" not in name or name.split("+")[1] in _INSTALLED_COMPRESSORS
)
"""The codecs this process can encode and decode (their compression library imports)."""

DEFAULT_CODEC = "int8+lz4"

ALLOWED_DTYPES: tuple[str, ...] = tuple(
    "float16 float32 float64 int8 uint8 int16 int32 int64 bool".split()
)

_DTYPE_NAMES: dict[str, str] = {np.dtype(name).char: name for name in ALLOWED_DTYPES}
"""Type code -> name of the allowed dtypes, any byte order: numpy 2's ``dtype.name`` costs
microseconds on every encode, a lookup here nanoseconds."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)

ZSTD_LEVEL = 3
"""zstd compression level used by ``encode_tensor`` (zstd's own default)."""

_QUANTIZED_DTYPE: dict[str, np.dtype[Any]] = {"fp16": np.dtype("<f2"), "int8": np.dtype("i1")}


@dataclass(frozen=True)
class Codec:
    """A parsed codec name: a quantizer and an optional compressor."""

    quantizer: str
    compressor: str | None = None

    @property
    def name(self) -> str:
        """The codec's wire name, e.g. ``int8+lz4``."""
        if self.compressor is None:
            return self.quantizer
        return f"{self.quantizer}+{self.compressor}"


def parse_codec(name: str) -> Codec:
    """Parse a codec name, refusing one that is unknown or whose library is missing.

    Raises:
        PayloadError: ``name`` is not one of ``ALL_CODECS``, or its compressor's
            package is not installed in this process.
    """
    known = _PARSED.get(name) if isinstance(name, str) else None
    if known is not None:
        return known
    supported = ", ".join(SUPPORTED_CODECS)
    if not isinstance(name, str) or name not in ALL_CODECS:
        raise PayloadError(f"unknown codec {name!r}; supported codecs: {supported}")
    quantizer, _, compressor = name.partition("+")
    if compressor and compressor not in _INSTALLED_COMPRESSORS:
        raise PayloadError(
            f"codec {name!r} needs the {_COMPRESSOR_PACKAGE[compressor]!r} package, which is "
            f"not installed; install it or use one of: {supported}"
        )
    return Codec(quantizer, compressor or None)


_PARSED: dict[str, Codec] = {
    name: Codec(name.partition("+")[0], name.partition("+")[2] or None) for name in SUPPORTED_CODECS
}
"""The codecs this process supports, parsed once (``parse_codec`` runs for every tensor)."""


@dataclass(frozen=True)
class TensorMeta:
    """What the header says about one tensor frame.

    Attributes:
        name: the tensor's name, unique within a message.
        dtype: the original dtype name, which ``decode_tensor`` returns.
        shape: the array's shape.
        codec: the codec actually used (an integer tensor asked for ``int8`` says ``raw``).
        nbytes: the payload frame's length on the wire, in bytes.
        scale: ``int8`` only: x ~= (q - zero_point) * scale.
        zero_point: ``int8`` only: the int8 code of 0.0.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec: str
    nbytes: int
    scale: float | None = None
    zero_point: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The descriptor as sent in the msgpack header (short keys)."""
        d: dict[str, Any] = {
            "n": self.name,
            "d": self.dtype,
            "s": list(self.shape),
            "c": self.codec,
        }
        d.update(b=self.nbytes, q=self.scale, z=self.zero_point)
        return {key: value for key, value in d.items() if value is not None}

    @classmethod
    def from_dict(cls, d: object, limits: Limits, *, index: int | None = None) -> TensorMeta:
        """Build a descriptor from an untrusted header map, checked against ``limits``.

        ``index``, the descriptor's position in its message, goes into error messages.

        Raises:
            HeaderError: not a map of the known keys with the right types.
            PayloadError: a declared value cannot be decoded within ``limits``.
        """
        where = f"tensor (index {index})" if index is not None else "tensor"
        if not isinstance(d, dict):
            raise HeaderError(f"{where}: descriptor is a {type(d).__name__}, expected a map")
        missing = sorted(_DESCRIPTOR_REQUIRED - d.keys())
        unknown = sorted(map(repr, d.keys() - _DESCRIPTOR_REQUIRED - _DESCRIPTOR_OPTIONAL))
        if missing or unknown:
            raise HeaderError(
                f"{where}: descriptor keys missing={missing} unexpected=[{', '.join(unknown)}]"
            )
        name = d["n"]
        if not isinstance(name, str) or not name:
            raise HeaderError(f"{where}: name (key 'n') must be a non-empty string, got {name!r}")
        where = _where(name, index)
        shape = d["s"]
        if not isinstance(shape, list) or not all(_is_int(v) for v in shape):
            raise HeaderError(f"{where}: shape (key 's') must be a list of ints, got {shape!r}")
        for key, label, ok in (
            ("d", "dtype", isinstance(d["d"], str)),
            ("c", "codec", isinstance(d["c"], str)),
            ("b", "nbytes", _is_int(d["b"])),
            ("q", "scale", d.get("q") is None or _is_int(d["q"]) or isinstance(d["q"], float)),
            ("z", "zero_point", d.get("z") is None or _is_int(d["z"])),
        ):
            if not ok:
                raise HeaderError(f"{where}: {label} (key {key!r}) has wrong type: {d[key]!r}")
        scale = None if d.get("q") is None else float(d["q"])
        meta = cls(name, d["d"], tuple(shape), d["c"], d["b"], scale, d.get("z"))
        _check_meta(meta, limits, where)
        return meta


_DESCRIPTOR_REQUIRED = frozenset({"n", "d", "s", "c", "b"})
_DESCRIPTOR_OPTIONAL = frozenset({"q", "z"})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _where(name: str, index: int | None) -> str:
    return f"tensor {name!r} (index {index})" if index is not None else f"tensor {name!r}"


def decoded_nbytes(meta: TensorMeta) -> int:
    """Bytes of the array ``decode_tensor`` returns (Python ints: never overflows)."""
    return math.prod(meta.shape) * np.dtype(meta.dtype).itemsize


def _wire_dtype(codec: Codec, dtype: str) -> np.dtype[Any]:
    """The dtype of the bytes on the wire, before compression."""
    return _QUANTIZED_DTYPE.get(codec.quantizer, np.dtype(dtype).newbyteorder("<"))


def _check_meta(meta: TensorMeta, limits: Limits, where: str) -> Codec:
    """Check a descriptor's values against the format and ``limits``; return its codec.

    Raises:
        PayloadError: an unknown dtype or codec, a bad shape, a size over a limit,
            or quantization parameters that do not fit the codec.
    """
    if meta.dtype not in ALLOWED_DTYPES:
        raise PayloadError(
            f"{where}: unknown dtype {meta.dtype!r}; allowed: {', '.join(ALLOWED_DTYPES)}"
        )
    try:
        codec = parse_codec(meta.codec)
    except PayloadError as exc:
        raise PayloadError(f"{where}: {exc}") from exc
    if codec.quantizer != "raw" and not meta.dtype.startswith("float"):
        raise PayloadError(
            f"{where}: codec {meta.codec} applies to float tensors only, dtype={meta.dtype}"
        )
    if len(meta.shape) > limits.max_ndim:
        raise PayloadError(f"{where}: ndim={len(meta.shape)} exceeds max_ndim={limits.max_ndim}")
    for axis, dim in enumerate(meta.shape):
        if not 0 <= dim <= limits.max_dim:
            raise PayloadError(
                f"{where}: shape {meta.shape} has dim={dim} at axis={axis}, "
                f"allowed 0..max_dim={limits.max_dim}"
            )
    size = decoded_nbytes(meta)
    if size > limits.max_tensor_bytes:
        raise PayloadError(
            f"{where}: shape {meta.shape} {meta.dtype} decodes to {size} bytes, "
            f"over max_tensor_bytes={limits.max_tensor_bytes}"
        )
    if codec.compressor is None:
        needed = math.prod(meta.shape) * _wire_dtype(codec, meta.dtype).itemsize
        if meta.nbytes != needed:
            raise PayloadError(
                f"{where}: header declares nbytes={meta.nbytes}, shape {meta.shape} "
                f"{meta.dtype} with codec {meta.codec} needs {needed}"
            )
    _check_quantization(meta, codec, where)
    return codec


def _check_quantization(meta: TensorMeta, codec: Codec, where: str) -> None:
    if codec.quantizer != "int8":
        if meta.scale is not None or meta.zero_point is not None:
            raise PayloadError(
                f"{where}: codec {meta.codec} takes no scale or zero_point, got "
                f"scale={meta.scale} zero_point={meta.zero_point}"
            )
        return
    if meta.scale is None or meta.zero_point is None:
        raise PayloadError(
            f"{where}: codec {meta.codec} needs a scale (key 'q') and a zero_point (key 'z'), "
            f"got scale={meta.scale} zero_point={meta.zero_point}"
        )
    if not (math.isfinite(meta.scale) and meta.scale > 0):
        raise PayloadError(f"{where}: int8 scale must be finite and > 0, got scale={meta.scale}")
    if meta.dtype != "float64" and meta.scale > _FLOAT32_MAX:
        # Dequantized in float32: such a scale is inf there, and the zero point's code NaN.
        raise PayloadError(
            f"{where}: int8 scale={meta.scale} is beyond float32's range, for a {meta.dtype} tensor"
        )
    if not (_is_int(meta.zero_point) and INT8_MIN <= meta.zero_point <= INT8_MAX):
        raise PayloadError(
            f"{where}: int8 zero_point must be an int in [-128, 127], "
            f"got zero_point={meta.zero_point!r}"
        )


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
    dtype = _DTYPE_NAMES.get(array.dtype.char) or array.dtype.name
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
        wire = np.ascontiguousarray(array, dtype=_wire_dtype(parsed, dtype))
    flat = wire.reshape(-1).view(np.uint8).data  # a memoryview: no copy
    payload = flat if parsed.compressor is None else _compress(parsed.compressor, flat)
    shape = tuple(int(d) for d in array.shape)
    meta = TensorMeta(name, dtype, shape, parsed.name, len(payload), scale, zero_point)
    return meta, payload


# --- float kernels: a few vectorized numpy passes each -------------------------------------
#
def _compress(compressor: str, data: memoryview) -> bytes:
    if compressor == "lz4":
        return _lz4_block.compress(data, store_size=False)
    return _zstd.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


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
    if codec.quantizer == "int8":
        assert meta.scale is not None and meta.zero_point is not None  # by _check_meta
        return dequantize_int8(wire, np.dtype(meta.dtype), meta.scale, meta.zero_point)
    if codec.quantizer == "fp16":
        return decode_fp16(wire, np.dtype(meta.dtype))
    return wire.astype(np.dtype(meta.dtype), copy=False)


def wire_array(
    meta: TensorMeta, payload: object, limits: Limits, index: int | None = None
) -> tuple[Codec, np.ndarray]:
    """A payload's codec and its values as sent (decompressed, still quantized).

    Checks ``meta`` against ``limits`` and the payload against ``meta``: the
    first half of :func:`decode_tensor`, with the same errors.
    """
    where = _where(meta.name, index)
    codec = _check_meta(meta, limits, where)
    count = math.prod(meta.shape)
    wire_dtype = _wire_dtype(codec, meta.dtype)
    expected = count * wire_dtype.itemsize
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
    return codec, np.frombuffer(raw, dtype=wire_dtype).reshape(meta.shape)


def sized_view(meta: TensorMeta, payload: object, index: int | None = None) -> memoryview:
    """A byte view of ``payload``, checked to be the ``nbytes`` its descriptor declares.

    Raises:
        PayloadError: not a bytes-like frame, or of another length.
    """
    where = _where(meta.name, index)
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
            return _lz4_block.decompress(data, uncompressed_size=expected)
        except (_lz4_block.LZ4BlockError, ValueError) as exc:
            raise DecompressionError(
                f"{where}: lz4 payload of {len(data)} bytes is corrupt or expands past "
                f"{expected} bytes: {exc}"
            ) from exc
    try:
        # zstd allocates a declared content size whatever max_output_size says: check it first.
        declared = _zstd.frame_content_size(data)
        if declared not in (-1, expected):
            raise DecompressionError(
                f"{where}: zstd frame declares content size {declared} bytes, expected {expected}"
            )
        # With no declared size, max_output_size is the buffer zstd decodes into: no more.
        decompressor = _zstd.ZstdDecompressor()
        return decompressor.decompress(data, max_output_size=expected, allow_extra_data=False)
    except _zstd.ZstdError as exc:
        raise DecompressionError(
            f"{where}: zstd payload of {len(data)} bytes is corrupt or expands past "
            f"{expected} bytes: {exc}"
        ) from exc


def byte_view(frame: object, where: str, error: type[WireError] = PayloadError) -> memoryview:
    """A flat byte view of a frame: bytes, memoryview, numpy array or zmq ``Frame``.

    Zero-copy for the usual frames (contiguous, one byte per item); anything else
    is copied once.

    Raises:
        WireError: ``error`` (a ``PayloadError`` unless given) when ``frame``
            does not expose a buffer.
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)) and hasattr(frame, "buffer"):
        frame = frame.buffer
    try:
        view = memoryview(frame)  # type: ignore[arg-type]
    except TypeError as exc:
        raise error(f"{where}: expected a bytes-like frame, got {type(frame).__name__}") from exc
    if view.ndim == 1 and view.format == "B" and view.c_contiguous:
        return view
    return memoryview(view.tobytes())
