"""The edge's heartbeat: a ``hello`` to the cloud every ``interval_s``, between requests.

Heartbeats ride on the node's own client and never wait: a ``hello`` is sent
when one is due and its answer collected at a later tick, or given up after
``timeout_s``. Every time is the caller's (the node's clock).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import wire
from edge_node.transport import CloudClient, Pending, Reply
from edgesplit.errors import TransportError, WireError

log = logging.getLogger(__name__)


class Heartbeat:
    """Sends ``hello`` with the edge's status and hands back the cloud's answers."""

    def __init__(self, client: CloudClient, interval_s: float, timeout_s: float) -> None:
        self._client = client
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._hello: Pending | None = None
        self._sent_at = -math.inf
        self._next_at = -math.inf

    def collect(self, now: float) -> Reply | None:
        """The answer to the last ``hello`` if it is here; one later than ``timeout_s`` is dropped.

        Never raises for the cloud's sake: an invalid answer is dropped.
        """
        if self._hello is None:
            return None
        try:
            reply = self._client.poll(self._hello)
        except (WireError, TransportError) as exc:
            log.warning("invalid welcome from the cloud error=%s", exc)
            self._hello = None
            return None
        if reply is not None:
            self._hello = None
        elif now > self._sent_at + self._timeout_s:
            self._client.abandon(self._hello)
            self._hello = None
        return reply

    def send_due(self, now: float, hello: Callable[[int], wire.Hello]) -> None:
        """Send ``hello(request_id)`` if one is due and none is awaited."""
        if self._hello is not None or now < self._next_at:
            return
        self._next_at = now + self._interval_s
        try:
            self._hello = self._client.send(hello(self._client.new_id()))
            self._sent_at = now
        except TransportError:
            self._hello = None


__all__ = ["Heartbeat"]
