"""Replay a bandwidth trace against a bundle's profile and a policy.

One request arrives every ``interval_s``. For each, the policy decides from
what the edge knows (its bandwidth estimate, built from its own transfers and
idle-time probes; the oracle is given the trace's true bandwidth instead);
the request then ends at an exit or is sent, drawn from the calibrated exit
rates with a seeded generator; a transfer takes as long as the trace says
(the piecewise-constant throughput integrated from the moment the head
finishes), plus the RTT and the tail's time. Energy follows
:mod:`offload_policy.energy`; the battery, when given, drains by it.

Everything here is a model of the link and the device driven by measured
figures (the profile, the exits' calibration, the real traces); no network
is involved. The real-link experiments run the real edge and cloud nodes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from edgesplit.bundle import Manifest, Timing
from edgesplit.errors import ConfigError, PolicyError
from experiments.traces import Trace
from offload_policy.adaptive import AdaptivePolicy, PolicyConfig
from offload_policy.baselines import Edgent, cloud_only, edge_only, neurosurgeon
from offload_policy.battery import Battery
from offload_policy.cost import branches
from offload_policy.energy import radio
from offload_policy.estimators import (
    ESTIMATORS,
    ThroughputEstimator,
    ThroughputSample,
    make_estimator,
)
from offload_policy.types import Decision, Observation

POLICIES = ("edgesplit", "oracle", "neurosurgeon", "edgent", "edge-only", "cloud-only")
#: Bytes of framing per offloaded request (msgpack header and ZeroMQ frames), measured.
HEADER_BYTES = 120


class Policy(Protocol):
    """What the simulator drives: the same interface the edge node uses."""

    @property
    def name(self) -> str:
        """The policy's name in reports."""
        ...

    def initial_state(self) -> Any:
        """The state before the first request."""
        ...

    def decide(self, observation: Observation, state: Any, now: float) -> tuple[Decision, Any]:
        """The decision for a request and the next state."""
        ...


@dataclass(frozen=True)
class SimConfig:
    """The scenario.

    Attributes:
        interval_s: time between requests.
        rtt_s: round-trip time of the link.
        slo_s: latency objective (``None``: none).
        accuracy_floor: lowest expected accuracy the policy may choose.
        bandwidth_scale: multiply the trace's throughput (x10: a WiFi-class link).
        edge_slowdown: the edge device is this many times slower than the
            machine the bundle's edge profile was measured on.
        policy: the device and battery assumptions of the policies.
        battery_level: starting level of a battery of ``policy.capacity_wh``
            (``None``: mains power, no battery).
        probe_interval_s: an idle-time probe measures the link when no
            transfer did for this long (``None``: no probes).
        duration_s: how long to replay (default: the trace's length).
        seed: seed of the exit draws.
        estimator: the edge's bandwidth estimator: ``harmonic`` (mean of the
            last 5 samples, the default), ``robust`` (RobustMPC's lower bound
            over it: fewer over-estimates, a higher mean latency), ``ewma``, ``last``.
    """

    interval_s: float = 1.0
    rtt_s: float = 0.04
    slo_s: float | None = None
    accuracy_floor: float = 0.0
    bandwidth_scale: float = 1.0
    edge_slowdown: float = 1.0
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    battery_level: float | None = None
    probe_interval_s: float | None = 2.0
    duration_s: float | None = None
    seed: int = 0
    estimator: str = "harmonic"

    def __post_init__(self) -> None:
        for name in ("interval_s", "bandwidth_scale", "edge_slowdown"):
            value = getattr(self, name)
            if not value > 0 or math.isinf(value):
                raise ConfigError(f"{name}={value}: expected a finite number > 0")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(
                f"--estimator {self.estimator}: unknown; choose from {', '.join(ESTIMATORS)}"
            )
        if self.rtt_s < 0 or math.isnan(self.rtt_s):
            raise ConfigError(f"rtt_s={self.rtt_s}: expected >= 0")


