"""Bounds on what one client can make the cloud hold in memory, and on all of them together.

libzmq hands a multipart message to the application only once its last frame
has arrived, and buffers it whole until then: ``ZMQ_MAXMSGSIZE`` bounds one
frame, not a message, and the high-water marks count messages, not bytes. A
client that sends frame after frame and never ends its message, or that asks
for replies and never reads them, would make the cloud hold memory without
limit, out of the application's sight.

The guard measures it from outside. For every TCP connection of the ROUTER
(from the socket monitor's accepted/closed events) the ingress counts the
bytes of the messages it read from it (each message says which connection it
came from: ``ZMQ_SRCFD``) and of the replies it handed to it; the kernel
counts the bytes that arrived on it and the bytes the peer acknowledged
(``TCP_INFO``), and what is still in its own queues (``SIOCINQ``,
``SIOCOUTQ``). The difference is what libzmq holds for that client: an
unfinished message, messages not yet read, replies not yet sent. A
connection over the per-client budget, or the largest ones while all of them
together are over the total budget, is shut down: libzmq then frees what it
held for it, and the client loses its own unfinished message and its unread
replies, nothing of anybody else's. A reply that would take its client over
the budget is not sent.

Many tiny frames cost libzmq more memory than their bytes on the wire (64
bytes a frame, for 2 on the wire without CURVE): so the guard also watches
the process's resident memory, and when it rises past three quarters of the
total budget above what it was at start (the bundle loaded), it cuts off the
connection that holds most among those whose unfinished message keeps
growing with no message completed (two measures in a row), one per measure,
until the memory is back under the budget or no such connection is left;
growth with no such connection is the process's own, and becomes its new
baseline.

Bytes a client sent that made no message (ZMTP commands, a handshake) count
against that client: a client that sends nothing but commands is dropped once
they add up to its budget. Connections that are not TCP (``ipc://``) are not
measured.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zmq

from cloud_node.tcp_probe import (
    frame_overhead,
    measure,
    peer_address,
    resident_bytes,
    shut_down,
    trimmer,
)
from cloud_node.throttle import LogThrottle
from edgesplit.errors import ConfigError

log = logging.getLogger(__name__)

# Greeting and handshake bytes (ZMTP greeting 64, CURVE HELLO 200 and INITIATE with its
# metadata a few hundred): not counted as messages, allowed for once per connection.
_HANDSHAKE_SLACK = 4096
#: Identities of departed clients remembered (their queued work is skipped).
MAX_GONE = 65_536
#: A connection holding less than this is never cut off for the process's memory.
SUSPECT_BYTES = 64 * 1024


@dataclass(frozen=True)
class GuardLimits:
    """The memory a client, and all clients together, may make the cloud hold.

    Attributes:
        client_bytes: bytes libzmq may hold for one connection (its unfinished
            or unread messages plus its unsent replies).
        total_bytes: the same for all connections together.
        interval_s: how often each connection is measured (more often costs a
            few microseconds per connection; less often lets a fast sender get
            further past the budget before it is cut off).
    """

    client_bytes: int = 64 * 1024 * 1024
    total_bytes: int = 512 * 1024 * 1024
    interval_s: float = 0.02

    def __post_init__(self) -> None:
        if not 0 < self.client_bytes <= self.total_bytes:
            raise ConfigError(
                f"client memory budget {self.client_bytes} bytes must be > 0 and at most the "
                f"total budget ({self.total_bytes} bytes)"
            )
        if not self.interval_s > 0:
            raise ConfigError(f"guard interval_s={self.interval_s}: expected > 0")


class _Peer:
    """One TCP connection: what the application read from it and sent to it."""

    __slots__ = (
        "fd",
        "address",
        "read",
        "sent",
        "held_in",
        "held_out",
        "identities",
        "last_read",
        "last_held_in",
        "stalls",
    )

    def __init__(self, fd: int, address: object) -> None:
        self.fd = fd
        self.address = address
        self.read = 0  # wire bytes of the messages the ingress read
        self.sent = 0  # wire bytes of the replies handed to libzmq
        self.held_in = 0  # last measured: bytes libzmq holds from this client
        self.held_out = 0  # last measured: bytes libzmq holds for this client
        self.identities: set[bytes] = set()
        self.last_read = 0  # ``read`` at the previous measure
        self.last_held_in = 0  # ``held_in`` at the previous measure
        # Measures in a row growing past SUSPECT_BYTES with no message completed.
        self.stalls = 0

    @property
    def stalled(self) -> bool:
        """Growing a sizeable unfinished message for two measures without completing one.

        A closed-loop client whose request waits unread is not growing: under load the
        ingress may leave a complete message unread for a while, and that is no attack.
        """
        return self.stalls >= 2

    @property
    def held(self) -> int:
        return self.held_in + self.held_out


class PeerGuard:
    """Measures what libzmq holds per connection and cuts off those over budget.

    The ingress thread tells it of connections (:meth:`accepted`,
    :meth:`closed`, from the socket monitor), of each message read
    (:meth:`read`) and of each reply before it is sent (:meth:`sending`); a
    thread of its own measures the connections (:meth:`start`, :meth:`stop`).

    Args:
        limits: the budgets.
        curve: whether the socket runs CURVE (its per-frame overhead).
        on_drop: called with ``"client_memory"``, ``"total_memory"`` or
            ``"reply_dropped"`` for each connection shut down or reply not sent.
        rss: this process's resident bytes.
        clock: seconds, monotonic: how long a measure took (it spaces the next).
    """

    def __init__(
        self,
        limits: GuardLimits,
        *,
        curve: bool,
        on_drop: Callable[[str], None],
        rss: Callable[[], int] = resident_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._rss = rss
        self._clock = clock
        self._baseline = 0
        self._cut_at = 0  # resident bytes at the last cut for the process's memory
        self._trim = trimmer()
        self._quiet = LogThrottle(log, clock=clock)
        self.curve = curve
        self._on_drop = on_drop
        self._peers: dict[int, _Peer] = {}
        self._by_identity: dict[bytes, _Peer] = {}
        self._gone: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- from the ingress thread ---------------------------------------------------------

    def accepted(self, fd: int) -> None:
        """A new connection on ``fd``.

        Its first messages may have been read before this event (then the peer
        already known on ``fd``, at the same address, is this connection's).
        """
        address = peer_address(fd)
        with self._lock:
            old = self._peers.get(fd)
            if old is not None and old.address == address:
                return
            if old is not None:
                self._forget(self._peers.pop(fd))
            self._peers[fd] = _Peer(fd, address)

    def closed(self, fd: int) -> None:
        """The connection on ``fd`` is gone; its clients' queued work can be skipped.

        The event may come after ``fd`` was given to a new connection whose
        messages were read already: a peer at the address ``fd`` has now is kept.
        """
        address = peer_address(fd)
        with self._lock:
            peer = self._peers.get(fd)
            if peer is None or (address is not None and peer.address == address):
                return
            self._forget(self._peers.pop(fd))

    def _forget(self, peer: _Peer) -> None:
        for identity in peer.identities:
            if self._by_identity.get(identity) is peer:
                del self._by_identity[identity]
            self._gone[identity] = None
        while len(self._gone) > MAX_GONE:
            self._gone.popitem(last=False)

    def gone(self, identity: bytes) -> bool:
        """Whether the client ``identity`` has left (its connection closed)."""
        return identity in self._gone

    def read(self, frames: Sequence[zmq.Frame]) -> None:
        """A message read from the ROUTER: its identity frame, then its body."""
        if len(frames) < 2:
            return
        try:
            fd = int(frames[1].get(zmq.SRCFD))
        except (zmq.ZMQError, AttributeError, TypeError, ValueError):
            return
        nbytes = sum(len(f.buffer) + frame_overhead(len(f.buffer), self.curve) for f in frames[1:])
        identity = frames[0].bytes
        with self._lock:
            peer = self._peers.get(fd)
            if peer is not None and identity not in peer.identities:
                # A new client on a known descriptor: the same connection, or a new one
                # whose accept (and the old one's close) the monitor has not told yet.
                address = peer_address(fd)
                if address != peer.address:
                    self._forget(self._peers.pop(fd))
                    peer = None
            if peer is None:  # connected before the monitor saw it, or not TCP
                peer = self._peers[fd] = _Peer(fd, peer_address(fd))
            peer.read += nbytes
            if identity not in peer.identities:
                peer.identities.add(identity)
                self._by_identity[identity] = peer
                self._gone.pop(identity, None)

    def backlogged(self, identity: bytes) -> bool:
        """Whether ``identity``'s unsent replies fill half its budget: its requests wait unread.

        The ingress skips the requests of such a client (work whose answer could not be
        delivered is not done); they are counted as ``reply_dropped``.
        """
        peer = self._by_identity.get(identity)
        if peer is None or peer.held_out < self.limits.client_bytes // 2:
            return False
        # The estimate counts replies sent since the last measure as unsent: measure now.
        return self._refresh(peer) and peer.held_out >= self.limits.client_bytes // 2

    def _refresh(self, peer: _Peer) -> bool:
        """Measure one connection now; ``False`` if it cannot be (closed, or not TCP)."""
        figures = measure(peer.fd)
        if figures is None:
            return False
        address, received, acked, unread, unacked = figures
        with self._lock:
            if self._peers.get(peer.fd) is not peer or address != peer.address:
                return False
            peer.held_in = max(0, received - unread - peer.read - _HANDSHAKE_SLACK)
            peer.held_out = max(0, peer.sent - acked - unacked)
        return True

    def sending(self, identity: bytes, frames: Sequence[object]) -> bool:
        """Account for a reply about to be sent; ``False``: its client is over budget."""
        nbytes = 0
        for frame in frames:
            n = memoryview(frame.buffer if isinstance(frame, zmq.Frame) else frame).nbytes  # type: ignore[arg-type]
            nbytes += n + frame_overhead(n, self.curve)
        peer = self._by_identity.get(identity)
        if peer is None:
            return True
        if peer.held + nbytes > self.limits.client_bytes and peer.held_out > 0:
            self._refresh(peer)  # the estimate may be stale: measure before refusing
        with self._lock:
            if peer.held + nbytes > self.limits.client_bytes and peer.held_out > 0:
                refused = True
            else:
                refused = False
                peer.sent += nbytes
                peer.held_out += nbytes  # counted at once; the next measure corrects it
        if refused:
            self._on_drop("reply_dropped")
        return not refused

    # -- the measuring thread ------------------------------------------------------------

    def start(self) -> None:
        """Measure every ``limits.interval_s`` in a thread of its own."""
        self._baseline = self._rss()
        self._thread = threading.Thread(target=self._loop, name="edgesplit-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop measuring."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _loop(self) -> None:
        interval = self.limits.interval_s
        while not self._stop.wait(interval):
            began = self._clock()
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the guard must outlive any surprise
                log.exception("peer guard check failed")
            # Many connections: measure less often, so that measuring stays under ~20% of
            # a core.
            interval = max(self.limits.interval_s, 5 * (self._clock() - began))

    def check(self) -> list[tuple[int, str]]:
        """Measure every connection; shut down those over budget. Returns (fd, why) of each."""
        measured = self._measure_all()
        dropped = self._over_budget(measured)
        rss = self._rss()
        if rss and self._baseline and not dropped:
            dropped += self._over_memory(rss, measured)
        for fd, why in dropped:
            with self._lock:
                peer = self._peers.get(fd)
                if peer is None:
                    continue
                held = peer.held
                # Checked again under the lock: the descriptor is still this connection's.
                if peer_address(fd) != peer.address:
                    continue
                shut_down(fd)
            self._quiet.warning(
                why,
                "client cut off: libzmq held %.1f MB for it (%s; budgets: client %.0f MB, "
                "total %.0f MB)",
                held / 1e6,
                why,
                self.limits.client_bytes / 1e6,
                self.limits.total_bytes / 1e6,
            )
            self._on_drop(why)
        if dropped:
            self._trim()
        return dropped

    def _measure_all(self) -> list[_Peer]:
        """The connections measured now (those that are TCP and still open)."""
        with self._lock:
            peers = list(self._peers.values())
        measured: list[_Peer] = []
        for peer in peers:
            # Not measured: closed, or the descriptor now belongs to another connection.
            if not self._refresh(peer):
                continue
            with self._lock:
                growing = peer.held_in > peer.last_held_in
                if peer.read == peer.last_read and peer.held_in >= SUSPECT_BYTES and growing:
                    peer.stalls += 1
                else:
                    peer.stalls = 0
                peer.last_read, peer.last_held_in = peer.read, peer.held_in
            measured.append(peer)
        return measured

    def _over_budget(self, measured: list[_Peer]) -> list[tuple[int, str]]:
        """Connections over the client budget, then the largest while over the total."""
        dropped = [(p.fd, "client_memory") for p in measured if p.held > self.limits.client_bytes]
        over = {fd for fd, _ in dropped}
        total = sum(p.held for p in measured if p.fd not in over)
        for peer in sorted(measured, key=lambda p: p.held, reverse=True):
            if total <= self.limits.total_bytes:
                break
            if peer.fd not in over:
                dropped.append((peer.fd, "total_memory"))
                total -= peer.held
        return dropped

    def _over_memory(self, rss: int, measured: list[_Peer]) -> list[tuple[int, str]]:
        """The connection to cut when the process's memory is over budget, if any."""
        # Three quarters: the rest is room for what arrives while the cut takes effect.
        allowed = self.limits.total_bytes * 3 // 4
        if rss - self._baseline <= allowed:
            self._cut_at = 0
            return []
        suspects = [p for p in measured if p.stalled]
        if not suspects:
            # No client holds an unfinished message that stalls: the process grew by
            # itself (ONNX Runtime's arenas, caches). That is its new baseline.
            self._baseline = rss - allowed
            return []
        if rss <= self._cut_at:
            return []  # memory not given back since the last cut (the allocator keeps it)
        self._cut_at = rss
        return [(max(suspects, key=lambda p: p.held).fd, "total_memory")]


__all__ = ["GuardLimits", "MAX_GONE", "PeerGuard", "frame_overhead"]
