"""Real shaped links between two network namespaces, for tests, benchmarks and trace replays.

:class:`ShapedLink` makes an edge and a cloud namespace joined by a veth
pair and shapes each direction with tbf (the kernel here has tbf but no
netem). Delay comes from :class:`DelayRelay`, a user-space TCP relay run
inside a namespace (``python -m experiments.netlink relay ...``);
:func:`replay` changes the rate live along a bandwidth trace.

Figures to expect (tests/integration/test_netlink.py): a long TCP transfer
gets 95.6% of the set rate as payload (1448 of every 1514 bytes on the
wire: 2 -> 1.93, 10 -> 9.58 Mbit/s); a relay with 10 ms each way gives a
20.5 ms round trip (ENVIRONMENT.md saw 21.7).

Needs root and iproute2 (``ip``, ``tc``); :func:`netns_support` says, in
one line, why a machine cannot.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import logging
import math
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from edgesplit.errors import ConfigError, EdgesplitError

if TYPE_CHECKING:
    from experiments.traces import Trace

log = logging.getLogger(__name__)

#: Namespace names start with this; :func:`cleanup_stale` matches on it.
NS_PREFIX = "es-"
#: The /30 the veth pair lives in. Each link has namespaces of its own, so
#: every link can use the same one without clashing with anything.
DEFAULT_SUBNET = "10.77.0.0/30"
#: How long a packet may wait in the tbf queue before being dropped, seconds.
DEFAULT_QUEUE_LATENCY_S = 0.1
#: Rates below this (a trace's 0 Mbit/s) are set to it: tbf cannot hold a
#: rate of 0, and a crawl keeps TCP connections alive as a dead spot does.
MIN_RATE_BPS = 8_000.0
#: Bytes a relay holds per direction before it stops reading (backpressure).
DEFAULT_RELAY_QUEUE_BYTES = 4 << 20

_FRAME_BYTES = 1514  # Ethernet frame of a 1500-byte MTU: tbf's burst must hold one
_MIN_BURST_BYTES = 4 * _FRAME_BYTES
_BURST_S = 0.004  # burst = 4 ms at the set rate, never below 4 frames
_EDGE_DEV = "veth-edge"
_CLOUD_DEV = "veth-cloud"
_CMD_TIMEOUT_S = 10.0
_CHUNK = 64 * 1024
_MSS = 1448  # the payload of one full frame: the pacer's unit

Direction = Literal["uplink", "downlink", "both"]


class LinkError(EdgesplitError):
    """A namespace, veth or qdisc command failed, or a process in a namespace did."""


@dataclass(frozen=True)
class TokenBucket:
    """One direction's tbf settings.

    Attributes:
        rate_bps: the token rate, bits/s (TCP payload gets ~96% of it).
        burst_bytes: bucket size: what may go at line rate after an idle spell.
        queue_latency_s: longest a packet waits in the queue before a drop.
    """

    rate_bps: float
    burst_bytes: int
    queue_latency_s: float = DEFAULT_QUEUE_LATENCY_S

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_bps) and self.rate_bps >= MIN_RATE_BPS):
            raise ConfigError(f"tbf rate_bps={self.rate_bps!r}: expected >= {MIN_RATE_BPS}")
        if self.burst_bytes < _FRAME_BYTES:
            raise ConfigError(
                f"tbf burst_bytes={self.burst_bytes}: expected >= {_FRAME_BYTES} (one frame)"
            )
        if not (math.isfinite(self.queue_latency_s) and self.queue_latency_s > 0):
            raise ConfigError(f"tbf queue_latency_s={self.queue_latency_s!r}: expected > 0")

    @classmethod
    def for_rate(
        cls, rate_bps: float, queue_latency_s: float = DEFAULT_QUEUE_LATENCY_S
    ) -> TokenBucket:
        """Settings for ``rate_bps``: a burst of 4 ms at that rate, at least 4 frames.

        A rate at or below 0 (a dead spot of a trace) becomes MIN_RATE_BPS. The
        small burst keeps short measurements honest (at 2 Mbit/s it is 24 ms
        worth) while letting a 100 Mbit/s link run without stalls.
        """
        if not math.isfinite(rate_bps) or rate_bps < 0:
            raise ConfigError(f"rate_bps={rate_bps!r}: expected a finite rate >= 0 bits/s")
        rate = max(float(rate_bps), MIN_RATE_BPS)
        burst = max(_MIN_BURST_BYTES, math.ceil(rate / 8 * _BURST_S))
        return cls(rate, burst, queue_latency_s)

    def tc_args(self) -> list[str]:
        """The ``tbf ...`` part of a ``tc qdisc`` command."""
        return [
            "tbf",
            "rate",
            f"{round(self.rate_bps)}bit",
            "burst",
            str(self.burst_bytes),
            "latency",
            f"{round(self.queue_latency_s * 1e6)}us",
        ]


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``ip``/``tc`` command; LinkError with its stderr when it fails and ``check``."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LinkError(f"`{' '.join(argv)}` could not run: {exc}") from exc
    if check and done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise LinkError(f"`{' '.join(argv)}` failed: {reason}")
    return done


def _list_namespaces() -> list[str]:
    """Names from ``ip netns list`` (lines look like ``name (id: 3)``)."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _delete_namespace(name: str) -> None:
    """Kill what still runs in namespace ``name``, then delete it (gone already is fine)."""
    pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    done = _run(["ip", "netns", "del", name], check=False)
    if done.returncode != 0 and name in _list_namespaces():
        raise LinkError(f"`ip netns del {name}` failed: {' '.join(done.stderr.split())}")


