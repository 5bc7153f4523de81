"""The cloud node over real ZeroMQ sockets: serves tails, rejects bad input, keeps serving."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

import wire
from cloud_node.backends import OnnxRuntimeBackend
from cloud_node.server import CloudConfig, CloudNode
from edge_node.head import HeadRunner
from edgesplit.bundle import Bundle, segment_chain
from edgesplit.errors import TransportError
from edgesplit.onnxrt import create_session


@pytest.fixture
def dealer(cloud):
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(cloud.endpoint)
    yield sock
    sock.close(linger=0)
    context.term()


def _roundtrip(sock: zmq.Socket, frames: list) -> wire.AnyMessage:
    sock.send_multipart(frames, copy=False)
    return wire.decode(sock.recv_multipart())


def _activation(bundle: Bundle, cut_id: str, n: int = 2) -> np.ndarray:
    """The real cut tensor for ``n`` random inputs, computed by the head segments."""
    x = np.random.default_rng(3).standard_normal(
        (n, *bundle.manifest.model.input.shape), dtype=np.float32
    )
    cut = bundle.manifest.cut(cut_id)
    start = {bundle.manifest.model.input.name: x}
    head = HeadRunner(bundle).run(segment_chain(bundle.manifest, cut), start, None)
    return head.tensors(cut.names)[cut.name]


def _infer(
    bundle: Bundle,
    cut_id: str,
    value: np.ndarray,
    request_id: int = 7,
    codec: str = "raw",
    bundle_id: str | None = None,
) -> list:
    cut = bundle.manifest.cut(cut_id)
    tensors = (wire.Tensor(cut.name, value),)
    return wire.encode(
        wire.InferRequest(request_id, bundle_id or bundle.id, cut_id, tensors), codec
    )


def test_result_equals_running_the_tail_directly(cloud, dealer, untrained_bundle: Bundle) -> None:
    cut = untrained_bundle.manifest.cuts[6]
    act = _activation(untrained_bundle, cut.id)
    message = _roundtrip(dealer, _infer(untrained_bundle, cut.id, act))
    assert isinstance(message, wire.Result) and message.request_id == 7
    direct = create_session(untrained_bundle.tail_path(cut)).run(None, {cut.name: act})[0]
    np.testing.assert_array_equal(message.arrays()[untrained_bundle.manifest.model.output], direct)
    assert message.cut == cut.id
    assert 0 <= message.queue_s < 1 and 0 < message.compute_s < 1


def test_compressed_codec_is_decoded(cloud, dealer, untrained_bundle: Bundle) -> None:
    cut = untrained_bundle.manifest.cuts[3]
    act = _activation(untrained_bundle, cut.id)
    message = _roundtrip(dealer, _infer(untrained_bundle, cut.id, act, codec="int8+zstd"))
    assert isinstance(message, wire.Result)
    assert message.arrays()[untrained_bundle.manifest.model.output].shape == (2, 10)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"\xc1garbage"], "header"),
        ([b""], "header"),
        ([wire.encode(wire.Ping(1))[0], b"extra"], "payload"),
    ],
)
def test_malformed_frames_get_an_error_and_the_node_keeps_serving(
    cloud, dealer, untrained_bundle: Bundle, frames: list, code: str
) -> None:
    message = _roundtrip(dealer, frames)
    assert isinstance(message, wire.ErrorReply) and message.code == code
    assert cloud.node.counts[f"error_{code}"] == 1
    # A good request right after is served.
    cut = untrained_bundle.manifest.cuts[1]
    message = _roundtrip(
        dealer, _infer(untrained_bundle, cut.id, _activation(untrained_bundle, cut.id))
    )
    assert isinstance(message, wire.Result)


def test_requests_that_cannot_be_served_are_refused_by_code(
    cloud, dealer, untrained_bundle: Bundle
) -> None:
    m = untrained_bundle.manifest
    act = _activation(untrained_bundle, m.cuts[1].id)
    cases = [
        (_infer(untrained_bundle, m.cuts[1].id, act, bundle_id="0" * 64), "bundle_mismatch"),
        (_infer(untrained_bundle, m.edge_only.id, act), "unknown_cut"),
        (
            wire.encode(
                wire.InferRequest(9, untrained_bundle.id, "c99", (wire.Tensor("c01", act),))
            ),
            "unknown_cut",
        ),
        (_infer(untrained_bundle, m.cuts[1].id, act[:, :3]), "shape"),
        (_infer(untrained_bundle, m.cuts[1].id, act.astype(np.float64)), "shape"),
        (wire.encode(wire.Result(9)), "kind"),
        (wire.encode(wire.Welcome(9)), "kind"),
    ]
    for frames, code in cases:
        message = _roundtrip(dealer, frames)
        assert isinstance(message, wire.ErrorReply) and message.code == code, message
    assert sum(v for k, v in cloud.node.counts.items() if k.startswith("error_")) == len(cases)


def test_ping_names_the_bundle(cloud, dealer, untrained_bundle: Bundle) -> None:
    message = _roundtrip(dealer, wire.encode(wire.Ping(3)))
    assert isinstance(message, wire.Pong) and message.bundle == untrained_bundle.id
    assert message.served == (untrained_bundle.id,) and message.backend == "onnxruntime"


def test_port_in_use_is_a_clear_error(cloud, untrained_bundle: Bundle) -> None:
    node = CloudNode(
        untrained_bundle, OnnxRuntimeBackend(untrained_bundle), CloudConfig(bind=cloud.endpoint)
    )
    with pytest.raises(TransportError, match=f"cannot bind {cloud.endpoint}.*in use"), node:
        pass
