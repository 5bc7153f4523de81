"""The closed-loop corrections: convergence, forgetting, outliers, bounds, bad input.

Arithmetic beside each assert; the policy cases use the hand-made manifest of test_cost.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesplit.errors import PolicyError
from offload_policy import AdaptivePolicy, Observation, PolicyConfig, predict
from offload_policy.corrections import CorrectionConfig, Corrections
from offload_policy.table import DecisionTable
from offload_policy.types import Decision
from tests.offload_policy.test_cost import M


def feed(
    c: Corrections, ratio: float, n: int, start: float = 0.0, term: str = "edge"
) -> Corrections:
    """``n`` samples one second apart, each ``ratio`` x the profile's 10 ms."""
    for k in range(n):
        c = getattr(c, f"observe_{term}")(start + k, 0.010 * ratio, 0.010)
    return c


def test_fresh_corrections_are_the_profile() -> None:
    f = Corrections().factors(123.0)
    assert (f.edge, f.cloud, f.queue_s) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("term", ["edge", "cloud"])
def test_a_2x_slowdown_is_learned_within_twenty_samples(term: str) -> None:
    c = feed(Corrections(), 2.0, 12, term=term)
    # median of 3 lags one sample, then L_k = ln2 x (1 - 0.85^(k-1)): 11 steps -> 0.833 ln2
    assert getattr(c.factors(11.0), term) > 2.0 * 0.9
    c = feed(c, 2.0, 8, start=12.0, term=term)
    # 19 steps: 1 - 0.85^19 = 0.954 of ln2 -> 1.94 (the 300 s half-life takes ~0.3% a second)
    assert 2.0 * 0.96 < getattr(c.factors(19.0), term) <= 2.0
    other = "cloud" if term == "edge" else "edge"
    assert getattr(c.factors(19.0), other) == 1.0


def test_a_speed_up_is_learned_as_well() -> None:
    c = feed(Corrections(), 0.5, 25)
    assert 0.5 <= c.factors(24.0).edge < 0.5 * 1.05


def test_recovery_follows_the_evidence_back() -> None:
    c = feed(Corrections(), 2.0, 60)
    c = feed(c, 1.0, 20, start=60.0)
    # back from ln2: 0.85^19 x ln2 = 0.031 -> 1.03
    assert 1.0 <= c.factors(79.0).edge < 1.05


def test_forgets_slowly_without_evidence() -> None:
    c = feed(Corrections(), 2.0, 60)
    learned = c.factors(59.0).edge
    # 30 s without a sample: 0.5^(30/300) = 0.933 of the log-factor is left
    assert c.factors(89.0).edge == pytest.approx(learned ** (0.5 ** (30 / 300)))
    assert c.factors(89.0).edge > 1.8
    # one half-life: sqrt of the factor; ten: all but gone
    assert c.factors(359.0).edge == pytest.approx(math.sqrt(learned))
    assert c.factors(3059.0).edge < 1.001
    never = feed(Corrections(CorrectionConfig(half_life_s=None)), 2.0, 60)
    assert never.factors(1e6).edge == never.factors(59.0).edge


def test_one_outlier_moves_nothing() -> None:
    c = feed(Corrections(), 1.0, 10)
    spiked = c.observe_edge(10.0, 1.0, 0.010)  # 100x: a page fault, a GC pause
    # the median of (0, 0, ln100) is 0
    assert spiked.factors(10.0).edge == 1.0
    after = feed(spiked, 1.0, 5, start=11.0)
    assert after.factors(15.0).edge == 1.0


