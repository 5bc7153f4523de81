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
and ``PowerReading.problems`` says which file was wrong and how.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from edgesplit.errors import ConfigError, EdgesplitError
from offload_policy.battery import Battery

SYSFS_ROOT = Path("/")
POWER_SUPPLY_DIR = "sys/class/power_supply"
I2C_DEVICES_DIR = "sys/bus/i2c/devices"
POWERCAP_DIR = "sys/class/powercap"

INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
"""Names of a Jetson's whole-board input rail, in order of preference."""

MONITOR_KINDS = ("jetson", "power_supply", "rapl", "simulated")
"""Monitor kinds, in the order ``detect_monitor("auto")`` tries them."""

DEFAULT_SIMULATED_BATTERY = Battery(capacity_wh=20.0)
"""The simulated battery when none is given (the policy's default capacity)."""

# "Not charging" is a battery held on the charger (e.g. at a charge threshold):
# the device runs from the mains, which is what ``charging`` means to the policy.
_STATUS_ON_CHARGER = {"Charging": True, "Full": True, "Not charging": True, "Discharging": False}
_INA3221_SHUNT_SUM_CHANNEL = 7


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
    """A source of power and battery readings."""

    def read(self, now: float) -> PowerReading:
        """Read the source at the caller's time ``now`` (seconds); never raises on bad files."""
        ...

    def describe(self) -> str:
        """What this monitor reads, for the edge's start-up report."""
        ...


class _Files:
    """Reads sysfs files for one reading, turning bad contents into ``None`` plus a problem."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def text(self, path: Path) -> str | None:
        try:
            return path.read_text(errors="replace").strip()
        except FileNotFoundError:
            self.problems.append(f"{path}: missing")
        except OSError as exc:
            self.problems.append(f"{path}: unreadable ({exc.strerror or exc})")
        return None

    def number(self, path: Path, *, signed: bool = False) -> float | None:
        text = self.text(path)
        if text is None:
            return None
        try:
            value = float(text.split()[0]) if text else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            self.problems.append(f"{path}: not a number: {text[:40]!r}")
            return None
        if value < 0 and not signed:
            self.problems.append(f"{path}: negative value {value:g}")
            return None
        return value


# --- Linux power_supply ---------------------------------------------------------------


class PowerSupplyMonitor:
    """A Linux battery: level, charging state and power draw from /sys/class/power_supply.

    Level comes from ``capacity`` (percent), else ``energy_now/energy_full`` (µWh),
    else ``charge_now/charge_full`` (µAh); charging from the battery's ``status``,
    else any charger's ``online``; power from ``power_now`` (µW), else
    ``current_now`` (µA) x ``voltage_now`` (µV). The kernel signs current
    (negative while discharging), so its magnitude is the draw. The files a
    battery has are found once: one that disappears later is reported as missing.
    """

    def __init__(self, root: Path = SYSFS_ROOT, battery: str | None = None) -> None:
        """Find the battery (the first of type Battery, or the one named ``battery``).

        Raises:
            ConfigError: no such battery; the message names the directory searched.
        """
        self._class_dir = root / POWER_SUPPLY_DIR
        self._dir = _find_battery(self._class_dir, battery)
        self.name = self._dir.name
        has = {f.name for f in self._dir.iterdir()}
        self._level_files: list[tuple[str, ...]] = [
            pair
            for pair in (
                ("capacity",),
                ("energy_now", "energy_full"),
                ("charge_now", "charge_full"),
            )
            if set(pair) <= has
        ]
        self._power_files: list[tuple[str, ...]] = [
            pair for pair in (("power_now",), ("current_now", "voltage_now")) if set(pair) <= has
        ]
        self._has_status = "status" in has

    def describe(self) -> str:
        """What this monitor reads."""
        level = " or ".join("/".join(pair) for pair in self._level_files) or "nothing"
        power = " or ".join("*".join(pair) for pair in self._power_files) or "nothing"
        charging = "status, else chargers' online" if self._has_status else "chargers' online"
        return (
            f"power_supply battery {self._dir}: level from {level}; charging from {charging}; "
            f"power from {power}"
        )

    def read(self, now: float) -> PowerReading:
        """Read the battery's files."""
        files = _Files()
        level, level_from = self._level(files)
        charging, charging_from = self._charging(files)
        power_w, power_from = self._power(files)
        parts = [p for p in (level_from, charging_from, power_from) if p]
        what = "+".join(parts) if parts else "(nothing readable)"
        return PowerReading(
            at_s=now,
            battery_level=level,
            charging=charging,
            power_w=power_w,
            rails={self.name: power_w} if power_w is not None else {},
            source=f"power_supply {self.name} {what}",
            problems=tuple(files.problems),
        )

    def _level(self, files: _Files) -> tuple[float | None, str | None]:
        for pair in self._level_files:
            if pair == ("capacity",):
                percent = files.number(self._dir / "capacity")
                if percent is not None and percent <= 100:
                    return percent / 100.0, "capacity"
                if percent is not None:
                    files.problems.append(f"{self._dir / 'capacity'}: {percent:g} is above 100")
                continue
            left, full = (files.number(self._dir / name) for name in pair)
            if full == 0:
                files.problems.append(f"{self._dir / pair[1]}: 0, cannot give a level")
            elif left is not None and full is not None:
                # Worn batteries may report now slightly above full.
                return min(1.0, left / full), "/".join(pair)
        return None, None

    def _charging(self, files: _Files) -> tuple[bool | None, str | None]:
        status = files.text(self._dir / "status") if self._has_status else None
        if status in _STATUS_ON_CHARGER:
            return _STATUS_ON_CHARGER[status], "status"
        if status not in (None, "Unknown"):
            files.problems.append(f"{self._dir / 'status'}: unknown status {status!r}")
        online = [files.number(d / "online") for d in self._chargers()]
        known = [value for value in online if value is not None]
        if known:
            return any(value > 0 for value in known), "charger online"
        return None, None

    def _power(self, files: _Files) -> tuple[float | None, str | None]:
        for pair in self._power_files:
            if pair == ("power_now",):
                microwatts = files.number(self._dir / "power_now", signed=True)
                if microwatts is not None:
                    return abs(microwatts) / 1e6, "power_now"
                continue
            microamps = files.number(self._dir / "current_now", signed=True)
            microvolts = files.number(self._dir / "voltage_now")
            if microamps is not None and microvolts is not None:
                return abs(microamps) * microvolts / 1e12, "current_now*voltage_now"
        return None, None

    def _chargers(self) -> list[Path]:
        """Supplies that are not batteries and say whether they are plugged in."""
        # Rescanned at each read: USB-C chargers appear and vanish.
        if not self._class_dir.is_dir():
            return []
        return [
            d
            for d in sorted(self._class_dir.iterdir())
            if d != self._dir and (d / "online").exists() and _supply_type(d) != "Battery"
        ]


