"""The generalization experiment: its parts, and a whole run on a small subset."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from edgesplit.bundle import Bundle
from edgesplit.errors import ConfigError
from experiments.bundles import ModelRun
from experiments.harness import REPO_TRACES, Settings
from experiments.prediction_protocol import References, grid, score_family, tune
from experiments.simulate import SimConfig, simulate
from experiments.trace_families import LTE_LIKE, MarkovLink, synthesize, time_warped
from experiments.traces import Trace, load_traces
from offload_policy.estimators import LastSample
from tests.offload_policy.test_cost import M

PNG = b"\x89PNG\r\n\x1a\n"


def test_synthetic_family_is_seeded_and_scaled_to_its_median() -> None:
    a = synthesize(LTE_LIKE, 3, seed=7)
    b = synthesize(LTE_LIKE, 3, seed=7)
    assert [t.name for t in a] == ["lte-mm_00", "lte-mm_01", "lte-mm_02"]
    assert all(np.array_equal(x.mbps, y.mbps) for x, y in zip(a, b, strict=True))
    every = np.concatenate([t.mbps for t in a])
    assert np.median(every[every > 0]) == pytest.approx(LTE_LIKE.median_mbps)
    assert all(t.family == "lte-mm" and t.duration_s == pytest.approx(240.0) for t in a)
    assert (every == 0).any()  # outages are part of the model
    assert not np.array_equal(a[0].mbps, synthesize(LTE_LIKE, 3, seed=8)[0].mbps)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"step_s": 0.0}, "step_s=0.0"),
        ({"levels": ()}, "levels=()"),
        ({"levels": (1.0, -1.0)}, "levels="),
        ({"jump_weights": (0.5, 0.4)}, "jump_weights="),
        ({"fading_corr": 1.0}, "fading_corr=1.0"),
        ({"outage_rate_per_s": math.nan}, "outage_rate_per_s=nan"),
    ],
)
def test_bad_markov_parameters_are_named(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MarkovLink(**changes)  # type: ignore[arg-type]


def test_time_warp_plays_the_same_values_faster() -> None:
    real = load_traces([REPO_TRACES / "hsdpa"])
    warped = time_warped(real, 4.0)
    assert [t.family for t in warped] == ["hsdpa-warp4"] * len(real)
    assert np.array_equal(warped[0].mbps, real[0].mbps)
    assert warped[0].duration_s == pytest.approx(real[0].duration_s / 4)
    with pytest.raises(ConfigError, match="factor=0"):
        time_warped(real, 0)


def _square(name: str, period_s: float = 10.0) -> Trace:
    times = np.arange(0.0, 60.0, 1.0)
    return Trace(name, "square", times, np.where((times // period_s) % 2 == 0, 20.0, 0.2))


def test_late_oracle_lies_between_the_oracle_and_worse() -> None:
    config = SimConfig(interval_s=1.0, rtt_s=0.01, corrections="off")
    trace = _square("sq")
    oracle = simulate(M, trace, "oracle", config)
    late = simulate(M, trace, "oracle", config, oracle_lag_s=1.0)
    # told the rate a second late, it misses each of the five switches once
    assert late.mean_latency_s > oracle.mean_latency_s
    log = late.requests_log
    assert log[10].bandwidth_bps == pytest.approx(20e6) and log[10].true_bps == pytest.approx(0.2e6)
    with pytest.raises(ConfigError, match="oracle_lag_s=-1"):
        simulate(M, trace, "oracle", config, oracle_lag_s=-1)


def test_an_outage_no_sample_foretold_is_counted_apart() -> None:
    refs = References(M, SimConfig(interval_s=1.0, rtt_s=0.01, corrections="off"))
    times = np.arange(0.0, 30.0, 1.0)
    # 20 Mbit/s, nothing from 10 s to 13 s, then 20 again
    trace = Trace("gap", "gap", times, np.where((times >= 10) & (times < 13), 0.0, 20.0))
    score = score_family(refs, "gap", [trace], 1.0, "last", LastSample)
    # at t = 10 edgesplit sends (it last saw 20 Mbit/s) and waits out the outage; the
    # oracle, told 0, stays on the edge: that request alone is the excess
    assert score.outage_excess > 0
    assert score.outage_excess == pytest.approx(score.vs_oracle - 1, rel=0.05)
    flat = score_family(refs, "sq", [_square("sq")], 1.0, "last", LastSample)
    assert flat.outage_excess == 0.0


def test_score_and_tune_on_a_small_family() -> None:
    refs = References(M, SimConfig(interval_s=1.0, rtt_s=0.01, corrections="off"))
    traces = [_square("a"), _square("b", 5.0)]
    score = score_family(refs, "square", traces, 1.0, "last", LastSample)
    assert score.vs_oracle >= 1.0 - 1e-9 and score.late_oracle_vs_oracle >= 1.0 - 1e-9
    assert 0 <= score.error_p50 <= score.error_p90 and 0 <= score.over_fraction <= 1
    assert score.requests == 120
    candidates = grid(quick=True)
    assert list(candidates) == [
        "last",
        "tracked(last) w=20 cap=3",
        "harmonic n=5",
        "tracked(harmonic n=5) w=20 cap=3",
    ]
    best, scores = tune(refs, "square", traces, (1.0, 10.0), candidates)
    assert best in candidates and len(scores) == 2 * len(candidates)
    mine = [s for s in scores if s.estimator == best]
    assert max(s.vs_oracle for s in mine) <= min(
        max(s.vs_oracle for s in scores if s.estimator == name) for name in candidates
    )
    with pytest.raises(ConfigError, match="no candidate"):
        tune(refs, "square", traces, (1.0,), {})


def test_the_experiment_runs_on_a_small_subset_and_prints_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from experiments import exp_generalization

    def hand_made(model: str, *_: object) -> ModelRun:
        bundle = Bundle(tmp_path / "bundle", M)
        return ModelRun(model, bundle, tmp_path / "e.json", tmp_path / "c.json", True, "none")

    monkeypatch.setattr(exp_generalization, "one_model_run", hand_made)
    settings = Settings(
        out=tmp_path / "out",
        quick=True,
        traces=(REPO_TRACES,),
        edge_cpu_quota=None,
        cache=tmp_path / "cache",
        overrides={"per_family": 1, "duration_s": 20.0},
    )
    console = Console(record=True, width=160)
    exp_generalization.run(settings, console)
    printed = console.export_text()
    assert "edgesplit/oracle" in printed and "pred err p90" in printed
    for family in ("fcc", "hsdpa", "fcc-warp4", "hsdpa-warp4", "lte-mm"):
        assert f"{family} " in printed
    folder = settings.out / "generalization"
    with (folder / "generalization.csv").open() as f:
        rows = list(csv.DictReader(f))
    # 5 families x 3 scales x (before, shipped, tuned on fcc, tuned on hsdpa)
    assert len(rows) == 5 * 3 * 4
    held = {(r["tuned_on"], r["family"]): r["held_out"] for r in rows if r["role"] == "tuned"}
    assert held[("hsdpa", "fcc")] == "held out" and held[("hsdpa", "hsdpa")] == "tuned here"
    assert held[("hsdpa", "hsdpa-warp4")] == "derived from it"
    assert all(float(r["vs_oracle"]) > 0.9 for r in rows)
    report = (folder / "report.md").read_text()
    assert "Tune on one family, judge on the others" in report
    assert LTE_LIKE.describe() in report
    assert (folder / "generalization.png").read_bytes()[:8] == PNG
    with (folder / "slo.csv").open() as f:
        slo = list(csv.DictReader(f))
    # 5 families x 2 scales x (oracle, mean, quantile, robust)
    assert len(slo) == 5 * 2 * 4 and all(0 <= float(r["slo_miss_rate"]) <= 1 for r in slo)
    assert "A tight SLO" in report
    with (folder / "tuning.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2 * 3 * len(grid(quick=True))
