"""Early-exit calibration on held-out data (pure numpy).

For each confidence threshold on a grid, a sample leaves at the first exit
whose max softmax reaches the threshold. The tables record how many leave
where, how accurate they are, and how accurate the final output is on the
rest: what the policy needs to predict latency and accuracy for any cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgesplit.bundle import ExitCalibration
from edgesplit.errors import ModelError

DEFAULT_THRESHOLDS: tuple[float, ...] = (
    0.5,
    0.6,
    0.7,
    0.8,
    0.85,
    0.9,
    0.95,
    0.98,
    0.99,
    0.995,
    0.999,
)


def max_softmax(logits: np.ndarray) -> np.ndarray:
    """Confidence of each row: the largest softmax probability (numerically stable)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return 1.0 / exp.sum(axis=1)


def calibrate(
    exit_logits: Sequence[np.ndarray],
    final_logits: np.ndarray,
    labels: np.ndarray,
    exit_names: Sequence[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> ExitCalibration:
    """Build the exit tables from the logits of every exit and of the final output.

    Args:
        exit_logits: one ``[N, classes]`` array per exit, in depth order.
        final_logits: ``[N, classes]`` of the final output.
        labels: ``[N]`` true classes.
        exit_names: names of the exits, in depth order.
        thresholds: the confidence grid, each in (0, 1].
    """
    n = len(labels)
    if n == 0:
        raise ModelError("exit calibration needs at least one held-out sample")
    if len(exit_logits) != len(exit_names):
        raise ModelError(f"got {len(exit_logits)} exit outputs for exits {list(exit_names)}")
    for name, logits in zip(exit_names, [*exit_logits], strict=True):
        if logits.shape[0] != n:
            raise ModelError(f"exit {name!r}: {logits.shape[0]} rows for {n} labels")
    if any(not 0.0 < t <= 1.0 for t in thresholds):
        raise ModelError(f"thresholds must lie in (0, 1], got {list(thresholds)}")
    conf = [max_softmax(x.astype(np.float64)) for x in exit_logits]
    right = [x.argmax(axis=1) == labels for x in exit_logits]
    final_right = final_logits.argmax(axis=1) == labels
    k = len(exit_names)
    rate, accuracy, remaining = [], [], []
    for t in thresholds:
        left = np.ones(n, dtype=bool)
        rates, accs, rems = [], [], [_mean(final_right[left])]
        for e in range(k):
            take = left & (conf[e] >= t)
            rates.append(float(take.sum()) / n)
            accs.append(_mean(right[e][take]))
            left &= ~take
            rems.append(_mean(final_right[left]))
        rate.append(tuple(rates))
        accuracy.append(tuple(accs))
        remaining.append(tuple(rems))
    return ExitCalibration(
        thresholds=tuple(float(t) for t in thresholds),
        exits=tuple(exit_names),
        rate=tuple(rate),
        accuracy=tuple(accuracy),
        remaining_accuracy=tuple(remaining),
        final_accuracy=_mean(final_right),
        samples=n,
    )


def _mean(mask: np.ndarray) -> float:
    """Fraction of True, or nan for an empty selection."""
    return float(mask.mean()) if mask.size else float("nan")
