"""Uplink bandwidth and round-trip time, estimated from the edge node's own transfers.

A transfer's throughput is its bytes over the time the bytes spent on the
wire: the wall time from send to reply, less what the cloud reports it spent
(queue and compute) and the current round-trip estimate. Estimators fold
such samples into a prediction of the next transfer's throughput:

- :class:`LastSample`: the latest sample (a baseline).
- :class:`Ewma`: exponentially weighted moving average.
- :class:`HarmonicMean`: harmonic mean of the last N samples, the predictor of
  MPC and Pensieve (Yin et al., SIGCOMM 2015; Mao et al., SIGCOMM 2017); one
  slow sample pulls it down more than one fast sample pushes it up.
- :class:`RobustLowerBound`: RobustMPC's discount, ``inner / (1 + max error)``
  over the inner estimator's last relative prediction errors.
- :class:`offload_policy.error_tracking.ErrorTracking` (``tracked``): the
  inner prediction over the mean of its recent transfer-time errors on this
  link, the rate that minimises expected latency.

:class:`RttEstimator` smooths round-trip times as TCP does (RFC 6298).
The estimators by name (the edge's ``estimator`` setting) are in
:mod:`offload_policy.estimator_registry`.

Every estimator is a frozen value: ``update`` returns a new one and leaves
the old one as it was, so a policy state can hold it and tests can replay it.
Nothing here reads a clock: each sample carries its time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from edgesplit.errors import ConfigError, PolicyError

#: A transfer shorter than this (seconds, after taking out the cloud's time and
#: the RTT) is not measured: timer and RTT noise would dominate its throughput.
MIN_TRANSFER_S = 1e-3


def _finite_nonnegative(what: str, name: str, value: float) -> float:
    """``value`` as a float, or PolicyError naming it when it is negative, NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"{what} {name}={value!r}: expected a number")
    if not (math.isfinite(value) and value >= 0):
        raise PolicyError(f"{what} {name}={value!r}: expected a finite number >= 0")
    return float(value)


def _window(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} window={value!r}: expected an integer >= 1")
    return value


def _weight(name: str, field: str, value: float) -> float:
    if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
        raise ConfigError(f"{name} {field}={value!r}: expected a number in (0, 1]")
    return float(value)


@dataclass(frozen=True)
class ThroughputSample:
    """One throughput measurement of the uplink.

    Attributes:
        time_s: when it was measured (the caller's clock), seconds.
        bits_per_s: the throughput, bits per second; zero is a link that
            carried nothing.
    """

    time_s: float
    bits_per_s: float

    def __post_init__(self) -> None:
        if isinstance(self.time_s, bool) or not isinstance(self.time_s, int | float):
            raise PolicyError(f"throughput sample time_s={self.time_s!r}: expected a number")
        if not math.isfinite(self.time_s):
            raise PolicyError(f"throughput sample time_s={self.time_s!r}: expected a finite number")
        _finite_nonnegative("throughput sample", "bits_per_s", self.bits_per_s)