def _add_namespace(name: str, created: list[str]) -> bool:
    """Add namespace ``name`` and note it in ``created``; False when the name is taken."""
    done = _run(["ip", "netns", "add", name], check=False)
    if done.returncode == 0:
        created.append(name)
        return True
    if "File exists" in done.stderr:
        return False
    raise LinkError(f"`ip netns add {name}` failed: {' '.join(done.stderr.split())}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(
    prefix: str = NS_PREFIX, older_than_s: float | None = None, *, everything: bool = False
) -> list[str]:
    """Delete namespaces left by killed runs; returns the names deleted.

    A namespace named ``<prefix>...-<pid>-<hex4>`` (as :class:`ShapedLink`
    names them) goes when process ``pid`` no longer runs; any namespace with
    the prefix goes when older than ``older_than_s`` (the age of its
    ``/run/netns`` entry), or when ``everything``. Processes inside are killed.
    """
    if not prefix:
        raise ConfigError("cleanup_stale prefix='': expected a non-empty prefix")
    deleted = []
    now = time.time()
    for name in _list_namespaces():
        if not name.startswith(prefix):
            continue
        parts = name.rsplit("-", 2)
        owner_gone = len(parts) == 3 and parts[1].isdigit() and not _process_alive(int(parts[1]))
        try:
            age_s = now - os.stat(f"/run/netns/{name}").st_mtime
        except OSError:
            age_s = 0.0
        too_old = older_than_s is not None and age_s > older_than_s
        if everything or owner_gone or too_old:
            _delete_namespace(name)
            deleted.append(name)
            log.info("netlink_stale_deleted ns=%s age_s=%.0f", name, age_s)
    return deleted