@dataclass(frozen=True)
class SimResult:
    """Figures of one (trace, policy) run."""

    trace: str
    family: str
    policy: str
    requests: int
    mean_latency_s: float
    p50_latency_s: float
    p95_latency_s: float
    p99_latency_s: float
    energy_j: float
    energy_per_request_j: float
    accuracy: float
    slo_miss_rate: float
    offload_rate: float
    decision_changes: int
    battery_level: float | None
    latencies_s: tuple[float, ...] = field(repr=False, default=())
    #: (time s, battery level after the request) per request, when on a battery.
    battery_timeline: tuple[tuple[float, float], ...] = field(repr=False, default=())

    def to_json(self) -> dict[str, Any]:
        """The figures, without the per-request latencies."""
        data = {
            k: v for k, v in self.__dict__.items() if k not in ("latencies_s", "battery_timeline")
        }
        return data


def slower_edge(manifest: Manifest, factor: float) -> Manifest:
    """``manifest`` as if measured on an edge device ``factor`` times slower."""
    if factor == 1.0:
        return manifest
    edge = manifest.profiles["edge"]
    timings = {
        k: Timing(v.median_s * factor, v.p95_s * factor, v.runs) for k, v in edge.timings.items()
    }
    return replace(manifest, profiles={**manifest.profiles, "edge": replace(edge, timings=timings)})


def named_policy(
    name: str,
    manifest: Manifest,
    config: PolicyConfig,
    *,
    mean_bandwidth_bps: float | None = None,
    rtt_s: float = 0.0,
    deadline_s: float | None = None,
) -> Policy:
    """The policy ``name`` (one of :data:`POLICIES`) for this bundle.

    Neurosurgeon plans its static cut for ``mean_bandwidth_bps`` and
    ``rtt_s``; Edgent meets ``deadline_s``. The simulator and the real-link
    worker (experiments/worker.py) both build their policies here.
    """
    if name == "edgesplit":
        return AdaptivePolicy(manifest, config)
    if name == "oracle":
        return AdaptivePolicy(manifest, config, oracle=True)
    if name == "edge-only":
        return edge_only(manifest)
    if name == "cloud-only":
        return cloud_only(manifest)
    if name == "neurosurgeon":
        if mean_bandwidth_bps is None:
            raise ConfigError("neurosurgeon: needs the mean bandwidth it plans its cut for")
        return neurosurgeon(manifest, mean_bandwidth_bps, rtt_s)
    if name == "edgent":
        if deadline_s is None:
            raise ConfigError("edgent: needs the deadline it meets")
        return Edgent(manifest, deadline_s)
    raise ConfigError(f"--policy {name}: unknown; choose from {', '.join(POLICIES)}")


def make_policy(name: str, manifest: Manifest, trace: Trace, config: SimConfig) -> Policy:
    """The policy ``name`` for this bundle, trace and scenario."""
    return named_policy(
        name,
        manifest,
        config.policy,
        mean_bandwidth_bps=float(np.mean(trace.mbps)) * 1e6 * config.bandwidth_scale,
        rtt_s=config.rtt_s,
        deadline_s=config.slo_s or 0.1,
    )


def _estimator(name: str, first_bps: float) -> ThroughputEstimator:
    try:
        return make_estimator(name).update(ThroughputSample(0.0, first_bps))
    except PolicyError as exc:
        raise ConfigError(str(exc)) from exc


