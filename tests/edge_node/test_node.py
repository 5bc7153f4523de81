"""The edge node against a real cloud node: offload, exits, fallback, backoff and recovery."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import zmq

import wire
from edge_node.node import CloudHealth, EdgeConfig, EdgeNode
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle
from edgesplit.errors import BundleError
from offload_policy import Decision, FixedPolicy
from tests.conftest import RunningCloud


def _inputs(bundle: Bundle, n: int, seed: int = 0) -> np.ndarray:
    shape = bundle.manifest.model.input.shape
    return np.random.default_rng(seed).standard_normal((n, 1, *shape), dtype=np.float32)


def _node(
    bundle: Bundle,
    cut: str,
    threshold: float | None,
    client: CloudClient | None,
    timeout_s: float = 2.0,
    backoff_s: float = 0.5,
) -> EdgeNode:
    policy = FixedPolicy(Decision(cut, threshold, "int8+lz4"), bundle.manifest.edge_only.id)
    return EdgeNode(
        bundle, policy, client, EdgeConfig(timeout_s=timeout_s, backoff_s=backoff_s, rtt_s=0.0)
    )


def _local_predictions(bundle: Bundle, xs: np.ndarray) -> list[int]:
    node = _node(bundle, bundle.manifest.edge_only.id, None, None)
    return [int(node.infer(x).prediction[0]) for x in xs]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offloaded_requests_match_the_edge_only_model(cloud, untrained_bundle: Bundle) -> None:
    xs = _inputs(untrained_bundle, 20)
    with CloudClient(cloud.endpoint) as client:
        node = _node(untrained_bundle, "c03", None, client)
        node.check_cloud()
        outcomes = [node.infer(x) for x in xs]
    assert {o.finished for o in outcomes} == {"cloud"}
    # int8 quantization of the cut tensor may flip a near-tie; random weights make ties rare.
    agree = np.mean(
        [
            o.prediction[0] == p
            for o, p in zip(outcomes, _local_predictions(untrained_bundle, xs), strict=True)
        ]
    )
    assert agree >= 0.9
    assert all(o.bytes_sent > 0 and o.cloud_compute_s > 0 for o in outcomes)
    assert node.measured_rtt_s > 0


def test_confident_exit_answers_on_the_edge(untrained_bundle: Bundle) -> None:
    node = _node(untrained_bundle, "c06", 1e-6, None)  # any confidence passes
    outcome = node.infer(_inputs(untrained_bundle, 1)[0])
    assert outcome.finished == "exit_1" and outcome.bytes_sent == 0


def test_exits_off_reaches_the_final_output(untrained_bundle: Bundle) -> None:
    node = _node(untrained_bundle, untrained_bundle.manifest.edge_only.id, None, None)
    assert node.infer(_inputs(untrained_bundle, 1)[0]).finished == "edge"


def test_absent_cloud_falls_back_at_once_backs_off_probes_and_recovers(
    untrained_bundle: Bundle,
) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    xs = _inputs(untrained_bundle, 5)
    expected = _local_predictions(untrained_bundle, xs)
    with CloudClient(endpoint) as client:
        node = _node(untrained_bundle, "c03", None, client, timeout_s=0.3, backoff_s=1.0)
        first = node.infer(xs[0])
        # Nobody listens: no connection, so the edge answers from its head without waiting.
        assert (first.finished, first.reason) == ("fallback", "unreachable")
        assert first.latency_s < 0.2
        assert int(first.prediction[0]) == expected[0]
        # The cloud is marked down: the next request goes edge-only at once.
        second = node.infer(xs[1])
        assert second.finished == "edge" and second.latency_s < 0.1
        assert int(second.prediction[0]) == expected[1]
        running = RunningCloud(untrained_bundle, bind=endpoint)
        try:
            # After the backoff a request sends a probe ping and is itself answered locally...
            time.sleep(1.05)
            third = node.infer(xs[2])
            assert third.finished == "edge" and node.counts["cloud_probes"] == 1
            # ...and once the pong is in, requests go to the cloud again.
            calls = 3
            deadline = time.monotonic() + 5
            while node.counts["cloud_recovered"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
                node.infer(xs[3])
                calls += 1
            assert node.counts["cloud_recovered"] == 1 and node.health.failures == 0
            fifth = node.infer(xs[4])
            calls += 1
            assert fifth.finished == "cloud"
        finally:
            running.stop()
    assert node.counts["fallback_unreachable"] == 1
    # Every request was answered exactly once, and counted once.
    assert sum(node.counts[k] for k in ("fallback", "edge", "cloud")) == calls


def test_silent_cloud_times_out_and_a_late_reply_is_discarded(untrained_bundle: Bundle) -> None:
    """A peer that accepts the connection but answers late: timeout, then the stale reply."""
    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    xs = _inputs(untrained_bundle, 2)
    try:
        with CloudClient(f"tcp://127.0.0.1:{port}") as client:
            node = _node(untrained_bundle, "c03", None, client, timeout_s=0.3, backoff_s=0.2)
            client.ping(1.0)  # connected (the ping itself is never answered)
            first = node.infer(xs[0])
            assert (first.finished, first.reason) == ("fallback", "timeout")
            assert 0.3 <= first.latency_s < 0.3 + 0.5
            # The silent peer now answers the old request: the edge drops it as stale.
            frames = silent.recv_multipart()
            frames = silent.recv_multipart()  # the infer (after the ping)
            request = wire.decode(frames[1:])
            assert isinstance(request, wire.InferRequest)
            silent.send_multipart([frames[0], *wire.encode(wire.Pong(request.request_id))])
            time.sleep(0.3)
            second = node.infer(xs[1])
            assert second.finished in ("edge", "fallback")
            assert node.counts["fallback_timeout"] == 1
    finally:
        silent.close(linger=0)
        context.term()


def test_cloud_with_another_bundle_is_refused(
    cloud, untrained_bundle: Bundle, branchynet_bundle: Bundle
) -> None:
    with CloudClient(cloud.endpoint) as client:
        node = _node(branchynet_bundle, "c03", None, client)
        with pytest.raises(BundleError, match="deploy the same bundle on both sides"):
            node.check_cloud()


def test_backoff_doubles_and_caps() -> None:
    health = CloudHealth(backoff_s=0.5, max_backoff_s=2.0)
    pauses = []
    for _ in range(4):
        health.failed(now=100.0)
        pauses.append(health.down_until - 100.0)
    assert pauses == [0.5, 1.0, 2.0, 2.0]
    assert not health.available(101.0) and health.available(102.0)
    health.succeeded()
    assert health.available(100.0) and health.failures == 0
