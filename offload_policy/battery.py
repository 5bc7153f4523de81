"""A battery the policy reads and the experiments drain: capacity, level, charging."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from edgesplit.errors import PolicyError


@dataclass(frozen=True)
class Battery:
    """State of charge of the edge device's battery.

    Attributes:
        capacity_wh: full capacity, watt-hours.
        level: state of charge in [0, 1].
        charging: on a charger (the policy then optimises latency only).
    """

    capacity_wh: float
    level: float = 1.0
    charging: bool = False

    def __post_init__(self) -> None:
        if not self.capacity_wh > 0 or math.isinf(self.capacity_wh):
            raise PolicyError(f"battery capacity_wh={self.capacity_wh}: expected a number > 0")
        if not 0.0 <= self.level <= 1.0:
            raise PolicyError(f"battery level={self.level}: expected 0..1")

    @property
    def energy_j(self) -> float:
        """Energy left, joules."""
        return self.capacity_wh * 3600.0 * self.level

    @property
    def empty(self) -> bool:
        """Whether nothing is left."""
        return self.level <= 0.0

    def drain(self, joules: float) -> Battery:
        """The battery after spending ``joules`` (nothing is drained while charging)."""
        if math.isnan(joules) or joules < 0:
            raise PolicyError(f"drain joules={joules}: expected a number >= 0")
        if self.charging:
            return self
        level = max(0.0, self.level - joules / (self.capacity_wh * 3600.0))
        return replace(self, level=level)


def energy_budget_j(
    battery: Battery, target_lifetime_s: float, requests_per_s: float, reserve: float = 0.0
) -> float:
    """Joules one inference may spend so the battery lasts ``target_lifetime_s`` more.

    budget = (energy left - reserve) / (expected remaining inferences)
    """
    if target_lifetime_s <= 0 or requests_per_s <= 0:
        raise PolicyError("target lifetime and request rate must be > 0")
    usable = max(0.0, battery.energy_j - reserve * battery.capacity_wh * 3600.0)
    return usable / (target_lifetime_s * requests_per_s)
