"""Closed-loop load from many simulated edges: each sends one request after another.

The edges are threads spread over a few spawned processes (no state shared
with the caller, no Ray), each with its own ZeroMQ DEALER; every request is
timed and classified by its answer: ``ok`` (a result), the code of a refusal
(``busy``, ...), or ``lost`` (no answer within 30 s). After ``busy`` an edge
waits the delay the cloud announced (1 ms to 1 s), as a real edge keeps its
requests local for that long. Used by the Ray tier
benchmark, the soak script and the load test.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Cut
from edgesplit.runs import start_cloud_process, stop_process

#: An answer slower than this counts as lost.
LOST_AFTER_S = 30.0


@dataclass(frozen=True)
class Sample:
    """One request: when it ended (wall clock), how long it took, how it was answered."""

    at: float
    latency_s: float
    kind: str
    compute_s: float  # the tail's compute time for this request (a batch's, shared); 0 if none


def _edge_thread(
    endpoint: str, bundle_id: str, cut: Cut, value: np.ndarray, until: float, out: list
) -> None:
    meta = {"bundle": bundle_id, "cut": cut.id}
    with CloudClient(endpoint) as client:
        while time.time() < until:
            began = time.perf_counter()
            reply, _ = client.request("infer", {cut.name: value}, meta=meta, timeout_s=LOST_AFTER_S)
            kind = "lost" if reply is None else str(reply.message.meta.get("code", "ok"))
            compute = 0.0
            if reply is not None and reply.message.kind == "result":
                kind = "ok"
                answer = reply.message.meta
                # A batch's compute time, shared by its requests.
                compute = float(answer["compute_s"]) / max(1, int(answer.get("batch", 1)))  # type: ignore[arg-type]
            out.append(Sample(time.time(), time.perf_counter() - began, kind, compute))
            if kind == "busy" and reply is not None:
                # As an edge does: it keeps its requests for the delay the cloud announced
                # (running them locally meanwhile) instead of asking again at once.
                announced = reply.message.meta.get("queue_s", 0.0)
                time.sleep(min(max(float(announced), 0.001), 1.0))  # type: ignore[arg-type]


def _edge_process(
    endpoint: str,
    bundle_id: str,
    cut: Cut,
    value: np.ndarray,
    threads: int,
    start: float,
    until: float,
    results: mp.Queue,
) -> None:
    time.sleep(max(0.0, start - time.time()))
    out: list = []
    workers = [
        threading.Thread(target=_edge_thread, args=(endpoint, bundle_id, cut, value, until, out))
        for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    results.put(out)


def run_load(
    endpoint: str,
    bundle: Bundle,
    cut: Cut,
    value: np.ndarray,
    edges: int,
    seconds: float,
    warmup_s: float = 2.0,
) -> tuple[list[Sample], float]:
    """Run ``edges`` closed-loop edges for ``warmup_s + seconds``.

    Returns every sample, and when the measured window (after the warm-up) began.
    """
    ctx = mp.get_context("spawn")
    procs_n = min(edges, 4)
    per = [edges // procs_n + (1 if i < edges % procs_n else 0) for i in range(procs_n)]
    results: mp.Queue = ctx.Queue()
    start = time.time() + 2.0  # the spawned processes import numpy and zmq meanwhile
    until = start + warmup_s + seconds
    procs = [
        ctx.Process(
            target=_edge_process,
            args=(endpoint, bundle.id, cut, value, n, start, until, results),
        )
        for n in per
    ]
    for p in procs:
        p.start()
    rows = [
        row for _ in procs for row in results.get(timeout=until - time.time() + LOST_AFTER_S + 90)
    ]
    for p in procs:
        p.join()
    return rows, start + warmup_s


def summarize(samples: Sequence[Sample], seconds: float) -> dict[str, float]:
    """Throughput (results/s), latency of results (p50, p99), refusals and losses."""
    kinds = Counter(s.kind for s in samples)
    ok = [s.latency_s for s in samples if s.kind == "ok"]
    compute = [s.compute_s for s in samples if s.kind == "ok"]
    return {
        "compute_ms": statistics.median(compute) * 1e3 if compute else float("nan"),
        "throughput": kinds["ok"] / seconds,
        "p50_ms": statistics.median(ok) * 1e3 if ok else float("nan"),
        "p99_ms": float(np.percentile(ok, 99)) * 1e3 if ok else float("nan"),
        "busy": kinds["busy"],
        "lost": kinds["lost"],
        "other": sum(v for k, v in kinds.items() if k not in ("ok", "busy", "lost")),
    }


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
    return summarize([s for s in samples if s.at >= began], seconds)


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


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, bytes (from /proc)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return int(match.group(1)) * 1024
