"""Time sub-models and measure activation sizes on the machine at hand.

Every figure here is measured, not assumed: latency is the median (and p95)
of repeated ONNX Runtime runs after a warm-up, on the execution provider the
session really uses; sizes come from encoding real activations with each
wire codec.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort

import wire
from edgesplit.bundle import Timing
from edgesplit.onnxrt import create_session

T = TypeVar("T")


@dataclass(frozen=True)
class Repetitions:
    """How many runs to discard and to time for each sub-model."""

    warmup: int = 5
    runs: int = 30

    @classmethod
    def quick(cls) -> Repetitions:
        """Few runs: for tests and smoke checks, not for decisions."""
        return cls(warmup=2, runs=7)


def time_session(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    reps: Repetitions,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Median and p95 latency of ``session.run`` on ``feeds``, in seconds."""
    for _ in range(reps.warmup):
        session.run(None, dict(feeds))
    samples = np.empty(reps.runs)
    for i in range(reps.runs):
        start = clock()
        session.run(None, dict(feeds))
        samples[i] = clock() - start
    return Timing(
        median_s=float(np.median(samples)),
        p95_s=float(np.percentile(samples, 95)),
        runs=reps.runs,
    )


def codec_sizes(activations: np.ndarray, codecs: Sequence[str]) -> dict[str, float]:
    """Mean encoded bytes per sample of a batch of activations, for each codec.

    Each sample is encoded on its own (batch 1), as the edge sends it.
    """
    sizes: dict[str, float] = {}
    for codec in codecs:
        total = 0
        for i in range(activations.shape[0]):
            meta, _ = wire.encode_tensor("t", activations[i : i + 1], codec)
            total += meta.nbytes
        sizes[codec] = total / max(1, activations.shape[0])
    return sizes


def machine_info(session: ort.InferenceSession | None = None) -> dict[str, str]:
    """What the figures were measured on: host, CPU, cores, ONNX Runtime version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": str(os.cpu_count() or 0),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
    }
    if session is not None:
        info["providers"] = ",".join(session.get_providers())
    return info


@dataclass(frozen=True)
class LayerTiming:
    """One kernel as ONNX Runtime ran it (after its graph fusions), in run order.

    Attributes:
        name: the node name in the optimized graph.
        op: the operator (``Conv``, ``FusedConv``, ...).
        provider: the execution provider that ran it.
        output_shape: shape of its first output (batch included).
        output_bytes: bytes of its outputs.
        median_s: median kernel time over the profiled runs, seconds.
        p95_s: 95th percentile kernel time, seconds.
    """

    name: str
    op: str
    provider: str
    output_shape: tuple[int, ...]
    output_bytes: int
    median_s: float
    p95_s: float


def layer_timings(
    model: bytes,
    feeds: Mapping[str, np.ndarray],
    reps: Repetitions,
    providers: Sequence[str],
    threads: int,
    provider_options: Mapping[str, Mapping[str, str]] | None = None,
) -> list[LayerTiming]:
    """Per-kernel latency from ONNX Runtime's node profiling of ``model``.

    The session is warmed up, then profiled over ``reps.runs`` runs; each
    kernel's time is its median across runs. Kernels are those of the
    optimized graph (a Conv with its Relu fused counts once), which is what
    really runs.
    """
    warm = create_session(model, providers, threads, provider_options=provider_options)
    for _ in range(reps.warmup):
        warm.run(None, dict(feeds))
    del warm
    with tempfile.TemporaryDirectory(prefix="edgesplit-ortprof-") as tmp:
        session = create_session(
            model,
            providers,
            threads,
            profile_prefix=str(Path(tmp) / "layers"),
            provider_options=provider_options,
        )
        for _ in range(reps.runs + 1):
            session.run(None, dict(feeds))
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
    durations: dict[str, list[float]] = {}
    first: dict[str, dict] = {}
    runs_seen = 0
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            runs_seen += 1
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        durations.setdefault(name, []).append(float(event.get("dur", 0)) * 1e-6)
        first.setdefault(name, event)
    layers = []
    for name, values in durations.items():
        # The first profiled run still allocates; drop it when there are more.
        samples = np.array(values[1:] if len(values) > 1 else values)
        args = first[name].get("args", {})
        shapes = args.get("output_type_shape") or [{}]
        dims: list[int] = next(iter(shapes[0].values()), []) if shapes and shapes[0] else []
        layers.append(
            LayerTiming(
                name=name,
                op=str(args.get("op_name", "?")),
                provider=str(args.get("provider", "?")),
                output_shape=tuple(int(d) for d in dims),
                output_bytes=int(args.get("output_size", 0) or 0),
                median_s=float(np.median(samples)),
                p95_s=float(np.percentile(samples, 95)),
            )
        )
    return layers


_MEMORY_METHOD = "process peak RSS (VmHWM after /proc/self/clear_refs) minus RSS before"


def _proc_status() -> dict[str, int] | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    found = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) * 1024
    return found if len(found) == 2 else None


def peak_memory(fn: Callable[[], T]) -> tuple[T, int | None, str]:
    """Run ``fn`` and measure how far the process's resident memory rose above its start.

    Linux only: freed heap is first returned to the system (``malloc_trim``)
    and the high-water mark reset (``/proc/self/clear_refs``), so the figure
    is the peak memory ``fn`` needed (session creation included: weights,
    pre-packed kernels, arena). Returns ``(result, bytes or None, method)``;
    ``None`` where the kernel does not allow the measurement.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        before = _proc_status()
    except OSError:
        before = None
    result = fn()
    after = _proc_status()
    if before is None or after is None:
        return result, None, "not measured: /proc/self/clear_refs is not writable here"
    return result, max(0, after["VmHWM"] - before["VmRSS"]), _MEMORY_METHOD
