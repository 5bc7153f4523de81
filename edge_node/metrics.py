"""The edge node's Prometheus metrics, on a registry of its own."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edge_node.records import Outcome
from edgesplit.metrics import request_metrics
from offload_policy import Decision


class EdgeMetrics:
    """What the edge node exports; names start with ``edgesplit_edge_``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests, self.latency = request_metrics(
            "edge",
            r,
            "Requests answered, by where they finished (exit_N, edge, cloud, fallback) and cut.",
            "End-to-end latency of a request, by outcome and cut.",
        )
        self.exits = Counter(
            "edgesplit_edge_exits", "Requests answered by an early exit.", ["exit"], registry=r
        )
        self.fallbacks = Counter(
            "edgesplit_edge_fallbacks",
            "Offloads finished on the edge instead, by reason (timeout, unreachable, busy, ...).",
            ["reason"],
            registry=r,
        )
        self.errors = Counter(
            "edgesplit_edge_errors",
            "Errors by kind (timeout, unreachable, bad_reply, cloud error codes).",
            ["kind"],
            registry=r,
        )
        self.bytes_sent = Counter(
            "edgesplit_edge_sent_bytes", "Bytes put on the wire (headers and tensors).", registry=r
        )
        self.raw_bytes = Counter(
            "edgesplit_edge_raw_bytes",
            "Bytes the offloaded tensors would take uncompressed (float32 as produced).",
            registry=r,
        )
        self.compression = Histogram(
            "edgesplit_edge_compression_ratio",
            "Raw tensor bytes / bytes sent, per offload.",
            buckets=(1, 1.5, 2, 3, 4, 5, 6, 8, 12, 16, 32),
            registry=r,
        )
        self.bandwidth = Gauge(
            "edgesplit_edge_bandwidth_bps", "Uplink bandwidth estimate, bits/s.", registry=r
        )
        self.rtt = Gauge("edgesplit_edge_rtt_seconds", "Smoothed round-trip time.", registry=r)
        self.battery = Gauge(
            "edgesplit_edge_battery_level", "State of charge, 0..1 (NaN when unknown).", registry=r
        )
        self.power = Gauge(
            "edgesplit_edge_power_watts", "Device power (NaN when unknown).", registry=r
        )
        self.energy = Counter(
            "edgesplit_edge_energy_joules",
            "Energy attributed to requests, by source (model or sensor).",
            ["source"],
            registry=r,
        )
        self.decision = Gauge(
            "edgesplit_edge_decision",
            "1 for the cut and codec of the latest decision, 0 for earlier ones.",
            ["cut", "codec"],
            registry=r,
        )
        self.threshold = Gauge(
            "edgesplit_edge_exit_threshold",
            "Exit threshold of the latest decision (NaN: exits off).",
            registry=r,
        )
        self.cloud_up = Gauge(
            "edgesplit_edge_cloud_up", "1 while the cloud is considered available.", registry=r
        )
        self.cloud_queue = Gauge(
            "edgesplit_edge_cloud_queue_seconds",
            "The cloud's last reported queueing delay.",
            registry=r,
        )
        self.correction = Gauge(
            "edgesplit_edge_correction_ratio",
            "Closed-loop correction: measured / profiled time, by term (edge, cloud).",
            ["term"],
            registry=r,
        )
        self.bundle_info = Gauge(
            "edgesplit_edge_bundle_info",
            "1 for the bundle (id and release version) this edge serves with.",
            ["bundle", "version"],
            registry=r,
        )
        self.updates = Counter(
            "edgesplit_edge_updates",
            "Over-the-air update events: offered, switched, committed, rolled_back, refused.",
            ["result"],
            registry=r,
        )
        self.in_flight = Gauge(
            "edgesplit_edge_in_flight", "Offloaded requests awaiting their reply.", registry=r
        )
        self._decided: tuple[str, str] | None = None

    def decided(self, decision: Decision, bandwidth_bps: float, rtt_s: float) -> None:
        """A request's decision, and the link it was taken on."""
        key = (decision.cut, decision.codec)
        if key != self._decided:
            if self._decided is not None:
                self.decision.labels(*self._decided).set(0)
            self.decision.labels(*key).set(1)
            self._decided = key
        threshold = decision.exit_threshold
        self.threshold.set(math.nan if threshold is None else threshold)
        self.bandwidth.set(bandwidth_bps)
        self.rtt.set(rtt_s)

    def answered(self, outcome: Outcome, raw_bytes: int | None) -> None:
        """A request answered; ``raw_bytes``: its offload's uncompressed size (``None``: none)."""
        finished, cut, sent = outcome.finished, outcome.cut, outcome.bytes_sent
        self.requests.labels(finished, cut).inc()
        self.latency.labels(finished, cut).observe(outcome.latency_s)
        self.energy.labels("model").inc(outcome.energy_j)
        if finished.startswith("exit"):
            self.exits.labels(finished).inc()
        if outcome.reason:
            self.fallbacks.labels(outcome.reason).inc()
        if raw_bytes is not None:
            self.bytes_sent.inc(sent)
            self.raw_bytes.inc(raw_bytes)
            if sent:
                self.compression.observe(raw_bytes / sent)
