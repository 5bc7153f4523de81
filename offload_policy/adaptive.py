"""The edgesplit policy: split point, exit threshold and codec from the live link and battery.

For every decision the bundle allows (kept cut x threshold x codec) it
predicts expected latency (exits taken with their calibrated probabilities),
expected edge energy and expected accuracy, then picks the fastest decision
that meets, in order of precedence:

1. the cloud's state: unavailable or overloaded (reported queue delay above
   ``max_queue_s``) leaves only edge-only decisions;
2. the accuracy floor (if nothing meets it, the most accurate decisions);
3. the battery: below ``low_battery`` and not charging, an energy budget per
   inference = energy left / expected remaining inferences, so the battery
   lasts the target lifetime (if nothing fits, the least energy);
4. the latency SLO (if nothing meets it, the fastest).

Hysteresis: the current decision is kept while it is still allowed and
within ``hysteresis`` (relative) of the best, so estimate noise does not
make the choice flap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgesplit.bundle import Manifest
from edgesplit.errors import PolicyError
from offload_policy.battery import Battery, energy_budget_j
from offload_policy.energy import DevicePower, device_power, radio
from offload_policy.table import DecisionTable
from offload_policy.types import Decision, Observation


@dataclass(frozen=True)
class PolicyConfig:
    """What the policy assumes about the device and what it aims for.

    Attributes:
        radio: radio power model (``wifi``, ``lte``, ``3g``).
        device: device power model (see :data:`offload_policy.energy.DEVICES`).
        compute_w: measured compute power, watts, overriding the table.
        hysteresis: relative latency gain needed to leave the current decision.
        battery_aware: apply the energy budget when the battery is low.
        low_battery: level below which the budget applies.
        capacity_wh: battery capacity, watt-hours.
        target_lifetime_s: how long the battery should still last.
        requests_per_s: expected request rate.
        max_queue_s: cloud queue delay above which the cloud counts as overloaded.
    """

    radio: str = "wifi"
    device: str = "jetson-nano-10w"
    compute_w: float | None = None
    hysteresis: float = 0.10
    battery_aware: bool = True
    low_battery: float = 0.5
    capacity_wh: float = 20.0
    target_lifetime_s: float = 8 * 3600.0
    requests_per_s: float = 1.0
    max_queue_s: float = 1.0

    def __post_init__(self) -> None:
        radio(self.radio)
        device_power(self.device)
        if self.hysteresis < 0 or math.isnan(self.hysteresis):
            raise PolicyError(f"hysteresis={self.hysteresis}: expected >= 0")
        if not 0 <= self.low_battery <= 1:
            raise PolicyError(f"low_battery={self.low_battery}: expected 0..1")

    def power(self) -> DevicePower:
        """The device's power model, with the measured compute power if any."""
        base = device_power(self.device)
        if self.compute_w is None:
            return base
        return DevicePower(f"{base.name} (measured)", self.compute_w, base.idle_w)


@dataclass(frozen=True)
class PolicyState:
    """What the policy carries between requests: the current decision's index."""

    current: int | None = None


class AdaptivePolicy:
    """Chooses cut, threshold and codec per request; see the module docstring."""

    name = "edgesplit"

    def __init__(
        self, manifest: Manifest, config: PolicyConfig | None = None, *, oracle: bool = False
    ) -> None:
        self.config = config or PolicyConfig()
        self.table = DecisionTable.build(manifest)
        self.radio = radio(self.config.radio)
        self.power = self.config.power()
        self.oracle = oracle
        if oracle:
            self.name = "oracle"

    def initial_state(self) -> PolicyState:
        """The state before the first request."""
        return PolicyState()

    def scores(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latency, energy and the allowed mask of every decision under ``observation``."""
        t = self.table
        latency = t.latency(observation.bandwidth_bps, observation.rtt_s, observation.cloud_queue_s)
        energy = t.energy(
            observation.bandwidth_bps,
            observation.rtt_s,
            self.radio,
            self.power,
            observation.cloud_queue_s,
        )
        allowed = np.ones(len(t), dtype=bool)
        overloaded = observation.cloud_queue_s > self.config.max_queue_s
        if not observation.cloud_available or overloaded:
            allowed &= t.edge_only
        accurate = allowed & (t.accuracy >= observation.accuracy_floor - 1e-12)
        if not accurate.any():
            best = t.accuracy[allowed].max()
            accurate = allowed & (t.accuracy >= best - 1e-12)
        candidates = accurate
        budget = self.energy_budget(observation)
        if budget is not None:
            thrifty = candidates & (energy <= budget)
            if thrifty.any():
                candidates = thrifty
            else:
                least = energy[candidates].min()
                candidates = candidates & (energy <= least * (1 + 1e-9))
        if observation.slo_s is not None:
            timely = candidates & (latency <= observation.slo_s)
            if timely.any():
                candidates = timely
        return latency, energy, candidates

    def energy_budget(self, observation: Observation) -> float | None:
        """Joules per inference when the battery is low and not charging, else ``None``."""
        c = self.config
        level = observation.battery_level
        if not c.battery_aware or level is None or observation.charging or level >= c.low_battery:
            return None
        battery = Battery(c.capacity_wh, level, charging=False)
        return energy_budget_j(battery, c.target_lifetime_s, c.requests_per_s)

    def decide(
        self, observation: Observation, state: PolicyState | None, now: float
    ) -> tuple[Decision, PolicyState]:
        """The decision for the next request, and the state to pass next time."""
        latency, _, candidates = self.scores(observation)
        masked = np.where(candidates, latency, np.inf)
        best = int(np.argmin(masked))
        current = None if state is None else state.current
        if (
            not self.oracle
            and current is not None
            and candidates[current]
            and masked[current] <= masked[best] * (1.0 + self.config.hysteresis)
        ):
            best = current
        return self.table.decisions[best], PolicyState(best)
