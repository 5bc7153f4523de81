"""The cloud node's queue, batching, draining, CURVE and metrics, over real ZeroMQ sockets.

A gated backend (the real ONNX Runtime backend behind an event the test
opens) holds the worker so that the queue fills deterministically; those
tests turn the idle fast path off, so every request goes through the queue.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

import wire
from cloud_node.backends import DecodingBackend, OnnxRuntimeBackend
from cloud_node.server import CloudConfig
from edgesplit.bundle import Bundle, Cut
from edgesplit.errors import ConfigError
from edgesplit.metrics import serve_metrics
from edgesplit.onnxrt import create_session
from edgesplit.security import (
    generate_keys,
    load_allowed,
    load_keypair,
    load_public_key,
    make_curve_client,
)
from tests.cloud_node.test_server import _activation, _infer
from tests.conftest import RunningCloud


class GatedBackend(DecodingBackend):
    """The embedded backend, held until :attr:`gate` opens; records each call's batch size."""

    name = "gated-onnxruntime"
    provider = "CPUExecutionProvider"

    def __init__(self, bundle: Bundle) -> None:
        self.inner = OnnxRuntimeBackend(bundle, threads=1)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []
        self.threads: list[str] = []

    def infer(self, cut: Cut, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        self.gate.wait(10)
        self.calls.append(int(next(iter(inputs.values())).shape[0]))
        return self.inner.infer(cut, inputs)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def gated(untrained_bundle: Bundle) -> Iterator[tuple[RunningCloud, GatedBackend]]:
    backend = GatedBackend(untrained_bundle)
    served = RunningCloud(
        untrained_bundle,
        backend=backend,
        config=CloudConfig(bind="tcp://127.0.0.1:*", queue_size=4),
    )
    yield served, backend
    backend.gate.set()
    served.stop()


def _dealer(endpoint: str, context: zmq.Context) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(endpoint)
    return sock


def _replies(sock: zmq.Socket, n: int) -> dict[int, Any]:
    """The next ``n`` replies by request id (typed: ``wire.Result``, ``wire.Busy``...)."""
    out: dict[int, Any] = {}
    for _ in range(n):
        message = wire.decode(sock.recv_multipart())
        assert message.request_id not in out, "a request was answered twice"
        out[message.request_id] = message
    return out


def test_full_queue_answers_busy_at_once_and_serves_every_admitted_request(
    gated, untrained_bundle: Bundle
) -> None:
    served, backend = gated
    cut = untrained_bundle.manifest.cut("c03")
    act = _activation(untrained_bundle, cut.id, n=1)
    context = zmq.Context()
    sock = _dealer(served.endpoint, context)
    try:
        # One request runs (held at the gate), four fill the queue, the rest are refused.
        sent = 10
        sock.send_multipart(_infer(untrained_bundle, cut.id, act, request_id=1))
        assert backend.entered.wait(5)
        for rid in range(2, sent + 1):
            sock.send_multipart(_infer(untrained_bundle, cut.id, act, request_id=rid))
        busy_started = time.perf_counter()
        busy = _replies(sock, sent - 5)
        assert time.perf_counter() - busy_started < 1.0  # refused at once, not after the backlog
        assert {type(m) for m in busy.values()} == {wire.Busy}
        assert all(m.code == "busy" and m.depth == 4 for m in busy.values())
        backend.gate.set()
        served_replies = _replies(sock, 5)
    finally:
        sock.close()
        context.term()
    assert {type(m) for m in served_replies.values()} == {wire.Result}
    assert set(busy) | set(served_replies) == set(range(1, sent + 1))  # none lost, none twice
    # Once the worker has run a batch, the busy answer estimates the real backlog.
    assert served.node.queue.expected_wait_s() == 0.0
    assert served.node.counts["ok"] == 5 and served.node.counts["busy"] == 5


def test_queued_requests_for_one_cut_run_as_one_batch(gated, untrained_bundle: Bundle) -> None:
    served, backend = gated
    cut = untrained_bundle.manifest.cut("c06")
    acts = [_activation(untrained_bundle, cut.id, n=1 + i % 2) for i in range(5)]
    context = zmq.Context()
    sock = _dealer(served.endpoint, context)
    try:
        for rid, act in enumerate(acts, start=1):
            sock.send_multipart(_infer(untrained_bundle, cut.id, act, request_id=rid))
            if rid == 1:
                assert backend.entered.wait(5)
        time.sleep(0.2)  # the other four are read and queued behind the held one
        backend.gate.set()
        replies = _replies(sock, 5)
    finally:
        sock.close()
        context.term()
    # The first ran alone (it was taken before the others arrived); the four queued behind it
    # (1 + 2 + 1 + 2 rows) went as one batch of six rows.
    assert backend.calls == [1, 6]
    assert [replies[rid].batch for rid in range(1, 6)] == [1, 4, 4, 4, 4]
    tail = create_session(untrained_bundle.tail_path(cut))
    out = untrained_bundle.manifest.model.output
    for rid, act in enumerate(acts, start=1):
        direct = tail.run(None, {cut.name: act})[0]
        np.testing.assert_allclose(replies[rid].arrays()[out], direct, rtol=1e-5, atol=1e-6)


def test_batch_window_merges_requests_arriving_within_it(untrained_bundle: Bundle) -> None:
    backend = OnnxRuntimeBackend(untrained_bundle, threads=1)
    served = RunningCloud(
        untrained_bundle,
        backend=backend,
        config=CloudConfig(bind="tcp://127.0.0.1:*", batch_window_s=0.2),
    )
    cut = untrained_bundle.manifest.cut("c03")
    act = _activation(untrained_bundle, cut.id, n=1)
    context = zmq.Context()
    sock = _dealer(served.endpoint, context)
    try:
        sock.send_multipart(_infer(untrained_bundle, cut.id, act, request_id=1))
        time.sleep(0.05)
        sock.send_multipart(_infer(untrained_bundle, cut.id, act, request_id=2))
        replies = _replies(sock, 2)
    finally:
        sock.close()
        context.term()
        served.stop()
    assert [replies[r].batch for r in (1, 2)] == [2, 2]


def test_stop_answers_everything_already_admitted(untrained_bundle: Bundle) -> None:
    backend = GatedBackend(untrained_bundle)
    served = RunningCloud(
        untrained_bundle,
        backend=backend,
        config=CloudConfig(bind="tcp://127.0.0.1:*"),
    )
    cut = untrained_bundle.manifest.cut("c03")
    act = _activation(untrained_bundle, cut.id, n=1)
    context = zmq.Context()
    sock = _dealer(served.endpoint, context)
    try:
        for rid in range(1, 6):
            sock.send_multipart(_infer(untrained_bundle, cut.id, act, request_id=rid))
        time.sleep(0.2)
        served.node.stop()  # asked to stop with five requests admitted and none answered
        backend.gate.set()
        replies = _replies(sock, 5)
    finally:
        sock.close()
        context.term()
        served._thread.join(10)
        served.node.__exit__(None, None, None)
    assert sorted(replies) == [1, 2, 3, 4, 5]
    assert {type(m) for m in replies.values()} == {wire.Result}


@pytest.fixture
def curve_keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path, "cloud")
    generate_keys(tmp_path / "allowed", "edge")
    generate_keys(tmp_path / "strangers", "intruder")
    return tmp_path


