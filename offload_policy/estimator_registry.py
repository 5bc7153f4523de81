"""The throughput estimators by name: what the edge's ``estimator`` setting chooses from.

Each entry makes a fresh estimator: the plain ones of
:mod:`offload_policy.estimators` and the error-tracking one of
:mod:`offload_policy.error_tracking` (``tracked``, the shipped default).
"""

from __future__ import annotations

from collections.abc import Callable

from edgesplit.errors import PolicyError
from offload_policy.error_tracking import tracked
from offload_policy.estimators import (
    Ewma,
    HarmonicMean,
    LastSample,
    RobustLowerBound,
    ThroughputEstimator,
)

#: The estimators by name (the edge's ``estimator`` setting), each freshly made.
ESTIMATORS: dict[str, Callable[[], ThroughputEstimator]] = {
    "harmonic": lambda: HarmonicMean(5),
    "robust": lambda: RobustLowerBound(HarmonicMean(5), window=5),
    "ewma": lambda: Ewma(0.5),
    "last": lambda: LastSample(),
    "tracked": tracked,
}


def make_estimator(name: str) -> ThroughputEstimator:
    """A fresh estimator by name (see :data:`ESTIMATORS`).

    Raises:
        PolicyError: an unknown name.
    """
    if name not in ESTIMATORS:
        raise PolicyError(f"estimator {name!r}: unknown; choose from {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]()


__all__ = ["ESTIMATORS", "make_estimator"]
