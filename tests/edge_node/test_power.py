"""Power monitors on constructed sysfs trees: power_supply, Jetson INA3221 rails, RAPL."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.power import (
    EnergyMeter,
    JetsonMonitor,
    PowerReading,
    PowerSupplyMonitor,
    RaplMonitor,
    SimulatedMonitor,
    detect_monitor,
)
from edgesplit.errors import ConfigError, EdgesplitError, PolicyError
from offload_policy.battery import Battery

RAPL_MAX_UJ = 262_143_328_850


def _write(root: Path, files: dict[str, object]) -> None:
    for relative, value in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")


def _supply(name: str, **files: object) -> dict[str, object]:
    return {f"sys/class/power_supply/{name}/{key}": value for key, value in files.items()}


def _hwmon(device: str, hwmon: str, chip: str, channels: dict[int, tuple[str, int, int]]):
    """An ina3221 in the JetPack 5+ layout: channel -> (label, mV, mA)."""
    base = f"sys/bus/i2c/devices/{device}"
    files: dict[str, object] = {f"{base}/name": chip}
    for n, (label, millivolts, milliamps) in channels.items():
        files[f"{base}/hwmon/{hwmon}/in{n}_label"] = label
        files[f"{base}/hwmon/{hwmon}/in{n}_input"] = millivolts
        files[f"{base}/hwmon/{hwmon}/curr{n}_input"] = milliamps
    return files


def _iio(device: str, iio: str, channels: dict[int, tuple[str, int]]) -> dict[str, object]:
    """An ina3221x in the JetPack 4 layout: channel -> (rail name, mW)."""
    base = f"sys/bus/i2c/devices/{device}"
    files: dict[str, object] = {f"{base}/name": "ina3221x"}
    for n, (label, milliwatts) in channels.items():
        files[f"{base}/{iio}/rail_name_{n}"] = label
        files[f"{base}/{iio}/in_power{n}_input"] = milliwatts
    return files


def _rapl(domain: str, name: str, energy_uj: int) -> dict[str, object]:
    base = f"sys/class/powercap/{domain}"
    return {
        f"{base}/name": name,
        f"{base}/energy_uj": energy_uj,
        f"{base}/max_energy_range_uj": RAPL_MAX_UJ,
    }


ORIN_NANO = _hwmon(
    "1-0040",
    "hwmon3",
    "ina3221",
    {
        1: ("VDD_IN", 5048, 1032),
        2: ("VDD_CPU_GPU_CV", 5040, 240),
        3: ("VDD_SOC", 5040, 320),
        7: ("sum of shunt voltages", 1200, 1592),
    },
)
AGX_ORIN = {
    **_hwmon(
        "1-0040",
        "hwmon1",
        "ina3221",
        {
            1: ("VDD_GPU_SOC", 4992, 800),
            2: ("VDD_CPU_CV", 4992, 400),
            3: ("VIN_SYS_5V0", 5000, 600),
            7: ("sum of shunt voltages", 9000, 1800),
        },
    ),
    **_hwmon(
        "1-0041",
        "hwmon2",
        "ina3221",
        {1: ("NC", 0, 0), 2: ("VDDQ_VDD2_1V8AO", 5000, 100), 3: ("NC", 0, 0)},
    ),
    "sys/bus/i2c/devices/1-0050/name": "tmp451",
}
XAVIER_NX = _hwmon(
    "7-0040",
    "hwmon6",
    "ina3221",
    {1: ("VDD_IN", 5000, 1500), 2: ("VDD_CPU_GPU_CV", 5000, 300), 3: ("VDD_SOC", 5000, 500)},
)
NANO_HWMON = _hwmon(
    "6-0040",
    "hwmon0",
    "ina3221",
    {1: ("POM_5V_IN", 5100, 600), 2: ("POM_5V_GPU", 5100, 20), 3: ("POM_5V_CPU", 5100, 120)},
)
NANO_JP4 = _iio("6-0040", "iio:device0", {0: ("POM_5V_IN", 3012), 1: ("POM_5V_GPU", 40)})


# --- power_supply --------------------------------------------------------------------------


def test_battery_discharging_with_power_now(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            **_supply("AC", type="Mains", online=0),
            **_supply("BAT0", type="Battery", capacity=57, status="Discharging"),
            **_supply("BAT0", power_now=8_250_000),
        },
    )
    reading = PowerSupplyMonitor(tmp_path).read(now=3.0)
    assert reading.at_s == 3.0
    assert reading.battery_level == pytest.approx(0.57)
    assert reading.charging is False
    assert reading.power_w == pytest.approx(8.25)  # 8 250 000 µW
    assert reading.rails == {"BAT0": pytest.approx(8.25)}
    assert reading.source == "power_supply BAT0 capacity+status+power_now"
    assert reading.problems == ()


def test_battery_on_charger_with_current_times_voltage(tmp_path: Path) -> None:
    _write(
        tmp_path,
        _supply(
            "BAT1",
            type="Battery",
            capacity=80,
            status="Charging",
            current_now=1_500_000,
            voltage_now=12_000_000,
        ),
    )
    reading = PowerSupplyMonitor(tmp_path).read(now=0.0)
    assert reading.charging is True
    assert reading.power_w == pytest.approx(18.0)  # 1.5 A x 12 V
    assert reading.source == "power_supply BAT1 capacity+status+current_now*voltage_now"


def test_negative_current_is_discharge_and_its_magnitude_is_the_draw(tmp_path: Path) -> None:
    _write(
        tmp_path,
        _supply(
            "BAT0", type="Battery", capacity=40, current_now=-1_200_000, voltage_now=11_400_000
        ),
    )
    reading = PowerSupplyMonitor(tmp_path).read(now=0.0)
    assert reading.power_w == pytest.approx(13.68)  # 1.2 A x 11.4 V
    assert reading.charging is None  # no status and no charger: unknown
    assert reading.problems == ()


@pytest.mark.parametrize(
    ("status", "online", "charging", "via"),
    [
        ("Full", 1, True, "status"),
        ("Not charging", 1, True, "status"),
        ("Unknown", 1, True, "charger online"),
        ("Unknown", 0, False, "charger online"),
    ],
)
def test_charging_from_status_else_charger(
    tmp_path: Path, status: str, online: int, charging: bool, via: str
) -> None:
    _write(
        tmp_path,
        {
            **_supply("BAT0", type="Battery", capacity=90, status=status),
            **_supply("ucsi-source-psy-USBC000:001", type="USB", online=online),
        },
    )
    reading = PowerSupplyMonitor(tmp_path).read(now=0.0)
    assert reading.charging is charging
    assert reading.source == f"power_supply BAT0 capacity+{via}"


def test_level_from_energy_then_from_charge(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            **_supply("BAT0", type="Battery", energy_now=30_000_000, energy_full=50_000_000),
            **_supply("BAT1", type="Battery", charge_now=2_000_000, charge_full=4_000_000),
        },
    )
    by_energy = PowerSupplyMonitor(tmp_path).read(now=0.0)
    assert by_energy.battery_level == pytest.approx(0.6)  # 30 Wh / 50 Wh
    assert by_energy.source == "power_supply BAT0 energy_now/energy_full"
    by_charge = PowerSupplyMonitor(tmp_path, battery="BAT1").read(now=0.0)
    assert by_charge.battery_level == pytest.approx(0.5)  # 2 Ah / 4 Ah
    assert by_charge.source == "power_supply BAT1 charge_now/charge_full"


def test_peripheral_battery_is_not_the_device_battery(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            **_supply("hidpp_battery_0", type="Battery", scope="Device", capacity=5),
            **_supply("macsmc-battery", type="Battery", capacity=75),
        },
    )
    monitor = PowerSupplyMonitor(tmp_path)
    assert monitor.name == "macsmc-battery"
    assert monitor.read(now=0.0).battery_level == pytest.approx(0.75)


def test_corrupt_capacity_falls_back_to_energy_and_says_why(tmp_path: Path) -> None:
    _write(
        tmp_path,
        _supply(
            "BAT0",
            type="Battery",
            capacity="garbage",
            energy_now=45_000_000,
            energy_full=50_000_000,
            status="Discharging",
            current_now=1_000_000,
            voltage_now=-5,
        ),
    )
    reading = PowerSupplyMonitor(tmp_path).read(now=0.0)
    assert reading.battery_level == pytest.approx(0.9)
    assert reading.power_w is None
    assert reading.source == "power_supply BAT0 energy_now/energy_full+status"
    assert len(reading.problems) == 2
    assert reading.problems[0].endswith("BAT0/capacity: not a number: 'garbage'")
    assert reading.problems[1].endswith("BAT0/voltage_now: negative value -5")


def test_capacity_above_100_and_files_gone_mid_run(tmp_path: Path) -> None:
    _write(tmp_path, _supply("BAT0", type="Battery", capacity=50, status="Discharging"))
    monitor = PowerSupplyMonitor(tmp_path)
    assert monitor.read(now=0.0).battery_level == pytest.approx(0.5)
    _write(tmp_path, _supply("BAT0", capacity=180))
    over = monitor.read(now=1.0)
    assert over.battery_level is None
    assert over.problems[0].endswith("BAT0/capacity: 180 is above 100")
    (tmp_path / "sys/class/power_supply/BAT0/capacity").unlink()
    (tmp_path / "sys/class/power_supply/BAT0/status").unlink()
    gone = monitor.read(now=2.0)
    assert (gone.battery_level, gone.charging) == (None, None)
    assert gone.source == "power_supply BAT0 (nothing readable)"
    assert [p.rsplit("/", 1)[1] for p in gone.problems] == ["capacity: missing", "status: missing"]


def test_no_battery_or_not_a_battery(tmp_path: Path) -> None:
    _write(tmp_path, _supply("AC", type="Mains", online=1))
    with pytest.raises(ConfigError, match="power_supply: no power_supply of type Battery"):
        PowerSupplyMonitor(tmp_path)
    with pytest.raises(ConfigError, match=r"power_supply/AC: not a battery \(type=Mains\)"):
        PowerSupplyMonitor(tmp_path, battery="AC")


# --- Jetson INA3221 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "power_w", "source", "rails"),
    [
        # Orin Nano, JetPack 6: 5048 mV x 1032 mA = 5.209536 W on VDD_IN
        (ORIN_NANO, 5.209536, "ina3221 hwmon3 VDD_IN", ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]),
        # Xavier NX, JetPack 5: 5000 mV x 1500 mA = 7.5 W
        (XAVIER_NX, 7.5, "ina3221 hwmon6 VDD_IN", ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]),
        # Nano labels in the hwmon layout: 5100 mV x 600 mA = 3.06 W
        (NANO_HWMON, 3.06, "ina3221 hwmon0 POM_5V_IN", ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]),
        # Nano, JetPack 4: in_power0_input = 3012 mW
        (NANO_JP4, 3.012, "ina3221 iio:device0 POM_5V_IN", ["POM_5V_IN", "POM_5V_GPU"]),
    ],
)
def test_jetson_input_rail(
    tmp_path: Path, tree: dict[str, object], power_w: float, source: str, rails: list[str]
) -> None:
    _write(tmp_path, tree)
    monitor = JetsonMonitor(tmp_path)
    reading = monitor.read(now=1.0)
    assert reading.power_w == pytest.approx(power_w)
    assert reading.source == source
    assert list(reading.rails) == rails
    assert reading.problems == ()
    assert reading.battery_level is None
    assert source.split()[-1] in monitor.describe()


def test_jetson_rail_values_and_skipped_channels(tmp_path: Path) -> None:
    _write(tmp_path, ORIN_NANO)
    rails = JetsonMonitor(tmp_path).read(now=0.0).rails
    assert rails["VDD_CPU_GPU_CV"] == pytest.approx(1.2096)  # 5040 mV x 240 mA
    assert rails["VDD_SOC"] == pytest.approx(1.6128)  # 5040 mV x 320 mA
    assert "sum of shunt voltages" not in rails  # channel 7


def test_agx_orin_two_devices_without_input_rail_sums_rails(tmp_path: Path) -> None:
    _write(tmp_path, AGX_ORIN)
    monitor = JetsonMonitor(tmp_path)
    assert monitor.rail_names == ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO")
    reading = monitor.read(now=0.0)
    # 4992x800 + 4992x400 + 5000x600 + 5000x100 mW/1000 = 3.9936 + 1.9968 + 3.0 + 0.5
    assert reading.power_w == pytest.approx(9.4904)
    assert reading.source == "ina3221 sum of VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0+VDDQ_VDD2_1V8AO"
    assert "sum of rails (no VDD_IN/POM_5V_IN/VIN rail)" in monitor.describe()


def test_jetpack4_xavier_two_devices(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            **_iio("1-0040", "iio:device0", {0: ("GPU", 1500), 1: ("CPU", 800), 2: ("SOC", 900)}),
            **_iio("1-0041", "iio:device1", {0: ("CV", 0), 1: ("VDDRQ", 300), 2: ("SYS5V", 1200)}),
        },
    )
    reading = JetsonMonitor(tmp_path).read(now=0.0)
    assert reading.power_w == pytest.approx(4.7)  # (1500+800+900+0+300+1200) mW
    assert reading.rails["SYS5V"] == pytest.approx(1.2)


def test_jetson_corrupt_and_vanishing_files(tmp_path: Path) -> None:
    _write(tmp_path, ORIN_NANO)
    monitor = JetsonMonitor(tmp_path)
    hwmon = tmp_path / "sys/bus/i2c/devices/1-0040/hwmon/hwmon3"
    (hwmon / "curr2_input").write_text("n/a\n")
    reading = monitor.read(now=0.0)
    assert reading.power_w == pytest.approx(5.209536)  # VDD_IN still read
    assert "VDD_CPU_GPU_CV" not in reading.rails
    assert reading.problems == (f"{hwmon / 'curr2_input'}: not a number: 'n/a'",)
    (hwmon / "in1_input").unlink()
    reading = monitor.read(now=1.0)
    assert reading.power_w is None
    assert f"{hwmon / 'in1_input'}: missing" in reading.problems


def test_jetson_sum_is_all_rails_or_nothing(tmp_path: Path) -> None:
    _write(tmp_path, AGX_ORIN)
    monitor = JetsonMonitor(tmp_path)
    (tmp_path / "sys/bus/i2c/devices/1-0041/hwmon/hwmon2/curr2_input").write_text("-3\n")
    reading = monitor.read(now=0.0)
    assert reading.power_w is None
    assert len(reading.rails) == 3
    assert reading.problems[0].endswith("hwmon2/curr2_input: negative value -3")


def test_no_ina3221(tmp_path: Path) -> None:
    _write(tmp_path, {"sys/bus/i2c/devices/0-0050/name": "eeprom"})
    with pytest.raises(ConfigError, match="i2c/devices: no ina3221 power rails"):
        JetsonMonitor(tmp_path)


# --- RAPL ------------------------------------------------------------------------------------


def test_rapl_power_between_reads_and_counter_wrap(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            **_rapl("intel-rapl:0", "package-0", 1_000_000),
            **_rapl("intel-rapl:0:0", "core", 500_000),  # a subzone: inside package-0
        },
    )
    counter = tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj"
    monitor = RaplMonitor(tmp_path)
    first = monitor.read(now=10.0)
    assert first.power_w is None
    assert first.energy_j == 0.0
    assert first.source == "rapl package-0 energy_uj (first read: power from the next)"
    counter.write_text("31000000\n")
    second = monitor.read(now=12.0)
    assert second.power_w == pytest.approx(15.0)  # 30 J over 2 s
    assert second.energy_j == pytest.approx(30.0)
    assert second.rails == {"package-0": pytest.approx(15.0)}
    counter.write_text(f"{RAPL_MAX_UJ - 3_000_000}\n")
    monitor.read(now=100.0)
    counter.write_text("5000000\n")
    wrapped = monitor.read(now=102.0)
    assert wrapped.power_w == pytest.approx(4.0)  # (3 J to the wrap + 5 J after) / 2 s
    assert wrapped.problems == ()


def test_rapl_sums_packages_but_prefers_psys(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {**_rapl("intel-rapl:0", "package-0", 0), **_rapl("intel-rapl:1", "package-1", 0)},
    )
    monitor = RaplMonitor(tmp_path)
    monitor.read(now=0.0)
    _write(
        tmp_path,
        {
            "sys/class/powercap/intel-rapl:0/energy_uj": 20_000_000,
            "sys/class/powercap/intel-rapl:1/energy_uj": 10_000_000,
        },
    )
    assert monitor.read(now=1.0).power_w == pytest.approx(30.0)  # 20 W + 10 W

    _write(tmp_path, _rapl("intel-rapl:2", "psys", 0))
    monitor = RaplMonitor(tmp_path)
    monitor.read(now=0.0)
    _write(tmp_path, {"sys/class/powercap/intel-rapl:2/energy_uj": 45_000_000})
    reading = monitor.read(now=1.0)
    assert reading.power_w == pytest.approx(45.0)  # psys only, packages are inside it
    assert reading.source == "rapl psys energy_uj"


def test_rapl_corrupt_counter_mid_run_then_recovers(tmp_path: Path) -> None:
    _write(tmp_path, _rapl("intel-rapl:0", "package-0", 0))
    counter = tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj"
    monitor = RaplMonitor(tmp_path)
    monitor.read(now=0.0)
    counter.write_text("\n")
    bad = monitor.read(now=1.0)
    assert (bad.power_w, bad.energy_j) == (None, None)
    assert bad.problems == (f"{counter}: not a number: ''",)
    counter.write_text("12000000\n")
    good = monitor.read(now=3.0)
    assert good.power_w == pytest.approx(4.0)  # 12 J since the last good read, 3 s ago
    assert good.energy_j == pytest.approx(12.0)


def test_rapl_unreadable_counters_or_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="powercap: no intel-rapl:N powercap domain"):
        RaplMonitor(tmp_path)
    _write(tmp_path, {"sys/class/powercap/intel-rapl:0/name": "package-0"})
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").mkdir()  # read fails
    with pytest.raises(ConfigError, match="RAPL counters cannot be read .*energy_uj: unreadable"):
        RaplMonitor(tmp_path)


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(0, RAPL_MAX_UJ - 1),
    steps=st.lists(st.integers(0, RAPL_MAX_UJ // 2), min_size=1, max_size=6),
)
def test_rapl_energy_is_the_sum_of_steps_across_wraps(start: int, steps: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write(root, _rapl("intel-rapl:0", "package-0", start))
        counter = root / "sys/class/powercap/intel-rapl:0/energy_uj"
        monitor = RaplMonitor(root)
        monitor.read(now=0.0)
        value = start
        for i, step in enumerate(steps, start=1):
            value = (value + step) % RAPL_MAX_UJ
            counter.write_text(f"{value}\n")
            reading = monitor.read(now=float(i))
        assert reading.energy_j == pytest.approx(sum(steps) / 1e6)
        assert reading.power_w == pytest.approx(steps[-1] / 1e6)  # over 1 s


# --- simulated and detection ---------------------------------------------------------------------


def test_simulated_battery_drains_by_reported_joules() -> None:
    monitor = SimulatedMonitor(Battery(capacity_wh=1.0))  # 3600 J
    first = monitor.read(now=0.0)
    assert (first.battery_level, first.charging, first.power_w) == (1.0, False, None)
    monitor.spend(360.0)
    reading = monitor.read(now=60.0)
    assert reading.battery_level == pytest.approx(0.9)  # 1 - 360/3600
    assert reading.power_w == pytest.approx(6.0)  # 360 J over 60 s
    assert reading.energy_j == pytest.approx(360.0)
    monitor.set_charging(True)
    monitor.spend(360.0)
    assert monitor.read(now=61.0).battery_level == pytest.approx(0.9)  # no drain on a charger
    with pytest.raises(PolicyError):
        monitor.spend(-1.0)


def test_detection_order(tmp_path: Path) -> None:
    rapl = _rapl("intel-rapl:0", "package-0", 0)
    battery = _supply("BAT0", type="Battery", capacity=50)
    _write(tmp_path / "all", {**rapl, **battery, **ORIN_NANO})
    _write(tmp_path / "laptop", {**rapl, **battery})
    _write(tmp_path / "desktop", {**rapl, **_supply("AC", type="Mains", online=1)})
    (tmp_path / "bare").mkdir()
    assert isinstance(detect_monitor(root=tmp_path / "all"), JetsonMonitor)
    assert isinstance(detect_monitor(root=tmp_path / "laptop"), PowerSupplyMonitor)
    assert isinstance(detect_monitor(root=tmp_path / "desktop"), RaplMonitor)
    fallback = detect_monitor(root=tmp_path / "bare", simulated=Battery(5.0, 0.4))
    assert isinstance(fallback, SimulatedMonitor)
    assert fallback.read(now=0.0).battery_level == pytest.approx(0.4)
    assert "capacity_wh=5" in fallback.describe()
    assert "no sensor: " in fallback.describe() and "no ina3221" in fallback.describe()
    assert isinstance(detect_monitor("rapl", root=tmp_path / "all"), RaplMonitor)
    assert isinstance(detect_monitor("Power-Supply", root=tmp_path / "all"), PowerSupplyMonitor)
    assert isinstance(detect_monitor("simulated", root=tmp_path / "all"), SimulatedMonitor)


def test_named_kind_absent_or_unknown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kind=jetson is not available: .*sys/bus/i2c/devices"):
        detect_monitor("jetson", root=tmp_path)
    with pytest.raises(ConfigError, match=r"kind=power_supply .*sys/class/power_supply"):
        detect_monitor("power_supply", root=tmp_path)
    with pytest.raises(ConfigError, match=r"kind=rapl .*sys/class/powercap"):
        detect_monitor("rapl", root=tmp_path)
    with pytest.raises(ConfigError, match="kind='nvml': expected auto or one of jetson"):
        detect_monitor("nvml", root=tmp_path)


# --- energy between reads ------------------------------------------------------------------------


def test_energy_meter_trapezoid_and_gaps() -> None:
    meter = EnergyMeter()
    assert meter.sample(PowerReading(at_s=0.0, power_w=10.0)) == 0.0
    assert meter.sample(PowerReading(at_s=2.0, power_w=14.0)) == pytest.approx(24.0)  # (10+14)/2*2
    assert meter.sample(PowerReading(at_s=3.0, power_w=None)) == 0.0
    assert meter.sample(PowerReading(at_s=3.5, power_w=8.0)) == 0.0
    assert meter.sample(PowerReading(at_s=4.0, power_w=8.0)) == pytest.approx(4.0)  # 8 W x 0.5 s
    assert meter.total_j == pytest.approx(28.0)
    assert meter.unmeasured_s == pytest.approx(1.5)
    with pytest.raises(EdgesplitError, match="monotonic clock"):
        meter.sample(PowerReading(at_s=1.0, power_w=8.0))


def test_energy_meter_uses_counters(tmp_path: Path) -> None:
    simulated = SimulatedMonitor(Battery(capacity_wh=1.0))
    meter = EnergyMeter()
    meter.sample(simulated.read(now=0.0))
    simulated.spend(2.5)  # one request's modelled energy
    assert meter.sample(simulated.read(now=0.1)) == pytest.approx(2.5)

    _write(tmp_path, _rapl("intel-rapl:0", "package-0", 7_000_000))
    rapl = RaplMonitor(tmp_path)
    meter = EnergyMeter()
    meter.sample(rapl.read(now=0.0))
    _write(tmp_path, {"sys/class/powercap/intel-rapl:0/energy_uj": 7_900_000})
    assert meter.sample(rapl.read(now=0.05)) == pytest.approx(0.9)  # counter delta, not trapezoid