def test_curve_serves_allowed_keys_only(curve_keys: Path, untrained_bundle: Bundle) -> None:
    config = CloudConfig(
        bind="tcp://127.0.0.1:*",
        keys=load_keypair(curve_keys / "cloud.key_secret"),
        allowed=load_allowed(curve_keys / "allowed"),
    )
    served = RunningCloud(
        untrained_bundle, backend=OnnxRuntimeBackend(untrained_bundle, threads=1), config=config
    )
    server_key = load_public_key(curve_keys / "cloud.key")
    context = zmq.Context()
    try:
        intruder = context.socket(zmq.DEALER)
        intruder.setsockopt(zmq.LINGER, 0)
        make_curve_client(
            intruder, load_keypair(curve_keys / "strangers" / "intruder.key_secret"), server_key
        )
        intruder.connect(served.endpoint)
        plain = _dealer(served.endpoint, context)
        for sock in (intruder, plain):
            sock.send_multipart(wire.encode(wire.Ping(1)))
        friend = context.socket(zmq.DEALER)
        friend.setsockopt(zmq.LINGER, 0)
        make_curve_client(
            friend, load_keypair(curve_keys / "allowed" / "edge.key_secret"), server_key
        )
        friend.connect(served.endpoint)
        friend.send_multipart(wire.encode(wire.Ping(2)))
        assert friend.poll(5000)
        assert isinstance(wire.decode(friend.recv_multipart()), wire.Pong)
        # No answer of any kind for the unknown key or the plaintext client.
        assert intruder.poll(1000) == 0 and plain.poll(100) == 0
        for sock in (intruder, plain, friend):
            sock.close()
    finally:
        context.term()
        served.stop()
    counts = served.node.counts
    assert counts["ping"] == 1 and counts["auth_allowed"] >= 1 and counts["auth_denied_key"] >= 1


def test_curve_without_allowed_clients_is_refused(curve_keys: Path) -> None:
    with pytest.raises(ConfigError, match="no client key is allowed"):
        CloudConfig(keys=load_keypair(curve_keys / "cloud.key_secret"))


