"""A user-space TCP relay that delays, and may pace, what passes through it.

:class:`DelayRelay` delays each direction by a fixed time; run inside a
namespace (``python -m experiments.netlink relay ...``, see
:meth:`~experiments.shaped_link.ShapedLink.start_relay`) it gives a shaped
link its latency. Its :class:`Pacer` paces the uplink with a token bucket:
:class:`RelayLink` is the whole link made that way, on loopback, where tc is
refused.
"""

from __future__ import annotations

import logging
import math
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from edgesplit.errors import ConfigError
from experiments.netns import CMD_TIMEOUT_S
from experiments.shaped_link import DEFAULT_RELAY_QUEUE_BYTES, MIN_BURST_BYTES, MIN_RATE_BPS

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_MSS = 1448  # the payload of one full frame: the pacer's unit


class _DelayLine:
    """A FIFO of (due time, chunk) holding at most ``limit_bytes``; ``put`` blocks when full."""

    def __init__(self, limit_bytes: int) -> None:
        self._items: deque[tuple[float, bytes]] = deque()
        self._bytes = 0
        self._limit = limit_bytes
        self._closed = False
        self._cond = threading.Condition()

    def put(self, due: float, chunk: bytes) -> bool:
        with self._cond:
            while self._bytes >= self._limit and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append((due, chunk))
            self._bytes += len(chunk)
            self._cond.notify_all()
            return True

    def get(self) -> tuple[float, bytes] | None:
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            due, chunk = self._items.popleft()
            self._bytes -= len(chunk)
            self._cond.notify_all()
            return due, chunk

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Pacer:
    """A token bucket shared by every connection of a relay's uplink; its rate set live.

    ``wait(n)`` returns when ``n`` bytes may leave: each piece is sent at the
    set rate after the previous one (a FIFO link), with up to ``burst_bytes``
    allowed at once after a pause, as tbf's bucket allows. ``None``: unlimited.
    """

    def __init__(self, rate_bps: float | None, burst_bytes: int = MIN_BURST_BYTES) -> None:
        self._lock = threading.Lock()
        self._rate = self._checked(rate_bps)
        self._burst_bytes = burst_bytes
        self._free_at = 0.0

    @staticmethod
    def _checked(rate_bps: float | None) -> float | None:
        if rate_bps is None:
            return None
        if not (math.isfinite(rate_bps) and rate_bps > 0):
            raise ConfigError(f"relay rate_bps={rate_bps!r}: expected a finite rate > 0")
        return max(float(rate_bps), MIN_RATE_BPS)

    def set_rate(self, rate_bps: float | None) -> None:
        """Pace at ``rate_bps`` from the next piece on (``None``: unlimited)."""
        rate = self._checked(rate_bps)
        with self._lock:
            self._rate = rate

    def wait(self, nbytes: int) -> None:
        """Block until ``nbytes`` more may be sent."""
        with self._lock:
            if self._rate is None:
                return
            # _free_at: when the bucket would be full again; a piece may leave once
            # what is owed past now fits in the bucket.
            now = time.monotonic()
            self._free_at = max(self._free_at, now) + nbytes * 8.0 / self._rate
            due = self._free_at - self._burst_bytes * 8.0 / self._rate
        if (pause := due - time.monotonic()) > 0:
            time.sleep(pause)


