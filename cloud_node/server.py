"""The cloud node: a ZeroMQ ROUTER ingress, a bounded queue, and workers that run tails.

One request: the ingress thread receives it, validates its header strictly
(``wire``, then against the bundle), and either answers at once (``pong``,
``error``, or ``busy`` when the queue is full: with the queue's expected
delay, so the edge runs the request itself instead of waiting) or admits it
to the queue, its tensors still encoded: the ingress thread never runs a
codec or a model. A worker takes the oldest request plus every queued request
for the same cut (within ``batch_window_s`` and ``max_batch`` rows) and hands
them to the backend, which decodes them where the tail runs (the worker
thread, or a Ray replica) and runs them as one batch; the worker hands each
reply back to the ingress, which alone owns the ROUTER socket. Replies carry
the request's queue time and its batch's compute time. On stop the ingress
stops reading, the workers finish what was admitted, and every admitted
request is answered.
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

import wire
from cloud_node.admission import AdmissionQueue, Job
from cloud_node.backends import TailBackend
from cloud_node.control import CONTROL_KINDS, ControlPlane
from cloud_node.fleet import Fleet
from cloud_node.guard import GuardLimits, PeerGuard
from cloud_node.metrics import CloudMetrics
from cloud_node.throttle import LogThrottle
from cloud_node.validate import RequestRejected, check_request, largest_request_bytes
from edgesplit.bundle import Bundle
from edgesplit.errors import BackendBusy, BackendError, ConfigError, TransportError, WireError
from edgesplit.security import Authenticator, KeyPair, make_curve_server
from wire.message import MetaValue

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


@dataclass(frozen=True)
class CloudConfig:
    """How the cloud node listens, what it accepts and how it batches.

    Attributes:
        bind: ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5555``.
        limits: wire limits applied to every incoming message.
        max_batch: most rows in one backend call, and so in one request.
        queue_size: most requests admitted and not yet running; beyond it
            the node answers ``busy`` at once.
        batch_window_s: how long a worker waits for more requests of the same
            cut before running a batch (0: merge only what is already queued).
        workers: threads running backend calls.
        poll_interval_s: how often the loop checks for a stop request.
        keys: this node's CURVE key pair; ``None`` serves plaintext (loopback
            only, checked by the caller).
        allowed: allowed client public keys (Z85) -> name; required with ``keys``.
        busy_retry_s: the least delay a ``busy`` reply announces when the backend
            itself could not take an admitted request (a Ray replica lost): the
            edge keeps its requests for that long.
        memory: what libzmq may hold for one client and for all together
            (``cloud_node.guard``); ``None`` turns the guard off.
        log_interval_s: at most one WARNING line per kind of refusal per interval
            (each refusal is counted in the metrics).
    """

    bind: str = "tcp://127.0.0.1:5555"
    limits: wire.Limits = field(default_factory=wire.Limits)
    max_batch: int = 16
    queue_size: int = 64
    batch_window_s: float = 0.0
    workers: int = 1
    poll_interval_s: float = 0.1
    keys: KeyPair | None = None
    allowed: dict[bytes, str] | None = None
    busy_retry_s: float = 0.5
    memory: GuardLimits | None = field(default_factory=GuardLimits)
    log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_size", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"cloud {name}={getattr(self, name)}: expected >= 1")
        if not self.batch_window_s >= 0:
            raise ConfigError(f"cloud batch_window_s={self.batch_window_s}: expected >= 0")
        if self.keys is not None and not self.allowed:
            raise ConfigError("CURVE is on but no client key is allowed: give allowed clients")


class CloudNode:
    """Serves a bundle's tails over ZeroMQ; use as a context manager.

    ``with CloudNode(bundle, backend, config) as node: node.serve_forever()``
    binds on enter; on exit it answers what was admitted, then closes the
    sockets and the backend.
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
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.fleet = fleet or Fleet(bundle, bundle.id[:12])
        # Who may change the rollout (CURVE key names); None: anyone (plaintext loopback).
        self.admins = admins
        self._served: dict[str, tuple[Bundle, TailBackend]] = {bundle.id: (bundle, backend)}
        self.config = config or CloudConfig()
        self.metrics = metrics or CloudMetrics()
        self.counts: Counter[str] = Counter()
        self._replicas = self._replicas_probe(backend)
        self.queue = AdmissionQueue(self.config.queue_size, self.config.workers, self._replicas)
        self.endpoint: str | None = None
        self._lock = threading.Lock()
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._replies: zmq.Socket | None = None
        self._auth: Authenticator | None = None
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()
        self._inproc = f"inproc://edgesplit-replies-{next(_node_ids)}"
        self._monitor: zmq.Socket | None = None
        self._guard: PeerGuard | None = None
        self._quiet = LogThrottle(log, self.config.log_interval_s)
        self._cut_ids = {c.id for c in bundle.manifest.cuts}
        # The fleet's control plane (hello, fetch, fleet): its own class, the same socket.
        self.control = ControlPlane(self.fleet, self.metrics, admins, self._count, self._dropped)
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def serve_bundle(self, bundle: Bundle, backend: TailBackend) -> None:
        """Also serve ``bundle``'s tails (a rollout's candidate), with their own backend."""
        self._served[bundle.id] = (bundle, backend)
        self._cut_ids |= {c.id for c in bundle.manifest.cuts}

    def _replicas_probe(self, backend: TailBackend) -> Callable[[], int] | None:
        """The backend's running replicas (exported as a gauge), if it has several."""
        parallelism = getattr(backend, "parallelism", None)
        if parallelism is None:
            self.metrics.replicas.set(1)
            return None

        def running() -> int:
            count = int(parallelism())
            self.metrics.replicas.set(count)
            return count

        return running

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
            self._guard = PeerGuard(cfg.memory, curve=cfg.keys is not None, on_drop=self._dropped)
        if cfg.keys is not None:
            assert cfg.allowed is not None  # checked in CloudConfig
            self._auth = Authenticator(context, cfg.allowed, self._auth_decision)
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
        served = [bundle for bundle, _ in self._served.values()]
        largest = max(largest_request_bytes(served, self.config.max_batch), MIN_FRAME_BYTES)
        return min(limits.max_tensor_bytes, largest) + limits.max_header_bytes

    def __exit__(self, *exc_info: object) -> None:
        self.queue.close()
        for worker in self._workers:
            worker.join(timeout=30.0)
        self._forward_replies(block=False)
        self._close_sockets()
        for _, backend in self._served.values():
            backend.close()

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
            now = time.perf_counter()
            identity, body = frames[0].bytes, frames[1:]
            if self._guard is not None:
                self._guard.read(frames)
                if self._guard.backlogged(identity):
                    self._dropped("reply_dropped")  # it does not read its replies: no work
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

    def _dropped(self, kind: str) -> None:
        """Count a refusal that answers no request of the data plane (metrics and counts)."""
        self._count(f"error_{kind}")
        self.metrics.errors.labels(kind).inc()

    def _drain(self) -> None:
        """Stop admitting; forward the replies of everything admitted."""
        self.queue.close()
        deadline = time.monotonic() + 30.0
        while any(w.is_alive() for w in self._workers) and time.monotonic() < deadline:
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

    def _send(self, identity: bytes, reply: list) -> None:
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
    ) -> list | None:
        """One request's frames in; the reply's frames, or ``None`` when it was admitted.

        Never raises for bad input: a malformed or unservable request gets an
        ``error`` reply and a counted error.
        """
        try:
            # The header alone: tensors are decoded only once checked against the bundle.
            message = wire.decode_header(frames, self.config.limits)
        except WireError as exc:
            return self._wire_error(exc, 0, received, "-")
        if message.kind == "ping":
            self._count("ping")
            return wire.encode_message(
                "pong",
                message.request_id,
                meta={
                    "bundle": self.bundle.id,
                    "bundles": ",".join(self._served),
                    "backend": self.backend.name,
                    "queue_s": self.queue.expected_wait_s(),
                },
            )
        if message.kind in CONTROL_KINDS:
            return self.control.answer(message, client)
        try:
            if message.kind != "infer":
                raise RequestRejected(
                    "kind", f"kind={message.kind!r}: the cloud node serves infer and ping"
                )
            bundle, backend = self._served.get(
                str(message.meta.get("bundle")), self._served[self.bundle.id]
            )
            cut = check_request(bundle, message, self.config.max_batch)
        except RequestRejected as exc:
            self._error(exc.code, received, self._cut_label(message.meta.get("cut")))
            self._quiet.warning(exc.code, "rejected request id=%d: %s", message.request_id, exc)
            return wire.encode_message(
                "error", message.request_id, meta={"code": exc.code, "message": str(exc)[:900]}
            )
        try:
            # Lengths only: the backend decodes where the tail runs.
            tensors = wire.encoded_tensors(message, frames)
        except WireError as exc:
            return self._wire_error(exc, message.request_id, received, cut.id)
        job = Job(identity, message.request_id, cut, tensors, received, bundle, backend)
        if self.queue.offer(job):
            self.metrics.queue_depth.set(len(self.queue))
            return None
        wait = self.queue.expected_wait_s()
        self.metrics.queue_delay.set(wait)
        return self._busy(
            job,
            wait,
            f"queue full ({len(self.queue)} waiting, ~{wait * 1e3:.1f} ms)",
        )

    # -- workers -----------------------------------------------------------------------------

    def _work(self) -> None:
        assert self._context is not None
        push = self._context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(self._inproc)
        try:
            while True:
                batch = self.queue.take(self.config.max_batch, self.config.batch_window_s)
                if batch is None:
                    return
                self.metrics.queue_depth.set(len(self.queue))
                service = 0.0
                try:
                    live = self._live(batch)
                    replies, service = self._run(live) if live else ([], 0)
                    for job, reply in replies:
                        push.send_multipart([job.identity, *reply], copy=False)
                finally:
                    self.queue.done(len(batch), service)
                if self._replicas is not None:
                    self._replicas()  # keeps the gauge current (the backend caches it)
        finally:
            push.close()

    def _live(self, batch: list[Job]) -> list[Job]:
        """The jobs of ``batch`` whose client is still connected (work for the gone is not done)."""
        guard = self._guard
        if guard is None:
            return batch
        live = [job for job in batch if not guard.gone(job.identity)]
        if len(live) < len(batch):
            self._count("skipped_gone", len(batch) - len(live))
        return live

    def _run(self, batch: list[Job]) -> tuple[list[tuple[Job, list]], float]:
        """Run ``batch`` as one backend call (each alone if that fails).

        Returns the replies and the seconds the batch held the backend
        (decoding and compute). Replies report the tail's compute; the rest of
        the wall time (decoding, Serve's queue, the hop to a replica) counts as
        queueing.
        """
        cut = batch[0].cut
        backend = batch[0].backend
        try:
            result = backend.run_batch(cut, [job.tensors for job in batch], self.config.limits)
        except BackendBusy as exc:
            log.warning("backend busy, %d request(s) answered busy error=%s", len(batch), exc)
            self._count("busy_backend")
            wait = max(self.queue.expected_wait_s(), self.config.busy_retry_s)
            return [(job, self._busy(job, wait, str(exc))) for job in batch], 0.0
        except BackendError as exc:
            if len(batch) > 1:
                log.warning("batch of %d failed, running each alone error=%s", len(batch), exc)
                pairs: list[tuple[Job, list]] = []
                spent = 0.0
                for job in batch:
                    one, seconds = self._run([job])
                    pairs += one
                    spent += seconds
                return pairs, spent
            log.error("backend failed id=%d error=%s", batch[0].request_id, exc)
            return [self._failed(batch[0], "backend", str(exc))], 0.0
        except Exception as exc:  # noqa: BLE001 - a worker that dies leaves its batch unanswered
            log.exception("backend call failed unexpectedly, %d request(s) answered", len(batch))
            text = f"{type(exc).__name__}: {exc}"
            return [self._failed(job, "backend", text) for job in batch], 0.0
        finished = time.perf_counter()
        self.metrics.backend_bytes.inc(sum(t.nbytes for job in batch for t in job.tensors))
        replies = []
        for index, (code, text) in result.failed.items():
            job = batch[index]
            self._quiet.warning(code, "undecodable tensor id=%d: %s", job.request_id, text)
            replies.append(self._failed(job, code, text))
        served = [job for i, job in enumerate(batch) if i not in result.failed]
        if served:
            compute = result.compute_s
            replies += self._results(served, result.outputs, finished - compute, compute)
        return replies, result.service_s

    def _results(
        self, batch: list[Job], outputs: dict[str, np.ndarray], started: float, compute: float
    ) -> list[tuple[Job, list]]:
        """One ``result`` reply per job of a batch, each with its rows of the outputs."""
        cut = batch[0].cut
        output = batch[0].bundle.manifest.model.output
        self.metrics.compute.labels(cut.id).observe(compute)
        self.metrics.batch_size.observe(len(batch))
        replies = []
        offset = 0
        for job in batch:
            rows = slice(offset, offset + job.rows)
            offset += job.rows
            values = {name: v[rows] for name, v in outputs.items() if name == output}
            queue_s = max(0.0, started - job.received)
            self.metrics.queue_wait.observe(queue_s)
            self._count("ok")
            self._observe("ok", cut.id, job.received)
            meta: dict[str, MetaValue] = {
                "queue_s": queue_s,
                "compute_s": compute,
                "cut": cut.id,
                "batch": len(batch),
            }
            replies.append(
                (job, wire.encode_message("result", job.request_id, values, codec="raw", meta=meta))
            )
        return replies

    def _failed(self, job: Job, code: str, text: str) -> tuple[Job, list]:
        """Count error ``code`` for ``job`` and give its ``error`` reply."""
        self._error(code, job.received, job.cut.id)
        meta = {"code": code, "message": text[:900]}
        return job, wire.encode_message("error", job.request_id, meta=meta)

    def _busy(self, job: Job, wait: float, reason: str) -> list:
        """A ``busy`` reply: the edge should run ``job`` itself; ``wait`` is the delay announced."""
        self._count("busy")
        self._observe("busy", job.cut.id, job.received)
        return wire.encode_message(
            "busy",
            job.request_id,
            meta={
                "code": "busy",
                "queue_s": wait,
                "depth": len(self.queue),
                "message": f"{reason[:600]}; run it on the edge",
            },
        )

    # -- bookkeeping -------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _observe(self, outcome: str, cut: str, received: float) -> None:
        # The labelled children, looked up once (a labels() call costs more than the count).
        children = self._children.get((outcome, cut))
        if children is None:
            metrics = self.metrics
            children = (metrics.requests.labels(outcome, cut), metrics.latency.labels(outcome, cut))
            self._children[(outcome, cut)] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - received)

    def _cut_label(self, cut: object) -> str:
        """``cut`` as a metrics label: a cut of the bundle, else ``-`` (labels stay bounded)."""
        return cut if isinstance(cut, str) and cut in self._cut_ids else "-"

    def _wire_error(self, exc: WireError, request_id: int, received: float, cut: str) -> list:
        """Count and answer a message the wire format refused."""
        code = wire.error_code(exc)
        self._error(code, received, cut)
        self._quiet.warning(code, "rejected frame code=%s error=%s", code, exc)
        return wire.encode_message(
            "error", request_id, meta={"code": code, "message": str(exc)[:900]}
        )

    def _error(self, code: str, received: float, cut: str) -> None:
        self._count(f"error_{code}")
        self.metrics.errors.labels(code).inc()
        self._observe("error", cut, received)

    def _auth_decision(self, kind: str) -> None:
        self._count(f"auth_{kind}")
        if kind != "allowed":
            self.metrics.errors.labels("auth").inc()


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
