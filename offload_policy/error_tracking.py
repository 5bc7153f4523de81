"""A bandwidth prediction corrected by its own recent errors on this link.

Latency is linear in the inverse of the bandwidth (``bytes x 8 / bandwidth``),
so the bandwidth that makes the policy minimise *expected* latency is not
the expected bandwidth but ``1 / E[1 / bandwidth]``: the rate at which a
transfer takes its expected time. :class:`ErrorTracking` learns that from
the link itself. Before each sample is folded into its inner estimator it
records how many times longer than predicted a transfer at the sample's rate
takes, ``ratio = predicted / actual`` (clipped to ``[1/cap, cap]``: a stall
counts as ``cap`` times the prediction, not forever), and it predicts

    estimate    = inner / mean(ratios)                     (expected latency)
    quantile(q) = inner / ((1 - q) quantile of ratios)     (a tight SLO)

On a steady link the ratios stay near 1 and the inner prediction passes
through; on a volatile one the discount grows with the errors actually
seen there, and shrinks again when they leave the window. Unlike
RobustMPC's ``inner / (1 + max |error|)`` (:class:`RobustLowerBound`), a link
that turned out *faster* than predicted does not discount the next
prediction, and one bad sample does not rule the window.

Frozen like every estimator here: ``update`` returns a new value and leaves
this one unchanged; nothing reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgesplit.errors import ConfigError, PolicyError
from offload_policy.estimators import Ewma, ThroughputEstimator, ThroughputSample

#: The shipped configuration (``tracked``): see docs/policy.md, "Bandwidth prediction",
#: for the tune-on-one-family protocol (``edgesplit experiment generalization``) behind it.
DEFAULT_WINDOW = 20
DEFAULT_CAP = 3.0
#: Weight of the newest sample in the shipped inner predictor (an EWMA).
DEFAULT_ALPHA = 0.8


def transfer_time_ratio(predicted_bps: float, actual_bps: float, cap: float) -> float:
    """How many times longer than predicted a transfer took: ``predicted / actual``, clipped.

    Clipped to ``[1/cap, cap]``. A link that carried nothing (``actual == 0``)
    after a positive prediction is a stall: ``cap``. A zero prediction
    followed by a positive rate: ``1/cap``. Both zero: 1.
    """
    if actual_bps == 0.0:
        return 1.0 if predicted_bps == 0.0 else cap
    return min(max(predicted_bps / actual_bps, 1.0 / cap), cap)


@dataclass(frozen=True)
class ErrorTracking:
    """``inner``'s prediction divided by the mean of its recent transfer-time ratios.

    See the module docstring.

    Attributes:
        inner: the point predictor whose errors are tracked.
        window: how many of the latest ratios count.
        cap: the largest ratio recorded (and 1/cap the smallest), > 1.
        ratios: the latest ratios ``predicted / actual``, oldest first.
        q: ``None``: :meth:`estimate` is the expected-latency rate; a number in
            (0, 1): it is :meth:`quantile` of ``q`` instead (for a tight SLO).
    """

    inner: ThroughputEstimator
    window: int = DEFAULT_WINDOW
    cap: float = DEFAULT_CAP
    ratios: tuple[float, ...] = ()
    q: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ConfigError(f"ErrorTracking window={self.window!r}: expected an integer >= 1")
        if (
            isinstance(self.cap, bool)
            or not isinstance(self.cap, int | float)
            or not (math.isfinite(self.cap) and self.cap > 1.0)
        ):
            raise ConfigError(f"ErrorTracking cap={self.cap!r}: expected a finite number > 1")
        if len(self.ratios) > self.window:
            raise ConfigError(
                f"ErrorTracking ratios holds {len(self.ratios)} values: "
                f"expected at most window={self.window}"
            )
        if self.q is not None:
            _check_q(self.q)
        low = 1.0 / self.cap
        for value in self.ratios:
            if not (isinstance(value, int | float) and low <= value <= self.cap):
                raise PolicyError(
                    f"ErrorTracking ratios={value!r}: expected a number in "
                    f"[1/cap, cap] = [{low:g}, {self.cap:g}]"
                )

    @property
    def ready(self) -> bool:
        """Whether the inner estimator is."""
        return self.inner.ready

    @property
    def discount(self) -> float:
        """The mean ratio: how many times their prediction transfers took lately (1 before any)."""
        if not self.ratios:
            return 1.0
        return math.fsum(self.ratios) / len(self.ratios)

    def update(self, sample: ThroughputSample) -> ErrorTracking:
        """Record the inner estimator's ratio on ``sample``, then fold ``sample`` into it."""
        ratios = self.ratios
        if self.inner.ready:
            ratio = transfer_time_ratio(self.inner.estimate(), sample.bits_per_s, self.cap)
            ratios = (*ratios, ratio)[-self.window :]
        return ErrorTracking(self.inner.update(sample), self.window, self.cap, ratios, self.q)

    def estimate(self) -> float:
        """The rate at which the next transfer takes its expected time, bits per second.

        With ``q`` set: ``quantile(q)`` instead.
        """
        if self.q is not None:
            return self.quantile(self.q)
        return self.inner.estimate() / self.discount

    def quantile(self, q: float) -> float:
        """A rate the next transfer reaches with probability about ``1 - q``, bits per second.

        ``inner / r`` where ``r`` is the ``1 - q`` quantile of the recorded
        ratios (nearest rank): with q = 0.1, nine transfers in ten of late
        took at most ``r`` times their prediction. Before any ratio: the
        inner prediction.

        Raises:
            PolicyError: ``q`` outside (0, 1).
        """
        _check_q(q)
        inner = self.inner.estimate()
        if not self.ratios:
            return inner
        ordered = sorted(self.ratios)
        rank = max(math.ceil((1.0 - q) * len(ordered)), 1)
        return inner / ordered[rank - 1]


def _check_q(q: float) -> None:
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 < q < 1.0:
        raise PolicyError(f"ErrorTracking quantile q={q!r}: expected a number in (0, 1)")


def tracked(inner: ThroughputEstimator | None = None) -> ErrorTracking:
    """The shipped configuration: an EWMA (alpha 0.8) over its last 20 ratios capped at 3.

    Recency is what carried over to families the estimator was not tuned on
    (docs/policy.md); alpha 0.8 still damps a single transfer that the edge
    mis-measured (RTT jitter, a starved CPU), which the simulator's exact
    samples do not show.
    """
    if inner is None:
        inner = Ewma(DEFAULT_ALPHA)
    return ErrorTracking(inner, DEFAULT_WINDOW, DEFAULT_CAP)


__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CAP",
    "DEFAULT_WINDOW",
    "ErrorTracking",
    "tracked",
    "transfer_time_ratio",
]
