"""Replay a bandwidth trace against a bundle's profile and a policy.

One request arrives every ``interval_s``. For each, the policy decides from
what the edge knows (its bandwidth estimate, built from its own transfers and
idle-time probes; the oracle is given the trace's true bandwidth instead);
the request then ends at an exit or is sent, drawn from the calibrated exit
rates with a seeded generator; a transfer takes as long as the trace says
(the piecewise-constant throughput integrated from the moment the head
finishes), plus the RTT and the tail's time. Energy follows
:mod:`offload_policy.energy`; the battery, when given, drains by it.
With a drift schedule (:mod:`experiments.drift`) the head and the tail take
their profiled time x the schedule's factor at that moment; edgesplit learns
the factors from those times, as the edge node does
(:mod:`offload_policy.corrections`), and the oracle is told them.

Everything here is a model of the link and the device driven by measured
figures (the profile, the exits' calibration, the real traces); no network
is involved. The real-link experiments run the real edge and cloud nodes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgesplit.bundle import Manifest, Timing
from edgesplit.errors import ConfigError, PolicyError
from experiments.drift import DriftSchedule, SpeedModel
from experiments.policies import POLICIES, Policy, named_policy
from experiments.traces import Trace
from offload_policy.adaptive import PolicyConfig
from offload_policy.battery import Battery
from offload_policy.corrections import probe_segment
from offload_policy.cost import branches, default_accuracy_floor
from offload_policy.energy import radio
from offload_policy.estimator_registry import ESTIMATORS, make_estimator
from offload_policy.estimators import ThroughputEstimator, ThroughputSample
from offload_policy.types import Decision, Observation

#: What edgesplit may be told of the speeds (:attr:`SimConfig.corrections`).
CORRECTIONS = ("learn", "told", "off")
#: Bytes of framing per offloaded request (msgpack header and ZeroMQ frames), measured.
HEADER_BYTES = 120


@dataclass(frozen=True)
class SimConfig:
    """The scenario.

    Attributes:
        interval_s: time between requests.
        rtt_s: round-trip time of the link.
        slo_s: latency objective (``None``: none).
        accuracy_floor: lowest expected accuracy the policy may choose (``None``:
            the whole model's accuracy less one point; 0: any trade).
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
        estimator: the edge's bandwidth estimator: ``tracked`` (the default: an
            EWMA of weight 0.8 over its own recent errors on the link,
            :mod:`offload_policy.error_tracking`), ``harmonic`` (mean of the
            last 5 samples, the default before), ``robust`` (RobustMPC's lower
            bound over it: fewer over-estimates, a higher mean latency),
            ``ewma``, ``last``.
        drift: the edge's and cloud's speed over time relative to the profile
            (``None``: as profiled throughout; see :mod:`experiments.drift`).
        corrections: what edgesplit is told of the device's and cloud's speed:
            ``learn``: the closed-loop corrections learned from the times it
            measures (:mod:`offload_policy.corrections`), as the edge node does;
            ``told``: the true factors (a speed oracle); ``off``: nothing, the
            profile is trusted. The oracle is always told the true speeds.
        compute_jitter: lognormal sigma of each head and tail time around the
            profile x drift (0: exactly that; 0.1: a device's ~10% spread).
    """

    interval_s: float = 1.0
    rtt_s: float = 0.04
    slo_s: float | None = None
    accuracy_floor: float | None = None
    bandwidth_scale: float = 1.0
    edge_slowdown: float = 1.0
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    battery_level: float | None = None
    probe_interval_s: float | None = 2.0
    duration_s: float | None = None
    seed: int = 0
    estimator: str = "tracked"
    drift: DriftSchedule | None = None
    corrections: str = "learn"
    compute_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.corrections not in CORRECTIONS:
            raise ConfigError(
                f"corrections={self.corrections!r}: expected one of {', '.join(CORRECTIONS)}"
            )
        if not 0 <= self.compute_jitter < 10:
            raise ConfigError(f"compute_jitter={self.compute_jitter}: expected 0..10")
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
class RequestRecord:
    """One simulated request.

    Attributes:
        t_s: when it arrived, seconds.
        latency_s: how long it took, seconds.
        decision: what the policy chose.
        edge_factor: the edge speed factor the policy was told (1: the profile).
        cloud_factor: the cloud speed factor the policy was told.
    """

    t_s: float
    latency_s: float
    decision: Decision
    edge_factor: float
    cloud_factor: float
    #: The bandwidth the policy was told and the trace's true rate at ``t_s``, bits/s.
    bandwidth_bps: float = math.nan
    true_bps: float = math.nan


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
    #: The accuracy floor the policies were held to.
    accuracy_floor: float = 0.0
    #: Cloud cost per 1,000 requests (the policy's prices; 0 where none are set).
    cost_per_1k: float = 0.0
    latencies_s: tuple[float, ...] = field(repr=False, default=())
    #: (time s, battery level after the request) per request, when on a battery.
    battery_timeline: tuple[tuple[float, float], ...] = field(repr=False, default=())
    #: Per request: when, how long, what was decided, and the speed factors the policy was told.
    requests_log: tuple[RequestRecord, ...] = field(repr=False, default=())

    def to_json(self) -> dict[str, Any]:
        """The figures, without the per-request latencies."""
        data = {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("latencies_s", "battery_timeline", "requests_log")
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


def _estimator(
    name: str, first_bps: float, make: Callable[[], ThroughputEstimator] | None = None
) -> ThroughputEstimator:
    try:
        return (make() if make is not None else make_estimator(name)).update(
            ThroughputSample(0.0, first_bps)
        )
    except PolicyError as exc:
        raise ConfigError(str(exc)) from exc


def simulate(
    manifest: Manifest,
    trace: Trace,
    policy_name: str,
    config: SimConfig | None = None,
    *,
    estimator_factory: Callable[[], ThroughputEstimator] | None = None,
    oracle_lag_s: float = 0.0,
) -> SimResult:
    """Run one policy over one trace; see the module docstring.

    ``estimator_factory`` makes the edge's bandwidth estimator instead of
    ``config.estimator`` (to compare estimators that have no name).
    ``oracle_lag_s``: the oracle is told the true rate this long before each
    request instead of at it (0: the bound; one request interval: the best a
    predictor of the latest measurement could do).
    """
    config = config or SimConfig()
    if not (math.isfinite(oracle_lag_s) and oracle_lag_s >= 0):
        raise ConfigError(f"oracle_lag_s={oracle_lag_s!r}: expected a finite number >= 0")
    floor = floor_in_force(manifest, config)
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
    speed = _speed_model(policy_name, config, trace)
    probe = probe_segment(manifest)
    probe_s = 0.0 if probe is None else manifest.profiles["edge"].seconds(probe)
    log: list[RequestRecord] = []
    estimator = _estimator(config.estimator, trace.bandwidth_bps(0.0) * scale, estimator_factory)
    last_sample = 0.0
    prices = config.policy
    cost = 0.0
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
        estimate = (
            trace.bandwidth_bps(max(0.0, t - oracle_lag_s)) * scale
            if policy_name == "oracle"
            else estimator.estimate()
        )
        edge_factor, cloud_factor = speed.told(t)
        observation = Observation(
            bandwidth_bps=max(0.0, estimate),
            rtt_s=config.rtt_s,
            battery_level=None if battery is None else battery.level,
            charging=battery is None,
            slo_s=config.slo_s,
            accuracy_floor=floor,
            edge_factor=edge_factor,
            cloud_factor=cloud_factor,
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
        edge_s = speed.edge_s(t, branch.edge_s)
        latency = edge_s
        energy = power.compute_w * edge_s
        if branch.offloaded:
            cut = manifest.cut(decision.cut)
            nbytes = cut.bytes_for(decision.codec) + HEADER_BYTES
            start = t + edge_s
            end = trace.transfer_end(start, nbytes / scale)
            transfer = end - start
            tail_s = speed.tail_s(t, tails.seconds(cut.tail)) if cut.tail else 0.0
            if probe_s > 0 and speed.wants_probe(t, edge_s):
                # The edge times its cheapest head segment while the request is in flight
                # (as the edge node does): energy, and latency only where it outlasts the wait.
                probed = speed.edge_s(t, probe_s)
                latency += max(0.0, probed - (transfer + config.rtt_s + tail_s))
                energy += power.compute_w * probed
            latency += transfer + config.rtt_s + tail_s
            cost += tail_s * prices.price_cloud_s + nbytes / 1e9 * prices.price_gb
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
        log.append(
            RequestRecord(t, latency, decision, edge_factor, cloud_factor, estimate, true_bps)
        )
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
        accuracy_floor=floor,
        cost_per_1k=cost * 1000 / n,
        latencies_s=tuple(latencies),
        battery_timeline=tuple(timeline),
        requests_log=tuple(log),
    )


def _speed_model(policy_name: str, config: SimConfig, trace: Trace) -> SpeedModel:
    """The run's true speeds; edgesplit learns them (or not), the oracle is told them."""
    if policy_name == "oracle":
        mode = "told"
    elif policy_name == "edgesplit":
        mode = {"learn": "learn", "told": "told", "off": "profile"}[config.corrections]
    else:
        mode = "profile"
    seed = (config.seed, zlib.crc32(trace.name.encode()), 1)
    return SpeedModel(config.drift, mode, config.compute_jitter, seed)


def floor_in_force(manifest: Manifest, config: SimConfig) -> float:
    """The accuracy floor of a scenario: as given, else the whole model's less one point."""
    if config.accuracy_floor is not None:
        return config.accuracy_floor
    return default_accuracy_floor(manifest)


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


__all__ = [
    "CORRECTIONS",
    "HEADER_BYTES",
    "POLICIES",
    "Policy",
    "RequestRecord",
    "SimConfig",
    "SimResult",
    "floor_in_force",
    "make_policy",
    "named_policy",
    "simulate",
    "simulate_all",
    "slower_edge",
]