def test_metrics_are_served_over_http(cloud, untrained_bundle: Bundle) -> None:
    server = serve_metrics(cloud.node.metrics.registry, 0)
    context = zmq.Context()
    sock = _dealer(cloud.endpoint, context)
    try:
        cut = untrained_bundle.manifest.cut("c03")
        act = _activation(untrained_bundle, cut.id, n=1)
        for rid in range(3):
            sock.send_multipart(_infer(untrained_bundle, cut.id, act, request_id=rid + 1))
        sock.send_multipart([b"\xc1garbage"])
        _replies(sock, 4)
        text = urllib.request.urlopen(server.url, timeout=5).read().decode()
    finally:
        sock.close()
        context.term()
        server.close()
    assert 'edgesplit_cloud_requests_total{cut="c03",outcome="ok"} 3.0' in text
    assert 'edgesplit_cloud_errors_total{kind="header"} 1.0' in text
    assert 'edgesplit_cloud_request_seconds_count{cut="c03",outcome="ok"} 3.0' in text
    assert "edgesplit_cloud_queue_depth 0.0" in text


def test_the_ingress_thread_never_decodes_or_runs_a_tail(
    untrained_bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even idle: every request is decoded and run by a worker, the ingress only routes."""
    decoded_on: list[str] = []
    decode = wire.EncodedTensor.decode

    def recording(self: wire.EncodedTensor, *args: object) -> np.ndarray:
        decoded_on.append(threading.current_thread().name)
        return decode(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(wire.EncodedTensor, "decode", recording)
    backend = GatedBackend(untrained_bundle)
    backend.gate.set()
    served = RunningCloud(
        untrained_bundle, backend=backend, config=CloudConfig(bind="tcp://127.0.0.1:*")
    )
    cut = untrained_bundle.manifest.cut("c03")
    act = _activation(untrained_bundle, cut.id, n=2)
    context = zmq.Context()
    sock = _dealer(served.endpoint, context)
    try:
        for rid in (1, 2, 3):
            sock.send_multipart(_infer(untrained_bundle, cut.id, act, request_id=rid))
            replies = _replies(sock, 1)
            assert isinstance(replies[rid], wire.Result) and replies[rid].batch == 1
    finally:
        sock.close()
        context.term()
        served.stop()
    direct = create_session(untrained_bundle.tail_path(cut)).run(None, {cut.name: act})[0]
    np.testing.assert_allclose(
        replies[3].arrays()[untrained_bundle.manifest.model.output], direct, rtol=1e-5, atol=1e-6
    )
    assert served.node.queue.expected_wait_s() == 0.0 and backend.calls == [2, 2, 2]
    # Decoded and run on a worker, never on the ingress thread (the one serving).
    assert backend.threads == ["edgesplit-worker-0"] * 3
    assert decoded_on == ["edgesplit-worker-0"] * 3


def test_a_corrupt_frame_in_a_batch_is_answered_alone_and_the_rest_run(
    untrained_bundle: Bundle,
) -> None:
    """Decoding happens in the worker: one corrupt lz4 frame fails its own request only."""
    backend = OnnxRuntimeBackend(untrained_bundle, threads=1)
    served = RunningCloud(
        untrained_bundle,
        backend=backend,
        config=CloudConfig(bind="tcp://127.0.0.1:*", batch_window_s=0.3),
    )
    cut = untrained_bundle.manifest.cut("c03")
    act = _activation(untrained_bundle, cut.id, n=1)
    corrupt = _infer(untrained_bundle, cut.id, act, request_id=2, codec="int8+lz4")
    corrupt[1] = b"\xff" * len(corrupt[1])  # same length as declared: passes the ingress
    context = zmq.Context()
    sock = _dealer(served.endpoint, context)
    try:
        sock.send_multipart(_infer(untrained_bundle, cut.id, act, 1, codec="int8+lz4"))
        sock.send_multipart(corrupt)
        sock.send_multipart(_infer(untrained_bundle, cut.id, act, 3, codec="int8+lz4"))
        replies = _replies(sock, 3)
        # The node is still up and serving.
        sock.send_multipart(_infer(untrained_bundle, cut.id, act, 4, codec="int8+lz4"))
        after = _replies(sock, 1)
    finally:
        sock.close()
        context.term()
        served.stop()
    assert isinstance(replies[2], wire.ErrorReply) and replies[2].code == "decompression"
    assert "lz4" in replies[2].message
    assert [type(replies[r]) for r in (1, 3)] == [wire.Result, wire.Result]
    assert [replies[r].batch for r in (1, 3)] == [2, 2]
    output = untrained_bundle.manifest.model.output
    np.testing.assert_allclose(replies[1].arrays()[output], replies[3].arrays()[output], rtol=1e-6)
    assert isinstance(after[4], wire.Result)
    assert served.node.counts["error_decompression"] == 1 and served.node.counts["ok"] == 3
