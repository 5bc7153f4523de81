"""Closed-loop corrections: what the edge measures, fed back into the profile's predictions.

The bundle's profile says how long each head segment takes on the edge and
each tail in the cloud, as measured once. A device that throttles (heat, a
DVFS mode, a background process) or a cloud that got slower moves every
latency the policy predicts; the edge sees it in every request it times.
Each profiled term gets a multiplicative factor, measured / predicted,
learned from those times:

    r_k    = ln(measured_k / predicted_k)                 (one request's log-ratio)
    m_k    = median(r_{k-w+1}, ..., r_k)                   (w = 3: one outlier never passes)
    L_k    = L_{k-1} + clamp(alpha x (m_k - L_{k-1}), +-max_step)
    factor = exp(clamp(L_k, +-ln max_factor))

so a step change is followed within a few tens of requests (alpha = 0.15:
within 10% after 12 requests, within 4% after 20), a single wild sample
moves nothing, and no run of them moves a factor more than ``max_step`` per
request or past ``max_factor``. A term that gets no evidence (the edge's
head under a cut that runs none of it, the cloud's tail while the edge keeps
everything) decays back toward the profile with half-life ``half_life_s``:
old evidence is forgotten slowly, so the policy tries that term again and
measures it afresh. The edge's own speed need not wait for that: a cut
that runs no head chosen because the edge was measured slow would not be
left once the device recovers. So while such an offload is in flight the
edge node (and the simulator) times the cheapest head segment that starts
from the input (:func:`probe_segment`), on a CPU that would otherwise sit
idle waiting for the reply, when the edge term is older than
:data:`PROBE_AFTER_S` and says the device is more than :data:`PROBE_ABOVE`
slower than profiled (:meth:`Corrections.probe_due`). A device believed as
fast as its profile is not probed: a cut that runs no head would stay the
choice whatever a probe found slower, so the probe would only cost energy.

The cloud's queueing delay is additive, not a ratio (the profile has none):
an EWMA of the delays the cloud reports in its replies, with the same
decay, is the queue a request should expect when the last report is stale.

Terms: ``edge`` (head compute, measured by the edge around each segment,
predicted from the edge profile of the segments that ran), ``cloud`` (tail
compute, reported by the cloud in its reply, predicted from the cloud
profile of the tail) and the queue. Transfer times are the bandwidth
estimator's evidence (:mod:`offload_policy.estimators`) and the RTT the RTT
estimator's; they are measured, not predicted from a profile, so they need
no correction here.

Nothing here reads a clock: every sample carries its time. A measured time
of zero or less (a clock that went backwards), a sample older than the
term's latest, or a profile figure of zero is ignored and counted in
``ignored``; a value that is not a finite number is a :class:`PolicyError`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

from edgesplit.bundle import Manifest
from edgesplit.errors import PolicyError

#: The terms that carry a multiplicative factor.
TERMS = ("edge", "cloud")
#: An edge term last measured longer ago than this (seconds) is worth an idle-time probe
#: (:meth:`Corrections.probe_due`). Every second: a recovered device is then seen within
#: a few seconds (the median filter needs two probes, the EWMA a few more).
PROBE_AFTER_S = 1.0
#: ... when it says the device is slower than profiled by more than this (0.1: 10%).
PROBE_ABOVE = 0.1


def _number(what: str, value: float) -> float:
    """``value`` as a float; PolicyError naming ``what`` when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyError(f"correction {what}={value!r}: expected a finite number")
    return float(value)


def probe_segment(manifest: Manifest) -> str | None:
    """The idle-time probe: the cheapest profiled head segment that starts from the input.

    ``None`` when the edge profile times none (no head at all).
    """
    edge = manifest.profiles.get("edge")
    if edge is None:
        return None
    firsts = {cut.head[0] for cut in manifest.cuts if cut.head}
    timed = [s for s in firsts if s in edge.timings and edge.timings[s].median_s > 0]
    return min(timed, key=lambda s: (edge.timings[s].median_s, s), default=None)


@dataclass(frozen=True)
class CorrectionConfig:
    """How fast the corrections follow the evidence, and how far they may go.

    Attributes:
        alpha: weight of the newest (median-filtered) log-ratio, in (0, 1].
        window: log-ratios whose median is folded in (1: no outlier filter).
        max_step: largest change of a log-factor per sample (0.2: 22%).
        max_factor: bound of every factor, both ways (10: between 0.1x and 10x).
        half_life_s: time without evidence that halves a term's distance to the
            profile (``None``: never forget), seconds.
    """

    alpha: float = 0.15
    window: int = 3
    max_step: float = 0.2
    max_factor: float = 10.0
    half_life_s: float | None = 300.0

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, int | float) and 0.0 < self.alpha <= 1.0):
            raise PolicyError(f"correction alpha={self.alpha!r}: expected a number in (0, 1]")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise PolicyError(f"correction window={self.window!r}: expected an integer >= 1")
        if not (_number("max_step", self.max_step) > 0):
            raise PolicyError(f"correction max_step={self.max_step!r}: expected a number > 0")
        if not (_number("max_factor", self.max_factor) > 1):
            raise PolicyError(f"correction max_factor={self.max_factor!r}: expected a number > 1")
        if self.half_life_s is not None and not (_number("half_life_s", self.half_life_s) > 0):
            raise PolicyError(
                f"correction half_life_s={self.half_life_s!r}: expected a number > 0 or None"
            )

    def decay(self, value: float, since_s: float | None, now: float) -> float:
        """``value`` after ``now - since_s`` seconds without evidence (halved per half-life)."""
        if self.half_life_s is None or since_s is None or now <= since_s or value == 0.0:
            return value
        return value * 0.5 ** ((now - since_s) / self.half_life_s)


