"""Hostile clients against the cloud's memory: a real ``edgesplit cloud`` process, raw ZMTP peers.

Each attack runs while an honest edge sends requests; the cloud's resident
memory is sampled every 10 ms. What must hold, per attack: the cloud stays
up, its memory stays within its budget above what it held once warm (the
bundle loaded), every honest request is answered once and exactly, and the
honest p99 stays under 50 ms.

- an unfinished multipart message: frames that each pass the frame cap, never
  a last one (libzmq buffers a multipart message whole before the
  application sees it);
- frames past the cap (60 MB each, as a probe sent);
- millions of empty frames in one unfinished message (64 bytes of memory each
  for 2 on the wire);
- a client that asks and never reads (its replies pile up in libzmq);
- decode bombs: a small int8+lz4 frame declaring a tensor far larger than the cut.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

import wire
from cloud_node.backends import OnnxRuntimeBackend
from cloud_node.process import start_cloud_process, stop_process
from edgesplit.bundle import Bundle, Cut
from edgesplit.security import generate_keys, load_keypair, load_public_key, make_curve_client
from experiments.loadgen import rss_bytes
from tests.conftest import free_port
from tests.integration.test_hostile_input import scrape_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUDGET_MB = 512  # the default [cloud] memory_budget_mb
HONEST_P99_MS = 50.0


# -- a raw ZMTP 3 peer (NULL mechanism), to send what no ZeroMQ library would ----------------


def zmtp_connect(endpoint: str, rcvbuf: int | None = None) -> socket.socket:
    """A TCP connection to ``endpoint`` past the ZMTP greeting and READY, as a DEALER."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    sock.settimeout(10.0)
    sock.sendall(b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + bytes(32))
    _read(sock, 64)
    ready = b"\x05READY\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    sock.sendall(b"\x04" + bytes([len(ready)]) + ready)
    flags, size = _read(sock, 2)
    _read(sock, size if flags == 4 else struct.unpack(">Q", bytes([size]) + _read(sock, 7))[0])
    return sock


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            raise ConnectionError("closed during the handshake")
        data += more
    return data


def zmtp_frame(data: bytes, more: bool) -> bytes:
    flags = 1 if more else 0
    if len(data) <= 255:
        return bytes([flags, len(data)]) + data
    return bytes([flags | 2]) + struct.pack(">Q", len(data)) + data


def send_until_cut(sock: socket.socket, chunk: bytes, total: int) -> tuple[int, bool]:
    """Send ``chunk`` until ``total`` bytes went out or the cloud cut us off."""
    sent = 0
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        return sent, True
    # Everything went out: the cloud may cut us off as it catches up.
    try:
        sock.settimeout(5.0)
        return sent, sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return sent, True


# -- the cloud under attack, and an honest edge ----------------------------------------------


@dataclass
class Cloud:
    bundle: Bundle
    endpoint: str
    metrics_url: str
    pid: int
    cut: Cut
    reference: OnnxRuntimeBackend
    keys: Path | None = None  # CURVE: the directory of `edgesplit keys` files

    def client(self, name: str = "edge") -> zmq.Socket:
        """A DEALER connected to the cloud (with CURVE key ``name`` when the cloud has keys)."""
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:
            make_curve_client(
                sock,
                load_keypair(self.keys / "allowed" / f"{name}.key_secret"),
                load_public_key(self.keys / "cloud.key"),
            )
        sock.connect(self.endpoint)
        return sock


def _start(bundle: Bundle, work: Path, security: list[str], keys: Path | None) -> Iterator[Cloud]:
    port = free_port()
    proc, endpoint = start_cloud_process(
        bundle.root,
        "tcp://127.0.0.1:*",
        work / "cloud.log",
        extra=[*security, "--metrics-port", str(port), "--log-level", "warning"],
    )
    cuts = [c for c in bundle.manifest.cuts if c.tail is not None]
    try:
        yield Cloud(
            bundle,
            endpoint,
            f"http://127.0.0.1:{port}/metrics",
            proc.pid,
            cuts[0],
            OnnxRuntimeBackend(bundle, threads=1),
            keys,
        )
    finally:
        alive = proc.poll() is None
        stop_process(proc)
        log = (work / "cloud.log").read_text(errors="replace")
        assert alive, f"the cloud process died during the attacks:\n{log[-3000:]}"
        # Refusals are logged at most once per kind per interval, not once each.
        assert log.count("rejected") < 50, log[-3000:]


