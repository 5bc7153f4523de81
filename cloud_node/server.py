"""The cloud node: a ZeroMQ ROUTER ingress in front of a data plane and a control plane.

The ingress thread alone owns the ROUTER socket. It reads each message's
header (``wire.read_envelope``: no field or payload read) and routes it by
its kind: ``hello``, ``fetch`` and ``fleet`` (decoded) to the
:class:`~cloud_node.control.ControlPlane`, anything else to the
:class:`~cloud_node.data_plane.DataPlane`, which serves ``ping`` and
``infer`` and refuses every other kind from the header alone (no payload
of any kind is decompressed on the ingress); it sends back what they answer
at once. Admitted requests are run by worker threads, which hand their
replies back to the ingress over an inproc socket. On stop the ingress stops
reading, the workers finish what was admitted, and every admitted request is
answered.
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

import zmq

import wire
from cloud_node.admission import AdmissionQueue
from cloud_node.config import CloudConfig
from cloud_node.control import CONTROL_KINDS, CONTROL_TYPES, ControlPlane
from cloud_node.data_plane import DataPlane
from cloud_node.fleet import Fleet
from cloud_node.guard import PeerGuard
from cloud_node.metrics import CloudMetrics
from cloud_node.tail import TailBackend
from cloud_node.tally import Tally
from cloud_node.throttle import LogThrottle
from cloud_node.validate import largest_request_bytes
from edgesplit.bundle import Bundle
from edgesplit.errors import TransportError, WireError
from edgesplit.security import Authenticator, make_curve_server

log = logging.getLogger(__name__)

_node_ids = itertools.count(1)
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
# Messages one client may have complete and unread (an edge keeps at most 16 in flight);
# beyond it libzmq stops reading from that client, which TCP then slows down.
RCVHWM = 64
# Replies one client may have unsent (its budget in bytes is the guard's).
SNDHWM = 64
# The smallest frame cap, whatever the bundle: fleet messages, a small cut's bombs.
MIN_FRAME_BYTES = 1024 * 1024
# How long stopping waits for the workers to answer what was admitted.
DRAIN_S = 30.0


class CloudNode:
    """Serves a bundle's tails over ZeroMQ; use as a context manager.

    ``with CloudNode(bundle, backend, config) as node: node.serve_forever()``
    binds on enter; on exit it answers what was admitted, then closes the
    sockets and the backend.

    Args:
        bundle: the bundle whose tails are served.
        backend: what runs them.
        config: how to listen, what to accept, how to batch.
        metrics: where to export (a registry of its own by default).
        fleet: the fleet's records and rollout (the control plane's state).
        admins: who may read the fleet view or change the rollout (CURVE key
            names); ``None``: anyone (plaintext loopback).
        clock: seconds, monotonic: when requests are received, their latency,
            the batch window, the drain deadline, the gauges' refresh.
    """

    def __init__(
        self,
        bundle: Bundle,
        backend: TailBackend,
        config: CloudConfig | None = None,
        metrics: CloudMetrics | None = None,
        *,
        fleet: Fleet | None = None,
        admins: frozenset[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.fleet = fleet or Fleet(bundle, bundle.id[:12])
        self.admins = admins
        self.config = config or CloudConfig()
        self.metrics = metrics or CloudMetrics()
        self.clock = clock
        self.tally = Tally(self.metrics, clock)
        self._quiet = LogThrottle(log, self.config.log_interval_s, clock)
        self.data = DataPlane(bundle, backend, self.config, self.tally, self._quiet)
        self.control = ControlPlane(self.fleet, self.tally, admins, clock)
        self.endpoint: str | None = None
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._replies: zmq.Socket | None = None
        self._auth: Authenticator | None = None
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()
        self._inproc = f"inproc://edgesplit-replies-{next(_node_ids)}"
        self._monitor: zmq.Socket | None = None
        self._guard: PeerGuard | None = None

    @property
    def counts(self) -> Counter[str]:
        """Requests and refusals by outcome (``ok``, ``busy``, ``error_<code>``, ``hello``...)."""
        return self.tally.counts

    @property
    def queue(self) -> AdmissionQueue:
        """The data plane's admission queue."""
        return self.data.queue

    def serve_bundle(self, bundle: Bundle, backend: TailBackend) -> None:
        """Also serve ``bundle``'s tails (a rollout's candidate), with their own backend."""
        self.data.serve_bundle(bundle, backend)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> CloudNode:
        self._context = zmq.Context()
        try:
            self._open(self._context)
        except BaseException:
            self._close_sockets()
            raise
        for i in range(self.config.workers):
            worker = threading.Thread(target=self._work, name=f"edgesplit-worker-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        log.info(
            "cloud node listening endpoint=%s bundle=%s backend=%s curve=%s workers=%d queue=%d",
            self.endpoint,
            self.bundle.id[:12],
            self.backend.name,
            self.config.keys is not None,
            self.config.workers,
            self.config.queue_size,
        )
        return self

    def _open(self, context: zmq.Context) -> None:
        cfg = self.config
        replies = context.socket(zmq.PULL)
        replies.bind(self._inproc)
        self._replies = replies
        sock = context.socket(zmq.ROUTER)
        self._socket = sock
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        # A frame larger than any valid request to the bundles served drops the peer
        # before it is allocated.
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame_bytes())
        if cfg.memory is not None:
            # Before bind: every connection's accept is seen.
            self._monitor = sock.get_monitor_socket(
                zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
            )
            self._guard = PeerGuard(
                cfg.memory, curve=cfg.keys is not None, on_drop=self.tally.dropped, clock=self.clock
            )
        if cfg.keys is not None:
            assert cfg.allowed is not None  # checked in CloudConfig
            self._auth = Authenticator(context, cfg.allowed, self.tally.auth)
            make_curve_server(sock, cfg.keys)
        try:
            sock.bind(cfg.bind)
        except zmq.ZMQError as exc:
            hint = (
                "; pick another --bind port or stop the process using it"
                if exc.errno == zmq.EADDRINUSE
                else ""
            )
            raise TransportError(f"cannot bind {cfg.bind}: {exc.strerror}{hint}") from exc
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self._guard is not None:
            self._guard.start()

    def max_frame_bytes(self) -> int:
        """The largest frame accepted: the wire limits, cut to what the bundles can take."""
        limits = self.config.limits
        served = [bundle for bundle, _ in self.data.served.values()]
        largest = max(largest_request_bytes(served, self.config.max_batch), MIN_FRAME_BYTES)
        return min(limits.max_tensor_bytes, largest) + limits.max_header_bytes

    def __exit__(self, *exc_info: object) -> None:
        self.queue.close()
        for worker in self._workers:
            worker.join(timeout=DRAIN_S)
        self._forward_replies(block=False)
        self._close_sockets()
        self.data.close()

    def _close_sockets(self) -> None:
        if self._guard is not None:
            self._guard.stop()
        if self._auth is not None:
            self._auth.close()
        if self._monitor is not None and self._socket is not None:
            self._socket.disable_monitor()
        for sock in (self._monitor, self._socket, self._replies):
            if sock is not None:
                sock.close(linger=0)
        if self._context is not None:
            self._context.term()

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return (from another thread or a signal handler)."""
        self._stop.set()

    # -- ingress -----------------------------------------------------------------------------

    def serve_forever(self, max_requests: int | None = None) -> None:
        """Answer requests until :meth:`stop` (or ``max_requests`` received).

        On return every admitted request has been answered.
        """
        if self._socket is None or self._replies is None:
            raise TransportError("CloudNode.serve_forever() called outside its `with` block")
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._replies, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        received = 0
        timeout_ms = int(self.config.poll_interval_s * 1000)
        while not self._stop.is_set() and (max_requests is None or received < max_requests):
            ready = dict(poller.poll(timeout_ms))
            if self._monitor is not None and self._monitor in ready:
                self._connections()
            if self._replies in ready:
                self._forward_replies(block=False)
            if self._socket in ready:
                received += self._receive()
        self._drain()

    def _receive(self) -> int:
        """Read the requests waiting on the ROUTER; answer or admit each; return how many."""
        assert self._socket is not None
        curve = self.config.keys is not None
        n = 0
        # Read while a message is waiting (a check costs less than the zmq.Again raised).
        while n < 64 and _readable(self._socket):
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            n += 1
            now = self.clock()
            identity, body = frames[0].bytes, frames[1:]
            if self._guard is not None:
                self._guard.read(frames)
                if self._guard.backlogged(identity):
                    self.tally.dropped("reply_dropped")  # it does not read its replies: no work
                    continue
            self.metrics.bytes_received.inc(sum(len(f.buffer) for f in body))
            # The CURVE client's name (plaintext has none: no lookup, which raises there).
            client = _user_id(body[0]) if body and curve else None
            reply = self.handle(body, now, identity, client)
            if reply is not None:
                self._send(identity, reply)
        return n

    def _connections(self) -> None:
        """Tell the guard of the connections opened and closed (socket monitor events)."""
        assert self._monitor is not None and self._guard is not None
        while True:
            try:
                event, value = _monitor_event(self._monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            if event == zmq.EVENT_ACCEPTED:
                self._guard.accepted(value)
            elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
                self._guard.closed(value)

    def _drain(self) -> None:
        """Stop admitting; forward the replies of everything admitted."""
        self.queue.close()
        deadline = self.clock() + DRAIN_S
        while any(w.is_alive() for w in self._workers) and self.clock() < deadline:
            self._forward_replies(block=True, timeout_ms=50)
        self._forward_replies(block=False)

    def _forward_replies(self, block: bool, timeout_ms: int = 0) -> None:
        if self._replies is None or self._socket is None or self._socket.closed:
            return
        if block and not self._replies.poll(timeout_ms):
            return
        while _readable(self._replies):
            try:
                frames = self._replies.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if self._guard is not None and not self._guard.sending(frames[0].bytes, frames[1:]):
                continue
            self._socket.send_multipart(frames, copy=False)
            self.metrics.bytes_sent.inc(sum(len(f.buffer) for f in frames[1:]))

    def _send(self, identity: bytes, reply: wire.Frames) -> None:
        assert self._socket is not None
        if self._guard is not None and not self._guard.sending(identity, reply):
            return
        self._socket.send_multipart([identity, *reply], copy=False)
        self.metrics.bytes_sent.inc(sum(memoryview(f).nbytes for f in reply))

    def handle(
        self,
        frames: Sequence[zmq.Frame | bytes],
        received: float,
        identity: bytes = b"",
        client: str | None = None,
    ) -> wire.Frames | None:
        """One message's frames in; the reply's frames, or ``None`` when it was admitted.

        Reads the header alone, then routes by kind: a control-plane message is
        decoded and handed to :attr:`control`, anything else to :attr:`data`
        (which refuses kinds it does not serve before reading any payload).
        Never raises for bad input: a malformed or unservable request gets an
        ``error`` reply and a counted error, with the request's id once its
        header was read.
        """
        limits = self.config.limits
        try:
            envelope = wire.read_envelope(frames, limits)
        except WireError as exc:
            return self.data.refuse(exc, received)
        if envelope.kind not in CONTROL_KINDS:
            return self.data.answer(envelope, received, identity)
        try:
            message = wire.decode_body(envelope, limits, encoded=True)
        except WireError as exc:
            return self.data.refuse(exc, received, envelope.request_id)
        assert isinstance(message, CONTROL_TYPES)
        return self.control.answer(message, client)

    # -- workers -----------------------------------------------------------------------------

    def _work(self) -> None:
        """A worker thread: the data plane's batches, replies pushed back to the ingress."""
        assert self._context is not None
        push = self._context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(self._inproc)

        def send(identity: bytes, reply: wire.Frames) -> None:
            push.send_multipart([identity, *reply], copy=False)

        try:
            self.data.work(send, self._guard.gone if self._guard is not None else None)
        finally:
            push.close()


def _readable(sock: zmq.Socket) -> bool:
    """Whether a message waits on ``sock`` (cheaper than the ``zmq.Again`` of a failed read)."""
    return bool(int(sock.getsockopt(_EVENTS)) & _POLLIN)


def _user_id(frame: object) -> str | None:
    """The CURVE client's name that the ZAP handler gave this frame (``None``: plaintext)."""
    try:
        value = frame.get("User-Id")  # type: ignore[attr-defined]
    except (AttributeError, zmq.ZMQError):
        return None
    return value or None


def _monitor_event(frames: list[bytes]) -> tuple[int, int]:
    """(event, value) of a socket monitor message (the value: a descriptor here)."""
    event, value = struct.unpack("=hi", frames[0][:6])
    return event, value


__all__ = ["CloudConfig", "CloudNode"]
