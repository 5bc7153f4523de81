"""Tune a bandwidth estimator on one trace family, judge it on the others.

The protocol of ``edgesplit experiment generalization`` as pure functions of
a manifest and traces (no files, no clocks), so it is tested on a small
hand-made manifest:

- :func:`score_family`: one estimator on one family at one bandwidth scale:
  edgesplit's mean latency over the oracle's (mean of per-trace ratios, as
  ``edgesplit simulate`` reports it), Neurosurgeon's over edgesplit's, the
  oracle told the rate one request late over the oracle (how predictable the
  family is from the latest measurement), and the error of the bandwidth the
  policy was told against the trace's true rate at each request.
- :func:`tune`: every candidate of a grid on the training family; the one
  whose worst scale is best (ties: the best mean) wins.

A candidate is a name and a function that makes a fresh estimator.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgesplit.bundle import Manifest
from edgesplit.errors import ConfigError
from experiments.simulate import SimConfig, SimResult, simulate
from experiments.traces import Trace
from offload_policy.error_tracking import ErrorTracking
from offload_policy.estimators import (
    Ewma,
    HarmonicMean,
    LastSample,
    RobustLowerBound,
    ThroughputEstimator,
)

Factory = Callable[[], ThroughputEstimator]

#: The inner point predictors of the grid.
INNERS: dict[str, Factory] = {
    "last": LastSample,
    "ewma a=0.5": lambda: Ewma(0.5),
    "ewma a=0.8": lambda: Ewma(0.8),
    "harmonic n=3": lambda: HarmonicMean(3),
    "harmonic n=5": lambda: HarmonicMean(5),
}
#: Windows and caps of the error tracking in the grid.
WINDOWS = (10, 20, 40)
CAPS = (2.0, 3.0, 5.0)


def _tracked(inner: Factory, window: int, cap: float) -> Factory:
    return lambda: ErrorTracking(inner(), window, cap)


def _robust(inner: Factory) -> Factory:
    return lambda: RobustLowerBound(inner(), 5)


def grid(quick: bool = False) -> dict[str, Factory]:
    """The candidates: each inner alone, under RobustMPC's bound, and error-tracked.

    Quick: the latest sample and the harmonic mean of 5, alone and tracked
    (window 20, cap 3).
    """
    windows: tuple[int, ...] = (20,) if quick else WINDOWS
    caps: tuple[float, ...] = (3.0,) if quick else CAPS
    inners = {k: INNERS[k] for k in ("last", "harmonic n=5")} if quick else INNERS
    out: dict[str, Factory] = {}
    for name, inner in inners.items():
        out[name] = inner
        if not quick:
            out[f"robust({name}) w=5"] = _robust(inner)
        for window in windows:
            for cap in caps:
                out[f"tracked({name}) w={window} cap={cap:g}"] = _tracked(inner, window, cap)
    return out


@dataclass(frozen=True)
class FamilyScore:
    """One estimator on one family at one scale (means over the family's traces).

    Attributes:
        family: the trace family.
        scale: the bandwidth scale.
        estimator: the estimator's name.
        vs_oracle: edgesplit's mean latency over the oracle's.
        neurosurgeon_vs_edgesplit: Neurosurgeon's mean latency over edgesplit's.
        late_oracle_vs_oracle: the oracle told the rate one request interval
            late, over the oracle: what predicting from the latest measurement
            can reach on this family.
        edgesplit_ms: edgesplit's mean latency, ms.
        oracle_ms: the oracle's mean latency, ms.
        error_p50: median of ``|told - true| / true`` over requests with true > 0.
        error_p90: its 90th percentile.
        over_fraction: share of those requests told more than the true rate.
        outage_excess: edgesplit's latency beyond the oracle's on requests that
            arrived while the link carried nothing (an outage no past sample
            foretells), over the oracle's total latency: the part of
            ``vs_oracle - 1`` that outages account for (pooled over the family).
        requests: requests per policy over the family.
    """

    family: str
    scale: float
    estimator: str
    vs_oracle: float
    neurosurgeon_vs_edgesplit: float
    late_oracle_vs_oracle: float
    edgesplit_ms: float
    oracle_ms: float
    error_p50: float
    error_p90: float
    over_fraction: float
    outage_excess: float
    requests: int


class References:
    """The oracle, the late oracle and Neurosurgeon per (family, scale), each run once."""

    def __init__(self, manifest: Manifest, config: SimConfig) -> None:
        self.manifest = manifest
        self.config = config
        self._runs: dict[tuple[str, float, str], list[SimResult]] = {}

    def get(
        self, family: str, traces: Sequence[Trace], scale: float, which: str
    ) -> list[SimResult]:
        """``oracle``, ``late`` or ``neurosurgeon`` over ``traces`` at ``scale``."""
        key = (family, scale, which)
        if key not in self._runs:
            config = replace(self.config, bandwidth_scale=scale)
            policy = "oracle" if which == "late" else which
            lag = config.interval_s if which == "late" else 0.0
            self._runs[key] = [
                simulate(self.manifest, t, policy, config, oracle_lag_s=lag) for t in traces
            ]
        return self._runs[key]


def prediction_errors(results: Sequence[SimResult]) -> tuple[float, float, float]:
    """(median, p90) of ``|told - true| / true`` and the over-estimate share, true > 0."""
    told = np.array([r.bandwidth_bps for res in results for r in res.requests_log])
    true = np.array([r.true_bps for res in results for r in res.requests_log])
    keep = np.isfinite(told) & np.isfinite(true) & (true > 0)
    if not keep.any():
        return math.nan, math.nan, math.nan
    error = np.abs(told[keep] - true[keep]) / true[keep]
    over = float(np.mean(told[keep] > true[keep]))
    return float(np.median(error)), float(np.percentile(error, 90)), over


def outage_excess(ours: Sequence[SimResult], oracle: Sequence[SimResult]) -> float:
    """Excess latency over the oracle on requests made during an outage, over the oracle's total."""
    excess = total = 0.0
    for mine, bound in zip(ours, oracle, strict=True):
        for a, b in zip(mine.requests_log, bound.requests_log, strict=True):
            total += b.latency_s
            if b.true_bps == 0.0:
                excess += a.latency_s - b.latency_s
    return excess / total if total > 0 else 0.0


def score_family(
    refs: References,
    family: str,
    traces: Sequence[Trace],
    scale: float,
    name: str,
    make: Factory,
) -> FamilyScore:
    """``make``'s estimator as edgesplit's on ``traces`` at ``scale``; see :class:`FamilyScore`."""
    if not traces:
        raise ConfigError(f"family {family!r}: no traces to score")
    config = replace(refs.config, bandwidth_scale=scale)
    ours = [simulate(refs.manifest, t, "edgesplit", config, estimator_factory=make) for t in traces]
    oracle = refs.get(family, traces, scale, "oracle")
    late = refs.get(family, traces, scale, "late")
    static = refs.get(family, traces, scale, "neurosurgeon")
    p50, p90, over = prediction_errors(ours)

    def ratio(a: Sequence[SimResult], b: Sequence[SimResult]) -> float:
        return statistics.fmean(
            x.mean_latency_s / y.mean_latency_s for x, y in zip(a, b, strict=True)
        )

    return FamilyScore(
        family=family,
        scale=scale,
        estimator=name,
        vs_oracle=ratio(ours, oracle),
        neurosurgeon_vs_edgesplit=ratio(static, ours),
        late_oracle_vs_oracle=ratio(late, oracle),
        edgesplit_ms=statistics.fmean(r.mean_latency_s for r in ours) * 1e3,
        oracle_ms=statistics.fmean(r.mean_latency_s for r in oracle) * 1e3,
        error_p50=p50,
        error_p90=p90,
        over_fraction=over,
        outage_excess=outage_excess(ours, oracle),
        requests=sum(r.requests for r in ours),
    )


def tune(
    refs: References,
    family: str,
    traces: Sequence[Trace],
    scales: Sequence[float],
    candidates: Mapping[str, Factory],
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[str, list[FamilyScore]]:
    """The candidate whose worst ratio to the oracle over ``scales`` is lowest, and every score.

    Ties (within 0.001) go to the lower mean over the scales, then to the
    earlier candidate (the grid lists the simpler ones first).
    """
    if not candidates:
        raise ConfigError("tune: no candidate estimators")
    scores: list[FamilyScore] = []
    keys: dict[str, tuple[float, float]] = {}
    for name, make in candidates.items():
        mine = [score_family(refs, family, traces, s, name, make) for s in scales]
        scores += mine
        ratios = [s.vs_oracle for s in mine]
        keys[name] = (round(max(ratios), 3), statistics.fmean(ratios))
        progress(name)
    best = min(candidates, key=lambda n: keys[n])
    return best, scores


__all__ = [
    "CAPS",
    "INNERS",
    "WINDOWS",
    "FamilyScore",
    "References",
    "grid",
    "outage_excess",
    "prediction_errors",
    "score_family",
    "tune",
]