def _supply_type(supply: Path) -> str | None:
    try:
        return (supply / "type").read_text(errors="replace").strip()
    except OSError:
        return None


def _find_battery(class_dir: Path, name: str | None) -> Path:
    if name is not None:
        supply = class_dir / name
        kind = _supply_type(supply)
        if kind != "Battery":
            found = "no type file" if kind is None else f"type={kind}"
            raise ConfigError(f"{supply}: not a battery ({found}); list {class_dir} for names")
        return supply
    if class_dir.is_dir():
        for supply in sorted(class_dir.iterdir()):
            # scope=Device marks a peripheral's battery (a wireless mouse), not ours.
            scope = supply / "scope"
            if _supply_type(supply) == "Battery" and not (
                scope.exists() and scope.read_text(errors="replace").strip() == "Device"
            ):
                return supply
    raise ConfigError(f"{class_dir}: no power_supply of type Battery")


# --- Jetson INA3221 rails ------------------------------------------------------------


@dataclass(frozen=True)
class _Rail:
    """One INA3221 channel: power from mW (JetPack 4) or from mV x mA (JetPack 5+)."""

    name: str
    where: str
    power_mw: Path | None = None
    volt_mv: Path | None = None
    curr_ma: Path | None = None

    def read_w(self, files: _Files) -> float | None:
        if self.power_mw is not None:
            milliwatts = files.number(self.power_mw)
            return None if milliwatts is None else milliwatts / 1e3
        assert self.volt_mv is not None and self.curr_ma is not None
        millivolts = files.number(self.volt_mv)
        milliamps = files.number(self.curr_ma)
        if millivolts is None or milliamps is None:
            return None
        return millivolts * milliamps / 1e6


