"""The error-tracking estimator on hand-made samples, the arithmetic beside each assert."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgesplit.errors import ConfigError, PolicyError
from offload_policy.error_tracking import ErrorTracking, tracked, transfer_time_ratio
from offload_policy.estimator_registry import make_estimator
from offload_policy.estimators import (
    Ewma,
    HarmonicMean,
    LastSample,
    RobustLowerBound,
    ThroughputEstimator,
    ThroughputSample,
)

MBIT = 1e6


def feed(estimator: ThroughputEstimator, values: list[float]) -> ThroughputEstimator:
    for i, value in enumerate(values):
        estimator = estimator.update(ThroughputSample(float(i), value))
    return estimator


def test_transfer_time_ratio_by_hand() -> None:
    # predicted 10, actual 5: the transfer took 2x its prediction
    assert transfer_time_ratio(10.0, 5.0, 3.0) == 2.0
    # predicted 10, actual 40: 0.25, clipped to 1/cap = 1/3
    assert transfer_time_ratio(10.0, 40.0, 3.0) == pytest.approx(1 / 3)
    # a stall after a positive prediction counts as cap times the prediction
    assert transfer_time_ratio(10.0, 0.0, 3.0) == 3.0
    # nothing predicted, something carried: the best case; nothing either way: exact
    assert transfer_time_ratio(0.0, 5.0, 3.0) == pytest.approx(1 / 3)
    assert transfer_time_ratio(0.0, 0.0, 3.0) == 1.0


def test_converges_on_a_steady_link() -> None:
    e = feed(ErrorTracking(LastSample()), [10 * MBIT] * 30)
    assert isinstance(e, ErrorTracking)
    # every prediction after the first was exact: 20 ratios of 1, no discount
    assert e.ratios == (1.0,) * 20
    assert e.estimate() == 10 * MBIT


def test_converges_after_a_step() -> None:
    e = feed(ErrorTracking(LastSample(), window=5), [10 * MBIT] * 5 + [4 * MBIT] * 10)
    # the step's error (10 / 4 = 2.5) left the window of 5 after five exact predictions
    assert isinstance(e, ErrorTracking)
    assert e.ratios == (1.0,) * 5 and e.estimate() == 4 * MBIT


def test_tracks_the_errors_it_made() -> None:
    # last-sample predictions on a link alternating 10 and 5 Mbit/s:
    # 10 -> 5: ratio 2; 5 -> 10: ratio 0.5; 10 -> 5: 2; 5 -> 10: 0.5
    e = feed(ErrorTracking(LastSample(), window=4), [10 * MBIT, 5 * MBIT] * 2 + [10 * MBIT])
    assert isinstance(e, ErrorTracking)
    assert e.ratios == (2.0, 0.5, 2.0, 0.5)
    # mean ratio (2 + 0.5 + 2 + 0.5) / 4 = 1.25; last sample 10 Mbit/s -> 10 / 1.25 = 8
    assert e.discount == pytest.approx(1.25)
    assert e.estimate() == pytest.approx(8 * MBIT)


def test_discounts_a_volatile_link_and_not_a_steady_one() -> None:
    steady = feed(ErrorTracking(LastSample()), [10 * MBIT] * 21)
    volatile = feed(ErrorTracking(LastSample()), [10 * MBIT, 2 * MBIT] * 10 + [10 * MBIT])
    # both last saw 10 Mbit/s. Volatile: ten ratios 10/2 = 5 clipped to cap 3, ten of
    # 2/10 = 0.2 clipped to 1/3: mean (10 x 3 + 10 / 3) / 20 = 5/3 -> 10 / (5/3) = 6 Mbit/s
    assert steady.estimate() == 10 * MBIT
    assert volatile.estimate() == pytest.approx(6 * MBIT)


def test_a_stall_discounts_until_it_leaves_the_window() -> None:
    e = feed(ErrorTracking(LastSample(), window=3), [8 * MBIT, 8 * MBIT, 0.0, 8 * MBIT])
    # ratios: 8/8 = 1; 8 after 0: stall = cap 3; 0 then 8: 1/3 -> mean (1 + 3 + 1/3) / 3
    assert isinstance(e, ErrorTracking)
    assert e.estimate() == pytest.approx(8 * MBIT / ((1 + 3 + 1 / 3) / 3))
    e = feed(e, [8 * MBIT] * 3)
    assert e.estimate() == 8 * MBIT


def test_a_faster_link_does_not_discount_as_robustmpc_does() -> None:
    values = [10 * MBIT] * 5 + [20 * MBIT]
    ours = feed(ErrorTracking(HarmonicMean(5), window=5), values)
    robust = feed(RobustLowerBound(HarmonicMean(5), window=5), values)
    inner = feed(HarmonicMean(5), values).estimate()
    # the inner estimate under-predicted 20 with 10: RobustMPC's error |10 - 20| / 20 = 0.5
    # divides by 1.5; a faster-than-predicted transfer is a ratio of 0.5 here, not a discount
    assert robust.estimate() == pytest.approx(inner / 1.5)
    assert ours.estimate() > inner > robust.estimate()


def test_quantile_by_hand() -> None:
    e = ErrorTracking(LastSample(10 * MBIT), window=10, ratios=(0.5, 1.0, 1.0, 1.5, 2.0))
    # q = 0.2: the 0.8 quantile of 5 ratios, nearest rank ceil(0.8 x 5) = 4 -> 1.5
    assert e.quantile(0.2) == pytest.approx(10 * MBIT / 1.5)
    # q = 0.5: rank ceil(2.5) = 3 -> 1.0; q = 0.01: rank 5 -> 2.0
    assert e.quantile(0.5) == pytest.approx(10 * MBIT)
    assert e.quantile(0.01) == pytest.approx(5 * MBIT)
    # the expected-latency estimate: mean ratio 6 / 5 = 1.2
    assert e.estimate() == pytest.approx(10 * MBIT / 1.2)
    assert ErrorTracking(LastSample(10 * MBIT)).quantile(0.1) == 10 * MBIT


def test_quantile_mode_predicts_the_quantile_and_keeps_it() -> None:
    e: ThroughputEstimator = ErrorTracking(LastSample(), window=5, q=0.2)
    e = feed(e, [10 * MBIT, 5 * MBIT, 10 * MBIT, 10 * MBIT, 10 * MBIT, 10 * MBIT])
    assert isinstance(e, ErrorTracking) and e.q == 0.2
    # ratios 2, 0.5, 1, 1, 1: the 0.8 quantile (rank 4 of 5) is 1 -> 10 Mbit/s;
    # the mean ratio would have said 10 / 1.1
    assert e.estimate() == pytest.approx(10 * MBIT)
    e = feed(e, [4 * MBIT])
    # ratios 0.5, 1, 1, 1, 2.5: rank 4 -> 1 -> 4 Mbit/s; at q = 0.1 rank 5 -> 2.5
    assert e.estimate() == pytest.approx(4 * MBIT)
    assert e.quantile(0.1) == pytest.approx(4 * MBIT / 2.5)  # type: ignore[attr-defined]


def test_update_leaves_the_old_value_alone() -> None:
    before = feed(ErrorTracking(LastSample()), [10 * MBIT, 5 * MBIT])
    assert isinstance(before, ErrorTracking)
    after = before.update(ThroughputSample(3.0, 1 * MBIT))
    assert before.ratios == (2.0,) and len(after.ratios) == 2  # type: ignore[attr-defined]
    assert before.estimate() == pytest.approx(5 * MBIT / 2)


def test_registered_by_name() -> None:
    e = make_estimator("tracked")
    assert isinstance(e, ErrorTracking) and e.inner == Ewma(0.8)
    assert (e.window, e.cap) == (20, 3.0) and not e.ready
    # EWMA 0.8 from 10 to 5: 0.8 x 5 + 0.2 x 10 = 6; its ratio on 5 was 10 / 5 = 2 -> 6 / 2
    e = feed(e, [10 * MBIT, 5 * MBIT])
    assert e.estimate() == pytest.approx(3 * MBIT)


def test_estimate_before_any_sample_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="no throughput sample yet"):
        tracked().estimate()
    with pytest.raises(PolicyError, match="no throughput sample yet"):
        tracked().quantile(0.1)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ErrorTracking(LastSample(), window=0), "window=0"),
        (lambda: ErrorTracking(LastSample(), window=True), "window=True"),
        (lambda: ErrorTracking(LastSample(), cap=1.0), "cap=1.0"),
        (lambda: ErrorTracking(LastSample(), cap=math.nan), "cap=nan"),
        (lambda: ErrorTracking(LastSample(), cap=math.inf), "cap=inf"),
        (lambda: ErrorTracking(LastSample(), window=1, ratios=(1.0, 1.0)), "at most window=1"),
    ],
)
def test_bad_config_is_a_config_error(build, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        build()


@pytest.mark.parametrize("value", [math.nan, -1.0, 0.0, 3.5, math.inf])
def test_bad_ratios_are_policy_errors(value: float) -> None:
    with pytest.raises(PolicyError, match=r"ratios=.*\[1/cap, cap\] = \[0.333333, 3\]"):
        ErrorTracking(LastSample(), cap=3.0, ratios=(value,))


@pytest.mark.parametrize("q", [0.0, 1.0, -0.5, math.nan, True])
def test_bad_quantile_is_a_policy_error(q: float) -> None:
    e = feed(tracked(), [10 * MBIT, 5 * MBIT])
    with pytest.raises(PolicyError, match="quantile q="):
        e.quantile(q)  # type: ignore[attr-defined]
    with pytest.raises(PolicyError, match="quantile q="):
        ErrorTracking(LastSample(), q=q)


@pytest.mark.parametrize("value", [math.nan, -1.0, math.inf])
def test_bad_sample_is_a_policy_error(value: float) -> None:
    with pytest.raises(PolicyError, match="bits_per_s"):
        tracked().update(ThroughputSample(0.0, value))


@given(
    st.lists(st.floats(min_value=0.0, max_value=1e10), min_size=1, max_size=60),
    st.integers(min_value=1, max_value=30),
    st.floats(min_value=1.01, max_value=20.0),
)
def test_estimate_stays_within_cap_of_the_inner_one(
    values: list[float], window: int, cap: float
) -> None:
    e = feed(ErrorTracking(LastSample(), window, cap), values)
    assert isinstance(e, ErrorTracking)
    inner = e.inner.estimate()
    assert 1 / cap - 1e-12 <= e.discount <= cap + 1e-12
    assert inner / cap * (1 - 1e-9) <= e.estimate() <= inner * cap * (1 + 1e-9)
    assert e.quantile(0.1) <= e.quantile(0.9) * (1 + 1e-9)
    assert len(e.ratios) <= window
