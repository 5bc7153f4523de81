"""The edge node's live loop: pipelining, busy answers, the link estimate and its metrics."""

from __future__ import annotations

import threading
import urllib.request

import numpy as np
import pytest

from cloud_node.backends import OnnxRuntimeBackend
from cloud_node.server import CloudConfig, CloudNode
from edge_node.link import LinkMonitor, LinkReading
from edge_node.node import EdgeConfig, EdgeNode
from edge_node.power import SimulatedMonitor
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle
from edgesplit.metrics import serve_metrics
from offload_policy import AdaptivePolicy, Battery, Decision, FixedPolicy, PolicyConfig


def _inputs(bundle: Bundle, n: int, seed: int = 0) -> np.ndarray:
    shape = bundle.manifest.model.input.shape
    return np.random.default_rng(seed).standard_normal((n, 1, *shape), dtype=np.float32)


def _fixed(bundle: Bundle, cut: str) -> FixedPolicy:
    return FixedPolicy(Decision(cut, None, "raw"), bundle.manifest.edge_only.id)


def test_pipelined_stream_answers_every_input_in_order(cloud, untrained_bundle: Bundle) -> None:
    xs = _inputs(untrained_bundle, 30)
    results = {}
    for depth in (1, 3):
        with CloudClient(cloud.endpoint) as client:
            node = EdgeNode(
                untrained_bundle,
                _fixed(untrained_bundle, "c03"),
                client,
                EdgeConfig(pipeline_depth=depth, timeout_s=5.0),
            )
            node.check_cloud()
            outcomes = list(node.stream(iter(xs)))
        assert [o.finished for o in outcomes] == ["cloud"] * 30
        results[depth] = [int(o.prediction[0]) for o in outcomes]
    # raw codec: the pipelined answers are the sequential ones, input by input.
    assert results[1] == results[3]


def test_busy_cloud_sends_the_edge_local_until_its_delay_is_forgotten(
    untrained_bundle: Bundle,
) -> None:
    """queue_size=1 and a held worker: the second offload is refused with the queue delay."""
    gate = threading.Event()

    class Held(OnnxRuntimeBackend):
        def infer(self, cut, inputs):
            gate.wait(10)
            return super().infer(cut, inputs)

    node_cfg = CloudConfig(bind="tcp://127.0.0.1:*", queue_size=1)
    cloud_node = CloudNode(untrained_bundle, Held(untrained_bundle, threads=1), node_cfg)
    cloud_node.__enter__()
    server = threading.Thread(target=cloud_node.serve_forever, daemon=True)
    server.start()
    xs = _inputs(untrained_bundle, 4)
    try:
        with CloudClient(cloud_node.endpoint or "") as client:
            policy = AdaptivePolicy(untrained_bundle.manifest, PolicyConfig(max_queue_s=0.001))
            edge = EdgeNode(
                untrained_bundle,
                _fixed(untrained_bundle, "c03"),
                client,
                EdgeConfig(timeout_s=5.0, pipeline_depth=3, queue_memory_s=60.0),
            )
            edge.check_cloud()
            # Three in flight: one runs (held), one queues, the third is refused at once.
            threading.Timer(0.5, gate.set).start()  # opens while the edge waits for the first
            answered = list(edge.stream(iter(xs[:3])))
            assert len(answered) == 3
            # (Two are refused when the third arrives before the worker took the first.)
            busy = [o for o in answered if o.reason == "busy"]
            assert len(busy) in (1, 2) and all(o.finished == "fallback" for o in busy)
            assert sum(o.finished == "cloud" for o in answered) == 3 - len(busy)
            # An adaptive policy told the cloud's queue delay keeps the next request local.
            edge.set_policy(policy)
            edge.cloud.set_queue(0.5)
            assert edge.observe(edge.clock()).cloud_queue_s == 0.5
            assert edge.infer(xs[3]).bytes_sent == 0
    finally:
        gate.set()
        cloud_node.stop()
        server.join(10)
        cloud_node.__exit__(None, None, None)


def test_link_monitor_estimates_from_transfers() -> None:
    link = LinkMonitor(prior_bps=1e6)
    assert link.reading().source == "prior" and link.reading().bandwidth_bps == 1e6
    link.add_rtt(0.010)
    # 125,000 bytes in 0.1 s of wire time (+ 10 ms RTT + 5 ms cloud): 10 Mbit/s.
    for t in range(5):
        taken = link.add_transfer(float(t), 125_000, 0.115, 0.004, 0.001)
        assert taken == pytest.approx(10e6, rel=1e-6)
    reading = link.reading()
    assert reading.source == "measured" and reading.samples == 5
    assert reading.bandwidth_bps == pytest.approx(10e6, rel=1e-6)
    # A tiny transfer carries no bandwidth: it refines the RTT instead.
    assert link.add_transfer(6.0, 100, 0.012, 0.001, 0.0) is None
    assert link.reading().rtt_s == pytest.approx(0.010 * 7 / 8 + 0.011 / 8)
    # Nor does a one-packet transfer held up 15 ms (jitter, a CPU-starved edge): no sample.
    assert link.add_transfer(6.2, 668, 0.025, 0.0, 0.0) is None
    assert link.reading().bandwidth_bps == pytest.approx(10e6, rel=1e-6)
    # A large transfer too short to measure is no RTT sample: the RTT is left alone.
    before = link.reading().rtt_s
    assert link.add_transfer(6.5, 125_000, 0.0105, 0.0, 0.0) is None
    assert link.reading().rtt_s == before
    # Queueing inflates the smoothed RTT; the bandwidth takes out the smallest recent one.
    for _ in range(8):
        link.add_rtt(0.050)
    assert link.add_transfer(6.8, 125_000, 0.115, 0.004, 0.001) == pytest.approx(10e6, rel=1e-6)
    # A cloud claiming more time than the round trip took is not believed.
    assert link.add_transfer(7.0, 125_000, 0.05, 0.06, 0.0) is None and link.rejected == 1
    # Forgetting the bandwidth goes back to the prior and keeps the RTT.
    rtt = link.reading().rtt_s
    link.forget_bandwidth()
    assert link.reading() == LinkReading(1e6, rtt, 0, "prior")


def test_edge_metrics_and_simulated_battery(cloud, untrained_bundle: Bundle) -> None:
    battery = SimulatedMonitor(Battery(capacity_wh=1e-3, level=1.0))
    with CloudClient(cloud.endpoint) as client:
        node = EdgeNode(
            untrained_bundle,
            _fixed(untrained_bundle, "c03"),
            client,
            EdgeConfig(power_interval_s=0.0),
            power=battery,
        )
        node.check_cloud()
        server = serve_metrics(node.metrics.registry, 0)
        try:
            outcomes = list(node.stream(iter(_inputs(untrained_bundle, 8))))
            text = urllib.request.urlopen(server.url, timeout=5).read().decode()
        finally:
            server.close()
    spent = sum(o.energy_j for o in outcomes)
    assert spent > 0
    assert battery.battery.level == pytest.approx(1.0 - spent / 3.6, rel=1e-6)
    assert 'edgesplit_edge_requests_total{cut="c03",outcome="cloud"} 8.0' in text
    assert 'edgesplit_edge_decision{codec="raw",cut="c03"} 1.0' in text
    sent = sum(o.bytes_sent for o in outcomes)
    assert f"edgesplit_edge_sent_bytes_total {float(sent)}" in text
    assert "edgesplit_edge_cloud_up 1.0" in text
    assert "edgesplit_edge_battery_level" in text
