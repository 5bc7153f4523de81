"""A real shaped link: two network namespaces joined by a veth pair, each direction under tbf.

:class:`ShapedLink` makes an edge and a cloud namespace joined by a veth
pair and shapes each direction with tbf (the kernel here has tbf but no
netem). Delay comes from a :class:`~experiments.relay.DelayRelay` run inside
the cloud namespace (:meth:`ShapedLink.start_relay`); the rate changes live
(:meth:`ShapedLink.set_rate`, driven along a trace by
:func:`experiments.trace_replay.replay`).

Figures to expect (tests/integration/test_netlink.py): a long TCP transfer
gets 95.6% of the set rate as payload (1448 of every 1514 bytes on the
wire: 2 -> 1.93, 10 -> 9.58 Mbit/s); a relay with 10 ms each way gives a
20.5 ms round trip (ENVIRONMENT.md saw 21.7).

Needs root and iproute2 (``ip``, ``tc``); :func:`netns_support` says, in
one line, why a machine cannot.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import os
import secrets
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from edgesplit.errors import ConfigError, EdgesplitError
from experiments.netns import (
    CMD_TIMEOUT_S,
    NS_PREFIX,
    LinkError,
    add_namespace,
    delete_namespace,
    run_command,
)

log = logging.getLogger(__name__)

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
#: The smallest bucket: 4 full frames (a relay's pacer uses the same).
MIN_BURST_BYTES = 4 * _FRAME_BYTES
_BURST_S = 0.004  # burst = 4 ms at the set rate, never below 4 frames
_EDGE_DEV = "veth-edge"
_CLOUD_DEV = "veth-cloud"


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
        burst = max(MIN_BURST_BYTES, math.ceil(rate / 8 * _BURST_S))
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
            if add_namespace(edge_ns, self._created) and add_namespace(cloud_ns, self._created):
                self.edge_ns, self.cloud_ns = edge_ns, cloud_ns
                break
        else:
            raise LinkError(f"namespaces {self._prefix}edge-{os.getpid()}-*: 5 names taken")
        run_command(["ip", "link", "add", self.edge_dev, "netns", self.edge_ns, "type", "veth",
              "peer", "name", self.cloud_dev, "netns", self.cloud_ns])  # fmt: skip
        for ns, dev, ip in (
            (self.edge_ns, self.edge_dev, self.edge_ip),
            (self.cloud_ns, self.cloud_dev, self.cloud_ip),
        ):
            run_command(["ip", "-n", ns, "addr", "add", f"{ip}/{self._prefixlen}", "dev", dev])
            run_command(["ip", "-n", ns, "link", "set", "lo", "up"])
            run_command(["ip", "-n", ns, "link", "set", dev, "up"])
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
            run_command([*self.exec_args(ns), "sh", "-c", f'echo "$0" > {path}', name])
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
                run_command(
                    ["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", *bucket.tc_args()]
                )

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
                proc.wait(timeout=CMD_TIMEOUT_S)
        self._processes.clear()
        errors = []
        while self._created:
            name = self._created.pop()
            try:
                delete_namespace(name)
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
            run_command(["ip", "netns", "exec", self.cloud_ns, "iptables", action, "INPUT",
                  "-i", self.cloud_dev, "-j", "DROP"])  # fmt: skip

    def _set_state(self, state: str) -> None:
        with self._lock:
            run_command(["ip", "-n", self.edge_ns, "link", "set", self.edge_dev, state])
            run_command(["ip", "-n", self.cloud_ns, "link", "set", self.cloud_dev, state])

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
        """Run a ``DelayRelay`` (experiments.relay) in the cloud namespace, ``delay_s`` each way.

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


__all__ = [
    "DEFAULT_QUEUE_LATENCY_S",
    "DEFAULT_RELAY_QUEUE_BYTES",
    "DEFAULT_SUBNET",
    "MIN_BURST_BYTES",
    "MIN_RATE_BPS",
    "ShapedLink",
    "TokenBucket",
    "netns_support",
]
