"""The cost model and the static policy on a hand-made manifest, arithmetic beside each assert."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgesplit.bundle import (
    Cut,
    CutTensor,
    DeviceProfile,
    ExitCalibration,
    Manifest,
    ModelInfo,
    Segment,
    TensorSpec,
    Timing,
)
from edgesplit.errors import BundleError, PolicyError
from offload_policy import (
    Decision,
    FixedPolicy,
    Observation,
    best_static_decision,
    predict,
    rank_cuts,
)


def _t(seconds: float) -> Timing:
    return Timing(seconds, seconds, 1)


def _cut(i: int, kind: str, head: tuple[str, ...], exits: tuple[str, ...], nbytes: float) -> Cut:
    return Cut(
        id=f"c{i:02d}",
        index=i,
        kind=kind,
        tensors=(CutTensor(f"t{i}", f"c{i:02d}", (4,), "float32", 16),),
        head=head,
        exits=exits,
        tail=None if kind == "output" else f"m__tail__c{i:02d}",
        raw_bytes=int(nbytes),
        encoded_bytes={"raw": nbytes, "int8": nbytes / 4},
    )


def manifest() -> Manifest:
    """input (10 kB) -> c01 (exit_1 here, 40 kB) -> c02 (1 kB) -> output.

    Edge: segment to c01 takes 10 ms, c01->c02 20 ms, c01->out 30 ms.
    Cloud tails: from input 5 ms, from c01 4 ms, from c02 1 ms.
    exit_1 at threshold 0.8 takes 25% of the samples.
    """
    segments = {
        "c00__c01": Segment("c00__c01", "edge/a.onnx", ("input",), ("c01",), "exit_1"),
        "c01__c02": Segment("c01__c02", "edge/b.onnx", ("c01",), ("c02",)),
        "c01__c03": Segment("c01__c03", "edge/c.onnx", ("c01",), ("out",)),
    }
    cuts = (
        _cut(0, "input", (), (), 10_000),
        _cut(1, "inner", ("c00__c01",), ("exit_1",), 40_000),
        _cut(2, "inner", ("c00__c01", "c01__c02"), ("exit_1",), 1_000),
        _cut(3, "output", ("c00__c01", "c01__c03"), ("exit_1",), 16),
    )
    edge = DeviceProfile(
        "edge",
        {},
        "CPU",
        1,
        1,
        {"c00__c01": _t(0.010), "c01__c02": _t(0.020), "c01__c03": _t(0.030)},
    )
    cloud = DeviceProfile(
        "cloud",
        {},
        "CPU",
        1,
        1,
        {"m__tail__c00": _t(0.005), "m__tail__c01": _t(0.004), "m__tail__c02": _t(0.001)},
    )
    calibration = ExitCalibration(
        thresholds=(0.8, 0.99),
        exits=("exit_1",),
        rate=((0.25,), (0.0,)),
        accuracy=((0.96,), (math.nan,)),
        remaining_accuracy=((0.9, 0.88), (0.9, 0.9)),
        final_accuracy=0.9,
        samples=100,
    )
    return Manifest(
        model=ModelInfo("m", (TensorSpec("input", (4,)),), ("out",), ("exit_1",)),
        cuts=cuts,
        segments=segments,
        profiles={"edge": edge, "cloud": cloud},
        calibration=calibration,
        files={},
        codecs=("raw", "int8"),
        sample_source="test",
        created_by="test",
    )


M = manifest()


def test_offloaded_cut_with_an_exit() -> None:
    p = predict(M, Decision("c02", 0.8, "raw"), Observation(bandwidth_bps=8e6, rtt_s=0.002))
    # edge: 10 ms + (1 - 0.25) x 20 ms = 25 ms
    assert p.edge_compute_s == pytest.approx(0.025)
    # offload (75%): 1000 B x 8 / 8 Mbit/s = 1 ms wire + 2 ms rtt + 1 ms tail = 4 ms
    # -> 0.75 x 4 ms = 3 ms expected
    assert p.latency_s == pytest.approx(0.025 + 0.75 * 0.004)
    assert p.bytes_sent == pytest.approx(750.0)
    # accuracy: 0.25 x 0.96 + 0.75 x 0.88 = 0.9
    assert p.accuracy == pytest.approx(0.25 * 0.96 + 0.75 * 0.88)


def test_cloud_only_sends_the_input() -> None:
    p = predict(M, Decision("c00", None, "int8"), Observation(bandwidth_bps=1e6))
    # 10 kB / 4 (int8) = 2500 B x 8 / 1 Mbit/s = 20 ms + 5 ms tail
    assert p.latency_s == pytest.approx(0.025)
    assert p.edge_compute_s == 0 and p.exit_rates == ()


def test_edge_only_sends_nothing() -> None:
    p = predict(M, Decision("c03", None, "raw"), Observation(bandwidth_bps=0.0))
    # 10 ms + 30 ms, exits off
    assert p.latency_s == pytest.approx(0.040) and p.bytes_sent == 0


def test_zero_bandwidth_makes_offloading_infinite_and_edge_only_wins() -> None:
    assert math.isinf(predict(M, Decision("c01", None, "raw"), Observation(0.0)).latency_s)
    assert best_static_decision(M, Observation(0.0), "raw", None).cut == "c03"


def test_fast_link_prefers_the_cloud() -> None:
    # At 10 Gbit/s the wire is ~free: cloud-only costs 5 ms, every head costs >= 10 ms.
    assert best_static_decision(M, Observation(1e10), "raw", None).cut == "c00"


def test_middle_bandwidth_prefers_the_small_cut() -> None:
    ranked = rank_cuts(M, Observation(2e6), "raw", 0.8)
    # c02: 25 ms + 0.75 x (4 ms wire + 1 ms) = 28.75 ms; c00: 40 ms + 5 ms;
    # c03: 10 + 0.75 x 30 = 32.5 ms
    assert ranked[0][0] == "c02"
    assert ranked[0][1].latency_s == pytest.approx(0.02875)


@given(st.floats(min_value=1e3, max_value=1e11), st.sampled_from([None, 0.8, 0.99]))
def test_best_is_never_slower_than_edge_only_or_cloud_only(
    bandwidth: float, threshold: float | None
) -> None:
    obs = Observation(bandwidth)
    best = predict(M, best_static_decision(M, obs, "raw", threshold), obs).latency_s
    for cut in ("c00", "c03"):
        assert best <= predict(M, Decision(cut, threshold, "raw"), obs).latency_s + 1e-12


@given(st.floats(min_value=1e3, max_value=1e9), st.floats(min_value=1e3, max_value=1e9))
def test_more_bandwidth_never_slows_a_decision(a: float, b: float) -> None:
    low, high = sorted((a, b))
    for cut in M.cuts:
        d = Decision(cut.id, 0.8, "raw")
        assert (
            predict(M, d, Observation(high)).latency_s <= predict(M, d, Observation(low)).latency_s
        )


def test_fixed_policy_goes_edge_only_without_a_cloud() -> None:
    policy = FixedPolicy(Decision("c02", 0.8, "raw"), "c03")
    assert policy.decide(Observation(1e6), None, 0.0)[0].cut == "c02"
    assert policy.decide(Observation(1e6, cloud_available=False), None, 0.0)[0].cut == "c03"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bandwidth_bps": -1.0},
        {"bandwidth_bps": math.nan},
        {"bandwidth_bps": 1.0, "rtt_s": -0.1},
        {"bandwidth_bps": 1.0, "battery_level": 1.5},
    ],
)
def test_bad_observations_are_refused(kwargs: dict) -> None:
    with pytest.raises(PolicyError, match="observation"):
        Observation(**kwargs)


def test_unmeasured_codec_and_threshold_are_named() -> None:
    with pytest.raises(PolicyError, match="codec='fp16' was not measured"):
        best_static_decision(M, Observation(1e6), "fp16", None)
    with pytest.raises(BundleError, match="threshold=0.5 is not on the calibrated grid"):
        predict(M, Decision("c02", 0.5, "raw"), Observation(1e6))