@dataclass(frozen=True)
class Factor:
    """One multiplicative term: the log of measured / predicted, smoothed.

    Attributes:
        log_factor: the smoothed log-ratio at ``updated_s`` (0: as profiled).
        recent: the latest log-ratios, oldest first (for the median filter).
        samples: samples folded in so far.
        updated_s: time of the latest sample (``None``: none yet), seconds.
    """

    log_factor: float = 0.0
    recent: tuple[float, ...] = ()
    samples: int = 0
    updated_s: float | None = None

    def log_at(self, now: float, config: CorrectionConfig) -> float:
        """The log-factor at ``now``, decayed toward 0 since the latest sample."""
        return config.decay(self.log_factor, self.updated_s, now)

    def value(self, now: float, config: CorrectionConfig) -> float:
        """The factor at ``now``: multiply the profile's figure by it."""
        return math.exp(self.log_at(now, config))

    def update(self, now: float, log_ratio: float, config: CorrectionConfig) -> Factor:
        """The term after one log-ratio measured at ``now``."""
        bound = math.log(config.max_factor)
        recent = (*self.recent, max(-bound, min(bound, log_ratio)))[-config.window :]
        target = statistics.median(recent)
        current = self.log_at(now, config)
        step = max(-config.max_step, min(config.max_step, config.alpha * (target - current)))
        value = max(-bound, min(bound, current + step))
        return Factor(value, recent, self.samples + 1, now)


@dataclass(frozen=True)
class CorrectionFactors:
    """What the policy is told: the factors and the queue to expect, at one moment.

    Attributes:
        edge: multiply the edge profile's compute times by this.
        cloud: multiply the cloud profile's tail times by this.
        queue_s: the cloud queueing delay recent replies make typical, seconds.
    """

    edge: float = 1.0
    cloud: float = 1.0
    queue_s: float = 0.0


@dataclass(frozen=True)
class Corrections:
    """Per-term corrections learned from measured times; see the module docstring.

    A frozen value: each ``observe_*`` returns the corrections after the
    sample and leaves ``self`` as it was.

    Attributes:
        config: gains and bounds.
        edge: the edge compute factor.
        cloud: the cloud compute factor.
        queue_s: smoothed reported queueing delay at ``queue_updated_s``, seconds.
        queue_updated_s: time of the latest queue report (``None``: none yet).
        ignored: samples ignored (measured time <= 0, zero profile, time going backwards).
    """

    config: CorrectionConfig = CorrectionConfig()
    edge: Factor = Factor()
    cloud: Factor = Factor()
    queue_s: float = 0.0
    queue_updated_s: float | None = None
    ignored: int = 0

    def observe_edge(self, now: float, measured_s: float, predicted_s: float) -> Corrections:
        """One head run: ``measured_s`` on the device, ``predicted_s`` by the edge profile."""
        return self._observe("edge", now, measured_s, predicted_s)

    def observe_cloud(self, now: float, measured_s: float, predicted_s: float) -> Corrections:
        """One tail run: ``measured_s`` reported by the cloud, ``predicted_s`` by its profile."""
        return self._observe("cloud", now, measured_s, predicted_s)

    def observe_queue(self, now: float, queue_s: float) -> Corrections:
        """One queueing delay the cloud reported, seconds."""
        now = _number("now", now)
        queue_s = _number("queue_s", queue_s)
        if queue_s < 0 or (self.queue_updated_s is not None and now < self.queue_updated_s):
            return replace(self, ignored=self.ignored + 1)
        current = self.config.decay(self.queue_s, self.queue_updated_s, now)
        if self.queue_updated_s is None:
            smoothed = queue_s
        else:
            smoothed = current + self.config.alpha * (queue_s - current)
        return replace(self, queue_s=smoothed, queue_updated_s=now)

    def _observe(self, term: str, now: float, measured_s: float, predicted_s: float) -> Corrections:
        now = _number("now", now)
        measured = _number(f"{term} measured_s", measured_s)
        predicted = _number(f"{term} predicted_s", predicted_s)
        if predicted < 0:
            raise PolicyError(
                f"correction {term} predicted_s={predicted_s!r}: a profile time cannot be "
                "negative; re-run `edgesplit partition`"
            )
        factor: Factor = getattr(self, term)
        stale = factor.updated_s is not None and now < factor.updated_s
        if measured <= 0 or predicted == 0 or stale:
            return replace(self, ignored=self.ignored + 1)
        updated = factor.update(now, math.log(measured / predicted), self.config)
        if term == "edge":
            return replace(self, edge=updated)
        return replace(self, cloud=updated)

    def probe_due(
        self, now: float, after_s: float = PROBE_AFTER_S, above: float = PROBE_ABOVE
    ) -> bool:
        """Whether a request that runs no head should time one (see the module docstring).

        True when the edge term's latest sample is at least ``after_s`` seconds old
        and its factor says the device is more than ``above`` slower than profiled.
        """
        updated = self.edge.updated_s
        if updated is None or now - updated < after_s:
            return False
        return self.edge.value(now, self.config) > 1.0 + above

    def factors(self, now: float) -> CorrectionFactors:
        """The factors and the expected queue at ``now``."""
        c = self.config
        return CorrectionFactors(
            edge=self.edge.value(now, c),
            cloud=self.cloud.value(now, c),
            queue_s=c.decay(self.queue_s, self.queue_updated_s, now),
        )


__all__ = [
    "PROBE_ABOVE",
    "PROBE_AFTER_S",
    "TERMS",
    "CorrectionConfig",
    "CorrectionFactors",
    "Corrections",
    "Factor",
    "probe_segment",
]
