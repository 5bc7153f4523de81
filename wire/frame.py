"""A received frame as bytes: whatever the transport handed over, viewed without a copy."""

from __future__ import annotations

from edgesplit.errors import PayloadError, WireError


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
