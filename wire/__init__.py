"""The edge <-> cloud message format: a msgpack header frame, then tensor frames.

Sender::

    frames = encode_message("infer", request_id, {"act": activation}, codec="int8+lz4")
    socket.send_multipart(frames, copy=False)

Receiver::

    message, arrays = decode_message(socket.recv_multipart(copy=False), limits)

Every rejected message raises a ``WireError`` (``HeaderError``, ``PayloadError``
or ``DecompressionError``); ``error_code`` labels it for metrics. This package
imports neither torch nor zmq.
"""

from wire.codecs import (
    ALL_CODECS,
    ALLOWED_DTYPES,
    DEFAULT_CODEC,
    SUPPORTED_CODECS,
    Codec,
    TensorMeta,
    decode_tensor,
    encode_tensor,
    parse_codec,
)
from wire.message import (
    KINDS,
    PROTOCOL_VERSION,
    EncodedTensor,
    Limits,
    Message,
    decode_header,
    decode_message,
    decode_tensors,
    encode_message,
    encoded_tensors,
    error_code,
)

__all__ = [
    "ALLOWED_DTYPES",
    "ALL_CODECS",
    "Codec",
    "DEFAULT_CODEC",
    "EncodedTensor",
    "KINDS",
    "Limits",
    "Message",
    "PROTOCOL_VERSION",
    "SUPPORTED_CODECS",
    "TensorMeta",
    "decode_header",
    "decode_message",
    "decode_tensor",
    "decode_tensors",
    "encode_message",
    "encode_tensor",
    "encoded_tensors",
    "error_code",
    "parse_codec",
]
