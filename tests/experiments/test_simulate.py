"""The trace simulator against hand-computed small cases, on the hand-made manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesplit.errors import ConfigError
from experiments.simulate import HEADER_BYTES, POLICIES, SimConfig, simulate, simulate_all
from experiments.traces import Trace
from offload_policy.energy import DEVICES, RADIOS
from tests.offload_policy.test_cost import M

ROOT = Path(__file__).resolve().parents[2]


def _constant(mbps: float, seconds: float = 10.0, name: str = "flat") -> Trace:
    times = np.arange(0.0, seconds, 1.0)
    return Trace(name, "test", times, np.full_like(times, mbps))


def test_cloud_only_on_a_constant_link_by_hand() -> None:
    trace = _constant(8.0)
    config = SimConfig(interval_s=1.0, rtt_s=0.04, probe_interval_s=None)
    result = simulate(M, trace, "cloud-only", config)
    # raw input: 10,000 B (+ framing) at 8 Mbit/s, + 40 ms RTT + 5 ms tail
    transfer = (10_000 + HEADER_BYTES) * 8 / 8e6
    assert result.requests == 10
    assert result.mean_latency_s == pytest.approx(transfer + 0.040 + 0.005)
    assert result.p95_latency_s == pytest.approx(result.mean_latency_s)
    wifi, nano = RADIOS["wifi"], DEVICES["jetson-nano-10w"]
    energy = wifi.uplink_power_w(8e6) * transfer + nano.idle_w * 0.045
    assert result.energy_per_request_j == pytest.approx(energy)
    assert result.offload_rate == 1.0 and result.accuracy == pytest.approx(0.9)


def test_edge_only_by_hand() -> None:
    result = simulate(M, _constant(8.0), "edge-only", SimConfig(probe_interval_s=None))
    # 10 ms + 30 ms of segments, exits off; 10 W x 40 ms
    assert result.mean_latency_s == pytest.approx(0.040)
    assert result.energy_per_request_j == pytest.approx(10.0 * 0.040)
    assert result.offload_rate == 0.0


def test_a_stall_delays_the_transfer() -> None:
    # 8 Mbit/s for 1 s, nothing for 2 s, then 8 Mbit/s: 10,000 B (10 ms of link) sent
    # at t=0.995 s gets 5 ms before the stall and its last 5 ms after it, ending at 3.005 s.
    times = np.array([0.0, 1.0, 3.0, 4.0])
    trace = Trace("stall", "test", times, np.array([8.0, 0.0, 8.0, 8.0]))
    assert trace.transfer_end(0.995, 10_000) == pytest.approx(3.005)
    config = SimConfig(interval_s=10.0, probe_interval_s=None, duration_s=1.0)
    result = simulate(M, trace, "cloud-only", config)
    assert result.requests == 1


def test_oracle_is_never_slower_on_average_than_the_adaptive_policy() -> None:
    times = np.arange(0.0, 60.0, 1.0)
    mbps = np.where((times // 10) % 2 == 0, 20.0, 0.2)  # alternating good and bad link
    trace = Trace("square", "test", times, mbps)
    config = SimConfig(interval_s=0.5, rtt_s=0.01)
    ours = simulate(M, trace, "edgesplit", config)
    oracle = simulate(M, trace, "oracle", config)
    edge = simulate(M, trace, "edge-only", config)
    cloud = simulate(M, trace, "cloud-only", config)
    assert oracle.mean_latency_s <= ours.mean_latency_s + 1e-9
    # Adapting beats both fixed extremes on a link that swings.
    assert ours.mean_latency_s < min(edge.mean_latency_s, cloud.mean_latency_s)


def test_the_battery_aware_mode_spends_less() -> None:
    trace = _constant(20.0, 60.0)
    base = SimConfig(interval_s=1.0, rtt_s=0.01, battery_level=0.2)
    from dataclasses import replace

    from offload_policy.adaptive import PolicyConfig

    thrifty = replace(base, policy=PolicyConfig(capacity_wh=0.002, target_lifetime_s=1e4))
    greedy = replace(
        base, policy=PolicyConfig(capacity_wh=0.002, target_lifetime_s=1e4, battery_aware=False)
    )
    a = simulate(M, trace, "edgesplit", thrifty)
    b = simulate(M, trace, "edgesplit", greedy)
    assert a.energy_per_request_j <= b.energy_per_request_j
    assert a.battery_level is not None and a.battery_level >= (b.battery_level or 0.0)


def test_all_policies_run_and_bad_config_is_named() -> None:
    results = simulate_all(M, [_constant(2.0)], POLICIES, SimConfig())
    assert [r.policy for r in results] == list(POLICIES)
    with pytest.raises(ConfigError, match="interval_s=0"):
        SimConfig(interval_s=0)
    with pytest.raises(ConfigError, match="--policy fastest"):
        simulate(M, _constant(2.0), "fastest", SimConfig())


def _simulate_cli(bundle_root: Path, trace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgesplit", "simulate", "--bundle", str(bundle_root)]
        + ["--trace", str(trace), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_one_json_object_per_trace_and_policy(untrained_bundle, tmp_path) -> None:
    trace = tmp_path / "t.tsv"
    trace.write_text("0 1.5\n1 2.5\n2 0.5\n3 1.0\n")
    args = ("--policy", "edgesplit", "--policy", "neurosurgeon", "--json")
    result = _simulate_cli(untrained_bundle.root, trace, *args)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["policy"] for r in rows] == ["edgesplit", "neurosurgeon"]
    for row in rows:
        for key in ("mean_latency_s", "p95_latency_s", "energy_j", "accuracy", "slo_miss_rate"):
            assert isinstance(row[key], float)
    bad = tmp_path / "bad.tsv"
    bad.write_text("0 1.5\n1 fast\n")
    result = _simulate_cli(untrained_bundle.root, bad)
    assert result.returncode == 1 and "bad.tsv:2" in result.stderr, result.stderr


def test_the_floor_in_force_is_the_whole_models_accuracy_less_a_point_unless_given() -> None:
    trace = _constant(0.2)  # a slow link: early exits and small codecs would pay
    default = simulate(M, trace, "edgesplit", SimConfig(probe_interval_s=None))
    assert default.accuracy_floor == pytest.approx(0.89)
    assert default.accuracy >= 0.89 - 1e-9
    anything = simulate(M, trace, "edgesplit", SimConfig(probe_interval_s=None, accuracy_floor=0))
    assert anything.accuracy_floor == 0.0
    assert anything.mean_latency_s <= default.mean_latency_s + 1e-12


def test_cloud_cost_per_thousand_requests_by_hand() -> None:
    from offload_policy.adaptive import PolicyConfig

    prices = PolicyConfig(price_cloud_s=3.0, price_gb=20.0)
    config = SimConfig(interval_s=1.0, probe_interval_s=None, policy=prices)
    cloud = simulate(M, _constant(8.0), "cloud-only", config)
    # every request: 5 ms of tail compute and 10,000 B (+ framing) received
    per_request = 0.005 * 3.0 + (10_000 + HEADER_BYTES) / 1e9 * 20.0
    assert cloud.cost_per_1k == pytest.approx(1000 * per_request)
    assert simulate(M, _constant(8.0), "edge-only", config).cost_per_1k == 0.0
    assert simulate(M, _constant(8.0), "cloud-only", SimConfig()).cost_per_1k == 0.0


def test_cli_takes_several_traces_after_one_flag_and_states_the_floor(
    untrained_bundle, tmp_path
) -> None:
    a, b, c = (tmp_path / f"{n}.tsv" for n in "abc")
    for path in (a, b, c):
        path.write_text("0 1.5\n1 2.5\n2 0.5\n3 1.0\n")
    args = ["--policy", "edgesplit", "--json"]
    result = _simulate_cli(untrained_bundle.root, a, str(b), str(c), *args)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["trace"] for r in rows] == ["a", "b", "c"]
    repeated = _simulate_cli(untrained_bundle.root, a, "--trace", str(b), *args)
    assert [json.loads(line)["trace"] for line in repeated.stdout.splitlines()] == ["a", "b"]
    table = _simulate_cli(
        untrained_bundle.root, a, "--policy", "edgesplit", "--price-cloud-s", "0.5"
    )
    assert table.returncode == 0, table.stderr
    assert "accuracy floor in force" in table.stdout, table.stdout
    assert "cost/1k" in table.stdout and "0.5 per compute-second" in table.stdout
    bad = _simulate_cli(untrained_bundle.root, a, "--accuracy-floor", "1.5")
    assert bad.returncode == 1 and "--accuracy-floor 1.5" in bad.stderr, bad.stderr
