"""The adaptive policy and the baselines on the hand-made manifest of test_cost."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesplit.errors import PolicyError
from offload_policy.adaptive import AdaptivePolicy, PolicyConfig, PolicyState
from offload_policy.baselines import Edgent, cloud_only, edge_only, neurosurgeon
from offload_policy.battery import Battery, energy_budget_j
from offload_policy.cost import branches, decision_terms
from offload_policy.table import DecisionTable
from offload_policy.types import Decision, Observation
from tests.offload_policy.test_cost import M

POLICY = AdaptivePolicy(M, PolicyConfig(hysteresis=0.0))
bandwidths = st.floats(min_value=1e3, max_value=1e10, allow_nan=False)


def test_table_holds_every_allowed_decision() -> None:
    table = DecisionTable.build(M)
    # c00: no exit before it -> one threshold (None) x 2 codecs; c01, c02: 3 thresholds x 2
    # codecs; c03 (edge-only): 3 thresholds x 1 codec.
    assert len(table) == 2 + 6 + 6 + 3
    i = table.index(Decision("c02", 0.8, "raw"))
    # 10 ms + 0.75 x 20 ms edge; 1 kB at 8 Mbit/s = 1 ms + 2 ms rtt + 1 ms tail, x 0.75
    assert table.latency(8e6, 0.002)[i] == pytest.approx(0.025 + 0.75 * 0.004)


def test_branches_add_up_to_the_terms() -> None:
    for decision in DecisionTable.build(M).decisions:
        options = branches(M, decision)
        assert sum(b.probability for b in options) == pytest.approx(1.0)
        terms = decision_terms(M, decision)
        assert sum(b.probability * b.edge_s for b in options) == pytest.approx(terms.edge_s)
        assert sum(b.probability for b in options if b.offloaded) == pytest.approx(terms.p_offload)


def test_zero_bandwidth_is_edge_only() -> None:
    decision, _ = POLICY.decide(Observation(0.0), None, 0.0)
    assert decision.cut == M.edge_only.id


@settings(max_examples=80, deadline=None)
@given(bandwidths, st.floats(min_value=0, max_value=0.5))
def test_never_slower_than_cloud_only_or_edge_only(bandwidth: float, rtt: float) -> None:
    observation = Observation(bandwidth, rtt)
    decision, _ = POLICY.decide(observation, None, 0.0)
    table = POLICY.table
    latency = table.latency(bandwidth, rtt)
    chosen = latency[table.index(decision)]
    for baseline in (cloud_only(M, "raw"), edge_only(M)):
        base, _ = baseline.decide(observation, None, 0.0)
        assert chosen <= latency[table.index(base)] + 1e-12


@settings(max_examples=80, deadline=None)
@given(bandwidths, st.floats(min_value=0.5, max_value=1.0), st.floats(min_value=0.0, max_value=0.5))
def test_a_lower_floor_is_never_slower(bandwidth: float, floor: float, drop: float) -> None:
    table = POLICY.table
    latency = table.latency(bandwidth, 0.01)
    high, _ = POLICY.decide(Observation(bandwidth, 0.01, accuracy_floor=floor), None, 0.0)
    low, _ = POLICY.decide(Observation(bandwidth, 0.01, accuracy_floor=floor - drop), None, 0.0)
    assert latency[table.index(low)] <= latency[table.index(high)] + 1e-12


def test_accuracy_floor_turns_exits_off() -> None:
    # An exit that answers 25% of the inputs at 80% accuracy: 0.25 x 0.8 + 0.75 x 0.88 = 0.86.
    calibration = replace(M.calibration, accuracy=((0.8,), (math.nan,)))
    lossy = replace(M, calibration=calibration)
    policy = AdaptivePolicy(lossy, PolicyConfig(hysteresis=0.0))
    fast, _ = policy.decide(Observation(1e3, 0.0), None, 0.0)  # slow link: edge-only
    strict, _ = policy.decide(Observation(1e3, 0.0, accuracy_floor=0.9), None, 0.0)
    assert fast.cut == strict.cut == lossy.edge_only.id
    assert decision_terms(lossy, fast).accuracy == pytest.approx(0.86)
    assert decision_terms(lossy, strict).accuracy >= 0.9


def test_cloud_down_or_overloaded_means_edge_only() -> None:
    for observation in (
        Observation(1e9, 0.0, cloud_available=False),
        Observation(1e9, 0.0, cloud_queue_s=5.0),
    ):
        decision, _ = POLICY.decide(observation, None, 0.0)
        assert decision.cut == M.edge_only.id


def test_hysteresis_keeps_a_nearly_as_good_decision() -> None:
    sticky = AdaptivePolicy(M, PolicyConfig(hysteresis=0.5))
    first, state = sticky.decide(Observation(1e6, 0.0), None, 0.0)
    # A small change of bandwidth makes another decision slightly better: no switch.
    again, state2 = sticky.decide(Observation(1.05e6, 0.0), state, 1.0)
    assert again == first and state2 == state
    # Without hysteresis the best is taken every time.
    flappy = [POLICY.decide(Observation(bw, 0.0), None, 0.0)[0] for bw in (1e3, 1e8)]
    assert flappy[0] != flappy[1]


def test_low_battery_spends_within_the_budget() -> None:
    config = PolicyConfig(hysteresis=0.0, capacity_wh=0.001, target_lifetime_s=100.0)
    policy = AdaptivePolicy(M, config)
    observation = Observation(2e6, 0.0, battery_level=0.2, charging=False)
    budget = policy.energy_budget(observation)
    assert budget == pytest.approx(energy_budget_j(Battery(0.001, 0.2), 100.0, 1.0))
    decision, _ = policy.decide(observation, None, 0.0)
    _, energy, _ = policy.scores(observation)
    chosen = energy[policy.table.index(decision)]
    assert chosen <= budget or chosen == pytest.approx(energy.min())
    # On a charger the budget does not apply.
    assert policy.energy_budget(Observation(2e6, 0.0, battery_level=0.2, charging=True)) is None


def test_slo_is_met_when_possible() -> None:
    latency = POLICY.table.latency(1e6, 0.0)
    decision, _ = POLICY.decide(Observation(1e6, 0.0, slo_s=0.03, accuracy_floor=0.9), None, 0.0)
    assert latency[POLICY.table.index(decision)] <= 0.03 or latency.min() > 0.03


def test_neurosurgeon_is_static_and_edgent_meets_the_deadline() -> None:
    ns = neurosurgeon(M, 8e6, 0.0)
    a, _ = ns.decide(Observation(1e3), None, 0.0)
    b, _ = ns.decide(Observation(1e9), None, 1.0)
    assert a == b and a.exit_threshold is None
    edgent = Edgent(M, deadline_s=0.05)
    d, _ = edgent.decide(Observation(8e6, 0.0), None, 0.0)
    table = DecisionTable.build(M, codecs=["raw"])
    assert table.latency(8e6, 0.0)[table.index(d)] <= 0.05


def test_bad_observations_and_configs() -> None:
    with pytest.raises(PolicyError, match="bandwidth_bps=nan"):
        Observation(math.nan)
    with pytest.raises(PolicyError, match="bandwidth_bps=-1"):
        POLICY.table.latency(-1.0, 0.0)
    with pytest.raises(PolicyError, match="radio '5g'"):
        PolicyConfig(radio="5g")
    with pytest.raises(PolicyError, match="battery level=1.5"):
        Battery(10.0, 1.5)
    with pytest.raises(PolicyError, match="drain joules"):
        Battery(10.0).drain(-1.0)


def test_battery_drains_and_charges_not() -> None:
    battery = Battery(1.0, 1.0)  # 3600 J
    assert battery.drain(360.0).level == pytest.approx(0.9)
    assert Battery(1.0, 0.5, charging=True).drain(1000.0).level == 0.5
    assert battery.drain(1e9).empty


def test_state_round_trip() -> None:
    decision, state = POLICY.decide(Observation(1e6), None, 0.0)
    assert isinstance(state, PolicyState) and POLICY.table.decisions[state.current] == decision
    assert np.isfinite(POLICY.table.latency(1e6, 0.0)).all()


def test_a_profile_missing_a_figure_is_named() -> None:
    from edgesplit.errors import BundleError

    edge = M.profiles["edge"]
    broken = replace(
        M,
        profiles={
            **M.profiles,
            "edge": replace(
                edge, timings={k: v for k, v in edge.timings.items() if k != "c01__c02"}
            ),
        },
    )
    with pytest.raises(BundleError, match="edge profile has no timing for 'c01__c02'"):
        AdaptivePolicy(broken)
