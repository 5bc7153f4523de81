"""The edge's client keeps every deadline on its injected clock, and times round trips apart."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

import wire
from edge_node.cloud_watch import pair
from edge_node.transport import CloudClient, Reply
from edgesplit.errors import BundleError


@pytest.fixture
def silent_cloud() -> Iterator[tuple[str, zmq.Socket[bytes]]]:
    """A ROUTER that takes requests and answers none (the test answers by hand)."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield f"tcp://127.0.0.1:{port}", router
    finally:
        router.close(linger=0)
        context.term()


def _leaping() -> tuple[list[float], Callable[[], float]]:
    """A clock that leaps 100 s at every read (and a record of the reads)."""
    reads: list[float] = []

    def clock() -> float:
        reads.append(100.0 * len(reads))
        return reads[-1]

    return reads, clock


def test_deadlines_are_on_the_injected_clock(silent_cloud: tuple[str, zmq.Socket[bytes]]) -> None:
    endpoint, _router = silent_cloud
    reads, clock = _leaping()
    with CloudClient(endpoint, clock=clock) as client:
        began = time.perf_counter()
        # 50 s on the client's clock: one leap of it, not 50 s of waiting.
        reply, sent = client.call(wire.Ping(client.new_id()), timeout_s=50.0)
        assert reply is None and sent > 0 and reads
        pending = client.send(wire.Ping(client.new_id()), connect_wait_s=1.0)
        assert pending.sent_clock is not None
        assert client.wait(pending, 50.0) is None
        assert time.perf_counter() - began < 5.0


def test_the_round_trip_is_a_perf_counter_figure(
    silent_cloud: tuple[str, zmq.Socket[bytes]],
) -> None:
    endpoint, router = silent_cloud
    frozen = 7.0  # deadlines only: a round trip never reads it
    with CloudClient(endpoint, clock=lambda: frozen) as client:
        pending = client.send(wire.Ping(client.new_id()), connect_wait_s=5.0)

        def answer() -> None:
            identity, *frames = router.recv_multipart()
            ping = wire.decode(frames, wire.Limits())
            time.sleep(0.05)
            router.send_multipart([identity, *wire.encode(wire.Pong(ping.request_id, "b" * 64))])

        responder = threading.Thread(target=answer)
        responder.start()
        reply = client.wait(pending, 5.0)
        responder.join()
        assert reply is not None and isinstance(reply.message, wire.Pong)
        assert 0.05 <= reply.round_trip_s < 5.0 and reply.timed


class _Answers:
    """A client whose pings are answered with ``message``."""

    endpoint = "tcp://cloud:5555"

    def __init__(self, message: wire.AnyMessage) -> None:
        self.message = message

    def measure_rtt(self, timeout_s: float, pings: int = 5) -> tuple[float, Reply]:
        return 0.001, Reply(self.message, 0.001)


def test_pairing_names_what_answered_in_full_and_shortens_only_a_bundle_id() -> None:
    ours = "a" * 64
    error = _Answers(wire.ErrorReply(1, "forbidden", "no"))
    with pytest.raises(BundleError, match=r"bundle=none \(answered error\), this edge"):
        pair(error, ours)  # type: ignore[arg-type]
    other = _Answers(wire.Pong(1, "c" * 64))
    with pytest.raises(BundleError, match=r"bundle=c{12}, this edge has bundle=a{12};"):
        pair(other, ours)  # type: ignore[arg-type]
    same = _Answers(wire.Pong(1, ours, backend="onnxruntime"))
    assert pair(same, ours).backend == "onnxruntime"  # type: ignore[arg-type]