def simulate(
    manifest: Manifest,
    trace: Trace,
    policy_name: str,
    config: SimConfig | None = None,
) -> SimResult:
    """Run one policy over one trace; see the module docstring."""
    config = config or SimConfig()
    manifest = slower_edge(manifest, config.edge_slowdown)
    policy = make_policy(policy_name, manifest, trace, config)
    scale = config.bandwidth_scale
    power = config.policy.power()
    link_radio = radio(config.policy.radio)
    duration = config.duration_s or trace.duration_s
    rng = np.random.default_rng([config.seed, zlib.crc32(trace.name.encode())])
    branch_cache: dict[Decision, tuple] = {}
    accuracy_of: dict[Decision, float] = {}
    tails = manifest.profiles["cloud"]
    state = policy.initial_state()
    estimator = _estimator(config.estimator, trace.bandwidth_bps(0.0) * scale)
    last_sample = 0.0
    battery = (
        None
        if config.battery_level is None
        else Battery(config.policy.capacity_wh, config.battery_level)
    )
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []
    energy_total = 0.0
    correct = 0.0
    misses = 0
    offloads = 0
    changes = 0
    previous: Decision | None = None
    t = 0.0
    while t < duration and (battery is None or not battery.empty):
        true_bps = trace.bandwidth_bps(t) * scale
        estimate = true_bps if policy_name == "oracle" else estimator.estimate()
        observation = Observation(
            bandwidth_bps=max(0.0, estimate),
            rtt_s=config.rtt_s,
            battery_level=None if battery is None else battery.level,
            charging=battery is None,
            slo_s=config.slo_s,
            accuracy_floor=config.accuracy_floor,
        )
        decision, state = policy.decide(observation, state, t)
        changes += previous is not None and decision != previous
        previous = decision
        if decision not in branch_cache:
            options = branches(manifest, decision)
            probs = np.array([b.probability for b in options])
            branch_cache[decision] = (options, probs / probs.sum())
            expected = sum(
                b.probability * (1.0 if math.isnan(b.accuracy) else b.accuracy) for b in options
            )
            accuracy_of[decision] = expected
        options, probs = branch_cache[decision]
        branch = options[int(rng.choice(len(options), p=probs))]
        latency = branch.edge_s
        energy = power.compute_w * branch.edge_s
        if branch.offloaded:
            cut = manifest.cut(decision.cut)
            nbytes = cut.bytes_for(decision.codec) + HEADER_BYTES
            start = t + branch.edge_s
            end = trace.transfer_end(start, nbytes / scale)
            transfer = end - start
            tail_s = tails.seconds(cut.tail) if cut.tail else 0.0
            latency += transfer + config.rtt_s + tail_s
            throughput = nbytes * 8.0 / transfer if transfer > 0 else true_bps
            energy += link_radio.uplink_power_w(throughput) * transfer
            energy += power.idle_w * (config.rtt_s + tail_s)
            estimator = estimator.update(ThroughputSample(end, throughput))
            last_sample = end
            offloads += 1
        elif config.probe_interval_s is not None and t - last_sample >= config.probe_interval_s:
            estimator = estimator.update(ThroughputSample(t, true_bps))
            last_sample = t
        latencies.append(latency)
        energy_total += energy
        # Accuracy is the decision's expectation (no sampling noise); latency and
        # energy follow the drawn branch.
        correct += accuracy_of[decision]
        misses += config.slo_s is not None and latency > config.slo_s
        if battery is not None:
            battery = battery.drain(energy)
            timeline.append((t, battery.level))
        t += config.interval_s
    n = len(latencies)
    if n == 0:
        raise ConfigError(f"{trace.name}: no request fits in {duration} s")
    values = np.array(latencies)
    return SimResult(
        trace=trace.name,
        family=trace.family,
        policy=policy.name if policy_name != "oracle" else "oracle",
        requests=n,
        mean_latency_s=float(values.mean()),
        p50_latency_s=float(np.percentile(values, 50)),
        p95_latency_s=float(np.percentile(values, 95)),
        p99_latency_s=float(np.percentile(values, 99)),
        energy_j=energy_total,
        energy_per_request_j=energy_total / n,
        accuracy=correct / n,
        slo_miss_rate=misses / n,
        offload_rate=offloads / n,
        decision_changes=changes,
        battery_level=None if battery is None else battery.level,
        latencies_s=tuple(latencies),
        battery_timeline=tuple(timeline),
    )


def simulate_all(
    manifest: Manifest,
    traces: Sequence[Trace],
    policies: Sequence[str],
    config: SimConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[SimResult]:
    """Every policy over every trace, in trace order."""
    results = []
    total = len(traces) * len(policies)
    for trace in traces:
        for name in policies:
            results.append(simulate(manifest, trace, name, config))
            if progress:
                progress(len(results), total)
    return results
