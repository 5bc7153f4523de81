"""Drift scenarios: the schedule's parsers and their errors, and the simulator under drift."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgesplit.errors import ConfigError
from experiments.drift import (
    DriftSchedule,
    SpeedModel,
    drift_from_flags,
    drift_schedule,
    load_drift,
    parse_steps,
)
from experiments.simulate import SimConfig, simulate
from experiments.traces import Trace
from tests.offload_policy.test_cost import M

ROOT = Path(__file__).resolve().parents[2]


def test_flags_make_a_step_function() -> None:
    s = drift_from_flags("30:2,90:1", "60:3")
    assert s is not None
    assert [s.edge_factor(t) for t in (0, 29.9, 30, 89, 90, 1e6)] == [1, 1, 2, 2, 1, 1]
    assert [s.cloud_factor(t) for t in (0, 59, 60, 1e6)] == [1, 1, 3, 3]
    assert s.changes() == (30.0, 60.0, 90.0)
    assert drift_from_flags(None, None) is None
    assert parse_steps(" 0:0.5 , 10:1.5 ", "--edge-drift") == ((0.0, 0.5), (10.0, 1.5))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30", "--edge-drift 30: step 1: '30': expected TIME_S:FACTOR, e.g. 30:2"),
        ("30:2,x:1", "--edge-drift 30:2,x:1: step 2: time_s='x': expected a number"),
        ("30:2,20:1", "step 2: time_s=20.0: expected later than the previous step's 30 s"),
        ("30:2,30:1", "step 2: time_s=30.0: expected later than the previous step's 30 s"),
        ("-1:2", "step 1: time_s=-1.0: expected a finite number of seconds >= 0"),
        ("inf:2", "step 1: time_s=inf: expected a finite number of seconds >= 0"),
        ("30:nan", "step 1: factor=nan: expected a finite number"),
        ("30:0", "step 1: factor=0.0: expected 0.01..100"),
        ("30:-2", "step 1: factor=-2.0: expected 0.01..100"),
        ("30:1000", "step 1: factor=1000.0: expected 0.01..100"),
    ],
)
def test_bad_flags_are_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_steps(text, "--edge-drift")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_files_in_csv_json_and_toml(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text(
        "# a device that heats up\ntime_s,edge_factor,cloud_factor\n30, 2, 1\n\n90 1 3\n"
    )
    js = tmp_path / "d.json"
    js.write_text('{"drift": [{"time_s": 30, "edge_factor": 2}, {"time_s": 90, "edge_factor": 1,'
                  ' "cloud_factor": 3}]}')  # fmt: skip
    toml = tmp_path / "d.toml"
    toml.write_text(
        "[[drift]]\ntime_s = 30\nedge_factor = 2\n\n"
        "[[drift]]\ntime_s = 90\nedge_factor = 1\ncloud_factor = 3\n"
    )
    for path in (csv, js, toml):
        s = load_drift(path)
        assert (s.edge_factor(50), s.edge_factor(100), s.cloud_factor(50), s.cloud_factor(100)) == (
            2,
            1,
            1,
            3,
        ), path
        assert s.source == str(path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("d.csv", "0,1,1\n30,-2,1\n", "d.csv:2: edge_factor=-2.0: expected 0.01..100"),
        ("d.csv", "0,1,1\n30,2,nan\n", "d.csv:2: cloud_factor=nan: expected a finite number"),
        ("d.csv", "time_s,edge,cloud\n0,1\n", "d.csv:2: '0,1': expected 3 values"),
        ("d.csv", "30,2,1\n10,1,1\n", "d.csv:2: time_s=10.0: expected later than"),
        ("d.csv", "# nothing\n", "d.csv: no steps"),
        ("d.csv", "ten,2,1\n", "d.csv:1: time_s='ten': expected a number"),
        ("d.json", '[{"time_s": 1,', "d.json:1: not JSON"),
        ("d.json", '[{"time_s": 5, "edge_factor": 0}]', "d.json: step 1: edge_factor=0"),
        ("d.json", '[{"time_s": 5, "edge": 2}]', "d.json: step 1: unknown key 'edge'"),
        ("d.json", '[{"edge_factor": 2}]', "d.json: step 1: time_s missing"),
        ("d.json", "{}", "d.json: expected a non-empty list of steps"),
        ("d.toml", "[[drift]]\ntime_s = -3\n", "d.toml: [[drift]] 1: time_s=-3"),
        ("d.toml", "[[drift\n", "d.toml: not TOML"),
    ],
)
def test_bad_files_name_the_file_and_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_drift(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_file_or_both_kinds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--drift .*nope.csv: no such file"):
        drift_schedule(tmp_path / "nope.csv", None, None)
    with pytest.raises(ConfigError, match="give one or the other"):
        drift_schedule(tmp_path / "nope.csv", "30:2", None)
    with pytest.raises(ConfigError, match="expected later"):
        DriftSchedule(edge=((30.0, 2.0), (10.0, 1.0)))


def test_the_speed_model_learns_tells_or_trusts() -> None:
    s = drift_from_flags("10:2", None)
    learn, told, trust = (SpeedModel(s, mode) for mode in ("learn", "told", "profile"))
    for t in range(40):
        for model in (learn, told, trust):
            # the device takes 2x the profiled 10 ms from t=10 on, whoever is told what
            assert model.edge_s(float(t), 0.010) == pytest.approx(0.010 * s.edge_factor(t))
    assert told.told(39.0) == (2.0, 1.0) and trust.told(39.0) == (1.0, 1.0)
    assert learn.told(39.0)[0] == pytest.approx(2.0, rel=0.02)
    with pytest.raises(ConfigError, match="expected learn, told or profile"):
        SpeedModel(s, "guess")
    spread = SpeedModel(None, "profile", jitter=0.1, seed=(1,))
    times = np.array([spread.edge_s(0.0, 1.0) for _ in range(2000)])
    assert abs(np.log(times).std() - 0.1) < 0.01 and abs(np.median(times) - 1) < 0.01


def _constant(mbps: float, seconds: float) -> Trace:
    times = np.arange(0.0, seconds, 1.0)
    return Trace("flat", "test", times, np.full_like(times, mbps))


def test_edge_only_feels_the_drift_by_hand() -> None:
    config = SimConfig(probe_interval_s=None, drift=drift_from_flags("5:2", None))
    result = simulate(M, _constant(8.0, 10.0), "edge-only", config)
    # 10 ms + 30 ms of segments, exits off: 40 ms until t=5, 80 ms from then
    assert result.latencies_s == pytest.approx((0.040,) * 5 + (0.080,) * 5)


def test_no_drift_leaves_every_figure_as_it_was() -> None:
    trace = _constant(0.5, 60.0)
    plain = SimConfig(rtt_s=0.0, accuracy_floor=0.0)
    for policy in ("edgesplit", "oracle"):
        a = simulate(M, trace, policy, plain)
        b = simulate(M, trace, policy, replace(plain, corrections="off"))
        assert a.latencies_s == b.latencies_s and a.energy_j == b.energy_j


def test_the_corrected_policy_follows_a_2x_slowdown_and_the_recovery() -> None:
    # 0.5 Mbit/s, no RTT (test_corrections' case): c02 at 28.75 ms as profiled, cloud-only
    # 45 ms; with the edge 2x slower, c02 takes 53.75 ms and cloud-only wins.
    trace = _constant(0.5, 120.0)
    drift = drift_from_flags("20:2,70:1", None)
    config = SimConfig(rtt_s=0.0, accuracy_floor=0.0, drift=drift, probe_interval_s=None)
    corrected = simulate(M, trace, "edgesplit", config)
    trusted = simulate(M, trace, "edgesplit", replace(config, corrections="off"))
    oracle = simulate(M, trace, "oracle", config)

    def cuts(r, a: float, b: float) -> Counter[str]:  # type: ignore[no-untyped-def]
        return Counter(x.decision.cut for x in r.requests_log if a <= x.t_s < b)

    # within 20 requests of each change the corrected policy decides as the oracle does
    for a, b in ((0, 20), (40, 70), (90, 120)):
        assert cuts(corrected, a, b) == cuts(oracle, a, b), (a, b)
    assert set(cuts(oracle, 40, 70)) == {"c00"} and set(cuts(oracle, 90, 120)) == {"c02"}
    assert set(cuts(trusted, 0, 120)) == {"c02"}
    told = [x.edge_factor for x in corrected.requests_log]
    # once on cloud-only the head runs no more: an idle-time probe (a second after the latest
    # sample) measures the edge, keeps the factor up and finds the recovery
    assert told[19] == 1.0 and 1.9 < told[69] <= 2.0 and told[119] < 1.05

    def mean(r, a: float, b: float) -> float:  # type: ignore[no-untyped-def]
        return float(np.mean([x.latency_s for x in r.requests_log if a <= x.t_s < b]))

    assert mean(corrected, 40, 70) == pytest.approx(mean(oracle, 40, 70))
    assert mean(trusted, 40, 70) > 1.1 * mean(oracle, 40, 70)
    assert math.isclose(mean(corrected, 90, 120), mean(oracle, 90, 120))


def test_simconfig_refuses_an_unknown_corrections_mode() -> None:
    with pytest.raises(ConfigError, match="corrections='maybe': expected one of learn, told"):
        SimConfig(corrections="maybe")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--edge-drift", "30:0"], "--edge-drift 30:0: step 1: factor=0.0: expected 0.01..100"),
        (["--cloud-drift", "a:b"], "--cloud-drift a:b: step 1: time_s='a': expected a number"),
        (["--drift", "BAD"], "bad.csv:2: edge_factor=nan: expected a finite number"),
        (["--drift", "BAD", "--edge-drift", "1:2"], "give one or the other"),
    ],
)
def test_simulate_cli_refuses_a_bad_schedule_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1,1\n30,nan,1\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    done = subprocess.run(
        [sys.executable, "-m", "edgesplit", "simulate", "--bundle", str(tmp_path), "--trace",
         str(tmp_path), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