class DelayRelay:
    """A TCP relay that delays each direction by ``delay_s`` (data and FIN; not the handshake).

    Listens on ``listen``; each connection is joined to a new connection to
    ``target``. Each direction holds at most ``queue_bytes`` in flight, then
    stops reading, so TCP's flow control pushes back on the sender as a
    bottleneck queue would. It runs in this process's namespace: to delay a
    :class:`~experiments.shaped_link.ShapedLink`, use its ``start_relay``.

    The relay ends one TCP connection and opens another, so the applications
    see the delay but the congestion control of the shaped hop does not (its
    round trip stays near zero): it models a path's latency, not a long pipe.

    ``uplink_bps`` also paces what clients send (see :class:`Pacer`,
    :meth:`set_rate`): the in-process shaper used where tc is refused.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        delay_s: float,
        *,
        queue_bytes: int = DEFAULT_RELAY_QUEUE_BYTES,
        uplink_bps: float | None = None,
    ) -> None:
        if not (math.isfinite(delay_s) and delay_s >= 0):
            raise ConfigError(f"relay delay_s={delay_s!r}: expected a finite delay >= 0")
        if queue_bytes < 1:
            raise ConfigError(f"relay queue_bytes={queue_bytes}: expected >= 1")
        self.target, self.delay_s, self.queue_bytes = target, delay_s, queue_bytes
        self.pacer = Pacer(uplink_bps)
        self._server = socket.create_server(listen, reuse_port=False)
        self.address: tuple[str, int] = self._server.getsockname()[:2]
        self._stopped = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()

    def serve_forever(self) -> None:
        """Accept and relay connections until :meth:`stop`."""
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                break
            try:
                upstream = socket.create_connection(self.target, timeout=CMD_TIMEOUT_S)
            except OSError as exc:
                log.warning("relay_connect_failed target=%s error=%s", self.target, exc)
                client.close()
                continue
            upstream.settimeout(None)
            self._join(client, upstream)

    def _join(self, a: socket.socket, b: socket.socket) -> None:
        with self._sockets_lock:
            self._sockets.update((a, b))
        for sock in (a, b):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = (_DelayLine(self.queue_bytes), _DelayLine(self.queue_bytes))

        def abort() -> None:
            for line in lines:
                line.close()
            for sock in (a, b):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def close() -> None:
            with self._sockets_lock:
                self._sockets.difference_update((a, b))
            a.close()
            b.close()

        done = threading.Barrier(2, action=close)
        for src, dst, line, pacer in ((a, b, lines[0], self.pacer), (b, a, lines[1], None)):
            threading.Thread(target=self._read, args=(src, line, abort), daemon=True).start()
            threading.Thread(
                target=self._write, args=(dst, line, abort, done, pacer), daemon=True
            ).start()

    def _read(self, src: socket.socket, line: _DelayLine, abort: Callable[[], None]) -> None:
        try:
            while True:
                chunk = src.recv(_CHUNK)  # the due time counts from the arrival
                if not line.put(time.monotonic() + self.delay_s, chunk) or not chunk:
                    return
        except OSError:
            abort()

    def set_rate(self, uplink_bps: float | None) -> None:
        """Pace the uplink (client to target) at ``uplink_bps`` from now on."""
        self.pacer.set_rate(uplink_bps)

    def _write(
        self,
        dst: socket.socket,
        line: _DelayLine,
        abort: Callable[[], None],
        done: threading.Barrier,
        pacer: Pacer | None,
    ) -> None:
        try:
            while (item := line.get()) is not None:
                due, chunk = item
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                if not chunk:
                    dst.shutdown(socket.SHUT_WR)
                    break
                if pacer is None:
                    dst.sendall(chunk)
                    continue
                for i in range(0, len(chunk), _MSS):
                    pacer.wait(min(_MSS, len(chunk) - i))
                    dst.sendall(chunk[i : i + _MSS])
        except OSError:
            abort()
        try:
            done.wait()
        except threading.BrokenBarrierError:
            pass

    def stop(self) -> None:
        """Stop accepting and cut every relayed connection."""
        self._stopped.set()
        with self._sockets_lock:
            sockets = (self._server, *self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class RelayLink:
    """Where tc is refused: the same link shaped in this process, on loopback.

    The cloud and the edge run in this namespace; :meth:`relay_to` puts a
    :class:`DelayRelay` pacing the uplink (a :class:`Pacer` token bucket of
    tbf's burst) in front of the cloud's port, and :meth:`set_rate` changes
    every relay's rate live. It has the parts of a ``ShapedLink`` the
    experiments use (``run_in``, ``exec_args``, ``set_rate``, ``close``).
    The kernel does not queue or drop here: the relay's user-space pacing is
    the link, so figures from it are said to be.
    """

    def __init__(self, uplink_bps: float | None, downlink_bps: float | None = None) -> None:
        self.edge_ns = self.cloud_ns = ""
        self.edge_ip = self.cloud_ip = "127.0.0.1"
        self._uplink_bps = uplink_bps
        self._relays: list[DelayRelay] = []
        self._processes: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> RelayLink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def relay_to(self, host: str, port: int) -> tuple[str, int]:
        """A pacing relay to ``host:port``; the address to connect to instead."""
        relay = DelayRelay(("127.0.0.1", 0), (host, port), 0.0, uplink_bps=self._uplink_bps)
        threading.Thread(target=relay.serve_forever, name="relay-link", daemon=True).start()
        self._relays.append(relay)
        return relay.address

    def set_rate(self, uplink_bps: float | None, downlink_bps: float | None = None) -> None:
        """Pace every relay's uplink at ``uplink_bps`` from now on (downlink: unshaped)."""
        self._uplink_bps = uplink_bps
        for relay in self._relays:
            relay.set_rate(uplink_bps)

    def exec_args(self, ns: str) -> list[str]:
        """No namespace to enter."""
        return []

    def run_in(self, ns: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` here; it is killed on :meth:`close`."""
        proc = subprocess.Popen(list(argv), **popen_kwargs)
        self._processes.append(proc)
        return proc

    def close(self) -> None:
        """Stop the relays and kill the processes started with :meth:`run_in`."""
        for relay in self._relays:
            relay.stop()
        for proc in self._processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


__all__ = ["DelayRelay", "Pacer", "RelayLink"]
