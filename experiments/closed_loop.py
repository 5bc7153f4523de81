"""Simulated closed-loop edges: each sends one request after another, over its own socket.

The edges of a process share one ZeroMQ context and one thread, which polls
their sockets and sends an edge's next request as soon as its answer is in.
Every request is timed and classified by its answer (:class:`Sample`): ``ok``
(a result), the code of a refusal (``busy``, ...), or ``lost`` (no answer
within :data:`LOST_AFTER_S`). After ``busy`` an edge waits the delay the cloud
announced (1 ms to 1 s), as a real edge keeps its requests local for that long.
:mod:`experiments.loadgen` spreads edges over processes and sums up.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

import wire
from edgesplit.bundle import Cut
from edgesplit.errors import WireError

#: An answer slower than this counts as lost.
LOST_AFTER_S = 30.0


@dataclass(frozen=True)
class Sample:
    """One request: when it ended (wall clock), how long it took, how it was answered.

    Attributes:
        compute_s: the tail's compute time for this request (its batch's, divided
            among the batch's requests); 0 without a result.
        cut: the cut the request was for.
        batch: requests in the batch the cloud ran it in (the reply's ``batch``);
            0 without a result.
    """

    at: float
    latency_s: float
    kind: str
    compute_s: float
    cut: str = ""
    batch: int = 0


@dataclass(frozen=True)
class EdgeLoad:
    """What one closed-loop edge sends, request after request: ``value`` (by name) at ``cut``."""

    cut: Cut
    value: Mapping[str, np.ndarray]
    codec: str = "raw"


@dataclass(frozen=True)
class EncodedLoad:
    """An :class:`EdgeLoad`'s request, encoded once: its tensors as they go on the wire.

    Every request re-sends the same payloads under a new request id (only the
    header is packed again): a real edge encodes on its own CPU, not on the cloud's.
    """

    cut: str
    request: wire.InferRequest

    @classmethod
    def of(cls, bundle_id: str, load: EdgeLoad) -> EncodedLoad:
        """``load`` encoded with its codec, for the bundle ``bundle_id``."""
        tensors = tuple(
            wire.EncodedTensor.from_array(name, load.value[name], load.codec)
            for name in load.cut.names
        )
        return cls(load.cut.id, wire.InferRequest(1, bundle_id, load.cut.id, tensors))

    def frames(self, request_id: int) -> list[bytes | memoryview]:
        """The request's frames under ``request_id``."""
        return wire.encode(dataclasses.replace(self.request, request_id=request_id))

    @property
    def nbytes(self) -> int:
        """Bytes on the wire, header included."""
        return sum(memoryview(f).nbytes for f in self.frames(1))


def _read(parts: list[bytes]) -> wire.AnyMessage | None:
    """A reply as ``wire`` reads it (its tensors left encoded), ``None`` if invalid."""
    try:
        return wire.decode(parts, encoded=True)
    except WireError:
        return None


class Edge:
    """One closed-loop edge: its socket, its request, and the request in flight."""

    def __init__(self, context: zmq.Context, endpoint: str, request: EncodedLoad) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.request = request
        self.last_id = 0
        self.pending = 0  # id of the request in flight, 0 for none
        self.sent_at = 0.0
        self.resume_at = 0.0  # after busy: when to send again (time.perf_counter())

    def send(self, now: float) -> None:
        """Send the next request (a new id) at ``now``."""
        self.last_id += 1
        self.pending = self.last_id
        self.sent_at = now
        self.socket.send_multipart(self.request.frames(self.pending), copy=False)

    def answered(self, message: wire.AnyMessage | None, arrived: float, wall: float) -> Sample:
        """The sample of the request in flight, answered by ``message`` (``None``: unreadable)."""
        kind, compute, batch = "bad-reply", 0.0, 0
        if isinstance(message, wire.Result):
            kind = "ok"
            batch = message.batch
            # A batch's compute time, shared by its requests.
            compute = message.compute_s / batch
        elif isinstance(message, wire.Busy | wire.ErrorReply):
            kind = message.code
        elif message is not None:
            kind = message.kind
        if isinstance(message, wire.Busy):
            # As an edge does: it keeps its requests for the delay the cloud announced
            # (running them locally meanwhile) instead of asking again at once.
            self.resume_at = arrived + min(max(message.queue_s, 0.001), 1.0)
        self.pending = 0
        return Sample(
            arrived + wall, arrived - self.sent_at, kind, compute, self.request.cut, batch
        )

    def lost(self, now: float, wall: float) -> Sample:
        """The sample of the request in flight, given up at ``now``."""
        self.pending = 0
        return Sample(now + wall, now - self.sent_at, "lost", 0.0, self.request.cut)


def drive(edges: Sequence[Edge], until: float) -> list[Sample]:
    """Run ``edges`` closed-loop until ``until`` (perf_counter), then collect what is in flight."""
    wall = time.time() - time.perf_counter()
    poller = zmq.Poller()
    by_socket = {}
    for e in edges:
        poller.register(e.socket, zmq.POLLIN)
        by_socket[e.socket] = e
    out: list[Sample] = []
    while True:
        now = time.perf_counter()
        sending = now < until
        wake, in_flight = _tend(edges, now, sending, out, wall)
        if not (sending or in_flight):
            return out
        if sending:
            wake = min(wake, until)
        timeout_ms = max(0, round((wake - time.perf_counter()) * 1e3))
        for socket, _ in poller.poll(timeout_ms):
            _receive(by_socket[socket], out, wall)


def _tend(
    edges: Sequence[Edge], now: float, sending: bool, out: list[Sample], wall: float
) -> tuple[float, bool]:
    """Send what is due and count what waited too long as lost.

    Returns when to look again, and whether a request is in flight.
    """
    wake = now + 0.1
    in_flight = False
    for e in edges:
        if e.pending and now - e.sent_at > LOST_AFTER_S:
            out.append(e.lost(now, wall))
        if e.pending:
            in_flight = True
            wake = min(wake, e.sent_at + LOST_AFTER_S)
        elif sending and e.resume_at <= now:
            e.send(now)
            in_flight = True
        elif sending:
            wake = min(wake, e.resume_at)
    return wake, in_flight


def _receive(edge: Edge, out: list[Sample], wall: float) -> None:
    """Read every reply waiting on ``edge``'s socket; the one to its request is a sample."""
    while True:
        try:
            parts = edge.socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        arrived = time.perf_counter()
        message = _read(parts)
        if message is not None and message.request_id != edge.pending:
            continue  # the answer to a request already counted lost
        if edge.pending:
            out.append(edge.answered(message, arrived, wall))


def edge_process(
    endpoint: str,
    requests: list[EncodedLoad],
    duration_s: float,
    start: Any,
    go: Any,
    ready: mp.Queue,
    results: mp.Queue,
) -> None:
    """A spawned process's edges: ready, then at ``start`` run for ``duration_s``; the samples.

    Reports on ``ready`` how many edges it holds, waits for ``go``, and puts
    (samples, CPU seconds spent) on ``results``.
    """
    context = zmq.Context()
    edges = [Edge(context, endpoint, r) for r in requests]
    try:
        ready.put(len(edges))
        go.wait()
        time.sleep(max(0.0, start.value - time.time()))
        until = time.perf_counter() + (start.value + duration_s - time.time())
        cpu = time.process_time()
        samples = drive(edges, until)
        results.put((samples, time.process_time() - cpu))
    finally:
        for e in edges:
            e.socket.close(linger=0)
        context.term()


__all__ = ["LOST_AFTER_S", "Edge", "EdgeLoad", "EncodedLoad", "Sample", "drive", "edge_process"]
