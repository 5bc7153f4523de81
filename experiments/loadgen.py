"""Closed-loop load from many simulated edges: each sends one request after another.

The edges are spread over a few spawned processes (no state shared with the
caller, no Ray). Each edge has its own ZeroMQ DEALER; the edges of a process
share one ZeroMQ context and one thread, which polls their sockets and sends
an edge's next request as soon as its answer is in, so 64 edges cost a few
processes, not 64 threads contending for a GIL, and the load generators take
little of the cores the cloud runs on. Every request is timed and classified
by its answer: ``ok`` (a result), the code of a refusal (``busy``, ...), or
``lost`` (no answer within 30 s). After ``busy`` an edge waits the delay the
cloud announced (1 ms to 1 s), as a real edge keeps its requests local for
that long.

What an edge sends is an :class:`EdgeLoad`: a cut's value and a codec. It is
encoded once, in the caller, and every request re-sends the same frames under
a new request id: a real edge encodes on its own CPU, not on the cloud's.
Used by the cloud-scaling experiment, the Ray tier benchmark, the soak script
and the load test.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

import wire
from cloud_node.process import start_cloud_process, stop_process
from edgesplit.bundle import Bundle, Cut, segment_chain
from experiments.harness import ExperimentError

#: An answer slower than this counts as lost.
LOST_AFTER_S = 30.0
#: Most processes the edges are spread over.
PROCESSES = 4
#: Longest wait for the spawned processes to import, connect and report ready.
READY_TIMEOUT_S = 60.0


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
    """What one closed-loop edge sends, request after request: ``value`` at ``cut``."""

    cut: Cut
    value: np.ndarray
    codec: str = "raw"


@dataclass(frozen=True)
class LoadRun:
    """What :func:`run_edges` measured.

    Attributes:
        samples: every request, warm-up included.
        began: when the measured window (after the warm-up) began, wall clock.
        cpu_s: CPU seconds the load generators spent driving the edges (all processes).
        ended: when the measured window ended (the edges stopped sending), wall clock.
    """

    samples: list[Sample]
    began: float
    cpu_s: float
    ended: float = float("inf")

    def window(self) -> list[Sample]:
        """The samples that ended in the measured window (not those drained after it)."""
        return in_window(self.samples, self.began, self.ended - self.began)


@dataclass(frozen=True)
class _Encoded:
    """An :class:`EdgeLoad`'s request, encoded once: its header fields and payload frames."""

    cut: str
    header: dict[str, Any]
    payloads: tuple[bytes, ...]

    @classmethod
    def of(cls, bundle_id: str, load: EdgeLoad) -> _Encoded:
        frames = wire.encode_message(
            "infer",
            1,
            {load.cut.name: load.value},
            codec=load.codec,
            meta={"bundle": bundle_id, "cut": load.cut.id},
        )
        header = msgpack.unpackb(frames[0], raw=False)
        return cls(load.cut.id, header, tuple(bytes(f) for f in frames[1:]))

    def frames(self, request_id: int) -> list[bytes]:
        """The request's frames under ``request_id`` (the header's ``id``, wire/message.py)."""
        return [msgpack.packb({**self.header, "id": request_id}, use_bin_type=True), *self.payloads]

    @property
    def nbytes(self) -> int:
        """Bytes on the wire, header included."""
        return len(self.frames(1)[0]) + sum(len(p) for p in self.payloads)


def request_bytes(bundle_id: str, load: EdgeLoad) -> int:
    """Bytes one request of ``load`` puts on the wire (header and tensor frames)."""
    return _Encoded.of(bundle_id, load).nbytes


@dataclass(frozen=True)
class _Reply:
    """What the load generator reads of a reply: its kind, request id and meta."""

    kind: str
    request_id: int
    meta: dict[str, Any]

    @classmethod
    def read(cls, header: bytes) -> _Reply | None:
        """The fields of a reply's header frame (wire/message.py), ``None`` if unreadable.

        Read without wire's full validation of the header: the load generator
        measures a cloud it trusts, and at thousands of replies a second that
        validation was half the load generator's CPU, taken from the cloud's cores.
        """
        try:
            fields = msgpack.unpackb(header, raw=False)
            return cls(str(fields["k"]), int(fields["id"]), dict(fields.get("m") or {}))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


