"""Throughput and RTT estimators on hand-made samples, the arithmetic beside each assert."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgesplit.errors import ConfigError, PolicyError
from offload_policy.estimators import (
    Ewma,
    HarmonicMean,
    LastSample,
    RobustLowerBound,
    RttEstimator,
    ThroughputEstimator,
    ThroughputSample,
    relative_error,
    sample_from_transfer,
)


def feed(estimator: ThroughputEstimator, values: list[float]) -> ThroughputEstimator:
    for i, value in enumerate(values):
        estimator = estimator.update(ThroughputSample(float(i), value))
    return estimator


# --- samples from transfers ---------------------------------------------------------------


def test_sample_from_transfer_takes_out_cloud_time_and_rtt() -> None:
    # 125 000 bytes = 1e6 bits over 0.5 - 0.1 - 0.05 - 0.05 = 0.3 s on the wire
    sample = sample_from_transfer(7.0, 125_000, 0.5, 0.1, 0.05, 0.05)
    assert sample is not None
    assert sample.time_s == 7.0
    assert sample.bits_per_s == pytest.approx(1e6 / 0.3)


@pytest.mark.parametrize(
    ("wall_s", "rtt_s", "rtt_var_s"),
    [
        (0.2, 0.05, 0.0),  # 0.2 - 0.1 - 0.05 - 0.05 = 0: nothing left to measure
        (0.19, 0.05, 0.0),  # -0.01: the RTT estimate ran above this round trip
        (0.2005, 0.05, 0.0),  # 0.0005 s < MIN_TRANSFER_S = 0.001 s
        (0.21, 0.05, 0.02),  # 0.01 s < rtt_var_s = 0.02 s: within the RTT's noise
    ],
)
def test_too_short_transfer_is_not_measured(wall_s: float, rtt_s: float, rtt_var_s: float) -> None:
    assert sample_from_transfer(1.0, 10_000, wall_s, 0.1, 0.05, rtt_s, rtt_var_s=rtt_var_s) is None


def test_empty_transfer_is_not_measured() -> None:
    assert sample_from_transfer(1.0, 0, 0.5, 0.1, 0.0, 0.05) is None


def test_cloud_time_beyond_wall_time_is_an_error() -> None:
    # 0.1 + 0.2 >= 0.3: the cloud claims the whole wall time
    with pytest.raises(PolicyError, match=r"wall_s=0\.3 <= cloud_compute_s=0\.1"):
        sample_from_transfer(1.0, 10_000, 0.3, 0.1, 0.2, 0.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nbytes", -1),
        ("wall_s", math.nan),
        ("wall_s", 0.0),
        ("cloud_compute_s", -0.1),
        ("cloud_queue_s", math.inf),
        ("rtt_s", math.nan),
        ("rtt_var_s", -1.0),
    ],
)
def test_bad_transfer_values_are_named(field: str, value: float) -> None:
    args = {
        "now_s": 1.0,
        "nbytes": 10_000,
        "wall_s": 0.5,
        "cloud_compute_s": 0.1,
        "cloud_queue_s": 0.0,
        "rtt_s": 0.05,
        "rtt_var_s": 0.0,
    }
    args[field] = value
    with pytest.raises(PolicyError, match=f"{field}={value!r}"):
        sample_from_transfer(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, -math.inf])
def test_bad_throughput_sample_is_named(value: float) -> None:
    with pytest.raises(PolicyError, match=f"bits_per_s={value!r}"):
        ThroughputSample(0.0, value)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_bad_sample_time_is_named(value: float) -> None:
    with pytest.raises(PolicyError, match=f"time_s={value!r}"):
        ThroughputSample(value, 1e6)


def test_zero_throughput_is_a_sample() -> None:
    assert ThroughputSample(3.0, 0.0).bits_per_s == 0.0
    assert LastSample().update(ThroughputSample(3.0, 0.0)).estimate() == 0.0


# --- estimators, by hand -------------------------------------------------------------------


def test_ewma_on_a_step() -> None:
    est = feed(Ewma(alpha=0.5), [10.0, 10.0, 20.0, 20.0, 20.0])
    # 10 -> 10 -> 0.5*20 + 0.5*10 = 15 -> 0.5*20 + 0.5*15 = 17.5 -> 18.75
    assert est.estimate() == pytest.approx(18.75)


def test_ewma_starts_from_a_prior() -> None:
    est = Ewma(alpha=0.25, value_bps=0.0)
    # 0 -> 0.25*8 = 2 -> 0.25*8 + 0.75*2 = 3.5 -> 0.25*8 + 0.75*3.5 = 4.625
    assert feed(est, [8.0, 8.0, 8.0]).estimate() == pytest.approx(4.625)


def test_harmonic_mean_of_known_values() -> None:
    # 3 / (1/1 + 1/2 + 1/4) = 3 / 1.75 = 12/7
    assert feed(HarmonicMean(window=3), [1.0, 2.0, 4.0]).estimate() == pytest.approx(12 / 7)
    # the window keeps 2, 4, 8: 3 / (0.5 + 0.25 + 0.125) = 24/7
    assert feed(HarmonicMean(window=3), [1.0, 2.0, 4.0, 8.0]).estimate() == pytest.approx(24 / 7)


def test_harmonic_mean_with_a_zero_is_zero_until_it_leaves() -> None:
    est = feed(HarmonicMean(window=2), [4.0, 0.0])
    assert est.estimate() == 0.0
    est = feed(est, [4.0])  # window: 0, 4
    assert est.estimate() == 0.0
    est = feed(est, [2.0])  # window: 4, 2 -> 2 / (1/4 + 1/2) = 8/3
    assert est.estimate() == pytest.approx(8 / 3)


def test_robust_bound_after_known_errors() -> None:
    est: ThroughputEstimator = RobustLowerBound(LastSample(), window=2)
    est = feed(est, [10.0])
    assert est.estimate() == 10.0  # no prediction judged yet: no discount
    est = feed(est, [5.0])
    # predicted 10, got 5: error |10 - 5| / 5 = 1 -> 5 / (1 + 1) = 2.5
    assert est.estimate() == pytest.approx(2.5)
    est = feed(est, [6.0])
    # predicted 5, got 6: error 1/6; max(1, 1/6) = 1 -> 6 / 2 = 3
    assert est.estimate() == pytest.approx(3.0)
    est = feed(est, [6.0])
    # error 0; the window (2) now holds 1/6, 0 -> 6 / (1 + 1/6) = 36/7
    assert est.estimate() == pytest.approx(36 / 7)


def test_robust_bound_judges_the_inner_estimate() -> None:
    est: ThroughputEstimator = feed(RobustLowerBound(Ewma(0.5), window=2), [10.0, 0.0])
    # inner predicted 10, got 0: infinite error -> bound 0 (inner is 5)
    assert est.estimate() == 0.0
    est = feed(est, [10.0])  # inner predicted 5, got 10: 0.5; window inf, 0.5
    assert est.estimate() == 0.0
    est = feed(est, [10.0])  # inner predicted 7.5, got 10: 0.25; window 0.5, 0.25
    assert isinstance(est, RobustLowerBound)
    assert est.max_error == pytest.approx(0.5)
    # inner 0.5*10 + 0.5*7.5 = 8.75 -> 8.75 / 1.5
    assert est.estimate() == pytest.approx(8.75 / 1.5)


def test_relative_error_edges() -> None:
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(1.0, 0.0) == math.inf
    assert relative_error(3.0, 2.0) == 0.5


def test_update_leaves_the_old_value_alone() -> None:
    before = HarmonicMean(window=3)
    after = before.update(ThroughputSample(0.0, 5.0))
    assert not before.ready
    assert after.ready
    assert after.estimate() == 5.0


@pytest.mark.parametrize(
    "estimator",
    [LastSample(), Ewma(), HarmonicMean(), RobustLowerBound(HarmonicMean())],
)
def test_estimate_before_any_sample_is_an_error(estimator: ThroughputEstimator) -> None:
    assert not estimator.ready
    with pytest.raises(PolicyError, match="no throughput sample yet"):
        estimator.estimate()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Ewma(alpha=0.0), "alpha=0.0"),
        (lambda: Ewma(alpha=1.5), "alpha=1.5"),
        (lambda: Ewma(alpha=math.nan), "alpha=nan"),
        (lambda: HarmonicMean(window=0), "window=0"),
        (lambda: HarmonicMean(window=2.5), "window=2.5"),  # type: ignore[arg-type]
        (lambda: RobustLowerBound(LastSample(), window=-1), "window=-1"),
        (lambda: RttEstimator(alpha=2.0), "alpha=2.0"),
        (lambda: RttEstimator(beta=0.0), "beta=0.0"),
    ],
)
def test_bad_config_is_a_config_error(build, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()


def test_bad_state_values_are_policy_errors() -> None:
    with pytest.raises(PolicyError, match="value_bps=-1.0"):
        Ewma(value_bps=-1.0)
    with pytest.raises(PolicyError, match="samples_bps=nan"):
        HarmonicMean(samples_bps=(1.0, math.nan))
    with pytest.raises(PolicyError, match="give both or neither"):
        RttEstimator(srtt_s=0.1)


# --- RTT, RFC 6298 --------------------------------------------------------------------------


def test_rtt_estimator_follows_rfc_6298() -> None:
    rtt = RttEstimator()
    assert rtt.timeout_s() == 1.0  # RFC 6298 (2.1): 1 s before any measurement
    rtt = rtt.update(0.1)
    # (2.2): srtt = R = 0.1, rttvar = R/2 = 0.05, RTO = 0.1 + 4*0.05 = 0.3
    assert (rtt.srtt_s, rtt.rttvar_s) == pytest.approx((0.1, 0.05))
    assert rtt.timeout_s() == pytest.approx(0.3)
    rtt = rtt.update(0.2)
    # (2.3): rttvar = 3/4*0.05 + 1/4*|0.1 - 0.2| = 0.0625; srtt = 7/8*0.1 + 1/8*0.2 = 0.1125
    assert (rtt.srtt_s, rtt.rttvar_s) == pytest.approx((0.1125, 0.0625))
    assert rtt.timeout_s() == pytest.approx(0.1125 + 4 * 0.0625)
    rtt = rtt.update(0.05)
    # rttvar = 3/4*0.0625 + 1/4*|0.1125 - 0.05| = 0.0625; srtt = 7/8*0.1125 + 1/8*0.05
    assert (rtt.srtt_s, rtt.rttvar_s) == pytest.approx((0.1046875, 0.0625))
    # the clock granularity G wins when k*rttvar is smaller: 0.1046875 + max(0.5, 0.25)
    assert rtt.timeout_s(granularity_s=0.5) == pytest.approx(0.6046875)


@pytest.mark.parametrize("value", [-0.01, math.nan, math.inf])
def test_bad_rtt_is_named(value: float) -> None:
    with pytest.raises(PolicyError, match=f"rtt_s={value!r}"):
        RttEstimator().update(value)


# --- properties ---------------------------------------------------------------------------

throughputs = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)
windows = st.lists(throughputs, min_size=1, max_size=12)


@given(windows, st.integers(min_value=1, max_value=8))
def test_harmonic_mean_lies_between_min_and_max_and_below_the_mean(
    values: list[float], window: int
) -> None:
    kept = values[-window:]
    estimate = feed(HarmonicMean(window), values).estimate()
    assert min(kept) <= estimate <= max(kept)
    arithmetic = math.fsum(kept) / len(kept)
    assert estimate <= arithmetic * (1 + 1e-12)


@given(
    windows,
    st.sampled_from(["last", "ewma", "harmonic"]),
    st.integers(min_value=1, max_value=6),
)
def test_robust_bound_never_exceeds_its_inner_estimate(
    values: list[float], inner_name: str, window: int
) -> None:
    inners: dict[str, ThroughputEstimator] = {
        "last": LastSample(),
        "ewma": Ewma(0.3),
        "harmonic": HarmonicMean(5),
    }
    inner = inners[inner_name]
    est: ThroughputEstimator = RobustLowerBound(inner, window)
    for i, value in enumerate(values):
        est = est.update(ThroughputSample(float(i), value))
        assert isinstance(est, RobustLowerBound)
        assert 0.0 <= est.estimate() <= est.inner.estimate()
        assert len(est.errors) <= window


@given(windows, st.floats(min_value=0.01, max_value=1.0))
def test_ewma_stays_within_the_samples(values: list[float], alpha: float) -> None:
    estimate = feed(Ewma(alpha), values).estimate()
    assert min(values) * (1 - 1e-12) <= estimate <= max(values) * (1 + 1e-12)


@given(st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=20))
def test_rtt_smoothing_stays_within_the_samples(values: list[float]) -> None:
    rtt = RttEstimator()
    for value in values:
        rtt = rtt.update(value)
    assert rtt.srtt_s is not None and rtt.rttvar_s is not None
    assert min(values) * (1 - 1e-12) <= rtt.srtt_s <= max(values) * (1 + 1e-12)
    assert 0.0 <= rtt.rttvar_s <= max(values)
