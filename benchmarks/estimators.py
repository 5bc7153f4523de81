"""How well each throughput estimator predicts the next interval of the real traces.

Replays every trace in ``shared/traces`` (both families) sample by sample:
after folding in sample i, the estimator predicts the throughput of interval
i+1, which is then revealed. Per family and estimator it reports the
absolute relative error ``|predicted - true| / true`` at p50, p90 and p95
(over intervals with true > 0: a relative error against zero is undefined),
the fraction of predictions above the true value (over-estimates: the bytes
that then miss their deadline; what RobustMPC's lower bound is for), and the
median ratio predicted / true (below 1: conservative).

This is the best case of an estimator on the edge, which gets a sample only
when it transfers something: here it sees every interval.

Run: ``python benchmarks/estimators.py [trace paths or dirs] [--csv out.csv]``
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesplit.errors import EdgesplitError
from experiments.traces import Trace, load_traces
from offload_policy.error_tracking import tracked
from offload_policy.estimators import (
    Ewma,
    HarmonicMean,
    LastSample,
    RobustLowerBound,
    ThroughputEstimator,
    ThroughputSample,
)

SHARED_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"

#: name -> a fresh estimator; the order of the table.
ESTIMATORS: dict[str, Callable[[], ThroughputEstimator]] = {
    "last": LastSample,
    "ewma a=0.1": lambda: Ewma(0.1),
    "ewma a=0.3": lambda: Ewma(0.3),
    "ewma a=0.5": lambda: Ewma(0.5),
    "harmonic n=5": lambda: HarmonicMean(5),
    "harmonic n=10": lambda: HarmonicMean(10),
    "robust(harmonic n=5) w=5": lambda: RobustLowerBound(HarmonicMean(5), 5),
    "robust(ewma a=0.3) w=5": lambda: RobustLowerBound(Ewma(0.3), 5),
    "ewma a=0.8": lambda: Ewma(0.8),
    "tracked(ewma .8) w=20 c=3": tracked,
}


@dataclass(frozen=True)
class Row:
    """Figures of one estimator over one family of traces."""

    family: str
    estimator: str
    predictions: int
    p50_error: float
    p90_error: float
    p95_error: float
    over_fraction: float
    median_ratio: float


def replay(trace: Trace, make: Callable[[], ThroughputEstimator]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true throughput of intervals 1..n-1 of ``trace``, bits/s."""
    estimator = make()
    true_bps = np.asarray(trace.mbps) * 1e6
    predicted = np.empty(len(true_bps) - 1)
    for i in range(len(predicted)):
        estimator = estimator.update(ThroughputSample(float(trace.times[i]), float(true_bps[i])))
        predicted[i] = estimator.estimate()
    return predicted, true_bps[1:]


def evaluate(traces: Sequence[Trace]) -> list[Row]:
    """One row per (family, estimator), families in sorted order."""
    rows = []
    for family in sorted({t.family for t in traces}):
        members = [t for t in traces if t.family == family]
        for name, make in ESTIMATORS.items():
            pairs = [replay(t, make) for t in members]
            predicted = np.concatenate([p for p, _ in pairs])
            true = np.concatenate([t for _, t in pairs])
            positive = true > 0
            errors = np.abs(predicted[positive] - true[positive]) / true[positive]
            p50, p90, p95 = np.percentile(errors, [50, 90, 95])
            rows.append(
                Row(
                    family=family,
                    estimator=name,
                    predictions=len(true),
                    p50_error=float(p50),
                    p90_error=float(p90),
                    p95_error=float(p95),
                    over_fraction=float(np.mean(predicted > true)),
                    median_ratio=float(np.median(predicted[positive] / true[positive])),
                )
            )
    return rows


def render(rows: Sequence[Row], traces: Sequence[Trace]) -> str:
    """The rows as a fixed-width text table."""
    counts = {f: sum(t.family == f for t in traces) for f in {t.family for t in traces}}
    header = (
        f"{'family':<14}{'estimator':<26}{'n':>6}{'p50 err':>9}{'p90 err':>9}"
        f"{'p95 err':>9}{'over':>7}{'pred/true':>11}"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for r in rows:
        if previous is not None and r.family != previous:
            lines.append("")
        previous = r.family
        family = f"{r.family} ({counts[r.family]})"
        lines.append(
            f"{family:<14}{r.estimator:<26}{r.predictions:>6}{r.p50_error:>9.1%}"
            f"{r.p90_error:>9.1%}{r.p95_error:>9.1%}{r.over_fraction:>7.1%}{r.median_ratio:>11.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, print the table, optionally write it as CSV."""
    parser = argparse.ArgumentParser(description="Throughput estimators on the real traces.")
    parser.add_argument("paths", nargs="*", type=Path, default=[SHARED_TRACES])
    parser.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        traces = load_traces(args.paths)
    except EdgesplitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = evaluate(traces)
    elapsed = time.perf_counter() - start
    print(render(rows, traces))
    print(
        f"\n{len(traces)} traces; err = |predicted - true| / true over intervals with true > 0; "
        f"over = predictions above the true value; {elapsed:.2f} s"
    )
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(Row.__dataclass_fields__)
            writer.writerows([getattr(r, name) for name in Row.__dataclass_fields__] for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