def test_a_run_of_outliers_moves_at_most_max_step_per_sample() -> None:
    c = Corrections()
    steps = []
    for k in range(6):
        before = c.factors(float(k)).edge
        c = c.observe_edge(float(k), 1e6, 1e-3)  # a billion times slower
        steps.append(math.log(c.factors(float(k)).edge / before))
    assert max(steps) <= 0.2 + 1e-12
    # ... and never past the bound, however long it lasts
    c = feed(c, 1e9, 500, start=6.0)
    assert 9.5 < c.factors(505.0).edge <= 10.0  # the bound, less what a second of decay takes
    c = feed(Corrections(), 1e-9, 500)
    assert 0.1 <= c.factors(499.0).edge < 0.105


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=1e-9, max_value=1e3), min_size=1, max_size=40))
def test_factors_stay_bounded(measured: list[float]) -> None:
    c = Corrections()
    for k, m in enumerate(measured):
        c = c.observe_cloud(float(k), m, 0.01)
        assert 0.1 - 1e-12 <= c.factors(float(k)).cloud <= 10.0 + 1e-12


def test_a_probe_is_due_when_the_edge_was_measured_slow_a_second_ago() -> None:
    assert not Corrections().probe_due(100.0)  # never measured: believed as profiled
    slow = feed(Corrections(), 2.0, 20)  # latest at t=19, factor ~1.93
    assert not slow.probe_due(19.5)  # measured half a second ago
    assert slow.probe_due(20.0)
    as_profiled = feed(Corrections(), 1.05, 20)  # 5% slower: within PROBE_ABOVE
    assert not as_profiled.probe_due(30.0)
    faster = feed(Corrections(), 0.5, 20)
    assert not faster.probe_due(30.0)
    # a slow factor that decays below 1.1 (0.5^(t/300) of ln 1.93) stops the probes
    assert not slow.probe_due(19.0 + 300 * math.log2(math.log(1.93) / math.log(1.1)) + 1)


def test_queue_is_an_additive_average() -> None:
    c = Corrections().observe_queue(0.0, 0.040)
    assert c.factors(0.0).queue_s == pytest.approx(0.040)  # the first report sets it
    c = c.observe_queue(0.0, 0.0)
    # 0.040 + 0.15 x (0 - 0.040) = 0.034
    assert c.factors(0.0).queue_s == pytest.approx(0.034)
    # and it decays like the factors: one half-life later, half
    assert c.factors(300.0).queue_s == pytest.approx(0.017)


