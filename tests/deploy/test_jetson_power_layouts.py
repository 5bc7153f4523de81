"""INA3221 layouts tests/edge_node/test_power.py does not build: AGX Xavier on JetPack 5,
Orin NX, Xavier NX and the Nano on JetPack 4 with all their rails, and a hwmon folder with
the driver's unlabelled files. Each tree is constructed (no Jetson here), with the rail
names those boards' device trees give; each case asserts the power and the rail chosen.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.power import JetsonMonitor, detect_monitor

Tree = dict[str, object]


def _write(root: Path, tree: Tree) -> None:
    for relative, value in tree.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")


def _hwmon(device: str, hwmon: str, channels: dict[int, tuple[str, int, int]]) -> Tree:
    """An ina3221 as the JetPack 5+ hwmon driver shows it: channel -> (label, mV, mA).

    Besides the labelled channels the driver has in4..in6 (shunt voltages, no label),
    in7 "sum of shunt voltages" and curr4 (its current): written too, so the tree
    holds every file a real board has and the reader must ignore the extra ones.
    """
    base = f"sys/bus/i2c/devices/{device}"
    folder = f"{base}/hwmon/{hwmon}"
    tree: Tree = {f"{base}/name": "ina3221", f"{folder}/name": "ina3221"}
    for n, (label, millivolts, milliamps) in channels.items():
        tree[f"{folder}/in{n}_label"] = label
        tree[f"{folder}/in{n}_input"] = millivolts
        tree[f"{folder}/curr{n}_input"] = milliamps
        tree[f"{folder}/in{n + 3}_input"] = 40  # shunt voltage, mV
    tree[f"{folder}/in7_label"] = "sum of shunt voltages"
    tree[f"{folder}/in7_input"] = 120
    tree[f"{folder}/curr4_input"] = 9999
    return tree


def _iio(device: str, iio: str, channels: dict[int, tuple[str, int]]) -> Tree:
    """An ina3221x as the JetPack 4 iio driver shows it: channel -> (rail, mW)."""
    base = f"sys/bus/i2c/devices/{device}"
    tree: Tree = {f"{base}/name": "ina3221x"}
    for n, (label, milliwatts) in channels.items():
        tree[f"{base}/{iio}/rail_name_{n}"] = label
        tree[f"{base}/{iio}/in_power{n}_input"] = milliwatts
        tree[f"{base}/{iio}/in_voltage{n}_input"] = 5000
        tree[f"{base}/{iio}/in_current{n}_input"] = milliwatts // 5
    return tree


# AGX Xavier, JetPack 5 (L4T r35): hwmon layout, the JetPack 4 rail names, two devices,
# no input rail.
AGX_XAVIER_JP5 = {
    **_hwmon(
        "1-0040",
        "hwmon2",
        {1: ("GPU", 5000, 300), 2: ("CPU", 5000, 160), 3: ("SOC", 5000, 180)},
    ),
    **_hwmon(
        "1-0041",
        "hwmon3",
        {1: ("CV", 5000, 0), 2: ("VDDRQ", 5000, 60), 3: ("SYS5V", 5000, 240)},
    ),
}
# AGX Xavier with the labels AGX Orin uses (as some JetPack 5 device trees name them):
# an NC channel on the second device is skipped.
AGX_XAVIER_JP5_ORIN_LABELS = {
    **_hwmon(
        "1-0040",
        "hwmon1",
        {
            1: ("VDD_GPU_SOC", 5000, 700),
            2: ("VDD_CPU_CV", 5000, 300),
            3: ("VIN_SYS_5V0", 5000, 500),
        },
    ),
    **_hwmon(
        "1-0041",
        "hwmon2",
        {1: ("NC", 0, 0), 2: ("VDDQ_VDD2_1V8AO", 5000, 80), 3: ("NC", 0, 0)},
    ),
}
# Orin NX 16GB, JetPack 6 (L4T r36): one device at 1-0040.
ORIN_NX_JP6 = _hwmon(
    "1-0040",
    "hwmon1",
    {1: ("VDD_IN", 5016, 1400), 2: ("VDD_CPU_GPU_CV", 5008, 360), 3: ("VDD_SOC", 5008, 400)},
)
# Xavier NX, JetPack 4 (L4T r32): iio layout at 7-0040.
XAVIER_NX_JP4 = _iio(
    "7-0040",
    "iio:device0",
    {0: ("VDD_IN", 4880), 1: ("VDD_CPU_GPU_CV", 816), 2: ("VDD_SOC", 1386)},
)
# Nano, JetPack 4 (L4T r32): iio layout at 6-0040, all three rails.
NANO_JP4 = _iio(
    "6-0040",
    "iio:device0",
    {0: ("POM_5V_IN", 2996), 1: ("POM_5V_GPU", 40), 2: ("POM_5V_CPU", 566)},
)


@pytest.mark.parametrize(
    ("tree", "power_w", "source", "rails"),
    [
        pytest.param(
            AGX_XAVIER_JP5,
            # (300 + 160 + 180 + 0 + 60 + 240) mA x 5000 mV = 940 mA x 5 V = 4.7 W
            4.7,
            "ina3221 sum of GPU+CPU+SOC+CV+VDDRQ+SYS5V",
            ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"],
            id="agx-xavier-jp5",
        ),
        pytest.param(
            AGX_XAVIER_JP5_ORIN_LABELS,
            # (700 + 300 + 500 + 80) mA x 5 V = 7.9 W; the NC channels are not read
            7.9,
            "ina3221 sum of VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0+VDDQ_VDD2_1V8AO",
            ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"],
            id="agx-xavier-jp5-orin-labels",
        ),
        pytest.param(
            ORIN_NX_JP6,
            # 5016 mV x 1400 mA = 7.0224 W on VDD_IN
            7.0224,
            "ina3221 hwmon1 VDD_IN",
            ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"],
            id="orin-nx-jp6",
        ),
        pytest.param(
            XAVIER_NX_JP4,
            # in_power0_input = 4880 mW on VDD_IN
            4.88,
            "ina3221 iio:device0 VDD_IN",
            ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"],
            id="xavier-nx-jp4",
        ),
        pytest.param(
            NANO_JP4,
            # in_power0_input = 2996 mW on POM_5V_IN
            2.996,
            "ina3221 iio:device0 POM_5V_IN",
            ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"],
            id="nano-jp4",
        ),
    ],
)
def test_layout_power_and_rail(
    tmp_path: Path, tree: Tree, power_w: float, source: str, rails: list[str]
) -> None:
    _write(tmp_path, tree)
    # The path `edgesplit edge --power jetson` takes.
    monitor = detect_monitor("jetson", root=tmp_path)
    assert isinstance(monitor, JetsonMonitor)
    reading = monitor.read(now=2.0)
    assert reading.power_w == pytest.approx(power_w)
    assert reading.source == source
    assert list(reading.rails) == rails
    assert reading.problems == ()
    assert "sum of shunt voltages" not in reading.rails


def test_agx_xavier_says_it_sums_the_rails(tmp_path: Path) -> None:
    _write(tmp_path, AGX_XAVIER_JP5)
    described = JetsonMonitor(tmp_path).describe()
    assert "GPU (hwmon2)" in described and "SYS5V (hwmon3)" in described
    assert described.endswith("power = sum of rails (no VDD_IN/POM_5V_IN/VIN rail)")


def test_input_rail_preferred_and_its_values(tmp_path: Path) -> None:
    _write(tmp_path, ORIN_NX_JP6)
    monitor = JetsonMonitor(tmp_path)
    assert monitor.describe().endswith("power = input rail VDD_IN")
    rails = monitor.read(now=0.0).rails
    assert rails["VDD_CPU_GPU_CV"] == pytest.approx(1.80288)  # 5008 mV x 360 mA
    assert rails["VDD_SOC"] == pytest.approx(2.0032)  # 5008 mV x 400 mA


def test_auto_finds_the_rails_first(tmp_path: Path) -> None:
    _write(tmp_path, NANO_JP4)
    monitor = detect_monitor("auto", root=tmp_path)
    assert isinstance(monitor, JetsonMonitor)
    assert monitor.rail_names == ("POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU")
