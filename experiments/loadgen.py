"""Closed-loop load from many simulated edges: each sends one request after another.

The edges are spread over a few spawned processes (no state shared with the
caller, no Ray). Each edge has its own ZeroMQ DEALER; the edges of a process
share one ZeroMQ context and one thread (:mod:`experiments.closed_loop`), so
64 edges cost a few processes, not 64 threads contending for a GIL, and the
load generators take little of the cores the cloud runs on. Every request is
timed and classified by its answer: ``ok`` (a result), the code of a refusal
(``busy``, ...), or ``lost`` (no answer within 30 s).

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloud_node.process import start_cloud_process, stop_process
from edgesplit.bundle import Bundle, Cut, segment_chain
from experiments.closed_loop import LOST_AFTER_S, EdgeLoad, EncodedLoad, Sample, edge_process
from experiments.harness import ExperimentError

#: Most processes the edges are spread over.
PROCESSES = 4
#: Longest wait for the spawned processes to import, connect and report ready.
READY_TIMEOUT_S = 60.0


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


def request_bytes(bundle_id: str, load: EdgeLoad) -> int:
    """Bytes one request of ``load`` puts on the wire (header and tensor frames)."""
    return EncodedLoad.of(bundle_id, load).nbytes


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
    encoded: dict[int, EncodedLoad] = {}
    for load in loads:
        if id(load) not in encoded:
            encoded[id(load)] = EncodedLoad.of(bundle_id, load)
    ctx = mp.get_context("spawn")
    procs_n = max(1, min(len(loads), processes))
    ready: mp.Queue = ctx.Queue()
    results: mp.Queue = ctx.Queue()
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=edge_process,
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
    value: np.ndarray | Mapping[str, np.ndarray],
    edges: int,
    seconds: float,
    warmup_s: float = 2.0,
) -> tuple[list[Sample], float]:
    """Run ``edges`` closed-loop edges sending ``value`` at ``cut`` (raw codec).

    ``value`` is the cut's tensors by name, or a single-tensor cut's array.

    They run for ``warmup_s + seconds``.

    Returns every sample, and when the measured window (after the warm-up) began.
    """
    values = value if isinstance(value, Mapping) else {cut.name: value}
    done = run_edges(endpoint, bundle.id, [EdgeLoad(cut, values)] * edges, seconds, warmup_s)
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


def cut_values(
    bundle: Bundle, cuts: Sequence[Cut], x: np.ndarray
) -> dict[str, dict[str, np.ndarray]]:
    """What an edge sends at each cut for input ``x``: the tensors its head computes, by name."""
    from edge_node.head import HeadRunner

    runner = HeadRunner(bundle, threads=1)
    start = {bundle.manifest.model.input.name: x}
    values = {}
    for c in cuts:
        head = runner.run(segment_chain(bundle.manifest, c), start, None)
        values[c.id] = {n: np.ascontiguousarray(v) for n, v in head.tensors(c.names).items()}
    return values


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, bytes (from /proc)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return int(match.group(1)) * 1024


__all__ = [
    "EdgeLoad",
    "LoadRun",
    "Sample",
    "cut_values",
    "in_window",
    "load",
    "node",
    "ray_flags",
    "request_bytes",
    "rss_bytes",
    "run_edges",
    "run_load",
    "sample",
    "summarize",
    "summarize_by_cut",
]