class JetsonMonitor:
    """The INA3221 power rails of a Jetson; the board's power is its input rail.

    The input rail is the first of VDD_IN, POM_5V_IN, VIN found; a board with none
    of them (AGX Xavier, AGX Orin) reports the sum of its rails, and says so.
    Channels labelled NC (not connected) and channel 7 (sum of shunt voltages)
    are skipped.
    """

    def __init__(self, root: Path = SYSFS_ROOT) -> None:
        """Find every ina3221 device and its rails.

        Raises:
            ConfigError: no ina3221 rail; the message names the directory searched.
        """
        self._devices_dir = root / I2C_DEVICES_DIR
        self._rails = _find_rails(self._devices_dir)
        if not self._rails:
            raise ConfigError(
                f"{self._devices_dir}: no ina3221 power rails (looked for */name containing "
                "'ina3221' with hwmon/hwmon*/in*_label or iio:device*/rail_name_*)"
            )
        names = [rail.name for rail in self._rails]
        self._input = next((self._rails[names.index(n)] for n in INPUT_RAILS if n in names), None)

    @property
    def rail_names(self) -> tuple[str, ...]:
        """The rails read, in sysfs order."""
        return tuple(rail.name for rail in self._rails)

    def describe(self) -> str:
        """What this monitor reads."""
        rails = ", ".join(f"{r.name} ({r.where})" for r in self._rails)
        total = (
            f"input rail {self._input.name}"
            if self._input
            else f"sum of rails (no {'/'.join(INPUT_RAILS)} rail)"
        )
        return f"jetson ina3221 under {self._devices_dir}: rails {rails}; power = {total}"

    def read(self, now: float) -> PowerReading:
        """Read every rail."""
        files = _Files()
        rails: dict[str, float] = {}
        for rail in self._rails:
            watts = rail.read_w(files)
            if watts is not None:
                rails[rail.name] = watts
        if self._input is not None:
            power_w = rails.get(self._input.name)
            source = f"ina3221 {self._input.where} {self._input.name}"
        else:
            # A partial sum would understate the draw: all rails or nothing.
            power_w = sum(rails.values()) if len(rails) == len(self._rails) else None
            source = f"ina3221 sum of {'+'.join(r.name for r in self._rails)}"
        return PowerReading(
            at_s=now, power_w=power_w, rails=rails, source=source, problems=tuple(files.problems)
        )


def _find_rails(devices_dir: Path) -> list[_Rail]:
    rails: list[_Rail] = []
    if not devices_dir.is_dir():
        return rails
    for device in sorted(devices_dir.iterdir()):
        try:
            chip = (device / "name").read_text(errors="replace")
        except OSError:
            continue
        if "ina3221" not in chip:
            continue
        found = [r for hwmon in sorted(device.glob("hwmon/hwmon*")) for r in _hwmon_rails(hwmon)]
        found += [r for iio in sorted(device.glob("iio:device*")) for r in _iio_rails(iio)]
        taken = {rail.name for rail in rails}
        for rail in found:
            if rail.name in taken:
                rail = replace(rail, name=f"{rail.name}@{device.name}")
            rails.append(rail)
    return rails


def _channels(folder: Path, pattern: str) -> list[tuple[int, str]]:
    """(channel, label) for label files matching ``pattern``, skipping NC channels."""
    channels = []
    for path in folder.iterdir():
        match = re.fullmatch(pattern, path.name)
        if match is None:
            continue
        try:
            label = path.read_text(errors="replace").strip()
        except OSError:
            continue
        if label and "NC" not in label:
            channels.append((int(match.group(1)), label))
    return sorted(channels)


def _hwmon_rails(hwmon: Path) -> list[_Rail]:
    return [
        _Rail(label, hwmon.name, volt_mv=hwmon / f"in{n}_input", curr_ma=hwmon / f"curr{n}_input")
        for n, label in _channels(hwmon, r"in(\d+)_label")
        if n != _INA3221_SHUNT_SUM_CHANNEL
    ]


