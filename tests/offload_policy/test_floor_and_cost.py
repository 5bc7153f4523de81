"""The default accuracy floor and the cloud cost objective, on the hand-made manifest."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesplit.errors import PolicyError
from offload_policy import default_accuracy_floor, whole_model_accuracy
from offload_policy.adaptive import AdaptivePolicy, PolicyConfig
from offload_policy.table import DecisionTable
from offload_policy.types import Decision, Observation
from tests.offload_policy.test_cost import M

bandwidths = st.floats(min_value=1e3, max_value=1e10, allow_nan=False)


def test_the_default_floor_is_the_whole_models_accuracy_less_one_point() -> None:
    assert whole_model_accuracy(M) == pytest.approx(0.9)  # edge-only, exits off
    assert default_accuracy_floor(M) == pytest.approx(0.89)
    assert default_accuracy_floor(M, margin=0.5) == pytest.approx(0.4)
    # Without labels there is no accuracy to keep: no floor.
    assert default_accuracy_floor(replace(M, calibration=None)) == 0.0


@settings(max_examples=200, deadline=None)
@given(bandwidth=bandwidths, rtt=st.floats(0.0, 0.5))
def test_under_the_default_floor_no_choice_predicts_less(bandwidth: float, rtt: float) -> None:
    policy = AdaptivePolicy(M, PolicyConfig(hysteresis=0.0))
    floor = default_accuracy_floor(M)
    observation = Observation(bandwidth, rtt, accuracy_floor=floor)
    decision, _ = policy.decide(observation, None, 0.0)
    accuracy = policy.table.accuracy[policy.table.index(decision)]
    assert accuracy >= floor - 1e-12


def test_cost_is_priced_compute_seconds_and_gigabytes_received() -> None:
    table = DecisionTable.build(M)
    cost = table.cost(price_cloud_s=2.0, price_gb=50.0)
    cloud_only = table.index(Decision("c00", None, "raw"))
    # always sent: 5 ms of tail compute and 10,000 bytes
    assert cost[cloud_only] == pytest.approx(0.005 * 2.0 + 10_000 / 1e9 * 50.0)
    assert cost[table.edge_only].max() == 0.0
    early = table.index(Decision("c02", 0.8, "int8"))
    # sent 75% of the time (the exit takes 25%): 1 ms of tail, 250 bytes
    assert cost[early] == pytest.approx(0.75 * (0.001 * 2.0 + 250 / 1e9 * 50.0))
    with pytest.raises(PolicyError, match="price_gb"):
        table.cost(1.0, -1.0)


def test_a_cost_budget_is_kept_and_nothing_affordable_means_the_cheapest() -> None:
    observation = Observation(50e6, 0.01, accuracy_floor=0.0)
    free = AdaptivePolicy(M, PolicyConfig(hysteresis=0.0))
    chosen, _ = free.decide(observation, None, 0.0)
    assert not free.table.edge_only[free.table.index(chosen)]  # offloading pays here
    prices = {"price_cloud_s": 1.0, "price_gb": 0.0}
    budget = AdaptivePolicy(M, PolicyConfig(hysteresis=0.0, cost_budget=0.0005, **prices))
    decision, _ = budget.decide(observation, None, 0.0)
    assert budget.cost[budget.table.index(decision)] <= 0.0005
    # A budget nothing that sends can meet: the cheapest, which is edge-only.
    none = AdaptivePolicy(M, PolicyConfig(hysteresis=0.0, cost_budget=1e-9, **prices))
    decision, _ = none.decide(observation, None, 0.0)
    assert none.table.edge_only[none.table.index(decision)]


def test_a_heavier_cost_weight_never_chooses_a_dearer_decision() -> None:
    observation = Observation(20e6, 0.02, accuracy_floor=0.0)
    costs = []
    for weight in (0.0, 1.0, 10.0, 100.0, 1e4):
        policy = AdaptivePolicy(
            M, PolicyConfig(hysteresis=0.0, price_cloud_s=1.0, price_gb=10.0, cost_weight=weight)
        )
        decision, _ = policy.decide(observation, None, 0.0)
        costs.append(policy.cost[policy.table.index(decision)])
    assert costs == sorted(costs, reverse=True)
    assert costs[0] > 0 and costs[-1] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"price_cloud_s": -1.0}, "price_cloud_s"),
        ({"price_gb": float("nan")}, "price_gb"),
        ({"cost_weight": float("inf")}, "cost_weight"),
        ({"cost_budget": -0.1}, "cost_budget"),
    ],
)
def test_bad_prices_are_named(kwargs: dict[str, float], phrase: str) -> None:
    with pytest.raises(PolicyError, match=phrase):
        PolicyConfig(**kwargs)  # type: ignore[arg-type]


def test_the_cost_adds_nothing_to_a_decision_when_unpriced() -> None:
    policy = AdaptivePolicy(M)
    assert np.all(policy.cost == 0.0)
