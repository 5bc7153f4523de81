"""The cloud's control plane: the fleet's heartbeats, release chunks, view and rollout.

The data plane (``infer``, ``ping``) and this plane share the ingress's
socket; the ingress routes every :class:`~wire.Hello`, :class:`~wire.Fetch`
and :class:`~wire.FleetQuery` here by its type and sends back what it
answers. The fleet view and the rollout are for admins only (CURVE key
names), release chunks for edges the release was offered to
(``cloud_node.fleet``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import wire
from cloud_node.fleet import Fleet
from cloud_node.tally import Tally
from edgesplit.errors import ConfigError

log = logging.getLogger(__name__)

ControlMessage = wire.Hello | wire.Fetch | wire.FleetQuery
CONTROL_TYPES: tuple[type[ControlMessage], ...] = (wire.Hello, wire.Fetch, wire.FleetQuery)
"""The message types the control plane answers."""
CONTROL_KINDS = frozenset(cls.kind for cls in CONTROL_TYPES)
"""Their kinds, as a header names them (``wire.Envelope.kind``)."""


class ControlPlane:
    """Answers the fleet's messages; counts through the node's tally.

    Args:
        fleet: the edges' records and the release on offer.
        tally: the node's counts and metrics (fleet gauges, rollout fraction,
            release bytes, errors).
        admins: who may read the view or change the rollout (``None``: anyone,
            plaintext loopback).
        clock: the node's clock (seconds): the fleet gauges are recounted at
            most once a second of it.
    """

    def __init__(
        self,
        fleet: Fleet,
        tally: Tally,
        admins: frozenset[str] | None,
        clock: Callable[[], float],
    ) -> None:
        self.fleet = fleet
        self.tally = tally
        self.metrics = tally.metrics
        self.admins = admins
        self._clock = clock
        self._gauged: set[tuple[str, str]] = set()
        self._gauged_at = -math.inf
        self.metrics.rollout_fraction.set(fleet.fraction)

    def answer(self, message: ControlMessage, client: str | None) -> wire.Frames:
        """The reply frames to a control message; never raises (the ingress stays up)."""
        try:
            if isinstance(message, wire.Hello):
                return self.hello(message, client)
            if isinstance(message, wire.Fetch):
                return self.fetch(message, client)
            return self.query(message, client)
        except Exception as exc:  # noqa: BLE001 - the ingress stays up whatever comes
            log.exception("fleet message kind=%s failed", message.kind)
            return self._refuse(message.request_id, "fleet", f"{type(exc).__name__}: {exc}")

    def hello(self, hello: wire.Hello, client: str | None) -> wire.Frames:
        """A heartbeat: recorded; the answer is the edge's assignment (maybe an offer)."""
        self.tally.count("hello")
        welcome = self.fleet.heartbeat(hello, client)
        self._gauges()
        return wire.encode(welcome)

    def fetch(self, fetch: wire.Fetch, client: str | None) -> wire.Frames:
        """A chunk of the release on offer, for an edge it was offered to."""
        try:
            # The edge is named as its hello names it: only an edge offered the
            # release gets its bytes (the edge part alone: no tail leaves).
            data = self.fleet.chunk(fetch.bundle, fetch.offset, fetch.length, fetch.name, client)
        except (PermissionError, ValueError) as exc:
            code = "forbidden" if isinstance(exc, PermissionError) else "fetch"
            return self._refuse(fetch.request_id, code, str(exc), kind="fetch")
        self.tally.count("fetch")
        self.metrics.release_bytes.inc(len(data))
        return wire.encode(wire.Chunk(fetch.request_id, fetch.offset, data))

    def query(self, query: wire.FleetQuery, client: str | None) -> wire.Frames:
        """A page of the fleet view (``status``) or a new rollout fraction (``rollout``)."""
        rid = query.request_id
        # The fleet view names every edge and its health: admins only, as rollout changes.
        if self.admins is not None and client not in self.admins:
            return self._refuse(
                rid,
                "forbidden",
                f"client {client!r} may not read the fleet view or change the rollout "
                "(the cloud's --fleet-admins)",
            )
        after: str | None = None
        limit: int | None = None
        if query.op == "rollout":
            try:
                self.fleet.set_fraction(-1.0 if query.fraction is None else query.fraction)
            except ConfigError as exc:
                return self._refuse(rid, "rollout", str(exc))
            self.metrics.rollout_fraction.set(self.fleet.fraction)
            log.info("rollout fraction=%.3f by=%s", self.fleet.fraction, client)
        elif query.op == "status":
            after, limit = query.after, query.limit
        else:
            return self._refuse(rid, "fleet", f"op={query.op[:40]!r}: expected status or rollout")
        try:
            # One page: its own rows, not the fleet's (the client asks for the next).
            text = self.fleet.report_json(after, limit)
        except ValueError as exc:
            return self._refuse(rid, "fleet", str(exc))
        self.tally.count("fleet")
        return wire.encode(wire.FleetReport(rid, text))

    def _gauges(self) -> None:
        """Edges by version and state, recounted at most once a second (hellos are many).

        Heartbeats the fleet did not record (over their key's rate) are counted
        as errors ``hello_rate`` as they come; evicted records as ``fleet_evicted``.
        """
        dropped = self.fleet.take_dropped()
        if dropped:
            self.tally.count("error_hello_rate", dropped.get("hello_rate", 0))
            self.tally.count("fleet_evicted", dropped.get("evicted", 0))
            if dropped.get("hello_rate"):
                self.metrics.errors.labels("hello_rate").inc(dropped["hello_rate"])
        now = self._clock()
        if now - self._gauged_at < 1.0:
            return
        self._gauged_at = now
        gauge = self.metrics.fleet_edges
        counts = self.fleet.states()
        for key in self._gauged - counts.keys():
            gauge.labels(*key).set(0)
        for key, count in counts.items():
            gauge.labels(*key).set(count)
        self._gauged |= counts.keys()

    def _refuse(
        self, request_id: int, code: str, text: str, kind: str | None = None
    ) -> wire.Frames:
        """Count (as ``kind``, default ``code``) and answer a refused control-plane request."""
        self.tally.dropped(kind or code)
        return wire.encode(wire.ErrorReply(request_id, code, text[:900]))


__all__ = ["CONTROL_KINDS", "CONTROL_TYPES", "ControlMessage", "ControlPlane"]
