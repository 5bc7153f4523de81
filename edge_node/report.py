"""Summaries of a run: where requests finished, accuracy, latency percentiles, bytes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_node.node import Outcome


@dataclass(frozen=True)
class RunSummary:
    """Figures of one run over labelled inputs.

    Attributes:
        requests: number of requests answered.
        accuracy: fraction answered correctly (nan without labels).
        finished: count of requests per place they finished (exit_1, cloud, ...).
        accuracy_by_place: accuracy per place they finished.
        latency_p50_s, latency_p95_s, latency_p99_s, latency_mean_s: end-to-end latency.
        bytes_sent: total bytes put on the wire.
        offloaded: requests that went to the cloud (answered there or not).
        fallback_reasons: count of local fallbacks per reason.
        wall_s: wall time of the whole run.
        decisions: count of requests per decision taken (``cut codec threshold``).
    """

    requests: int
    accuracy: float
    finished: dict[str, int]
    accuracy_by_place: dict[str, float]
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    latency_mean_s: float
    bytes_sent: int
    offloaded: int
    fallback_reasons: dict[str, int]
    wall_s: float
    decisions: dict[str, int]


def summarize(outcomes: Sequence[Outcome], labels: np.ndarray | None, wall_s: float) -> RunSummary:
    """Aggregate per-request outcomes (batch-of-one requests) into a summary."""
    if not outcomes:
        raise ValueError("no outcomes to summarize")
    latency = np.array([o.latency_s for o in outcomes])
    places = [o.finished for o in outcomes]
    if labels is not None:
        right = np.array(
            [
                int(o.prediction.reshape(-1)[0]) == int(y)
                for o, y in zip(outcomes, labels, strict=False)
            ]
        )
        by_place = {p: float(right[[q == p for q in places]].mean()) for p in sorted(set(places))}
        accuracy = float(right.mean())
    else:
        by_place, accuracy = {}, float("nan")
    reasons = Counter(o.reason for o in outcomes if o.reason)
    return RunSummary(
        requests=len(outcomes),
        accuracy=accuracy,
        finished=dict(sorted(Counter(places).items())),
        accuracy_by_place=by_place,
        latency_p50_s=float(np.percentile(latency, 50)),
        latency_p95_s=float(np.percentile(latency, 95)),
        latency_p99_s=float(np.percentile(latency, 99)),
        latency_mean_s=float(latency.mean()),
        bytes_sent=int(sum(o.bytes_sent for o in outcomes)),
        offloaded=sum(1 for o in outcomes if o.bytes_sent > 0),
        fallback_reasons=dict(reasons),
        wall_s=wall_s,
        decisions=dict(
            Counter(f"{o.cut} {o.codec} t={o.threshold}" for o in outcomes).most_common()
        ),
    )