def _iio_rails(iio: Path) -> list[_Rail]:
    return [
        _Rail(label, iio.name, power_mw=iio / f"in_power{n}_input")
        for n, label in _channels(iio, r"rail_name_(\d+)")
    ]


# --- Intel RAPL ------------------------------------------------------------------------


@dataclass
class _Domain:
    name: str
    dir: Path
    max_range_uj: float | None
    last_uj: float | None = None
    last_s: float = 0.0
    energy_j: float = 0.0


class RaplMonitor:
    """Intel RAPL package (or psys) energy counters; power is the change between reads.

    Counters wrap at ``max_energy_range_uj``: read at least every few minutes (one
    wrap is undone, two between reads cannot be seen). The platform's ``psys``
    domain, where present, already holds the packages and is the power reported.
    The first read gives no power, only the counters' baseline.
    """

    def __init__(self, root: Path = SYSFS_ROOT) -> None:
        """Find the top-level RAPL domains (``intel-rapl:N``) and check they can be read.

        Raises:
            ConfigError: no RAPL domain, or its counters cannot be read; the message
                names the path.
        """
        self._base = root / POWERCAP_DIR
        files = _Files()
        self._domains = [
            _Domain(
                name=files.text(d / "name") or d.name,
                dir=d,
                max_range_uj=files.number(d / "max_energy_range_uj"),
            )
            for d in sorted(self._base.glob("intel-rapl:*"))
            if re.fullmatch(r"intel-rapl:\d+", d.name)
        ]
        if not self._domains:
            raise ConfigError(f"{self._base}: no intel-rapl:N powercap domain")
        psys = [d for d in self._domains if d.name == "psys"]
        self._total = psys or self._domains
        if any(files.number(d.dir / "energy_uj") is None for d in self._total):
            # Linux >= 5.10 makes energy_uj readable by root only.
            raise ConfigError(
                f"{self._base}: RAPL counters cannot be read ({'; '.join(files.problems)}); "
                "run as root or grant read access to energy_uj"
            )
        self._setup_problems = files.problems

    def describe(self) -> str:
        """What this monitor reads."""
        total = "+".join(d.name for d in self._total)
        problems = f" (at start: {'; '.join(self._setup_problems)})" if self._setup_problems else ""
        return (
            f"rapl energy_uj under {self._base}: power = change of {total} between reads{problems}"
        )

    def read(self, now: float) -> PowerReading:
        """Read every domain's counter."""
        files = _Files()
        rails: dict[str, float] = {}
        fresh: set[str] = set()
        for domain in self._domains:
            counted, watts = _advance(domain, now, files)
            if counted:
                fresh.add(domain.name)
            if watts is not None:
                rails[domain.name] = watts
        names = [d.name for d in self._total]
        power_w = sum(rails[n] for n in names) if all(n in rails for n in names) else None
        counted_all = all(n in fresh for n in names)
        energy_j = sum(d.energy_j for d in self._total) if counted_all else None
        source = f"rapl {'+'.join(names)} energy_uj"
        if counted_all and power_w is None and not files.problems:
            source += " (first read: power from the next)"
        return PowerReading(
            at_s=now,
            power_w=power_w,
            rails=rails,
            energy_j=energy_j,
            source=source,
            problems=tuple(files.problems),
        )


def _advance(domain: _Domain, now: float, files: _Files) -> tuple[bool, float | None]:
    """Take a domain's counter at ``now``: (whether it was read, watts since the last read)."""
    counter = domain.dir / "energy_uj"
    raw = files.number(counter)
    if raw is None:
        return False, None
    last_uj, last_s = domain.last_uj, domain.last_s
    domain.last_uj, domain.last_s = raw, now
    if last_uj is None:
        return True, None
    delta_uj = raw - last_uj
    if delta_uj < 0:
        if domain.max_range_uj is None:
            files.problems.append(f"{counter}: went back and max_energy_range_uj is unknown")
            return True, None
        delta_uj += domain.max_range_uj
    domain.energy_j += delta_uj / 1e6
    if now <= last_s:
        files.problems.append(f"{counter}: read twice at {now}s, no interval for a power")
        return True, None
    return True, delta_uj / 1e6 / (now - last_s)


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
