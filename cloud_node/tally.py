"""The cloud node's counts and outcome metrics, kept in one place for both of its planes."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from cloud_node.metrics import CloudMetrics


class Tally:
    """Counts by key (``node.counts``) and the requests, latency and errors metrics.

    Thread-safe: the ingress, the workers and the control plane all count here.

    Args:
        metrics: the node's metrics.
        clock: the node's clock (seconds): a request's latency is ``clock()``
            minus when it was received, on the same clock.
    """

    def __init__(self, metrics: CloudMetrics, clock: Callable[[], float]) -> None:
        self.metrics = metrics
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the count ``key``."""
        with self._lock:
            self.counts[key] += n

    def dropped(self, kind: str) -> None:
        """Count a refusal that answers no request of the data plane (counts and errors)."""
        self.count(f"error_{kind}")
        self.metrics.errors.labels(kind).inc()

    def error(self, code: str, received: float, cut: str) -> None:
        """Count a request answered with error ``code`` (counts, errors, outcome ``error``)."""
        self.count(f"error_{code}")
        self.metrics.errors.labels(code).inc()
        self.observe("error", cut, received)

    def observe(self, outcome: str, cut: str, received: float) -> None:
        """A request of ``cut`` answered with ``outcome``: counted, its latency observed."""
        # The labelled children, looked up once (a labels() call costs more than the count).
        children = self._children.get((outcome, cut))
        if children is None:
            metrics = self.metrics
            children = (metrics.requests.labels(outcome, cut), metrics.latency.labels(outcome, cut))
            self._children[(outcome, cut)] = children
        children[0].inc()
        children[1].observe(self.clock() - received)

    def auth(self, kind: str) -> None:
        """A CURVE handshake decided (``allowed``, or a refusal counted as an ``auth`` error)."""
        self.count(f"auth_{kind}")
        if kind != "allowed":
            self.metrics.errors.labels("auth").inc()


__all__ = ["Tally"]
