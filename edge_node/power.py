"""Battery and power monitors that feed the offload policy, and joules per request.

Four sources, tried in this order by ``detect_monitor("auto")``:

- ``jetson``: the INA3221 power rails of an NVIDIA Jetson (Orin, Xavier, Nano),
  JetPack 5+ hwmon layout or JetPack 4 iio layout;
- ``power_supply``: a Linux battery under /sys/class/power_supply;
- ``rapl``: Intel RAPL energy counters under /sys/class/powercap;
- ``simulated``: an ``offload_policy`` battery drained by the joules the caller
  reports, for machines without a sensor.

Every monitor takes the filesystem ``root`` so tests point it at a constructed
sysfs tree. Bad sysfs contents never raise during ``read``: the field is ``None``
and ``PowerReading.problems`` says which file was wrong and how. The reading and the
monitors' protocol live in :mod:`edge_node.power_monitor`, the sysfs readers in
:mod:`edge_node.sysfs_power` and :mod:`edge_node.jetson_power`; this module holds
the simulated battery and the detection, and re-exports the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge_node.jetson_power import I2C_DEVICES_DIR as I2C_DEVICES_DIR
from edge_node.jetson_power import INPUT_RAILS, JetsonMonitor
from edge_node.power_monitor import PowerMonitor, PowerReading
from edge_node.sysfs_power import POWER_SUPPLY_DIR as POWER_SUPPLY_DIR
from edge_node.sysfs_power import POWERCAP_DIR as POWERCAP_DIR
from edge_node.sysfs_power import SYSFS_ROOT, PowerSupplyMonitor, RaplMonitor
from edgesplit.errors import ConfigError, EdgesplitError
from offload_policy.battery import Battery

MONITOR_KINDS = ("jetson", "power_supply", "rapl", "simulated")
"""Monitor kinds, in the order ``detect_monitor("auto")`` tries them."""

DEFAULT_SIMULATED_BATTERY = Battery(capacity_wh=20.0)
"""The simulated battery when none is given (the policy's default capacity)."""


# --- simulated ---------------------------------------------------------------------------


class SimulatedMonitor:
    """A modelled battery, drained by the joules the caller says it spent (``spend``).

    For machines with no sensor: the energy comes from the caller's model (e.g.
    ``offload_policy.energy``), and every reading's source says so.
    """

    def __init__(self, battery: Battery = DEFAULT_SIMULATED_BATTERY, reason: str = "") -> None:
        """Start from ``battery``; ``reason`` says why no sensor is used (for ``describe``)."""
        self._battery = battery
        self._reason = reason
        self._spent_j = 0.0
        self._last: tuple[float, float] | None = None  # (now, spent_j) at the last read

    @property
    def battery(self) -> Battery:
        """The battery now."""
        return self._battery

    def spend(self, joules: float) -> None:
        """Drain the battery by ``joules`` (nothing is drained while charging).

        Raises:
            PolicyError: ``joules`` is negative or NaN.
        """
        self._battery = self._battery.drain(joules)
        self._spent_j += joules

    def set_charging(self, charging: bool) -> None:
        """Plug the device in or out."""
        self._battery = Battery(self._battery.capacity_wh, self._battery.level, charging)

    def describe(self) -> str:
        """What this monitor reads."""
        why = f" ({self._reason})" if self._reason else ""
        return (
            f"simulated battery capacity_wh={self._battery.capacity_wh:g}, drained by the "
            f"energy the edge's model reports{why}"
        )

    def read(self, now: float) -> PowerReading:
        """The modelled state; power is the reported joules averaged since the last read."""
        power_w = None
        if self._last is not None and now > self._last[0]:
            power_w = (self._spent_j - self._last[1]) / (now - self._last[0])
        self._last = (now, self._spent_j)
        return PowerReading(
            at_s=now,
            battery_level=self._battery.level,
            charging=self._battery.charging,
            power_w=power_w,
            energy_j=self._spent_j,
            source=f"simulated battery capacity_wh={self._battery.capacity_wh:g} (model joules)",
        )


# --- choosing a monitor, and energy between reads -------------------------------------------


def detect_monitor(
    kind: str = "auto", root: Path = SYSFS_ROOT, simulated: Battery | None = None
) -> PowerMonitor:
    """The monitor of ``kind``, or for ``"auto"`` the first found of jetson, power_supply, rapl.

    ``"auto"`` falls back to a simulated battery (``simulated``, or a 20 Wh one).

    Raises:
        ConfigError: an unknown kind, or a named kind absent under ``root``.
    """
    battery = simulated or DEFAULT_SIMULATED_BATTERY
    makers: dict[str, Callable[[], PowerMonitor]] = {
        "jetson": lambda: JetsonMonitor(root),
        "power_supply": lambda: PowerSupplyMonitor(root),
        "rapl": lambda: RaplMonitor(root),
        "simulated": lambda: SimulatedMonitor(battery),
    }
    wanted = kind.strip().lower().replace("-", "_")
    if wanted == "auto":
        absent = []
        for name in MONITOR_KINDS[:-1]:
            try:
                return makers[name]()
            except ConfigError as exc:
                absent.append(str(exc))
        return SimulatedMonitor(battery, reason="no sensor: " + "; ".join(absent))
    if wanted not in makers:
        raise ConfigError(
            f"power monitor kind={kind!r}: expected auto or one of {', '.join(MONITOR_KINDS)}"
        )
    try:
        return makers[wanted]()
    except ConfigError as exc:
        raise ConfigError(f"power monitor kind={wanted} is not available: {exc}") from exc


class EnergyMeter:
    """Joules spent between successive readings, to attribute energy to requests.

    Between two readings that both carry an energy counter (RAPL, simulated), the
    joules are the counter's change; otherwise the trapezoid of the two powers
    times the interval. An interval where neither is known adds to ``unmeasured_s``.
    """

    def __init__(self) -> None:
        self.total_j = 0.0
        self.unmeasured_s = 0.0
        self._last: PowerReading | None = None

    def sample(self, reading: PowerReading) -> float:
        """Joules spent since the previous reading (0.0 for the first one).

        Raises:
            EdgesplitError: ``reading`` is older than the previous one (pass a
                monotonic clock to the monitor).
        """
        last, self._last = self._last, reading
        if last is None:
            return 0.0
        dt = reading.at_s - last.at_s
        if dt < 0:
            self._last = last
            raise EdgesplitError(
                f"energy meter: reading at_s={reading.at_s} is before the previous "
                f"at_s={last.at_s}; read monitors with a monotonic clock"
            )
        if reading.energy_j is not None and last.energy_j is not None:
            joules = max(0.0, reading.energy_j - last.energy_j)
        elif reading.power_w is not None and last.power_w is not None:
            joules = 0.5 * (last.power_w + reading.power_w) * dt
        else:
            self.unmeasured_s += dt
            joules = 0.0
        self.total_j += joules
        return joules


__all__ = [
    "DEFAULT_SIMULATED_BATTERY",
    "INPUT_RAILS",
    "MONITOR_KINDS",
    "EnergyMeter",
    "JetsonMonitor",
    "PowerMonitor",
    "PowerReading",
    "PowerSupplyMonitor",
    "RaplMonitor",
    "SimulatedMonitor",
    "detect_monitor",
]
