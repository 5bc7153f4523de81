"""The runtime-overhead benchmark's measurement harness: the timed request paths.

An edgesplit request through :class:`CloudClient` and a bare ZeroMQ
exchange of the same frames, each a :data:`Timed` call, run interleaved by
:func:`measure`; and the in-process encode and decode of the request
message, per codec (:func:`components`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import zmq

import wire
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Cut

#: One timed request: (round trip seconds, compute seconds reported by the server).
Timed = Callable[[], tuple[float, float]]


def edgesplit_path(
    client: CloudClient, bundle: Bundle, cut: Cut, value: np.ndarray, codec: str
) -> Timed:
    """One ``infer`` through :class:`CloudClient` per call: encode, send, wait, decode."""
    tensors = (wire.Tensor(cut.name, value),)

    def call() -> tuple[float, float]:
        began = time.perf_counter()
        request = wire.InferRequest(client.new_id(), bundle.id, cut.id, tensors)
        reply, _ = client.call(request, codec=codec, timeout_s=10)
        elapsed = time.perf_counter() - began
        if reply is None or not isinstance(reply.message, wire.Result):
            raise SystemExit(f"edgesplit request failed: {reply and reply.message}")
        return elapsed, reply.message.compute_s

    return call


def echo_path(sock: zmq.Socket, frames: Sequence[bytes | memoryview]) -> Timed:
    """Send pre-encoded ``frames``, receive the reply: ZeroMQ alone."""

    def call() -> tuple[float, float]:
        began = time.perf_counter()
        sock.send_multipart(frames, copy=False)
        sock.recv_multipart(copy=False)
        return time.perf_counter() - began, 0.0

    return call


def echo_socket(
    context: zmq.Context, endpoint: str, curve: tuple[bytes, bytes, bytes] | None
) -> zmq.Socket:
    """A DEALER like the edge's (LINGER 0, IMMEDIATE), CURVE client when ``curve`` is given."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve
    sock.connect(endpoint)
    return sock


def measure(paths: dict[str, Timed], requests: int, warmup: int) -> dict[str, np.ndarray]:
    """(RTT, compute) seconds of each path, interleaved request by request, order alternating."""
    names = list(paths)
    for _ in range(warmup):
        for name in names:
            paths[name]()
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for i in range(requests):
        for name in names if i % 2 == 0 else reversed(names):
            seconds[name].append(paths[name]())
    return {name: np.array(values) for name, values in seconds.items()}


# -- in-process components -------------------------------------------------------------------


def median_s(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``fn()`` in seconds, after a few warm-up calls."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


@dataclass(frozen=True)
class Components:
    """In-process cost of one request's message, per codec (seconds; bytes as sent)."""

    codec: str
    header_bytes: int
    payload_bytes: int
    encode_s: float
    decode_s: float


def components(cut: Cut, value: np.ndarray, codec: str, bundle_id: str, runs: int) -> Components:
    """Encode and decode time of the request message for ``codec``."""
    request = wire.InferRequest(1, bundle_id, cut.id, (wire.Tensor(cut.name, value),))
    frames = wire.encode(request, codec)
    received = [bytes(f) for f in frames]  # what the node gets from the socket
    encode = median_s(lambda: wire.encode(request, codec), runs)
    decode = median_s(lambda: wire.decode(received), runs)
    return Components(codec, len(received[0]), len(received[1]), encode, decode)
