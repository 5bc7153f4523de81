"""Reading a Jetson's power: the INA3221 rails under /sys/bus/i2c/devices.

Both layouts are read: JetPack 5+ (hwmon, millivolts and milliamps per channel)
and JetPack 4 (iio, milliwatts per rail). Like every sysfs reader (see
:mod:`edge_node.sysfs_power`), bad files never raise during ``read``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from edge_node.power_monitor import PowerReading, Sensor
from edge_node.sysfs_power import SYSFS_ROOT, SysfsFiles
from edgesplit.errors import ConfigError

I2C_DEVICES_DIR = "sys/bus/i2c/devices"

INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
"""Names of a Jetson's whole-board input rail, in order of preference."""

_INA3221_SHUNT_SUM_CHANNEL = 7


@dataclass(frozen=True)
class _Rail:
    """One INA3221 channel: power from mW (JetPack 4) or from mV x mA (JetPack 5+)."""

    name: str
    where: str
    power_mw: Path | None = None
    volt_mv: Path | None = None
    curr_ma: Path | None = None

    def read_w(self, files: SysfsFiles) -> float | None:
        if self.power_mw is not None:
            milliwatts = files.number(self.power_mw)
            return None if milliwatts is None else milliwatts / 1e3
        assert self.volt_mv is not None and self.curr_ma is not None
        millivolts = files.number(self.volt_mv)
        milliamps = files.number(self.curr_ma)
        if millivolts is None or milliamps is None:
            return None
        return millivolts * milliamps / 1e6


class JetsonMonitor(Sensor):
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
        files = SysfsFiles()
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


__all__ = ["I2C_DEVICES_DIR", "INPUT_RAILS", "JetsonMonitor"]
