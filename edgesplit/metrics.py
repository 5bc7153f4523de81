"""Prometheus metrics of the edge and cloud nodes: one registry per node, served over HTTP.

Each node builds its metrics on its own ``CollectorRegistry`` (two nodes in
one process, as in the tests, never collide) and :func:`serve_metrics`
exposes it at ``http://ADDRESS:PORT/metrics``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from edgesplit.errors import ConfigError

log = logging.getLogger(__name__)

# Request latencies from 0.1 ms to 30 s: loopback offloads to shaped 3G links.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def request_metrics(
    role: str, registry: CollectorRegistry, answered: str, latency: str
) -> tuple[Counter, Histogram]:
    """A node's two request series, by outcome and cut: how many answered, and how long.

    Named ``edgesplit_<role>_requests`` and ``edgesplit_<role>_request_seconds``;
    ``answered`` and ``latency`` are their help texts.
    """
    labels = ["outcome", "cut"]
    requests = Counter(f"edgesplit_{role}_requests", answered, labels, registry=registry)
    seconds = Histogram(
        f"edgesplit_{role}_request_seconds",
        latency,
        labels,
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return requests, seconds


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    url: str
    _server: Any
    _thread: Any

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)


def serve_metrics(
    registry: CollectorRegistry, port: int, address: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``registry`` at ``http://address:port/metrics`` (``port=0`` picks a free one).

    Raises:
        ConfigError: the port cannot be bound (in use, or not allowed).
    """
    try:
        server, thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"metrics {address}:{port}: cannot listen ({exc.strerror}); "
            "choose another --metrics-port or 0 for none"
        ) from exc
    bound = server.server_address[1]
    url = f"http://{address}:{bound}/metrics"
    log.info("metrics url=%s", url)
    return MetricsServer(url, server, thread)
