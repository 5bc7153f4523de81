"""What a power monitor is: the protocol every source implements and the reading it returns.

The sysfs readers (:mod:`edge_node.sysfs_power`, :mod:`edge_node.jetson_power`), the
simulated battery and ``detect_monitor`` (:mod:`edge_node.power`) all build on this
module, which imports none of them: the monitors form no import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class PowerReading:
    """One read of a power monitor.

    Attributes:
        at_s: the caller's clock at the read, seconds.
        battery_level: state of charge in [0, 1], or ``None`` when unknown.
        charging: on a charger, or ``None`` when unknown.
        power_w: the device's power draw, watts, or ``None`` when unknown.
        rails: power per rail or domain that was read, watts.
        energy_j: a cumulative energy counter, joules since the monitor started,
            for sources that count energy (RAPL, simulated); ``None`` otherwise.
        source: exactly what was read, e.g. ``"ina3221 hwmon3 VDD_IN"``.
        problems: what was wrong with the files read (missing, not a number, ...).
    """

    at_s: float
    battery_level: float | None = None
    charging: bool | None = None
    power_w: float | None = None
    rails: Mapping[str, float] = field(default_factory=dict)
    energy_j: float | None = None
    source: str = ""
    problems: tuple[str, ...] = ()


class PowerMonitor(Protocol):
    """A source of power and battery readings.

    Every monitor takes the joules the edge's energy model attributes to each
    request (:meth:`spend`): a simulated battery drains by them, a sensor measures
    the device itself and leaves them aside. So the node hands every monitor the
    same figures and never asks which kind it holds.
    """

    def read(self, now: float) -> PowerReading:
        """Read the source at the caller's time ``now`` (seconds); never raises on bad files."""
        ...

    def describe(self) -> str:
        """What this monitor reads, for the edge's start-up report."""
        ...

    def spend(self, joules: float) -> None:
        """Joules the edge's model attributes to one request (a sensor leaves them aside)."""
        ...


class Sensor:
    """The part every sensor shares: it measures, so the model's joules change nothing."""

    def spend(self, joules: float) -> None:
        """Leave the model's figure aside: the next read measures what was spent."""


__all__ = ["PowerMonitor", "PowerReading", "Sensor"]
