"""The cloud node's Prometheus metrics, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgesplit.metrics import LATENCY_BUCKETS, request_metrics


class CloudMetrics:
    """What the cloud node exports; names start with ``edgesplit_cloud_``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests, self.latency = request_metrics(
            "cloud",
            r,
            "Requests answered, by outcome (ok, busy, error) and cut.",
            "Time from receiving a request to sending its reply, by outcome and cut.",
        )
        self.queue_wait = Histogram(
            "edgesplit_cloud_queue_seconds",
            "Time a request waited in the queue before its batch ran.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "edgesplit_cloud_compute_seconds",
            "Tail backend time per batch, by cut.",
            ["cut"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "edgesplit_cloud_batch_requests",
            "Requests merged into one backend call.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.queue_depth = Gauge(
            "edgesplit_cloud_queue_depth", "Requests waiting for a worker.", registry=r
        )
        self.queue_delay = Gauge(
            "edgesplit_cloud_queue_delay_seconds",
            "Estimated wait of a request admitted now.",
            registry=r,
        )
        self.replicas = Gauge(
            "edgesplit_cloud_replicas",
            "Tail replicas running (a Ray tier's; 1 for an in-process backend).",
            registry=r,
        )
        self.errors = Counter(
            "edgesplit_cloud_errors",
            "Rejected or failed requests by kind (header, payload, shape, bundle_mismatch, "
            "unknown_cut, backend, auth...).",
            ["kind"],
            registry=r,
        )
        self.bytes_received = Counter(
            "edgesplit_cloud_received_bytes", "Bytes of request frames received.", registry=r
        )
        self.bytes_sent = Counter(
            "edgesplit_cloud_sent_bytes", "Bytes of reply frames sent.", registry=r
        )
        self.backend_bytes = Counter(
            "edgesplit_cloud_backend_bytes",
            "Bytes of tensors handed to the tail backend, still encoded as received "
            "(on the Ray tier: what travels from the ingress to a replica).",
            registry=r,
        )
        self.release_bytes = Counter(
            "edgesplit_cloud_release_sent_bytes",
            "Bytes of release archives sent to edges in chunks (over-the-air updates).",
            registry=r,
        )
        self.fleet_edges = Gauge(
            "edgesplit_cloud_fleet_edges",
            "Edges by the bundle version and update state they last reported (stale: silent).",
            ["version", "state"],
            registry=r,
        )
        self.rollout_fraction = Gauge(
            "edgesplit_cloud_rollout_fraction",
            "Share of the fleet offered the candidate release, 0..1.",
            registry=r,
        )