@pytest.fixture(scope="module")
def cloud(untrained_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A plaintext cloud on loopback (what a raw ZMTP peer can reach without CURVE)."""
    yield from _start(
        untrained_bundle, tmp_path_factory.mktemp("hostile-memory"), ["--insecure"], None
    )


@pytest.fixture(scope="module")
def secure_cloud(
    untrained_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cloud]:
    """A CURVE cloud: edges `edge` and `mallory`, and the admin `ops`."""
    work = tmp_path_factory.mktemp("hostile-memory-curve")
    generate_keys(work, "cloud")
    for name in ("edge", "mallory", "ops"):
        generate_keys(work / "allowed", name)
    security = [
        "--secret-key",
        str(work / "cloud.key_secret"),
        "--allowed-clients",
        str(work / "allowed"),
        "--fleet-admins",
        "ops",
    ]
    yield from _start(untrained_bundle, work, security, work)


@dataclass
class Honest:
    """An edge sending a request every few ms, each answer checked exactly."""

    cloud: Cloud
    latencies_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        cut = self.cloud.cut
        output = self.cloud.bundle.manifest.model.output
        sock = self.cloud.client()
        rng = np.random.default_rng(0)
        rid = 0
        try:
            while not self.stop.is_set():
                rid += 1
                x = rng.standard_normal((1, *cut.shape), dtype=np.float32)
                tensors = (wire.Tensor(cut.name, x),)
                request = wire.InferRequest(rid, self.cloud.bundle.id, cut.id, tensors)
                began = time.perf_counter()
                sock.send_multipart(wire.encode(request, "int8+lz4"), copy=False)
                if not sock.poll(10_000):
                    self.problems.append(f"request {rid} unanswered")
                    return
                message = wire.decode(sock.recv_multipart())
                self.latencies_ms.append((time.perf_counter() - began) * 1e3)
                if not isinstance(message, wire.Result) or message.request_id != rid:
                    self.problems.append(f"request {rid}: {message}")
                    continue
                arrays = message.arrays()
                if sock.poll(0):
                    self.problems.append(f"request {rid} answered twice")
                expected = self.cloud.reference.infer(cut, {cut.name: x})[output]
                if not np.allclose(arrays[output], expected, rtol=0.05, atol=0.05):
                    self.problems.append(f"request {rid}: wrong answer")
                time.sleep(0.005)
        finally:
            sock.close(linger=0)


@dataclass
class Watch:
    """The cloud's resident memory, sampled every 10 ms, and an honest edge beside it."""

    cloud: Cloud
    warm: int
    peak: int = 0
    honest: Honest | None = None

    def __enter__(self) -> Watch:
        self._stop = threading.Event()
        self.peak = self.warm
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self.honest = Honest(self.cloud)
        self._edge = threading.Thread(target=self.honest.run, daemon=True)
        self._edge.start()
        time.sleep(0.2)
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_bytes(self.cloud.pid))

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        assert self.honest is not None
        self.honest.stop.set()
        self._stop.set()
        self._edge.join(15)
        self._sampler.join()

    def check(self, name: str) -> str:
        assert self.honest is not None
        honest = self.honest
        assert not honest.problems, (name, honest.problems[:5])
        assert len(honest.latencies_ms) >= 10, (name, len(honest.latencies_ms))
        p99 = float(np.percentile(honest.latencies_ms, 99))
        grown = (self.peak - self.warm) / 1e6
        assert grown < BUDGET_MB, f"{name}: RSS grew {grown:.0f} MB over the warm cloud"
        assert p99 < HONEST_P99_MS, f"{name}: honest p99 {p99:.1f} ms"
        return (
            f"{name}: peak RSS +{grown:.0f} MB over warm, honest p99 {p99:.1f} ms over "
            f"{len(honest.latencies_ms)} requests"
        )


def warm_rss(cloud: Cloud) -> int:
    watch = Watch(cloud, rss_bytes(cloud.pid))
    with watch:
        time.sleep(0.5)
    return rss_bytes(cloud.pid)


def test_an_unfinished_multipart_message_is_cut_off_at_the_client_budget(cloud: Cloud) -> None:
    warm = warm_rss(cloud)
    with Watch(cloud, warm) as watch:
        sock = zmtp_connect(cloud.endpoint)
        chunk = zmtp_frame(bytes(1_000_000), more=True)  # each frame passes the frame cap
        sent, cut = send_until_cut(sock, chunk, 2_000_000_000)
        sock.close()
    assert cut, f"an unfinished message of {sent / 1e6:.0f} MB was never cut off"
    assert sent < 400_000_000, f"{sent / 1e6:.0f} MB accepted before the cut"
    print(watch.check(f"unfinished multipart ({sent / 1e6:.0f} MB sent before the cut)"))