class ShapedLink:
    """Two namespaces joined by a shaped veth pair; deleted again on exit.

    ``with ShapedLink(10e6, 50e6) as link:`` gives namespaces
    ``link.edge_ns`` and ``link.cloud_ns`` (addresses ``link.edge_ip`` and
    ``link.cloud_ip``, ``lo`` up in both); traffic edge -> cloud goes at
    ``uplink_bps``, cloud -> edge at ``downlink_bps`` (None: unshaped).
    Processes started with :meth:`run_in` or :meth:`start_relay`, and any
    other process left inside the namespaces, are killed on exit.

    ``tcp_congestion`` is set in both namespaces; reno by default because
    BBR (this machine's default) paces at its bandwidth estimate, and with
    the near-zero round trip of a veth pair it never probes a raised rate: a
    running transfer stayed at 2 Mbit/s after a change to 8, where reno
    followed within 0.1 s. (cubic is not in ``tcp_allowed_congestion_control``
    here, so a namespace may not pick it.) None keeps the inherited one.
    """

    def __init__(
        self,
        uplink_bps: float | None,
        downlink_bps: float | None = None,
        *,
        queue_latency_s: float = DEFAULT_QUEUE_LATENCY_S,
        tcp_congestion: str | None = "reno",
        subnet: str = DEFAULT_SUBNET,
        prefix: str = NS_PREFIX,
    ) -> None:
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise ConfigError(f"subnet={subnet!r}: {exc}") from None
        if net.prefixlen != 30 or not net.is_private:
            raise ConfigError(f"subnet={subnet!r}: expected a private /30 (e.g. 10.77.0.0/30)")
        edge, cloud = net.hosts()
        self.edge_ip, self.cloud_ip = str(edge), str(cloud)
        self.edge_dev, self.cloud_dev = _EDGE_DEV, _CLOUD_DEV
        self._prefixlen = net.prefixlen
        self._prefix = prefix
        self._queue_latency_s = queue_latency_s
        self._tcp_congestion = tcp_congestion
        self.uplink = None if uplink_bps is None else self._bucket(uplink_bps)
        self.downlink = None if downlink_bps is None else self._bucket(downlink_bps)
        self.edge_ns = self.cloud_ns = ""
        self._created: list[str] = []
        self._processes: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()

    def _bucket(self, rate_bps: float) -> TokenBucket:
        return TokenBucket.for_rate(rate_bps, self._queue_latency_s)

    def __enter__(self) -> ShapedLink:
        try:
            self._create()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except LinkError:
            if exc is None:
                raise
            log.exception("netlink_cleanup_failed edge_ns=%s", self.edge_ns)

    def _create(self) -> None:
        for _attempt in range(5):
            tag = f"{os.getpid()}-{secrets.token_hex(2)}"
            edge_ns, cloud_ns = f"{self._prefix}edge-{tag}", f"{self._prefix}cloud-{tag}"
            if _add_namespace(edge_ns, self._created) and _add_namespace(cloud_ns, self._created):
                self.edge_ns, self.cloud_ns = edge_ns, cloud_ns
                break
        else:
            raise LinkError(f"namespaces {self._prefix}edge-{os.getpid()}-*: 5 names taken")
        _run(["ip", "link", "add", self.edge_dev, "netns", self.edge_ns, "type", "veth",
              "peer", "name", self.cloud_dev, "netns", self.cloud_ns])  # fmt: skip
        for ns, dev, ip in (
            (self.edge_ns, self.edge_dev, self.edge_ip),
            (self.cloud_ns, self.cloud_dev, self.cloud_ip),
        ):
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/{self._prefixlen}", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
            if self._tcp_congestion:
                self._set_congestion(ns, self._tcp_congestion)
        self._apply(self.uplink, self.downlink)
        log.info(
            "netlink_created edge_ns=%s cloud_ns=%s uplink_bps=%s downlink_bps=%s",
            self.edge_ns,
            self.cloud_ns,
            self.uplink and self.uplink.rate_bps,
            self.downlink and self.downlink.rate_bps,
        )

    def _set_congestion(self, ns: str, name: str) -> None:
        """Write the namespace's TCP congestion control (/proc/sys/net is the writer's)."""
        path = "/proc/sys/net/ipv4/tcp_congestion_control"
        try:
            _run([*self.exec_args(ns), "sh", "-c", f'echo "$0" > {path}', name])
        except LinkError:
            allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text()
            raise ConfigError(
                f"tcp_congestion={name!r}: a namespace may not use it here; "
                f"allowed: {allowed.strip()} (or None to keep the inherited one)"
            ) from None

    def _apply(self, uplink: TokenBucket | None, downlink: TokenBucket | None) -> None:
        """Install or change tbf on the sending side of each direction given."""
        for ns, dev, bucket in (
            (self.edge_ns, self.edge_dev, uplink),
            (self.cloud_ns, self.cloud_dev, downlink),
        ):
            if bucket is not None:
                _run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", *bucket.tc_args()])

    def close(self) -> None:
        """Stop our processes, then delete the namespaces (idempotent)."""
        for proc in self._processes:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 2.0
        for proc in self._processes:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_CMD_TIMEOUT_S)
        self._processes.clear()
        errors = []
        while self._created:
            name = self._created.pop()
            try:
                _delete_namespace(name)
            except LinkError as exc:
                errors.append(str(exc))
        if errors:
            raise LinkError("; ".join(errors))

    def set_rate(self, uplink_bps: float | None, downlink_bps: float | None = None) -> None:
        """Change the rate live, bits/s; None leaves that direction as it is."""
        uplink = None if uplink_bps is None else self._bucket(uplink_bps)
        downlink = None if downlink_bps is None else self._bucket(downlink_bps)
        with self._lock:
            self._apply(uplink, downlink)
            self.uplink = uplink or self.uplink
            self.downlink = downlink or self.downlink

    def down(self) -> None:
        """Cut the link: both ends go down; connects fail, transfers stall."""
        self._set_state("down")

    def up(self) -> None:
        """Restore a cut link; addresses, routes and shaping come back as they were."""
        self._set_state("up")

    def drop(self, on: bool) -> None:
        """Lose every packet arriving at the cloud (100% loss) while ``on``; the link stays up.

        Unlike :meth:`down`, senders see no error: their packets vanish, as on a
        radio link out of range. Needs ``iptables`` (the kernel here has no netem).
        """
        if shutil.which("iptables") is None:
            raise LinkError("100% loss needs iptables: apt-get install iptables")
        action = "-I" if on else "-D"
        with self._lock:
            _run(["ip", "netns", "exec", self.cloud_ns, "iptables", action, "INPUT",
                  "-i", self.cloud_dev, "-j", "DROP"])  # fmt: skip

    def _set_state(self, state: str) -> None:
        with self._lock:
            _run(["ip", "-n", self.edge_ns, "link", "set", self.edge_dev, state])
            _run(["ip", "-n", self.cloud_ns, "link", "set", self.cloud_dev, state])

    def exec_args(self, ns: str) -> list[str]:
        """Prefix that runs a command inside namespace ``ns`` (one of this link's)."""
        if not ns or ns not in (self.edge_ns, self.cloud_ns):
            raise ConfigError(
                f"ns={ns!r}: expected {self.edge_ns!r} or {self.cloud_ns!r} (is the link open?)"
            )
        return ["ip", "netns", "exec", ns]

    def run_in(self, ns: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``ns``; the link kills it on exit if it still runs."""
        proc = subprocess.Popen([*self.exec_args(ns), *argv], **popen_kwargs)
        self._processes.append(proc)
        return proc

    def start_relay(
        self,
        port: int,
        target_port: int,
        delay_s: float,
        *,
        queue_bytes: int = DEFAULT_RELAY_QUEUE_BYTES,
        ready_timeout_s: float = 10.0,
    ) -> tuple[subprocess.Popen[str], int]:
        """Run a :class:`DelayRelay` in the cloud namespace, delaying each direction by ``delay_s``.

        It listens on ``cloud_ip:port`` and forwards to ``127.0.0.1:target_port``.
        Returns, once it listens, the process and its port (``port=0`` picks one).
        """
        # The relay runs this module; make sure the repository is importable there.
        paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        argv = [sys.executable, "-m", "experiments.netlink", "relay",
                "--listen", f"{self.cloud_ip}:{port}", "--to", f"127.0.0.1:{target_port}",
                "--delay-ms", repr(delay_s * 1e3), "--queue-bytes", str(queue_bytes)]  # fmt: skip
        proc = self.run_in(self.cloud_ns, argv, stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], ready_timeout_s)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("listening "):
            proc.kill()
            raise LinkError(
                f"relay in {self.cloud_ns} did not start within {ready_timeout_s} s "
                f"(exit code {proc.poll()}, said {line.strip()!r})"
            )
        return proc, int(line.rsplit(":", 1)[1])


class RelayLink:
    """Where tc is refused: the same link shaped in this process, on loopback.

    The cloud and the edge run in this namespace; :meth:`relay_to` puts a
    :class:`DelayRelay` pacing the uplink (a :class:`Pacer` token bucket of
    tbf's burst) in front of the cloud's port, and :meth:`set_rate` changes
    every relay's rate live. It has the parts of :class:`ShapedLink` the
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


@functools.lru_cache(maxsize=1)
def netns_support() -> str | None:
    """None when namespaces, veth and tbf work here, else why not, in one line (cached)."""
    if os.geteuid() != 0:
        return f"not root (euid={os.geteuid()}): network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found on PATH: install iproute2"
    try:
        with ShapedLink(1e6, 1e6, prefix=f"{NS_PREFIX}probe-"):
            pass
    except EdgesplitError as exc:
        return f"the kernel refuses: {exc}"
    return None


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

    def __init__(self, rate_bps: float | None, burst_bytes: int = _MIN_BURST_BYTES) -> None:
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
    :class:`ShapedLink`, use :meth:`ShapedLink.start_relay`.

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
                upstream = socket.create_connection(self.target, timeout=_CMD_TIMEOUT_S)
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

    def _read(self, src: socket.socket, line: _DelayLine, abort: Any) -> None:
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
        abort: Any,
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


def rate_points(trace: Trace | Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(time_s, bits/s) points of a Trace (Mbit/s converted) or of a sequence, checked."""
    from experiments.traces import Trace

    if isinstance(trace, Trace):
        return list(zip(trace.times.tolist(), (trace.mbps * 1e6).tolist(), strict=True))
    points = [(float(t), float(bps)) for t, bps in trace]
    if not points:
        raise ConfigError("trace_points=[]: expected at least one (time_s, bps) point")
    for i, (t, bps) in enumerate(points):
        if not (math.isfinite(t) and t >= 0 and math.isfinite(bps) and bps >= 0):
            raise ConfigError(f"trace point {i}: time_s={t!r} bps={bps!r}: expected finite >= 0")
        if i and t < points[i - 1][0]:
            raise ConfigError(f"trace point {i}: time_s={t!r} is before the previous point")
    return points


class TraceReplay(threading.Thread):
    """The thread :func:`replay` starts; ``applied`` lists (seconds since start, bits/s) set."""

    def __init__(
        self,
        link: ShapedLink,
        points: list[tuple[float, float]],
        stop_event: threading.Event,
        time_scale: float,
        direction: Direction,
        period_s: float | None,
    ) -> None:
        super().__init__(name=f"replay-{link.edge_ns}", daemon=True)
        self.link, self.points, self.stop_event = link, points, stop_event
        self.time_scale, self.direction, self.period_s = time_scale, direction, period_s
        self.applied: list[tuple[float, float]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        """Apply each point at its time; stop early when the stop event is set."""
        start = time.monotonic()
        offset = 0.0
        try:
            while True:
                for t, bps in self.points:
                    wait = start + (offset + t) * self.time_scale - time.monotonic()
                    if self.stop_event.wait(max(wait, 0.0)):
                        return
                    up = bps if self.direction in ("uplink", "both") else None
                    down = bps if self.direction in ("downlink", "both") else None
                    self.link.set_rate(up, down)
                    self.applied.append((time.monotonic() - start, bps))
                if self.period_s is None:
                    return
                offset += self.period_s
        except EdgesplitError as exc:
            self.error = exc
            log.exception("replay_failed edge_ns=%s", self.link.edge_ns)


def replay(
    link: ShapedLink,
    trace_points: Trace | Sequence[tuple[float, float]],
    stop_event: threading.Event,
    time_scale: float = 1.0,
    *,
    direction: Direction = "uplink",
    loop: bool = False,
) -> TraceReplay:
    """Start a thread that sets ``link``'s rate along (time_s, bits/s) points or a Trace.

    Point ``(t, bps)`` is applied ``t x time_scale`` seconds after the start
    (0.1 plays ten times faster); the last rate holds after the last point.
    ``loop`` repeats a Trace every ``duration_s`` (its wrap-around) until
    ``stop_event`` is set. Join the returned thread; its ``error`` says why it
    stopped early.
    """
    from experiments.traces import Trace

    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ConfigError(f"replay time_scale={time_scale!r}: expected a finite number > 0")
    if loop and not isinstance(trace_points, Trace):
        raise ConfigError("replay loop=True: needs a Trace (its duration_s is the period)")
    period = trace_points.duration_s if isinstance(trace_points, Trace) and loop else None
    thread = TraceReplay(link, rate_points(trace_points), stop_event, time_scale, direction, period)
    thread.start()
    return thread


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """``relay``: run a DelayRelay until SIGTERM; ``cleanup``: delete stale namespaces."""
    parser = argparse.ArgumentParser(prog="python -m experiments.netlink")
    commands = parser.add_subparsers(dest="command", required=True)
    relay = commands.add_parser("relay", help="delay a TCP service by a fixed time each way")
    relay.add_argument("--listen", type=_address, required=True, help="HOST:PORT (port 0: any)")
    relay.add_argument("--to", type=_address, required=True, help="HOST:PORT to forward to")
    relay.add_argument("--delay-ms", type=float, required=True, help="one-way delay, ms")
    relay.add_argument("--queue-bytes", type=int, default=DEFAULT_RELAY_QUEUE_BYTES)
    cleanup = commands.add_parser("cleanup", help="delete namespaces left by killed runs")
    cleanup.add_argument("--prefix", default=NS_PREFIX)
    cleanup.add_argument("--older-than-s", type=float, default=None)
    cleanup.add_argument("--all", action="store_true", help="every namespace with the prefix")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "cleanup":
            for name in cleanup_stale(args.prefix, args.older_than_s, everything=args.all):
                sys.stdout.write(f"deleted {name}\n")
            return 0
        server = DelayRelay(args.listen, args.to, args.delay_ms / 1e3, queue_bytes=args.queue_bytes)
    except (EdgesplitError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    host, port = server.address
    sys.stdout.write(f"listening {host}:{port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "DEFAULT_SUBNET",
    "MIN_RATE_BPS",
    "NS_PREFIX",
    "DelayRelay",
    "LinkError",
    "Pacer",
    "RelayLink",
    "ShapedLink",
    "TokenBucket",
    "TraceReplay",
    "cleanup_stale",
    "netns_support",
    "rate_points",
    "replay",
]
