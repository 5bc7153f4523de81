"""The cloud's control plane: the fleet's heartbeats, release chunks, view and rollout.

The data plane (``infer``) and this plane share the ingress's socket; the
ingress hands every ``hello``, ``fetch`` and ``fleet`` message to
:class:`ControlPlane` and sends back what it answers. The fleet view and the
rollout are for admins only (CURVE key names), release chunks for edges the
release was offered to (``cloud_node.fleet``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np

import wire
from cloud_node.fleet import Fleet
from cloud_node.metrics import CloudMetrics
from edgesplit.errors import ConfigError

log = logging.getLogger(__name__)

CONTROL_KINDS = frozenset({"hello", "fetch", "fleet"})
"""The message kinds the control plane answers."""


class ControlPlane:
    """Answers the fleet's messages; counts through the node's counters.

    Args:
        fleet: the edges' records and the release on offer.
        metrics: the node's metrics (fleet gauges, rollout fraction, release bytes).
        admins: who may read the view or change the rollout (``None``: anyone,
            plaintext loopback).
        count: adds to one of the node's counts (key, amount).
        dropped: counts a refusal of kind ``kind`` (counts and the errors metric).
    """

    def __init__(
        self,
        fleet: Fleet,
        metrics: CloudMetrics,
        admins: frozenset[str] | None,
        count: Callable[[str, int], None],
        dropped: Callable[[str], None],
    ) -> None:
        self.fleet = fleet
        self.metrics = metrics
        self.admins = admins
        self._count_n = count
        self._dropped = dropped
        self._gauged: set[tuple[str, str]] = set()
        self._gauged_at = -math.inf
        metrics.rollout_fraction.set(fleet.fraction)

    def answer(self, message: wire.Message, client: str | None) -> list:
        """The reply frames to a control message; never raises (the ingress stays up)."""
        try:
            return self._answer(message, client)
        except Exception as exc:  # noqa: BLE001 - the ingress stays up whatever comes
            log.exception("fleet message kind=%s failed", message.kind)
            return self._refuse(message.request_id, "fleet", f"{type(exc).__name__}: {exc}")

    def _answer(self, message: wire.Message, client: str | None) -> list:
        """Answer a ``hello`` (heartbeat), ``fetch`` (a release chunk) or ``fleet`` (the view)."""
        fleet = self.fleet
        meta = message.meta
        if message.kind == "hello":
            self._count("hello")
            welcome = fleet.hello(meta, client)
            self._gauges()
            return wire.encode_message("welcome", message.request_id, meta=welcome)
        if message.kind == "fetch":
            try:
                # The edge is named as its hello names it: only an edge offered the
                # release gets its bytes (the edge part alone: no tail leaves).
                data = fleet.chunk(
                    meta.get("bundle"),
                    meta.get("offset"),
                    meta.get("length"),
                    meta.get("name"),
                    client,
                )
            except (PermissionError, ValueError) as exc:
                code = "forbidden" if isinstance(exc, PermissionError) else "fetch"
                return self._refuse(message.request_id, code, str(exc), kind="fetch")
            self._count("fetch")
            self.metrics.release_bytes.inc(len(data))
            chunk = np.frombuffer(data, dtype=np.uint8)
            return wire.encode_message(
                "chunk", message.request_id, {"data": chunk}, meta={"offset": meta.get("offset")}
            )
        op = meta.get("op", "status")
        rid = message.request_id
        # The fleet view names every edge and its health: admins only, as rollout changes.
        if self.admins is not None and client not in self.admins:
            return self._refuse(
                rid,
                "forbidden",
                f"client {client!r} may not read the fleet view or change the rollout "
                "(the cloud's --fleet-admins)",
            )
        after: object = None
        limit: object = None
        if op == "rollout":
            fraction = meta.get("fraction")
            if not isinstance(fraction, int | float) or isinstance(fraction, bool):
                fraction = -1.0
            try:
                fleet.set_fraction(float(fraction))
            except ConfigError as exc:
                return self._refuse(rid, "rollout", str(exc))
            self.metrics.rollout_fraction.set(fleet.fraction)
            log.info("rollout fraction=%.3f by=%s", fleet.fraction, client)
        elif op == "status":
            after, limit = meta.get("after"), meta.get("limit")
        else:
            return self._refuse(rid, "fleet", f"op={str(op)[:40]!r}: expected status or rollout")
        try:
            # One page: its own rows, not the fleet's (the client asks for the next).
            text = fleet.report_json(after, limit)
        except ValueError as exc:
            return self._refuse(rid, "fleet", str(exc))
        self._count("fleet")
        return wire.encode_message(
            "report", message.request_id, {"json": np.frombuffer(text, dtype=np.uint8)}
        )

    def _gauges(self) -> None:
        """Edges by version and state, recounted at most once a second (hellos are many).

        Heartbeats the fleet did not record (over their key's rate) are counted
        as errors ``hello_rate`` as they come; evicted records as ``fleet_evicted``.
        """
        dropped = self.fleet.take_dropped()
        if dropped:
            self._count("error_hello_rate", dropped.get("hello_rate", 0))
            self._count("fleet_evicted", dropped.get("evicted", 0))
            if dropped.get("hello_rate"):
                self.metrics.errors.labels("hello_rate").inc(dropped["hello_rate"])
        now = time.monotonic()
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

    def _count(self, key: str, n: int = 1) -> None:
        self._count_n(key, n)

    def _refuse(self, request_id: int, code: str, text: str, kind: str | None = None) -> list:
        """Count (as ``kind``, default ``code``) and answer a refused control-plane request."""
        self._dropped(kind or code)
        return wire.encode_message("error", request_id, meta={"code": code, "message": text[:900]})
