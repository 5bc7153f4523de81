"""The edge <-> cloud message format: one typed message per kind, tensors in frames of their own.

Sender::

    request = wire.InferRequest(request_id, bundle.id, cut.id, (wire.Tensor(cut.name, x),))
    socket.send_multipart(wire.encode(request, codec="int8+lz4"), copy=False)

Receiver::

    message = wire.decode(socket.recv_multipart(copy=False), limits)
    if isinstance(message, wire.Result):
        outputs = message.arrays()

Every rejected message raises a ``WireError`` (``HeaderError``, whose
``FieldError`` names a field of the wrong type or out of range,
``PayloadError`` or ``DecompressionError``); ``error_code`` labels it for
metrics. This package imports neither torch nor zmq.
"""

from wire.codecs import decode_tensor, encode_tensor
from wire.descriptor import TensorMeta
from wire.envelope import (
    Envelope,
    Frames,
    decode,
    decode_body,
    encode,
    error_code,
    read_envelope,
)
from wire.fields import FieldError
from wire.header import KINDS, PROTOCOL_VERSION
from wire.limits import Limits
from wire.messages import (
    MESSAGE_TYPES,
    AnyMessage,
    Busy,
    Chunk,
    ErrorReply,
    Fetch,
    FleetQuery,
    FleetReport,
    Hello,
    InferRequest,
    Ping,
    Pong,
    Result,
    Welcome,
)
from wire.registry import (
    ALL_CODECS,
    ALLOWED_DTYPES,
    DEFAULT_CODEC,
    SUPPORTED_CODECS,
    Codec,
    parse_codec,
)
from wire.tensors import AnyTensor, EncodedTensor, Tensor, tensors_of

__all__ = [
    "ALLOWED_DTYPES",
    "ALL_CODECS",
    "AnyMessage",
    "AnyTensor",
    "Busy",
    "Chunk",
    "Codec",
    "DEFAULT_CODEC",
    "EncodedTensor",
    "Envelope",
    "ErrorReply",
    "Fetch",
    "FieldError",
    "FleetQuery",
    "FleetReport",
    "Frames",
    "Hello",
    "InferRequest",
    "KINDS",
    "Limits",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Ping",
    "Pong",
    "Result",
    "SUPPORTED_CODECS",
    "Tensor",
    "TensorMeta",
    "Welcome",
    "decode",
    "decode_body",
    "decode_tensor",
    "encode",
    "encode_tensor",
    "error_code",
    "parse_codec",
    "read_envelope",
    "tensors_of",
]