def sample_from_transfer(
    now_s: float,
    nbytes: int,
    wall_s: float,
    cloud_compute_s: float,
    cloud_queue_s: float,
    rtt_s: float,
    *,
    rtt_var_s: float = 0.0,
    min_transfer_s: float = MIN_TRANSFER_S,
) -> ThroughputSample | None:
    """The uplink throughput one offloaded request measured, or ``None`` when too short.

    throughput = nbytes x 8 / (wall_s - cloud_compute_s - cloud_queue_s - rtt_s)

    The reply is assumed small (its time is part of the RTT). The rule:

    - an input that is negative, NaN or infinite, ``wall_s <= 0``, or a cloud
      time (compute + queue) that fills the whole wall time: PolicyError naming
      the values. The cloud reports durations, so its time always fits inside
      the edge's wall time; when it does not, the report is wrong.
    - ``nbytes == 0``, or a transfer time (what is left after the RTT) below
      ``max(min_transfer_s, rtt_var_s)``, zero or negative included: ``None``.
      The RTT is an estimate and varies by about ``rtt_var_s``; a transfer
      that short would yield a throughput made of that noise, not a smaller
      error. The caller keeps its previous estimate.

    Args:
        now_s: when the reply arrived, seconds; the sample's time.
        nbytes: bytes sent (headers and tensor frames).
        wall_s: time from sending the first byte to receiving the reply, seconds.
        cloud_compute_s: the cloud's reported compute time, seconds.
        cloud_queue_s: the cloud's reported queueing time, seconds.
        rtt_s: the current round-trip estimate (e.g. ``RttEstimator.srtt_s``), seconds.
        rtt_var_s: the round-trip variation (``RttEstimator.rttvar_s``), seconds.
        min_transfer_s: shortest transfer time measured, seconds.
    """
    what = "transfer"
    values = {
        "nbytes": nbytes,
        "wall_s": wall_s,
        "cloud_compute_s": cloud_compute_s,
        "cloud_queue_s": cloud_queue_s,
        "rtt_s": rtt_s,
        "rtt_var_s": rtt_var_s,
        "min_transfer_s": min_transfer_s,
    }
    for name, value in values.items():
        _finite_nonnegative(what, name, value)
    if wall_s <= 0:
        raise PolicyError(f"transfer wall_s={wall_s!r}: expected a number > 0")
    on_wire_s = wall_s - cloud_compute_s - cloud_queue_s
    if on_wire_s <= 0:
        raise PolicyError(
            f"transfer wall_s={wall_s!r} <= cloud_compute_s={cloud_compute_s!r} + "
            f"cloud_queue_s={cloud_queue_s!r}: the cloud's reported time cannot exceed the "
            "edge's wall time; check the units of the cloud's reply"
        )
    transfer_s = on_wire_s - rtt_s
    if nbytes == 0 or transfer_s < max(min_transfer_s, rtt_var_s):
        return None
    return ThroughputSample(now_s, nbytes * 8.0 / transfer_s)


class ThroughputEstimator(Protocol):
    """What every throughput estimator offers: fold a sample in, predict the next one."""

    @property
    def ready(self) -> bool:
        """Whether :meth:`estimate` has something to go on."""
        ...

    def update(self, sample: ThroughputSample) -> ThroughputEstimator:
        """The estimator after ``sample``; ``self`` is left unchanged."""
        ...

    def estimate(self) -> float:
        """Predicted throughput of the next transfer, bits per second."""
        ...


def _no_sample(name: str) -> PolicyError:
    return PolicyError(f"{name}: no throughput sample yet; update it before asking an estimate")


@dataclass(frozen=True)
class LastSample:
    """The latest sample is the prediction: the baseline the others must beat."""

    value_bps: float | None = None

    def __post_init__(self) -> None:
        if self.value_bps is not None:
            _finite_nonnegative("LastSample", "value_bps", self.value_bps)

    @property
    def ready(self) -> bool:
        """Whether a sample was seen."""
        return self.value_bps is not None

    def update(self, sample: ThroughputSample) -> LastSample:
        """Remember ``sample``."""
        return LastSample(sample.bits_per_s)

    def estimate(self) -> float:
        """The latest sample, bits per second."""
        if self.value_bps is None:
            raise _no_sample("LastSample")
        return self.value_bps


