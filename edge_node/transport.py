"""The edge's ZeroMQ client: one DEALER socket, several requests in flight, deadlines.

Requests are typed wire messages (:mod:`wire.messages`), sent with
:meth:`CloudClient.send` under an id from :meth:`CloudClient.new_id` and
collected by that id with :meth:`CloudClient.wait`; replies that arrive for
another pending request are kept until it is collected, replies for a request
already given up are counted and dropped, so a late answer never pairs with
the wrong request.

Two clocks: every deadline (the wait for a connection, the wait for a reply)
is kept on the client's ``clock`` (injected, ``time.monotonic`` by default),
while round trips are timed with ``time.perf_counter``: they are figures, not
deadlines. Callers give it durations, never instants of their own clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zmq

import wire
from edgesplit.errors import TransportError, WireError
from edgesplit.security import KeyPair, make_curve_client

#: Longest pause between ZeroMQ's reconnection attempts to a cloud that went away: a
#: restarted cloud is found again within this (plus the edge's own probe backoff).
RECONNECT_MAX_MS = 500
_POLLIN = int(zmq.POLLIN)


@dataclass(frozen=True)
class Reply:
    """A decoded reply and how long the round trip took.

    Attributes:
        message: the reply, one of the typed wire messages (``wire.AnyMessage``).
        round_trip_s: seconds from the send to the reply's arrival.
        timed: the edge was waiting when the reply arrived, so ``round_trip_s``
            is exact; ``False`` when it had arrived earlier (while the edge
            computed the next head) and the round trip is an upper bound.
    """

    message: wire.AnyMessage
    round_trip_s: float
    timed: bool = True


@dataclass(frozen=True)
class Pending:
    """A request on the wire: its id, bytes sent and when it left.

    ``sent_at`` is on ``time.perf_counter`` (round trips are timed from it);
    ``sent_clock`` is the same instant on the client's deadline clock (``None``:
    unknown, taken as ``sent_at``'s age on that clock).
    """

    request_id: int
    bytes_sent: int
    sent_at: float
    raw_bytes: int
    sent_clock: float | None = None


class CloudClient:
    """Sends wire messages to a cloud node and collects the matching replies.

    Args:
        endpoint: the cloud's ZeroMQ endpoint.
        limits: the wire limits replies are decoded under.
        keys: this edge's CURVE key pair (``None``: plain TCP).
        server_key: the cloud's CURVE public key (with ``keys``).
        clock: the clock every deadline is kept on, seconds (round trips are timed
            with ``time.perf_counter`` regardless).
    """

    def __init__(
        self,
        endpoint: str,
        limits: wire.Limits | None = None,
        *,
        keys: KeyPair | None = None,
        server_key: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.limits = limits or wire.Limits()
        self.curve = keys is not None
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        # Queue messages only on a completed connection: with the cloud down a send
        # fails at once (the edge answers locally) instead of piling up stale work
        # that a restarted cloud would then compute for nobody.
        self._socket.setsockopt(zmq.IMMEDIATE, 1)
        # Reconnect quickly when a cloud comes back after a restart.
        self._socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self._socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        if keys is not None:
            if server_key is None:
                self.close()
                raise TransportError("CURVE client keys given without the cloud's public key")
            make_curve_client(self._socket, keys, server_key)
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise TransportError(f"cannot connect to {endpoint}: {exc.strerror}") from exc
        self._next_id = 1
        self._pending: set[int] = set()
        self._early: dict[int, tuple[wire.AnyMessage, float]] = {}
        self.stale_replies = 0

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket and its context."""
        self._socket.close(linger=0)
        self._context.term()

    def new_id(self) -> int:
        """A fresh request id."""
        self._next_id += 1
        return self._next_id

    def send(
        self, message: wire.AnyMessage, *, codec: str = "raw", connect_wait_s: float = 0.0
    ) -> Pending:
        """Encode and send ``message`` (its id from :meth:`new_id`) without waiting for its reply.

        With no completed connection the send fails at once, or after waiting up to
        ``connect_wait_s`` for one (a fresh client's first request).

        Raises:
            TransportError: no connection to the cloud.
            WireError: a field of ``message`` that cannot be sent.
        """
        raw = 0
        if isinstance(message, wire.InferRequest):
            raw = sum(t.array.nbytes for t in message.tensors if isinstance(t, wire.Tensor))
        frames = wire.encode(message, codec=codec)
        return self._send(frames, message.request_id, raw, connect_wait_s)

    def _send(
        self, frames: Sequence[bytes | memoryview], request_id: int, raw: int, connect_wait_s: float
    ) -> Pending:
        sent = sum(memoryview(f).nbytes for f in frames)
        started, started_clock = time.perf_counter(), self.clock()
        try:
            try:
                self._socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                # No completed connection yet: wait for one only now (a poll on every
                # request would cost more than the send itself).
                if connect_wait_s <= 0:
                    raise
                self._socket.poll(max(1, int(connect_wait_s * 1000)), zmq.POLLOUT)
                started, started_clock = time.perf_counter(), self.clock()
                self._socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            raise TransportError(
                f"no connection to the cloud at {self.endpoint} (down, unreachable, or refusing "
                "this edge's key)"
            ) from None
        self._pending.add(request_id)
        return Pending(request_id, sent, started, raw, started_clock)

    def wait(self, pending: Pending, timeout_s: float) -> Reply | None:
        """The reply to ``pending``, or ``None`` once ``timeout_s`` passed since it was sent.

        The deadline is kept on the client's ``clock``, from when ``pending`` was sent.

        Raises:
            WireError: the reply was not valid wire format.
        """
        sent = pending.sent_clock
        if sent is None:
            sent = self.clock() - (time.perf_counter() - pending.sent_at)
        return self._wait_until(pending, sent + timeout_s)

    def _wait_until(self, pending: Pending, deadline: float) -> Reply | None:
        """The reply to ``pending``, or ``None`` after ``deadline`` (on ``self.clock``)."""
        rid = pending.request_id
        early = self._early.pop(rid, None)
        if early is not None:
            self._pending.discard(rid)
            message, arrived = early
            return Reply(message, arrived - pending.sent_at, timed=False)
        # Whatever is already queued on the socket arrived while the edge was busy.
        # (Blocking receives with a timeout, not poll(): pyzmq builds a Poller per poll.)
        timed = False
        try:
            while True:
                # Read at once what is queued, else wait for it (a readiness check
                # costs less than the zmq.Again of a failed read).
                if int(self._socket.getsockopt(zmq.EVENTS)) & _POLLIN:
                    parts = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
                else:
                    left = deadline - self.clock()
                    if left <= 0:
                        return None
                    timed = True
                    self._socket.rcvtimeo = max(1, int(left * 1000))
                    try:
                        parts = self._socket.recv_multipart(copy=False)
                    except zmq.Again:
                        return None
                message = wire.decode(parts, self.limits)
                arrived = time.perf_counter()
                got = message.request_id
                # An error with id 0 answers a request whose header the cloud could not read.
                if got == rid or (isinstance(message, wire.ErrorReply) and got == 0):
                    return Reply(message, arrived - pending.sent_at, timed)
                if got in self._pending:
                    self._early[got] = (message, arrived)
                else:
                    self.stale_replies += 1
        finally:
            self._pending.discard(rid)

    def poll(self, pending: Pending) -> Reply | None:
        """The reply to ``pending`` if it has arrived, without waiting or giving up on it.

        Raises:
            WireError: a reply was not valid wire format.
        """
        rid = pending.request_id
        while rid not in self._early:
            try:
                parts = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return None
            message = wire.decode(parts, self.limits)
            if message.request_id in self._pending:
                self._early[message.request_id] = (message, time.perf_counter())
            else:
                self.stale_replies += 1
        message, arrived = self._early.pop(rid)
        self._pending.discard(rid)
        return Reply(message, arrived - pending.sent_at, timed=False)

    def abandon(self, pending: Pending) -> None:
        """Give up on ``pending``: a reply arriving later is dropped as stale."""
        self._pending.discard(pending.request_id)
        self._early.pop(pending.request_id, None)

    def call(
        self, message: wire.AnyMessage, *, codec: str = "raw", timeout_s: float
    ) -> tuple[Reply | None, int]:
        """Send ``message`` and wait; return (reply or ``None`` on timeout, bytes sent).

        Raises:
            TransportError: no connection within ``timeout_s``.
            WireError: the reply was not valid wire format.
        """
        began = self.clock()
        pending = self.send(message, codec=codec, connect_wait_s=timeout_s)
        return self._wait_until(pending, began + timeout_s), pending.bytes_sent

    def measure_rtt(self, timeout_s: float, pings: int = 5) -> tuple[float, Reply]:
        """The fastest round trip of ``pings`` pings, and the last ``pong``.

        Raises:
            TransportError: a ping went unanswered within ``timeout_s``.
        """
        round_trips = []
        reply = None
        for _ in range(max(1, pings)):
            reply = self.ping(timeout_s)
            if reply is None:
                hint = (
                    " (with CURVE on, check that this edge's public key is in the cloud's "
                    "allowed clients and that the cloud's public key is the right one)"
                    if self.curve
                    else ""
                )
                raise TransportError(
                    f"cloud at {self.endpoint} did not answer a ping in {timeout_s:g} s{hint}"
                )
            round_trips.append(reply.round_trip_s)
        assert reply is not None  # the loop ran at least once
        return min(round_trips), reply

    def ping(self, timeout_s: float) -> Reply | None:
        """A ``ping``; the ``pong`` names the cloud's bundle and backend.

        Waits up to ``timeout_s`` in all, for the connection itself and then the pong.
        """
        try:
            reply, _ = self.call(wire.Ping(self.new_id()), timeout_s=timeout_s)
        except TransportError:
            return None
        except WireError as exc:
            raise TransportError(f"{self.endpoint}: invalid reply to ping: {exc}") from exc
        return reply
