"""What a receiver accepts: every size a message may declare, checked before allocation."""

from __future__ import annotations

from dataclasses import dataclass, fields

from edgesplit.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts; every size is checked before anything is allocated.

    Attributes:
        max_header_bytes: length of the header frame, checked before unpacking.
        max_tensors: tensors in one message.
        max_ndim: dimensions of one tensor.
        max_dim: size of one dimension.
        max_tensor_bytes: bytes of one decoded tensor (the array returned).
        max_total_bytes: bytes of all decoded tensors of one message.
        max_meta_entries: entries in the header's ``meta`` map.
        max_string_len: UTF-8 bytes of any header string (names, meta values).

    msgpack enforces string lengths, and bounds lists to max(max_tensors + 1, max_ndim)
    and maps to max(max_meta_entries, 7) items while unpacking: an oversize
    container found there is a ``HeaderError`` like any malformed header.
    """

    max_header_bytes: int = 64 * 1024
    max_tensors: int = 16
    max_ndim: int = 8
    max_dim: int = 1 << 24
    max_tensor_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    max_meta_entries: int = 32
    max_string_len: int = 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"Limits.{f.name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = Limits()
"""The limits a receiver applies unless given others."""