@dataclass(frozen=True)
class Ewma:
    """Exponentially weighted moving average: ``value = alpha x sample + (1 - alpha) x value``.

    The first sample sets the value. A larger ``alpha`` follows the link
    faster and is noisier.

    Attributes:
        alpha: weight of the newest sample, in (0, 1]; 1 is :class:`LastSample`.
        value_bps: the current average (``None`` before the first sample;
            set it to start from a prior), bits per second.
    """

    alpha: float = 0.3
    value_bps: float | None = None

    def __post_init__(self) -> None:
        _weight("Ewma", "alpha", self.alpha)
        if self.value_bps is not None:
            _finite_nonnegative("Ewma", "value_bps", self.value_bps)

    @property
    def ready(self) -> bool:
        """Whether a sample (or a prior) was given."""
        return self.value_bps is not None

    def update(self, sample: ThroughputSample) -> Ewma:
        """The average after ``sample``."""
        x = sample.bits_per_s
        if self.value_bps is None:
            return Ewma(self.alpha, x)
        return Ewma(self.alpha, self.alpha * x + (1.0 - self.alpha) * self.value_bps)

    def estimate(self) -> float:
        """The current average, bits per second."""
        if self.value_bps is None:
            raise _no_sample("Ewma")
        return self.value_bps


@dataclass(frozen=True)
class HarmonicMean:
    """Harmonic mean of the last ``window`` samples: ``n / sum(1 / x)``.

    A zero sample makes the mean zero while it stays in the window (the limit
    of the formula as a sample goes to zero): a link that just carried
    nothing is not trusted with any bytes.

    Attributes:
        window: how many of the latest samples count.
        samples_bps: those samples, oldest first, bits per second.
    """

    window: int = 5
    samples_bps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _window("HarmonicMean", self.window)
        if len(self.samples_bps) > self.window:
            raise ConfigError(
                f"HarmonicMean samples_bps holds {len(self.samples_bps)} values: "
                f"expected at most window={self.window}"
            )
        for value in self.samples_bps:
            _finite_nonnegative("HarmonicMean", "samples_bps", value)

    @property
    def ready(self) -> bool:
        """Whether a sample was seen."""
        return bool(self.samples_bps)

    def update(self, sample: ThroughputSample) -> HarmonicMean:
        """The window after ``sample``, the oldest sample dropped when it is full."""
        kept = (*self.samples_bps, sample.bits_per_s)[-self.window :]
        return HarmonicMean(self.window, kept)

    def estimate(self) -> float:
        """The harmonic mean of the window, bits per second."""
        xs = self.samples_bps
        if not xs:
            raise _no_sample("HarmonicMean")
        lo, hi = min(xs), max(xs)
        if lo == 0.0:
            return 0.0
        # Scaled by the smallest sample, every term is in (0, 1]: no overflow for tiny x.
        mean = lo * (len(xs) / math.fsum(lo / x for x in xs))
        # Rounding must not leave [min, max].
        return min(max(mean, lo), hi)


def relative_error(predicted_bps: float, actual_bps: float) -> float:
    """``|predicted - actual| / actual``; 0 when both are 0, infinite when only actual is."""
    if actual_bps == 0.0:
        return 0.0 if predicted_bps == 0.0 else math.inf
    return abs(predicted_bps - actual_bps) / actual_bps


@dataclass(frozen=True)
class RobustLowerBound:
    """RobustMPC's bound (Yin et al., 2015): ``inner / (1 + max error)``.

    Before each sample is folded into ``inner``, the relative error of
    ``inner``'s prediction of it is recorded; the estimate discounts
    ``inner``'s by the largest of the last ``window`` errors. The errors are
    those of the undiscounted inner estimate, as in RobustMPC. A zero sample
    after a positive prediction is an infinite error: the bound is zero
    until that error leaves the window.

    Attributes:
        inner: the estimator whose prediction is discounted.
        window: how many of the latest errors count.
        errors: those relative errors, oldest first.
    """

    inner: ThroughputEstimator
    window: int = 5
    errors: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _window("RobustLowerBound", self.window)
        if len(self.errors) > self.window:
            raise ConfigError(
                f"RobustLowerBound errors holds {len(self.errors)} values: "
                f"expected at most window={self.window}"
            )
        for value in self.errors:
            if math.isnan(value) or value < 0:
                raise PolicyError(f"RobustLowerBound errors={value!r}: expected a number >= 0")

    @property
    def ready(self) -> bool:
        """Whether the inner estimator is."""
        return self.inner.ready

    @property
    def max_error(self) -> float:
        """The largest relative error in the window (0 before any)."""
        return max(self.errors, default=0.0)

    def update(self, sample: ThroughputSample) -> RobustLowerBound:
        """Record the inner estimator's error on ``sample``, then fold ``sample`` into it."""
        errors = self.errors
        if self.inner.ready:
            error = relative_error(self.inner.estimate(), sample.bits_per_s)
            errors = (*errors, error)[-self.window :]
        return RobustLowerBound(self.inner.update(sample), self.window, errors)

    def estimate(self) -> float:
        """The discounted estimate, bits per second; never above the inner one."""
        inner = self.inner.estimate()
        worst = self.max_error
        if math.isinf(worst):
            return 0.0
        return inner / (1.0 + worst)


