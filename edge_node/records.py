"""The edge node's values: its configuration, one request's outcome, the cloud's health."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgesplit.errors import ConfigError


@dataclass(frozen=True)
class EdgeConfig:
    """How the edge node talks to the cloud and what it assumes.

    Attributes:
        timeout_s: deadline for the cloud's reply after sending, seconds.
        backoff_s: first pause after a cloud failure; doubles up to ``max_backoff_s``.
        max_backoff_s: longest pause before the cloud is probed again.
        bandwidth_bps: the uplink bandwidth assumed until one is measured.
        fixed_bandwidth: tell the policy ``bandwidth_bps`` always (no live estimate).
        rtt_s: the round-trip time the policy is told; ``None``: measured.
        estimator: bandwidth estimator (``tracked``, ``harmonic``, ``ewma``, ``last``,
            ``robust``).
        pipeline_depth: requests in flight at once in :meth:`EdgeNode.stream`.
        slo_s: latency objective passed to the policy (``None``: none).
        accuracy_floor: lowest expected accuracy the policy may choose.
        radio: radio power model for the energy attributed to transfers.
        device: device power model for the energy attributed to compute.
        power_interval_s: how often the power monitor is read, seconds.
        queue_memory_s: how long the cloud's reported queue delay is believed.
        corrections: feed measured head, tail and queue times back into the policy's
            predictions (:mod:`offload_policy.corrections`); off: trust the profile.
    """

    timeout_s: float = 1.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    bandwidth_bps: float = 10e6
    fixed_bandwidth: bool = False
    rtt_s: float | None = None
    estimator: str = "tracked"
    pipeline_depth: int = 1
    slo_s: float | None = None
    accuracy_floor: float = 0.0
    radio: str = "wifi"
    device: str = "jetson-nano-10w"
    power_interval_s: float = 1.0
    queue_memory_s: float = 1.0
    corrections: bool = True

    def __post_init__(self) -> None:
        for name in ("timeout_s", "backoff_s", "max_backoff_s", "bandwidth_bps"):
            value = getattr(self, name)
            if not value > 0 or math.isinf(value):
                raise ConfigError(f"edge {name}={value!r}: expected a number > 0")
        if self.max_backoff_s < self.backoff_s:
            raise ConfigError(
                f"edge max_backoff_s={self.max_backoff_s} < backoff_s={self.backoff_s}"
            )
        if not 1 <= self.pipeline_depth <= 16:
            raise ConfigError(f"edge pipeline_depth={self.pipeline_depth}: expected 1..16")


@dataclass(frozen=True)
class Outcome:
    """How one request was answered.

    Attributes:
        prediction: predicted class per row.
        finished: ``exit_*`` (an early exit), ``cloud``, ``edge`` (edge-only
            cut) or ``fallback`` (the cloud failed; finished locally).
        cut: the cut the policy chose.
        latency_s: wall time from input to answer, seconds.
        edge_compute_s: ONNX Runtime time on the edge, seconds.
        bytes_sent: bytes put on the wire for this request.
        cloud_compute_s: the cloud's reported tail time, seconds.
        reason: why a fallback happened (``timeout``, ``unreachable``,
            ``busy``, an error code), else ``None``.
        cloud_queue_s: the cloud's reported queueing time, seconds.
        energy_j: energy attributed to the request by the power model, joules.
        threshold: the exit threshold used (``None``: exits off).
        codec: the codec the cut tensor was (or would have been) sent with.
        bundle: the id of the bundle that answered.
    """

    prediction: np.ndarray
    finished: str
    cut: str
    latency_s: float
    edge_compute_s: float
    bytes_sent: int = 0
    cloud_compute_s: float = 0.0
    reason: str | None = None
    cloud_queue_s: float = 0.0
    energy_j: float = 0.0
    threshold: float | None = None
    codec: str = ""
    bundle: str = ""


@dataclass
class CloudHealth:
    """Whether the cloud may be used, with exponential backoff and probing after failures."""

    backoff_s: float
    max_backoff_s: float
    failures: int = 0
    down_until: float = 0.0

    @property
    def up(self) -> bool:
        """True until a failure, and again once the cloud answered."""
        return self.failures == 0

    def available(self, now: float) -> bool:
        """True when the cloud is up or its backoff has run out."""
        return now >= self.down_until

    def failed(self, now: float) -> None:
        """Record a failure: stay away for backoff x 2^(failures-1), capped."""
        self.failures += 1
        pause = min(self.max_backoff_s, self.backoff_s * 2 ** (self.failures - 1))
        self.down_until = now + pause

    def succeeded(self) -> None:
        """Record an answer: the cloud is up again."""
        self.failures = 0
        self.down_until = 0.0


__all__ = ["CloudHealth", "EdgeConfig", "Outcome"]
