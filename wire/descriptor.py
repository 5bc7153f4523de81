"""A tensor's descriptor in the header: name, dtype, shape, codec, size, quantization.

A descriptor that is not a map of the known keys and types is a
``HeaderError``; a declared value that cannot be decoded within ``Limits``
(dtype, codec, shape, size, quantization) is a ``PayloadError``. Every check
here costs nothing but the header: no payload is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesplit.errors import HeaderError, PayloadError
from wire.kernels import INT8_MAX, INT8_MIN
from wire.limits import Limits
from wire.registry import ALLOWED_DTYPES, Codec, parse_codec, wire_dtype

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_DESCRIPTOR_REQUIRED = frozenset({"n", "d", "s", "c", "b"})
_DESCRIPTOR_OPTIONAL = frozenset({"q", "z"})
_DESCRIPTOR_KEYS = _DESCRIPTOR_REQUIRED | _DESCRIPTOR_OPTIONAL
DESCRIPTOR_MAX_KEYS = len(_DESCRIPTOR_REQUIRED) + len(_DESCRIPTOR_OPTIONAL)


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
        keys = d.keys()
        if not (keys >= _DESCRIPTOR_REQUIRED and keys <= _DESCRIPTOR_KEYS):
            missing = sorted(_DESCRIPTOR_REQUIRED - keys)
            unknown = sorted(map(repr, keys - _DESCRIPTOR_KEYS))
            raise HeaderError(
                f"{where}: descriptor keys missing={missing} unexpected=[{', '.join(unknown)}]"
            )
        name = d["n"]
        if not isinstance(name, str) or not name:
            raise HeaderError(f"{where}: name (key 'n') must be a non-empty string, got {name!r}")
        where = tensor_where(name, index)
        shape = d["s"]
        if not isinstance(shape, list) or not all(is_int(v) for v in shape):
            raise HeaderError(f"{where}: shape (key 's') must be a list of ints, got {shape!r}")
        for key, label, ok in (
            ("d", "dtype", isinstance(d["d"], str)),
            ("c", "codec", isinstance(d["c"], str)),
            ("b", "nbytes", is_int(d["b"])),
            ("q", "scale", d.get("q") is None or is_int(d["q"]) or isinstance(d["q"], float)),
            ("z", "zero_point", d.get("z") is None or is_int(d["z"])),
        ):
            if not ok:
                raise HeaderError(f"{where}: {label} (key {key!r}) has wrong type: {d[key]!r}")
        scale = None if d.get("q") is None else float(d["q"])
        meta = cls(name, d["d"], tuple(shape), d["c"], d["b"], scale, d.get("z"))
        check_descriptor(meta, limits, where)
        return meta


def is_int(value: object) -> bool:
    """Whether ``value`` is an int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def tensor_where(name: str, index: int | None) -> str:
    """How error messages name a tensor: ``tensor 'act' (index 0)``."""
    return f"tensor {name!r} (index {index})" if index is not None else f"tensor {name!r}"


def decoded_nbytes(meta: TensorMeta) -> int:
    """Bytes of the array ``decode_tensor`` returns (Python ints: never overflows)."""
    return math.prod(meta.shape) * np.dtype(meta.dtype).itemsize


def check_descriptor(meta: TensorMeta, limits: Limits, where: str) -> Codec:
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
        needed = math.prod(meta.shape) * wire_dtype(codec, meta.dtype).itemsize
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
    if not (is_int(meta.zero_point) and INT8_MIN <= meta.zero_point <= INT8_MAX):
        raise PayloadError(
            f"{where}: int8 zero_point must be an int in [-128, 127], "
            f"got zero_point={meta.zero_point!r}"
        )
