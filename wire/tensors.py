"""The tensors a message carries: arrays by name, or payloads kept as they came off the wire.

A :class:`Tensor` is a named array: what a sender hands to ``encode`` and
what ``decode`` returns. An :class:`EncodedTensor` is a descriptor and its
payload, not decoded: what the cloud's ingress admits (it checks lengths, not
values) and hands to wherever the tail runs, and what a sender that encodes
once re-sends as it is. Both answer ``name``, ``dtype`` and ``shape`` from what
they hold, so a receiver checks a request without decoding it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from wire.codecs import decode_tensor, encode_tensor
from wire.descriptor import TensorMeta
from wire.limits import DEFAULT_LIMITS, Limits
from wire.registry import DTYPE_NAMES, Codec


@dataclass(frozen=True, eq=False)  # an array: no field-by-field equality
class Tensor:
    """One named array of a message.

    Attributes:
        name: unique within its message (a cut's tensor name, a model output's).
        array: the values; a received ``raw`` array is a read-only view of its frame.
    """

    name: str
    array: np.ndarray

    @property
    def dtype(self) -> str:
        """The array's dtype name (``float32``...)."""
        return DTYPE_NAMES.get(self.array.dtype.char) or self.array.dtype.name

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(int(d) for d in self.array.shape)


@dataclass(frozen=True, eq=False)  # a payload is an array: no field-by-field equality
class EncodedTensor:
    """One tensor as it came off the wire: its descriptor and its payload, not decoded.

    The payload is a ``uint8`` view of the received frame (no copy);
    the pair travels as it is to wherever the tensor is decoded (a worker, a
    Ray replica: numpy arrays cross processes as out-of-band buffers).
    """

    meta: TensorMeta
    payload: np.ndarray

    @classmethod
    def from_array(cls, name: str, array: np.ndarray, codec: str | Codec = "raw") -> EncodedTensor:
        """``array`` encoded once with ``codec`` (no copy for ``raw`` C-contiguous little-endian).

        Raises:
            PayloadError: as :func:`wire.encode_tensor`.
        """
        meta, payload = encode_tensor(name, array, codec)
        return cls(meta, np.frombuffer(payload, dtype=np.uint8))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Compact across processes: the descriptor's values, not its class and field names.
        m = self.meta
        values = (m.name, m.dtype, m.shape, m.codec, m.nbytes, m.scale, m.zero_point)
        return _rebuild_encoded, (values, self.payload)

    @property
    def name(self) -> str:
        """The tensor's name, as declared."""
        return self.meta.name

    @property
    def dtype(self) -> str:
        """The dtype the tensor decodes to, as declared."""
        return self.meta.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape the tensor decodes to, as declared."""
        return self.meta.shape

    @property
    def nbytes(self) -> int:
        """Bytes of the payload as sent (compressed, quantized)."""
        return int(self.payload.nbytes)

    def decode(self, limits: Limits = DEFAULT_LIMITS, index: int | None = None) -> np.ndarray:
        """The array, decoded straight into its declared dtype.

        Raises:
            PayloadError: the payload disagrees with the descriptor.
            DecompressionError: a compressed payload is corrupt or expands wrongly.
        """
        return decode_tensor(self.meta, self.payload, limits, index=index)


def _rebuild_encoded(values: tuple[Any, ...], payload: np.ndarray) -> EncodedTensor:
    return EncodedTensor(TensorMeta(*values), payload)


AnyTensor = Tensor | EncodedTensor
"""A tensor of a message: an array (to send, or decoded) or a payload kept encoded."""


def tensors_of(arrays: Mapping[str, np.ndarray]) -> tuple[Tensor, ...]:
    """``arrays`` by name as a message's tensors, in the mapping's order."""
    return tuple(Tensor(name, array) for name, array in arrays.items())


def arrays_of(
    tensors: tuple[AnyTensor, ...], limits: Limits = DEFAULT_LIMITS
) -> dict[str, np.ndarray]:
    """The tensors' arrays by name; an encoded one decoded here, against ``limits``.

    Raises:
        PayloadError: an encoded payload disagrees with its descriptor.
        DecompressionError: an encoded payload is corrupt or expands wrongly.
    """
    return {
        t.name: t.array if isinstance(t, Tensor) else t.decode(limits, i)
        for i, t in enumerate(tensors)
    }
