"""Whether the edge may use the cloud: pairing, backoff after failures, probing, its queue.

A cloud that failed (a timeout, no connection, a backend error) is marked down
with exponential backoff (:class:`~edge_node.records.CloudHealth`); once the
backoff runs out, a ``ping`` between requests probes it, and a ``pong`` naming
the edge's bundle brings it back. The probe never waits: it is collected at a
later request or given up after the reply deadline. The cloud's reported
queue delay is believed for ``queue_memory_s``. Every time is the node's clock's.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import wire
from edge_node.link import LinkMonitor
from edge_node.metrics import EdgeMetrics
from edge_node.records import CloudHealth
from edge_node.transport import CloudClient, Pending
from edgesplit.errors import BundleError, TransportError, WireError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pairing:
    """What pairing with the cloud found: its backend, and the fastest round trip, seconds."""

    backend: str
    rtt_s: float


def pair(client: CloudClient, bundle_id: str, timeout_s: float = 5.0, pings: int = 5) -> Pairing:
    """Ping the cloud, refuse to pair with a different bundle, measure the round trip.

    Raises:
        TransportError: no answer within ``timeout_s``.
        BundleError: the cloud serves another bundle.
    """
    fastest, reply = client.measure_rtt(timeout_s, pings)
    pong = reply.message
    if not isinstance(pong, wire.Pong) or bundle_id not in pong.served:
        theirs = pong.bundle[:12] if isinstance(pong, wire.Pong) else f"none (answered {pong.kind})"
        raise BundleError(
            f"cloud at {client.endpoint} serves bundle={theirs}, this edge has "
            f"bundle={bundle_id[:12]}; deploy the same bundle on both sides"
        )
    return Pairing(pong.backend, fastest)


class CloudWatch:
    """The edge's view of its cloud (see the module's docstring).

    Args:
        client: the node's client; ``None``: no cloud.
        health: the backoff state (``backoff_s``, ``max_backoff_s`` of the node's config).
        link: where a ``pong``'s round trip is fed.
        metrics: the node's (``cloud_up``, ``errors``, ``cloud_queue``).
        counts: the node's counts (``cloud_probes``, ``cloud_recovered``).
        clock: the node's clock, seconds.
    """

    def __init__(
        self,
        client: CloudClient | None,
        health: CloudHealth,
        link: LinkMonitor,
        metrics: EdgeMetrics,
        counts: Counter[str],
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.health = health
        self.recoveries = 0
        self._link = link
        self._metrics = metrics
        self._counts = counts
        self._clock = clock
        self._probe: Pending | None = None
        self._probe_at = -math.inf
        self._queue_s = 0.0
        self._queue_at = -math.inf
        metrics.cloud_up.set(1.0 if client is not None else 0.0)

    @property
    def usable(self) -> bool:
        """Whether requests may be offloaded now: a cloud, and up."""
        return self.client is not None and self.health.up

    def check(self, bundle_id: str, timeout_s: float, pings: int) -> str:
        """Pair with the cloud (:func:`pair`) and take its round trip; return its backend.

        Raises:
            TransportError: no cloud, or no answer within ``timeout_s``.
            BundleError: the cloud serves another bundle.
        """
        if self.client is None:
            raise TransportError("no cloud endpoint configured")
        pairing = pair(self.client, bundle_id, timeout_s, pings)
        self._link.add_rtt(pairing.rtt_s)
        return pairing.backend

    def tend(self, now: float, bundle_id: str, timeout_s: float) -> None:
        """Probe a cloud that is down once its backoff ran out; take the probe's answer.

        A probe unanswered ``timeout_s`` after it was sent counts as a failure.
        """
        client = self.client
        if client is None or self.health.up:
            return
        if self._probe is not None:
            try:
                reply = client.poll(self._probe)
            except WireError as exc:
                log.warning("invalid reply from the cloud error=%s", exc)
                reply = None
            if reply is not None:
                self._probe = None
                pong = reply.message
                if isinstance(pong, wire.Pong) and bundle_id in pong.served:
                    self.health.succeeded()
                    self.recoveries += 1
                    self._counts["cloud_recovered"] += 1
                    self._link.add_rtt(reply.round_trip_s)
                    self._metrics.cloud_up.set(1.0)
                    log.info(
                        "cloud is back endpoint=%s rtt_s=%.4f", client.endpoint, reply.round_trip_s
                    )
                else:
                    self.health.failed(now)
            elif now > self._probe_at + timeout_s:
                client.abandon(self._probe)
                self._probe = None
                self.health.failed(now)
            return
        if self.health.available(now):
            try:
                self._probe = client.send(wire.Ping(client.new_id()))
                self._probe_at = now
                self._counts["cloud_probes"] += 1
            except TransportError:
                self.health.failed(now)

    def failed(self, kind: str) -> None:
        """Mark the cloud down after a failure of ``kind`` (backoff, metrics, a log line)."""
        now = self._clock()
        self.health.failed(now)
        self._metrics.errors.labels(kind).inc()
        self._metrics.cloud_up.set(0.0)
        log.warning(
            "cloud marked down kind=%s failures=%d retry_in_s=%.2f",
            kind,
            self.health.failures,
            self.health.down_until - now,
        )

    def queue_s(self, now: float, memory_s: float) -> float:
        """The cloud's last reported queue delay, forgotten after ``memory_s``.

        A cloud that answered ``busy`` gets no offloads while its delay is
        remembered; forgetting it lets the next request find out whether the
        queue has drained.
        """
        if now - self._queue_at > memory_s:
            return 0.0
        return self._queue_s

    def set_queue(self, queue_s: float) -> None:
        """The queue delay the cloud reported just now, seconds."""
        self._queue_s = queue_s
        self._queue_at = self._clock()
        self._metrics.cloud_queue.set(queue_s)


__all__ = ["CloudWatch", "Pairing", "pair"]
