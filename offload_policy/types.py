"""Values the policy reads and returns: observations, decisions, predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from edgesplit.errors import PolicyError


@dataclass(frozen=True)
class Observation:
    """What the edge knows when it decides, all in SI units.

    Attributes:
        bandwidth_bps: uplink bandwidth estimate, bits per second.
        rtt_s: round-trip time to the cloud, seconds.
        cloud_available: whether the cloud answered recently.
        cloud_queue_s: the cloud's last reported queueing delay, seconds.
        battery_level: state of charge in [0, 1], ``None`` when unknown.
        charging: whether the device is on a charger.
        slo_s: latency service-level objective, seconds (``None``: none).
        accuracy_floor: lowest acceptable expected accuracy in [0, 1].
        edge_factor: how many times slower the edge runs than its profile says
            (the closed-loop correction, :mod:`offload_policy.corrections`; 1: as profiled).
        cloud_factor: the same for the cloud's tails.
        expected_queue_s: the cloud queueing delay its recent replies make typical,
            seconds; predictions count the larger of it and ``cloud_queue_s``.
    """

    bandwidth_bps: float
    rtt_s: float = 0.0
    cloud_available: bool = True
    cloud_queue_s: float = 0.0
    battery_level: float | None = None
    charging: bool = True
    slo_s: float | None = None
    accuracy_floor: float = 0.0
    edge_factor: float = 1.0
    cloud_factor: float = 1.0
    expected_queue_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("edge_factor", "cloud_factor"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise PolicyError(f"observation {name}={value!r}: expected a finite number > 0")
        for name in ("bandwidth_bps", "rtt_s", "cloud_queue_s", "expected_queue_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or math.isnan(value) or value < 0:
                raise PolicyError(f"observation {name}={value!r}: expected a number >= 0")
        if self.battery_level is not None and not 0.0 <= self.battery_level <= 1.0:
            raise PolicyError(f"observation battery_level={self.battery_level}: expected 0..1")
        if not 0.0 <= self.accuracy_floor <= 1.0:
            raise PolicyError(f"observation accuracy_floor={self.accuracy_floor}: expected 0..1")

    @property
    def queue_s(self) -> float:
        """The queueing delay predictions count: the last report or the typical one, larger."""
        return max(self.cloud_queue_s, self.expected_queue_s)


@dataclass(frozen=True)
class Decision:
    """Where to split, how confident an exit must be, and how to encode.

    ``exit_threshold=None`` disables early exits.
    """

    cut: str
    exit_threshold: float | None
    codec: str


@dataclass(frozen=True)
class Prediction:
    """Expected figures of one decision under one observation.

    Attributes:
        latency_s: expected end-to-end latency, seconds.
        edge_compute_s: expected compute time on the edge, seconds.
        transfer_s: expected time on the wire (uplink), seconds.
        cloud_s: expected cloud time (queue + tail), seconds.
        bytes_sent: expected bytes sent per request.
        exit_rates: probability of leaving at each exit before the cut.
        accuracy: expected end-to-end accuracy (nan when not calibrated).
    """

    latency_s: float
    edge_compute_s: float
    transfer_s: float
    cloud_s: float
    bytes_sent: float
    exit_rates: tuple[float, ...]
    accuracy: float


class Policy(Protocol):
    """What the edge node and the simulator ask for decisions: every policy is one.

    The state is the policy's own (``None`` for the static ones): the caller keeps
    it between requests and hands it back, so a policy holds nothing mutable.
    """

    @property
    def name(self) -> str:
        """The policy's name, for logs, metrics and reports."""
        ...

    def initial_state(self) -> Any:
        """The state before the first request."""
        ...

    def decide(self, observation: Observation, state: Any, now: float) -> tuple[Decision, Any]:
        """A decision for the next request, and the policy's next state."""
        ...