@pytest.mark.parametrize(
    ("measured", "predicted", "now"),
    [
        (0.0, 0.010, 5.0),  # a clock that did not move
        (-0.002, 0.010, 5.0),  # a clock that went backwards
        (0.010, 0.0, 5.0),  # a segment the profile timed at zero: no ratio
        (0.010, 0.010, 1.0),  # a sample older than the latest
    ],
)
def test_samples_that_cannot_be_ratios_are_ignored_and_counted(
    measured: float, predicted: float, now: float
) -> None:
    c = feed(Corrections(), 2.0, 4, start=2.0)  # latest at t=5
    after = c.observe_edge(now, measured, predicted)
    assert after.edge == c.edge
    assert after.ignored == c.ignored + 1
    assert c.observe_queue(4.0, 0.1).ignored == 0
    assert c.observe_queue(4.0, -1.0).ignored == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.observe_edge(0.0, math.nan, 0.01), "edge measured_s=nan"),
        (lambda c: c.observe_cloud(0.0, 0.01, math.inf), "cloud predicted_s=inf"),
        (lambda c: c.observe_cloud(0.0, 0.01, -0.01), "cloud predicted_s=-0.01"),
        (lambda c: c.observe_edge(math.nan, 0.01, 0.01), "now=nan"),
        (lambda c: c.observe_edge(0.0, "1", 0.01), "edge measured_s='1'"),
        (lambda c: c.observe_queue(0.0, math.nan), "queue_s=nan"),
        (lambda c: Corrections(CorrectionConfig(alpha=0.0)), "alpha=0.0"),
        (lambda c: Corrections(CorrectionConfig(window=0)), "window=0"),
        (lambda c: Corrections(CorrectionConfig(max_factor=1.0)), "max_factor=1.0"),
        (lambda c: Corrections(CorrectionConfig(half_life_s=-1.0)), "half_life_s=-1.0"),
    ],
)
def test_bad_input_is_a_clear_policy_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError, match="correction " + message.split("=")[0]) as info:
        call(Corrections())
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["edge_factor", "cloud_factor"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_observation_refuses_a_factor_that_is_not_positive(name: str, value: float) -> None:
    with pytest.raises(PolicyError, match=f"observation {name}="):
        Observation(1e6, **{name: value})


# -- the policy: the decision moves when the device slows --------------------------------------

SLOW_LINK_BPS = 0.5e6


def test_the_table_scales_edge_and_tail_times() -> None:
    table = DecisionTable.build(M)
    i = table.index(Decision("c02", 0.8, "raw"))
    # edge 10 ms + 0.75 x 20 ms = 25 ms, x2 = 50; 1 kB at 8 Mbit/s = 1 ms + 2 ms rtt + 1 ms
    # tail x3 = 3 ms: 0.75 x 6 ms
    assert table.latency(8e6, 0.002, 0.0, 2.0, 3.0)[i] == pytest.approx(0.050 + 0.75 * 0.006)
    assert np.array_equal(table.latency(8e6, 0.002), table.latency(8e6, 0.002, 0.0, 1.0, 1.0))
    with pytest.raises(PolicyError, match="edge_factor=0.0"):
        table.latency(8e6, 0.002, 0.0, 0.0)


def test_the_decision_moves_when_the_edge_slows_2x() -> None:
    policy = AdaptivePolicy(M, PolicyConfig())
    profiled = Observation(SLOW_LINK_BPS, 0.0)
    # at 0.5 Mbit/s, as profiled: c02 at exit 0.8, int8: 10 + 0.75 x 20 = 25 ms on the edge,
    # + 0.75 x (250 B = 4 ms + 1 ms tail) = 28.75 ms; cloud-only int8: 2.5 kB = 40 ms + 5 ms = 45
    before, state = policy.decide(profiled, None, 0.0)
    assert before == Decision("c02", 0.8, "int8")
    # the edge 2x slower: c02 takes 50 + 3.75 = 53.75 ms, edge-only c03 10 + 0.75 x 30 = 32.5 x 2
    # = 65 ms, cloud-only still 45 ms: faster by more than the 10% hysteresis
    slow = Observation(SLOW_LINK_BPS, 0.0, edge_factor=2.0)
    after, _ = policy.decide(slow, state, 1.0)
    assert after == Decision("c00", None, "int8")
    assert predict(M, after, slow).latency_s == pytest.approx(0.045)
    assert predict(M, before, slow).latency_s == pytest.approx(0.05375)


def test_measured_head_times_move_the_decision_within_twenty_requests() -> None:
    policy = AdaptivePolicy(M, PolicyConfig())
    corrections = Corrections()
    state = None
    decisions = []
    for k in range(40):
        f = corrections.factors(float(k))
        observation = Observation(SLOW_LINK_BPS, 0.0, edge_factor=f.edge, cloud_factor=f.cloud)
        decision, state = policy.decide(observation, state, float(k))
        decisions.append(decision.cut)
        # the device now runs 2x slower than profiled: the head's 10 ms segment takes 20
        corrections = corrections.observe_edge(float(k), 0.020, 0.010)
    assert decisions[0] == "c02"
    # 53.75 ms / 1.1 > 45 ms once the factor passes ~1.62: the 6th factor (1 - 0.85^5 of ln2)
    switched = decisions.index("c00")
    assert switched <= 20, decisions
    assert set(decisions[switched:]) == {"c00"}


def test_a_busy_cloud_in_recent_replies_counts_when_the_last_report_is_stale() -> None:
    policy = AdaptivePolicy(M, PolicyConfig(hysteresis=0.0))
    fast = Observation(1e9, 0.0)
    # at 1 Gbit/s cloud-only is 5 ms + ~0 transfer; edge-only at 0.8 is 32.5 ms
    assert policy.decide(fast, None, 0.0)[0].cut == "c00"
    queued = Observation(1e9, 0.0, expected_queue_s=0.5)
    # 0.5 s of typical queue: every offload pays it, the edge keeps the request
    assert policy.decide(queued, None, 0.0)[0].cut == "c03"
    assert queued.queue_s == max(queued.cloud_queue_s, 0.5)
