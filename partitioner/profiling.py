"""Time sub-models and measure activation sizes on the machine at hand.

Every figure here is measured, not assumed: latency is the median (and p95)
of repeated ONNX Runtime runs after a warm-up, on the execution provider the
session really uses; sizes come from encoding real activations with each
wire codec.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

import wire
from edgesplit.bundle import Timing


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