class _Edge:
    """One closed-loop edge: its socket, its request, and the request in flight."""

    def __init__(self, context: zmq.Context, endpoint: str, request: _Encoded) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.request = request
        self.last_id = 0
        self.pending = 0  # id of the request in flight, 0 for none
        self.sent_at = 0.0
        self.resume_at = 0.0  # after busy: when to send again (time.perf_counter())

    def send(self, now: float) -> None:
        self.last_id += 1
        self.pending = self.last_id
        self.sent_at = now
        self.socket.send_multipart(self.request.frames(self.pending), copy=False)

    def answered(self, message: _Reply | None, arrived: float, wall: float) -> Sample:
        """The sample of the request in flight, answered by ``message`` (``None``: unreadable)."""
        kind, compute, batch = "bad-reply", 0.0, 0
        if message is not None and message.kind == "result":
            kind = "ok"
            batch = max(1, int(message.meta.get("batch", 1) or 1))
            # A batch's compute time, shared by its requests.
            compute = float(message.meta.get("compute_s", 0.0) or 0.0) / batch
        elif message is not None:
            kind = str(message.meta.get("code", message.kind))
        if kind == "busy" and message is not None:
            # As an edge does: it keeps its requests for the delay the cloud announced
            # (running them locally meanwhile) instead of asking again at once.
            announced = float(message.meta.get("queue_s", 0.0) or 0.0)
            self.resume_at = arrived + min(max(announced, 0.001), 1.0)
        self.pending = 0
        return Sample(
            arrived + wall, arrived - self.sent_at, kind, compute, self.request.cut, batch
        )

    def lost(self, now: float, wall: float) -> Sample:
        self.pending = 0
        return Sample(now + wall, now - self.sent_at, "lost", 0.0, self.request.cut)


def _drive(edges: Sequence[_Edge], until: float) -> list[Sample]:
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
    edges: Sequence[_Edge], now: float, sending: bool, out: list[Sample], wall: float
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


def _receive(edge: _Edge, out: list[Sample], wall: float) -> None:
    """Read every reply waiting on ``edge``'s socket; the one to its request is a sample."""
    while True:
        try:
            parts = edge.socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        arrived = time.perf_counter()
        message = _Reply.read(parts[0])
        if message is not None and message.request_id != edge.pending:
            continue  # the answer to a request already counted lost
        if edge.pending:
            out.append(edge.answered(message, arrived, wall))


def _edge_process(
    endpoint: str,
    requests: list[_Encoded],
    duration_s: float,
    start: Any,
    go: Any,
    ready: mp.Queue,
    results: mp.Queue,
) -> None:
    context = zmq.Context()
    edges = [_Edge(context, endpoint, r) for r in requests]
    try:
        ready.put(len(edges))
        go.wait()
        time.sleep(max(0.0, start.value - time.time()))
        until = time.perf_counter() + (start.value + duration_s - time.time())
        cpu = time.process_time()
        samples = _drive(edges, until)
        results.put((samples, time.process_time() - cpu))
    finally:
        for e in edges:
            e.socket.close(linger=0)
        context.term()


def _gather(channel: mp.Queue, procs: Sequence[Any], timeout_s: float, what: str) -> list:
    """One item from each of ``procs`` on ``channel``; a process that failed is an error."""
    deadline = time.monotonic() + timeout_s
    items: list[Any] = []
    while len(items) < len(procs):
        try:
            items.append(channel.get(timeout=0.5))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                raise ExperimentError(
                    f"load generator: a process exited with code {failed[0]} before {what}"
                ) from None
            if time.monotonic() > deadline:
                raise ExperimentError(
                    f"load generator: no {what} from {len(procs) - len(items)} of "
                    f"{len(procs)} processes within {timeout_s:.0f} s"
                ) from None
    return items


def run_edges(
    endpoint: str,
    bundle_id: str,
    loads: Sequence[EdgeLoad],
    seconds: float,
    warmup_s: float = 2.0,
    processes: int = PROCESSES,
) -> LoadRun:
    """Run one closed-loop edge per item of ``loads`` for ``warmup_s + seconds``.

    The edges start together once every process is ready.
    """
    encoded: dict[int, _Encoded] = {}
    for load in loads:
        if id(load) not in encoded:
            encoded[id(load)] = _Encoded.of(bundle_id, load)
    ctx = mp.get_context("spawn")
    procs_n = max(1, min(len(loads), processes))
    ready: mp.Queue = ctx.Queue()
    results: mp.Queue = ctx.Queue()
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_edge_process,
            args=(
                endpoint,
                [encoded[id(load)] for load in loads[i::procs_n]],
                warmup_s + seconds,
                start,
                go,
                ready,
                results,
            ),
            daemon=True,
        )
        for i in range(procs_n)
    ]
    for p in procs:
        p.start()
    try:
        _gather(ready, procs, READY_TIMEOUT_S, "it was ready")
        start.value = time.time() + 0.05
        go.set()
        waited = warmup_s + seconds + LOST_AFTER_S + 90
        outs = _gather(results, procs, waited, "its samples")
    finally:
        go.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    samples = [row for rows, _ in outs for row in rows]
    began = start.value + warmup_s
    return LoadRun(samples, began, sum(cpu for _, cpu in outs), began + seconds)


def run_load(
    endpoint: str,
    bundle: Bundle,
    cut: Cut,
    value: np.ndarray,
    edges: int,
    seconds: float,
    warmup_s: float = 2.0,
) -> tuple[list[Sample], float]:
    """Run ``edges`` closed-loop edges sending ``value`` at ``cut`` (raw codec).

    They run for ``warmup_s + seconds``.

    Returns every sample, and when the measured window (after the warm-up) began.
    """
    done = run_edges(endpoint, bundle.id, [EdgeLoad(cut, value)] * edges, seconds, warmup_s)
    return done.samples, done.began


