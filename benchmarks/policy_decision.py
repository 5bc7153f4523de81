"""How long one policy decision takes: 50 cuts x 20 thresholds x 4 codecs.

Builds a synthetic bundle manifest of that size (figures drawn at random,
the shapes of the data are real: segments, two exits, calibration tables),
then times ``AdaptivePolicy.decide`` over a sweep of observations. The target
is a median under 200 microseconds. Side by side: the table evaluation alone
(latency and energy arrays) and the whole decision, each as profiled and with
the closed-loop corrections on (edge and cloud factors away from 1 and an
expected queue, as the edge node passes them: offload_policy/corrections.py).

Run: ``python benchmarks/policy_decision.py``
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import numpy as np

from edgesplit.bundle import (
    Cut,
    CutTensor,
    DeviceProfile,
    ExitCalibration,
    Manifest,
    ModelInfo,
    Segment,
    TensorSpec,
    Timing,
)
from offload_policy.adaptive import AdaptivePolicy, PolicyConfig
from offload_policy.types import Observation

CUTS, THRESHOLDS, CODECS = 50, 20, ("raw", "fp16", "int8", "int8+lz4")
EXITS = {10: "exit_1", 25: "exit_2"}


def synthetic_manifest(seed: int = 0) -> Manifest:
    """A manifest with ``CUTS`` cuts, two exits, ``THRESHOLDS`` thresholds, four codecs."""
    rng = np.random.default_rng(seed)
    stops = sorted(EXITS)
    segments: dict[str, Segment] = {}
    cuts: list[Cut] = []
    edge: dict[str, Timing] = {}
    cloud: dict[str, Timing] = {}
    for i in range(CUTS):
        bounds = [0, *[s for s in stops if 0 < s <= i]]
        if i and bounds[-1] != i:
            bounds.append(i)
        head = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            seg = f"c{a:02d}__c{b:02d}"
            segments[seg] = Segment(
                seg, f"edge/{seg}.onnx", (f"c{a:02d}",), (f"c{b:02d}",), EXITS.get(b)
            )
            edge.setdefault(seg, Timing(*(2 * [float(rng.uniform(1e-4, 5e-3) * (b - a))]), 30))
            head.append(seg)
        kind = "input" if i == 0 else "output" if i == CUTS - 1 else "inner"
        raw = float(rng.uniform(1e3, 1e6))
        tail = None if kind == "output" else f"m__tail__c{i:02d}"
        if tail:
            cloud[tail] = Timing(*(2 * [float(rng.uniform(1e-4, 1e-2))]), 30)
        cuts.append(
            Cut(
                id=f"c{i:02d}",
                index=i,
                kind=kind,
                tensors=(CutTensor(f"t{i}", f"c{i:02d}", (4,), "float32", 16),),
                head=tuple(head),
                exits=tuple(EXITS[s] for s in stops if s <= i),
                tail=tail,
                raw_bytes=int(raw),
                encoded_bytes={"raw": raw, "fp16": raw / 2, "int8": raw / 4, "int8+lz4": raw / 5},
            )
        )
    grid = tuple(float(t) for t in np.linspace(0.5, 0.999, THRESHOLDS))
    rates = tuple((0.3 * (1 - t), 0.4 * (1 - t)) for t in grid)
    calibration = ExitCalibration(
        thresholds=grid,
        exits=("exit_1", "exit_2"),
        rate=rates,
        accuracy=tuple((0.9, 0.93) for _ in grid),
        remaining_accuracy=tuple((0.92, 0.91, 0.9) for _ in grid),
        final_accuracy=0.92,
        samples=1000,
    )
    return Manifest(
        model=ModelInfo("m", (TensorSpec("input", (4,)),), ("out",), ("exit_1", "exit_2")),
        cuts=tuple(cuts),
        segments=segments,
        profiles={
            "edge": DeviceProfile("edge", {}, "CPU", 1, 1, edge),
            "cloud": DeviceProfile("cloud", {}, "CPU", 1, 1, cloud),
        },
        calibration=calibration,
        files={},
        codecs=CODECS,
        sample_source="synthetic",
        created_by="benchmark",
    )


def observations(corrected: bool, n: int = 2000) -> list[Observation]:
    """A sweep of observations; ``corrected``: with the closed-loop corrections on."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        o = Observation(
            float(rng.uniform(1e5, 1e8)),
            float(rng.uniform(0, 0.1)),
            battery_level=float(rng.uniform(0, 1)),
            charging=bool(rng.integers(0, 2)),
            slo_s=0.1,
            accuracy_floor=0.9,
        )
        if corrected:
            o = replace(
                o,
                edge_factor=float(rng.uniform(0.5, 3.0)),
                cloud_factor=float(rng.uniform(0.5, 3.0)),
                expected_queue_s=float(rng.uniform(0, 0.02)),
            )
        out.append(o)
    return out


def timed(policy: AdaptivePolicy, sweep: list[Observation]) -> tuple[list[float], list[float]]:
    """Microseconds of the latency+energy arrays and of the whole decision, per observation."""
    state = None
    for o in sweep[:100]:
        _, state = policy.decide(o, state, 0.0)
    table_us, decide_us = [], []
    for o in sweep:
        factors = (o.edge_factor, o.cloud_factor)
        start = time.perf_counter()
        policy.table.latency(o.bandwidth_bps, o.rtt_s, o.queue_s, *factors)
        policy.table.energy(
            o.bandwidth_bps, o.rtt_s, policy.radio, policy.power, o.queue_s, *factors
        )
        table_us.append((time.perf_counter() - start) * 1e6)
        start = time.perf_counter()
        _, state = policy.decide(o, state, 0.0)
        decide_us.append((time.perf_counter() - start) * 1e6)
    return table_us, decide_us


def main() -> None:
    """Print the median and p95 time of one decision, as profiled and with corrections on."""
    manifest = synthetic_manifest()
    policy = AdaptivePolicy(manifest, PolicyConfig())
    print(
        f"{len(policy.table)} decisions ({CUTS} cuts x {THRESHOLDS} thresholds "
        f"x {len(CODECS)} codecs, where they apply)"
    )
    medians = []
    for label, corrected in (("as profiled", False), ("corrections on", True)):
        table_us, decide_us = timed(policy, observations(corrected))
        for name, values in (("latency+energy arrays", table_us), ("whole decision", decide_us)):
            p95 = float(np.percentile(values, 95))
            print(
                f"{label:>14} {name:>22}: median {statistics.median(values):7.1f} us, "
                f"p95 {p95:7.1f} us"
            )
        medians.append((label, statistics.median(decide_us)))
    for label, median in medians:
        verdict = "met" if median < 200 else "MISSED"
        print(f"target < 200 us median, {label}: {verdict} ({median:.1f} us)")


if __name__ == "__main__":
    main()