@dataclass(frozen=True)
class RttEstimator:
    """Smoothed round-trip time and its variation, as TCP computes them (RFC 6298).

    First measurement R: ``srtt = R``, ``rttvar = R / 2``. Each later one:
    ``rttvar = (1 - beta) x rttvar + beta x |srtt - R|``, then
    ``srtt = (1 - alpha) x srtt + alpha x R``.

    Attributes:
        alpha: gain of the smoothed RTT (RFC: 1/8).
        beta: gain of the variation (RFC: 1/4).
        srtt_s: smoothed RTT, seconds (``None`` before the first measurement).
        rttvar_s: RTT variation, seconds (``None`` before the first measurement).
    """

    alpha: float = 1 / 8
    beta: float = 1 / 4
    srtt_s: float | None = None
    rttvar_s: float | None = None

    def __post_init__(self) -> None:
        _weight("RttEstimator", "alpha", self.alpha)
        _weight("RttEstimator", "beta", self.beta)
        if (self.srtt_s is None) != (self.rttvar_s is None):
            raise PolicyError(
                f"RttEstimator srtt_s={self.srtt_s!r}, rttvar_s={self.rttvar_s!r}: "
                "give both or neither"
            )
        if self.srtt_s is not None and self.rttvar_s is not None:
            _finite_nonnegative("RttEstimator", "srtt_s", self.srtt_s)
            _finite_nonnegative("RttEstimator", "rttvar_s", self.rttvar_s)

    @property
    def ready(self) -> bool:
        """Whether a round trip was measured."""
        return self.srtt_s is not None

    def update(self, rtt_s: float) -> RttEstimator:
        """The estimator after one measured round trip of ``rtt_s`` seconds."""
        r = _finite_nonnegative("round trip", "rtt_s", rtt_s)
        if self.srtt_s is None or self.rttvar_s is None:
            return RttEstimator(self.alpha, self.beta, r, r / 2.0)
        rttvar = (1.0 - self.beta) * self.rttvar_s + self.beta * abs(self.srtt_s - r)
        srtt = (1.0 - self.alpha) * self.srtt_s + self.alpha * r
        return RttEstimator(self.alpha, self.beta, srtt, rttvar)

    def timeout_s(
        self, k: float = 4.0, granularity_s: float = 0.0, initial_s: float = 1.0
    ) -> float:
        """RFC 6298's retransmission timeout: ``srtt + max(G, k x rttvar)``, seconds.

        ``initial_s`` before the first measurement (the RFC's 1 s). The RFC's
        1 s floor on later values is TCP's choice and is left to the caller.
        """
        if self.srtt_s is None or self.rttvar_s is None:
            return initial_s
        return self.srtt_s + max(granularity_s, k * self.rttvar_s)


__all__ = [
    "MIN_TRANSFER_S",
    "Ewma",
    "HarmonicMean",
    "LastSample",
    "RobustLowerBound",
    "RttEstimator",
    "ThroughputEstimator",
    "ThroughputSample",
    "relative_error",
    "sample_from_transfer",
]
