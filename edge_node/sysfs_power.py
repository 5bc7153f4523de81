"""Reading sysfs power sensors: a Linux battery and Intel RAPL energy counters.

- ``power_supply``: a Linux battery under /sys/class/power_supply;
- ``rapl``: Intel RAPL energy counters under /sys/class/powercap.

A Jetson's INA3221 rails are read by :mod:`edge_node.jetson_power`, with the
:class:`SysfsFiles` reader of this module. Every reader takes the filesystem
``root`` so tests point it at a constructed sysfs tree. Bad sysfs contents never
raise during ``read``: the field is ``None`` and ``PowerReading.problems`` says
which file was wrong and how.

:mod:`edge_node.power` (``detect_monitor``) imports and re-exports these readers;
they and it take the reading and the protocol from :mod:`edge_node.power_monitor`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from edge_node.power_monitor import PowerReading, Sensor
from edgesplit.errors import ConfigError

SYSFS_ROOT = Path("/")
POWER_SUPPLY_DIR = "sys/class/power_supply"
POWERCAP_DIR = "sys/class/powercap"

# "Not charging" is a battery held on the charger (e.g. at a charge threshold):
# the device runs from the mains, which is what ``charging`` means to the policy.
_STATUS_ON_CHARGER = {"Charging": True, "Full": True, "Not charging": True, "Discharging": False}


class SysfsFiles:
    """Reads sysfs files for one reading, turning bad contents into ``None`` plus a problem."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def text(self, path: Path) -> str | None:
        """The stripped contents of ``path``, or ``None`` (and a problem) if unreadable."""
        try:
            return path.read_text(errors="replace").strip()
        except FileNotFoundError:
            self.problems.append(f"{path}: missing")
        except OSError as exc:
            self.problems.append(f"{path}: unreadable ({exc.strerror or exc})")
        return None

    def number(self, path: Path, *, signed: bool = False) -> float | None:
        """The number ``path`` holds, or ``None`` (and a problem); negatives only if ``signed``."""
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


class PowerSupplyMonitor(Sensor):
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
        files = SysfsFiles()
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

    def _level(self, files: SysfsFiles) -> tuple[float | None, str | None]:
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

    def _charging(self, files: SysfsFiles) -> tuple[bool | None, str | None]:
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

    def _power(self, files: SysfsFiles) -> tuple[float | None, str | None]:
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


# --- Intel RAPL ------------------------------------------------------------------------


@dataclass
class _Domain:
    name: str
    dir: Path
    max_range_uj: float | None
    last_uj: float | None = None
    last_s: float = 0.0
    energy_j: float = 0.0


class RaplMonitor(Sensor):
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
        files = SysfsFiles()
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
        files = SysfsFiles()
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


def _advance(domain: _Domain, now: float, files: SysfsFiles) -> tuple[bool, float | None]:
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


__all__ = [
    "POWERCAP_DIR",
    "POWER_SUPPLY_DIR",
    "SYSFS_ROOT",
    "PowerSupplyMonitor",
    "RaplMonitor",
    "SysfsFiles",
]
