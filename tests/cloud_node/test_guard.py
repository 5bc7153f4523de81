"""The peer guard's arithmetic and the rate-limited log, without processes."""

from __future__ import annotations

import logging

import pytest

from cloud_node.guard import GuardLimits, PeerGuard, _Peer, frame_overhead
from cloud_node.throttle import LogThrottle
from edgesplit.errors import ConfigError


def test_frame_overhead_is_zmtp_framing_plus_the_curve_box() -> None:
    assert frame_overhead(0, curve=False) == 2
    assert frame_overhead(255, curve=False) == 2
    assert frame_overhead(256, curve=False) == 9
    assert frame_overhead(0, curve=True) == 33 + 2
    assert frame_overhead(222, curve=True) == 33 + 2  # 255 bytes of MESSAGE body
    assert frame_overhead(223, curve=True) == 33 + 9


@pytest.mark.parametrize(
    "kwargs", [{"client_bytes": 0}, {"client_bytes": 2, "total_bytes": 1}, {"interval_s": 0}]
)
def test_limits_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        GuardLimits(**kwargs)  # type: ignore[arg-type]


def _guard(client: int, total: int) -> tuple[PeerGuard, list[str]]:
    drops: list[str] = []
    guard = PeerGuard(
        GuardLimits(client_bytes=client, total_bytes=total), curve=False, on_drop=drops.append
    )
    return guard, drops


def _peer(fd: int, held_in: int, held_out: int = 0, stalls: int = 2) -> _Peer:
    peer = _Peer(fd, ("127.0.0.1", 1000 + fd))
    peer.held_in, peer.held_out, peer.stalls = held_in, held_out, stalls
    return peer


def test_over_budget_cuts_each_client_over_its_budget_then_the_largest_over_the_total() -> None:
    guard, _ = _guard(client=100, total=250)
    peers = [_peer(1, 150), _peer(2, 90), _peer(3, 80, 10), _peer(4, 60), _peer(5, 10)]
    dropped = guard._over_budget(peers)
    # fd 1 alone is over its budget; without it 250 remain, within the total.
    assert dropped == [(1, "client_memory")]
    peers.append(_peer(6, 50))
    dropped = guard._over_budget(peers)
    assert dropped == [(1, "client_memory"), (2, "total_memory")]


def test_process_memory_cuts_the_largest_holder_once_per_growth() -> None:
    rss = [1000]
    guard = PeerGuard(
        GuardLimits(client_bytes=10**6, total_bytes=4 * 10**6),
        curve=False,
        on_drop=lambda _: None,
        rss=lambda: rss[0],
    )
    guard._baseline = 1000
    big, small = _peer(1, 200_000), _peer(2, 70_000)
    assert guard._over_memory(1000 + 2 * 10**6, [big, small]) == []  # under 3/4 of budget
    assert guard._over_memory(1000 + 3_100_000, [big, small]) == [(1, "total_memory")]
    # Not yet given back: no second cut until the memory grows past the level of the first.
    assert guard._over_memory(1000 + 3_100_000, [small, _peer(3, 100_000)]) == []
    assert guard._over_memory(1000 + 3_200_000, [small, _peer(3, 100_000)]) == [(3, "total_memory")]
    # Only a stalled unfinished message is a suspect: without one, the growth is the
    # process's own and becomes its baseline.
    moving = _peer(4, 500_000, stalls=0)
    assert guard._over_memory(1000 + 3_900_000, [moving]) == []
    assert guard._baseline == 1000 + 3_900_000 - 3_000_000


def test_replies_beyond_the_budget_are_not_sent_and_their_clients_backlogged() -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        guard, drops = _guard(client=1000, total=10_000)
        fd = server.fileno()
        guard.accepted(fd)
        guard.read([_Frame(b"id", fd), _Frame(b"ask", fd)])
        # Replies handed to ZeroMQ that never reached the kernel (so none acknowledged).
        assert guard.sending(b"id", [bytes(600)])  # nothing pending: even a big reply goes
        assert guard.backlogged(b"id")  # 609 of 1000, measured: half the budget is unsent
        assert not guard.sending(b"id", [bytes(600)])
        assert drops == ["reply_dropped"]
        assert guard.sending(b"other", [bytes(10_000)])  # an unknown client is not judged
        client.close()
        server.close()
        guard.closed(fd)
        assert guard.gone(b"id") and not guard.backlogged(b"id")
    finally:
        listener.close()


def test_log_throttle_writes_one_line_per_kind_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    quiet = LogThrottle(logging.getLogger("edgesplit.test"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="edgesplit.test"):
        assert quiet.warning("shape", "rejected %d", 1)
        for i in range(5):
            now[0] += 1.0
            assert not quiet.warning("shape", "rejected %d", i)
        assert quiet.warning("header", "other kind")
        now[0] = 10.5
        assert quiet.warning("shape", "rejected %d", 99)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "rejected 1",
        "other kind",
        "rejected 99 (and 5 more of kind shape in the last 10 s, not logged)",
    ]


class _Frame:
    """A received frame as the guard reads it: its bytes and the connection it came on."""

    def __init__(self, data: bytes, fd: int) -> None:
        self.buffer = memoryview(data)
        self.bytes = data
        self._fd = fd

    def get(self, option: int) -> int:
        return self._fd


def test_a_message_read_before_its_accept_event_is_not_taken_for_a_departed_client() -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        guard, _ = _guard(client=10**6, total=10**7)
        fd = server.fileno()
        # The ingress read the first message before the monitor's accept event came.
        guard.read([_Frame(b"id-1", fd), _Frame(b"header", fd)])
        guard.accepted(fd)
        assert not guard.gone(b"id-1")
        # A late close event of an earlier connection on the same descriptor changes nothing.
        guard.closed(fd)
        assert not guard.gone(b"id-1")
        client.close()
        server.close()
        guard.closed(fd)  # now it is gone for real
        assert guard.gone(b"id-1")
    finally:
        listener.close()