def test_frames_past_the_cap_drop_the_client_at_once(cloud: Cloud) -> None:
    warm = warm_rss(cloud)
    with Watch(cloud, warm) as watch:
        sock = zmtp_connect(cloud.endpoint)
        chunk = zmtp_frame(bytes(60_000_000), more=True)
        sent, cut = send_until_cut(sock, chunk, 16 * len(chunk))
        sock.close()
    assert cut, "16 frames of 60 MB were taken whole"
    print(watch.check("16 frames of 60 MB"))


def test_millions_of_empty_frames_stay_within_the_budget(cloud: Cloud) -> None:
    warm = warm_rss(cloud)
    with Watch(cloud, warm) as watch:
        sock = zmtp_connect(cloud.endpoint)
        empty = zmtp_frame(b"", more=True) * 500_000  # 1 MB on the wire, 32 MB in libzmq
        sent, cut = send_until_cut(sock, empty, 40 * len(empty))  # 20 million frames
        sock.close()
    assert cut, "20 million empty frames (1.3 GB in libzmq) were all taken"
    print(watch.check(f"empty frames ({sent // 2 / 1e6:.1f} million sent before the cut)"))


def test_clients_that_never_read_lose_their_replies_not_the_clouds_memory(
    secure_cloud: Cloud,
) -> None:
    cloud = secure_cloud
    warm = warm_rss(cloud)
    # A fleet of 1,000 edges (one key's records, which the fleet caps), so that a status
    # page is large for whoever may read it.
    flood = cloud.client("mallory")
    for i in range(1_000):
        flood.send_multipart(wire.encode(wire.Hello(i, name=f"edge-{i:05d}")))
        assert flood.poll(10_000)
        flood.recv_multipart()
    flood.close(linger=0)
    status = wire.encode(wire.FleetQuery(1, "status"))
    ping = wire.encode(wire.Ping(2))
    with Watch(cloud, warm) as watch:
        readers = []
        for _ in range(4):
            sock = cloud.client("mallory")
            sock.setsockopt(zmq.RCVHWM, 1)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            readers.append(sock)
        for sock in readers:
            for _ in range(2_000):
                sock.send_multipart(status, copy=False)
                sock.send_multipart(ping, copy=False)
        time.sleep(2.0)
        for sock in readers:
            sock.close(linger=0)
    print(watch.check("4 clients asking 4,000 times each and never reading"))
    # The admin still reads the fleet view.
    ops = cloud.client("ops")
    ops.send_multipart(wire.encode(wire.FleetQuery(3, "status")))
    assert ops.poll(10_000)
    reply = wire.decode(ops.recv_multipart())
    ops.close(linger=0)
    assert isinstance(reply, wire.FleetReport), reply


def test_decode_bombs_cost_no_more_than_their_bytes(cloud: Cloud) -> None:
    import lz4.block

    warm = warm_rss(cloud)
    cut = cloud.cut
    shape = [4, 7_999_999]
    payload = lz4.block.compress(bytes(4 * 7_999_999), store_size=False)
    header = {
        "v": 1,
        "k": "infer",
        "id": 5,
        "m": {"bundle": cloud.bundle.id, "cut": cut.id},
        "t": [
            {
                "n": cut.name,
                "d": "float16",
                "s": shape,
                "c": "int8+lz4",
                "b": len(payload),
                "q": 0.1,
                "z": 0,
            }
        ],
    }
    sock = cloud.client()
    took = []
    with Watch(cloud, warm) as watch:
        for _ in range(10):
            began = time.perf_counter()
            sock.send_multipart([msgpack.packb(header), payload])
            assert sock.poll(10_000)
            reply = wire.decode(sock.recv_multipart())
            took.append((time.perf_counter() - began) * 1e3)
            assert isinstance(reply, wire.ErrorReply) and reply.code == "shape", reply
    sock.close(linger=0)
    assert watch.peak - warm < 64e6, f"a bomb grew RSS {(watch.peak - warm) / 1e6:.0f} MB"
    print(
        watch.check(
            f"10 decode bombs ({len(payload) / 1e3:.0f} KB each, "
            f"answered in {np.median(took):.1f} ms median)"
        )
    )


def test_every_cut_off_is_counted(cloud: Cloud) -> None:
    counted = scrape_errors(cloud.metrics_url)
    # The attacks above: a client cut off for its own memory, or for the total.
    assert counted["client_memory"] + counted["total_memory"] >= 2, counted
    assert counted["shape"] >= 10, counted