def summarize(
    samples: Sequence[Sample], seconds: float, slo_s: float | None = None
) -> dict[str, float]:
    """Throughput (results/s), latency of results (p50, p99), batching, refusals and losses.

    ``batch_mean`` is the mean size of the batches the cloud ran (requests over
    batches: each result counts 1/batch). With ``slo_s``, ``slo_attainment`` is
    the share of all requests answered with a result within ``slo_s``: a
    ``busy`` answer, an error or a loss is a miss (the edge then runs the rest
    of the model itself).
    """
    kinds = Counter(s.kind for s in samples)
    ok = [s for s in samples if s.kind == "ok"]
    latency = [s.latency_s for s in ok]
    compute = [s.compute_s for s in ok]
    batches = sum(1.0 / max(1, s.batch) for s in ok)
    figures = {
        "compute_ms": statistics.median(compute) * 1e3 if compute else float("nan"),
        "throughput": kinds["ok"] / seconds,
        "p50_ms": statistics.median(latency) * 1e3 if latency else float("nan"),
        "p99_ms": float(np.percentile(latency, 99)) * 1e3 if latency else float("nan"),
        "busy": kinds["busy"],
        "lost": kinds["lost"],
        "other": sum(v for k, v in kinds.items() if k not in ("ok", "busy", "lost")),
        "requests": len(samples),
        "batch_mean": len(ok) / batches if ok else float("nan"),
    }
    if slo_s is not None:
        met = sum(1 for s in latency if s <= slo_s)
        figures["slo_attainment"] = met / len(samples) if samples else float("nan")
    return figures


def summarize_by_cut(
    samples: Sequence[Sample], seconds: float, slo_s: float | None = None
) -> dict[str, dict[str, float]]:
    """:func:`summarize` for each cut the samples were sent for, by cut id."""
    cuts = sorted({s.cut for s in samples})
    return {c: summarize([s for s in samples if s.cut == c], seconds, slo_s) for c in cuts}


def load(
    endpoint: str,
    bundle: Bundle,
    cut: Cut,
    value: np.ndarray,
    edges: int,
    seconds: float,
    warmup_s: float = 2.0,
) -> dict[str, float]:
    """Throughput and latency of ``edges`` concurrent closed-loop edges over ``seconds``."""
    samples, began = run_load(endpoint, bundle, cut, value, edges, seconds, warmup_s)
    return summarize(in_window(samples, began, seconds), seconds)


def in_window(samples: Sequence[Sample], began: float, seconds: float) -> list[Sample]:
    """The samples answered within ``seconds`` from ``began``.

    Replies drained after the edges stopped sending would otherwise count toward
    a throughput over ``seconds``.
    """
    return [s for s in samples if began <= s.at <= began + seconds]


@contextmanager
def node(
    bundle: Bundle,
    work: Path,
    name: str,
    extra: Sequence[str],
    note: Callable[[str], None] = lambda _: None,
) -> Iterator[str]:
    """An ``edgesplit cloud`` process (insecure, loopback); its endpoint. Stopped after."""
    began = time.perf_counter()
    proc, endpoint = start_cloud_process(
        bundle.root,
        "tcp://127.0.0.1:*",
        work / f"{name}.log",
        ready_timeout_s=180.0,
        extra=["--insecure", *extra],
    )
    note(f"  {name}: up in {time.perf_counter() - began:.1f} s at {endpoint}")
    try:
        yield endpoint
    finally:
        stop_process(proc)


def ray_flags(replicas: int, cpus: int) -> list[str]:
    """``edgesplit cloud`` flags for the Ray tier: ``replicas`` fixed, ``cpus`` CPUs each.

    Each replica runs ONNX Runtime with one thread per CPU (the default).
    """
    return [
        "--ray",
        "--min-replicas",
        str(replicas),
        "--max-replicas",
        str(replicas),
        "--replica-cpus",
        str(cpus),
    ]


def sample(bundle: Bundle, batch: int) -> np.ndarray:
    """``batch`` of the bundle's test inputs, or seeded random ones of the input shape."""
    path = bundle.root / "data" / "test.npz"
    if path.is_file():
        with np.load(path) as data:
            return np.ascontiguousarray(data["inputs"][:batch], dtype=np.float32)
    shape = bundle.manifest.model.input.shape
    return np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)


def cut_values(bundle: Bundle, cuts: Sequence[Cut], x: np.ndarray) -> dict[str, np.ndarray]:
    """What an edge sends at each cut for input ``x``: the tensor its head computes."""
    from edge_node.head import HeadRunner

    runner = HeadRunner(bundle, threads=1)
    start = (bundle.manifest.model.input.name, x)
    return {
        c.id: np.ascontiguousarray(runner.run(segment_chain(bundle.manifest, c), start, None).value)
        for c in cuts
    }


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, bytes (from /proc)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return int(match.group(1)) * 1024
