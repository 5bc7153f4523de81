"""Tensors kept as received (``wire.EncodedTensor``): checked cheaply, decoded where used."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import wire
from edgesplit.errors import DecompressionError, PayloadError


def _frames(codec: str) -> tuple[list, np.ndarray]:
    x = np.maximum(np.random.default_rng(1).standard_normal((2, 8, 5, 5)), 0).astype(np.float32)
    return wire.encode(wire.InferRequest(3, "b", "c", (wire.Tensor("act", x),)), codec), x


def _kept(frames: list) -> tuple[wire.EncodedTensor, ...]:
    """The tensors of an infer request as the cloud's ingress admits them."""
    request = wire.decode(frames, encoded=True)
    assert isinstance(request, wire.InferRequest)
    tensors = tuple(t for t in request.tensors if isinstance(t, wire.EncodedTensor))
    assert len(tensors) == len(request.tensors)
    return tensors


@pytest.mark.parametrize("codec", wire.SUPPORTED_CODECS)
def test_an_encoded_tensor_decodes_as_the_whole_message_does(codec: str) -> None:
    frames, _ = _frames(codec)
    (tensor,) = _kept(frames)
    assert tensor.nbytes == len(frames[1]) == tensor.meta.nbytes
    decoded = wire.decode(frames)
    assert isinstance(decoded, wire.InferRequest)
    np.testing.assert_array_equal(tensor.decode(), decoded.arrays()["act"])
    assert tensor.decode().dtype == np.float32


def test_a_payload_of_another_length_than_declared_is_refused_before_decoding() -> None:
    frames, _ = _frames("int8+lz4")
    with pytest.raises(PayloadError, match=r"tensor 'act' \(index 0\): payload has 3 bytes"):
        _kept([frames[0], b"abc"])


def test_a_corrupt_payload_of_the_declared_length_fails_only_at_decode() -> None:
    frames, _ = _frames("int8+lz4")
    frames[1] = b"\xff" * len(frames[1])
    (tensor,) = _kept(frames)
    with pytest.raises(DecompressionError, match="lz4"):
        tensor.decode(wire.Limits(), 0)


def test_the_payload_is_a_view_of_the_frame_and_crosses_processes_out_of_band() -> None:
    frames, x = _frames("raw")
    frame = bytearray(frames[1])
    (tensor,) = _kept([frames[0], frame])
    frame[0] ^= 0xFF  # a view: the change shows
    assert tensor.payload[0] == frame[0]
    frame[0] ^= 0xFF
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(tensor, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1 and memoryview(buffers[0]).nbytes == x.nbytes
    assert len(data) < 256  # the descriptor's values, not its class and field names
    again = pickle.loads(data, buffers=buffers)
    assert again.meta == tensor.meta
    np.testing.assert_array_equal(again.decode(), x)


def test_an_int8_scale_beyond_float32_is_refused_for_a_float32_tensor() -> None:
    frames, _ = _frames("int8")
    meta = _kept(frames)[0].meta
    huge = wire.TensorMeta(meta.name, meta.dtype, meta.shape, meta.codec, meta.nbytes, 1e39, 0)
    with pytest.raises(PayloadError, match="beyond float32's range"):
        wire.decode_tensor(huge, frames[1], wire.Limits())
    as_float64 = wire.TensorMeta(meta.name, "float64", meta.shape, meta.codec, meta.nbytes, 1e39, 0)
    assert np.isfinite(wire.decode_tensor(as_float64, frames[1], wire.Limits())).all()


def test_encoded_tensors_compare_by_identity() -> None:
    frames, _ = _frames("raw")
    a, b = _kept(frames)[0], _kept(frames)[0]
    assert a != b and a == a  # no element-wise array comparison, no error
