"""The probation verdict alone: errors judged early, latency at the end, warm-up left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_node.config import UpdateConfig
from edge_node.probation import Health, judge
from edge_node.records import Outcome


def _health(latencies_ms: list[float], errors: int = 0) -> Health:
    health = Health()
    for i, ms in enumerate(latencies_ms):
        finished = "fallback" if i < errors else "cloud"
        health.add(Outcome(np.zeros(1), finished, "c03", ms / 1e3, 0.0))
    return health


CONFIG = UpdateConfig(state_dir=Path("unused"), min_requests=10, max_latency_ratio=1.5)


def test_no_verdict_before_min_requests() -> None:
    assert judge(_health([5.0] * 50), _health([5.0] * 9, errors=9), CONFIG, final=True) is None


def test_errors_roll_back_at_once_latency_only_at_the_end() -> None:
    old = _health([5.0] * 50, errors=1)  # 2%
    erring = judge(old, _health([5.0] * 10, errors=1), CONFIG, final=False)  # 10% > 2% + 5%
    assert erring is not None and erring.regressed and "error rate 10.0% vs 2.0%" in erring.reason
    assert judge(old, _health([5.0] * 10), CONFIG, final=False) is None  # fine so far: wait
    slow = judge(old, _health([9.0] * 30), CONFIG, final=True)
    assert slow is not None and slow.regressed and "p50 9.0 ms vs 5.0 ms" in slow.reason
    fine = judge(old, _health([6.0] * 30), CONFIG, final=True)
    assert fine is not None and not fine.regressed


def test_cold_first_requests_do_not_roll_back_a_healthy_bundle() -> None:
    old = _health([5.0] * 50)
    # The first fifth of the new bundle's requests run on cold sessions.
    warming = [50.0] * 8 + [5.0] * 32
    verdict = judge(old, _health(warming), CONFIG, final=True)
    assert verdict is not None and not verdict.regressed
    # But a bundle slow throughout is still caught.
    verdict = judge(old, _health([50.0] * 8 + [8.0] * 32), CONFIG, final=True)
    assert verdict is not None and verdict.regressed
