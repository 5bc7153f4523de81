"""Which codecs and dtypes the format defines, and which this process supports.

A codec name is a quantizer, ``raw`` (the array's own dtype), ``fp16`` or
``int8`` (affine, one scale and zero point per tensor), optionally followed by
a compressor, ``+lz4`` (LZ4 block) or ``+zstd`` (one zstd frame). A codec whose
compression library does not import is left out of ``SUPPORTED_CODECS`` (as
httpx's ``SUPPORTED_DECODERS`` does). Wire bytes are little-endian.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesplit.errors import PayloadError

try:
    import lz4.block as lz4_block
except ImportError:  # pragma: no cover - exercised in a subprocess test
    lz4_block = None

try:
    import zstandard as zstd
except ImportError:  # pragma: no cover - exercised in a subprocess test
    zstd = None  # type: ignore[assignment]

QUANTIZERS: tuple[str, ...] = ("raw", "fp16", "int8")
COMPRESSORS: tuple[str, ...] = ("lz4", "zstd")

ALL_CODECS: tuple[str, ...] = tuple(
    name for q in QUANTIZERS for name in (q, *(f"{q}+{c}" for c in COMPRESSORS))
)
"""Every codec name the format defines, whether or not its library is installed."""

_INSTALLED_COMPRESSORS: frozenset[str] = frozenset(
    name for name, module in (("lz4", lz4_block), ("zstd", zstd)) if module is not None
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

DTYPE_NAMES: dict[str, str] = {np.dtype(name).char: name for name in ALLOWED_DTYPES}
"""Type code -> name of the allowed dtypes, any byte order: numpy 2's ``dtype.name`` costs
microseconds on every encode, a lookup here nanoseconds."""

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


def wire_dtype(codec: Codec, dtype: str) -> np.dtype[Any]:
    """The dtype of the bytes on the wire, before compression."""
    return _QUANTIZED_DTYPE.get(codec.quantizer, np.dtype(dtype).newbyteorder("<"))


__all__ = [
    "ALLOWED_DTYPES",
    "ALL_CODECS",
    "COMPRESSORS",
    "DEFAULT_CODEC",
    "DTYPE_NAMES",
    "QUANTIZERS",
    "SUPPORTED_CODECS",
    "Codec",
    "lz4_block",
    "parse_codec",
    "wire_dtype",
    "zstd",
]
