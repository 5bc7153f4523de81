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
4. the cloud cost budget per request, where one is set (if nothing fits, the
   cheapest);
5. the latency SLO (if nothing meets it, the fastest).

The fastest is the least latency, or, with ``cost_weight``, the least
latency + ``cost_weight`` x cost (a weighted sum, as SPINN reports server
cost): cost is priced cloud compute-seconds and GB the cloud receives.

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
        price_cloud_s: price of one second of the tail's compute in the cloud.
        price_gb: price of one GB the cloud receives.
        cost_budget: most expected cloud cost per request (``None``: no budget).
        cost_weight: seconds of latency one unit of cost is worth in the objective
            (0: latency alone).
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
    price_cloud_s: float = 0.0
    price_gb: float = 0.0
    cost_budget: float | None = None
    cost_weight: float = 0.0

    def __post_init__(self) -> None:
        radio(self.radio)
        device_power(self.device)
        for name in ("price_cloud_s", "price_gb", "cost_weight"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise PolicyError(f"{name}={value!r}: expected a finite number >= 0")
        if self.cost_budget is not None and not 0 <= self.cost_budget < math.inf:
            raise PolicyError(f"cost_budget={self.cost_budget!r}: expected a finite number >= 0")
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
        # Link-independent: priced once, the compute part apart (a slower cloud bills
        # more seconds: it is scaled by the observation's cloud factor).
        self._compute_cost = self.table.cost(self.config.price_cloud_s, 0.0)
        self._data_cost = self.table.cost(0.0, self.config.price_gb)
        self.cost = self._compute_cost + self._data_cost
        self.oracle = oracle
        if oracle:
            self.name = "oracle"

    def initial_state(self) -> PolicyState:
        """The state before the first request."""
        return PolicyState()

    def scores(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latency, energy and the allowed mask of every decision under ``observation``.

        The profile's times are scaled by the observation's closed-loop
        corrections (``edge_factor``, ``cloud_factor``; see
        :mod:`offload_policy.corrections`).
        """
        t = self.table
        o = observation
        factors = (o.edge_factor, o.cloud_factor)
        latency = t.latency(o.bandwidth_bps, o.rtt_s, o.queue_s, *factors)
        energy = t.energy(o.bandwidth_bps, o.rtt_s, self.radio, self.power, o.queue_s, *factors)
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
        if self.config.cost_budget is not None:
            cost = self.costs(observation)
            affordable = candidates & (cost <= self.config.cost_budget * (1 + 1e-9))
            if affordable.any():
                candidates = affordable
            else:
                least = cost[candidates].min()
                candidates = candidates & (cost <= least * (1 + 1e-9))
        if observation.slo_s is not None:
            timely = candidates & (latency <= observation.slo_s)
            if timely.any():
                candidates = timely
        return latency, energy, candidates

    def costs(self, observation: Observation) -> np.ndarray:
        """Expected cloud cost of every decision; compute billed at the corrected tail time."""
        if observation.cloud_factor == 1.0:
            return self.cost
        return self._compute_cost * observation.cloud_factor + self._data_cost

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
        weight = self.config.cost_weight
        objective = latency + weight * self.costs(observation) if weight else latency
        masked = np.where(candidates, objective, np.inf)
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
