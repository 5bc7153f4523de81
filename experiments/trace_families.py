"""Trace families made here, to test bandwidth prediction on links it was not tuned on.

The repository's real traces are two families (3G/HSDPA, FCC). To test an
estimator on links it never saw, without the internet, two kinds of family
are derived here; both are labelled as what they are in every report:

- **time-warped real traces** (:func:`time_warped`): a real family's logs
  played ``factor`` times faster. The throughput values (their distribution,
  their zeros) are real; the dynamics are ``factor`` times faster than
  measured, so the link changes more between two requests.
- **a Markov-modulated LTE-like family** (:class:`MarkovLink`,
  :func:`synthesize`): a hidden state (cell-edge, poor, fair, good,
  excellent) held for an exponentially distributed time, moving to a
  neighbouring state; within a state, log-normal fading that is AR(1) from
  one step to the next; outages (zero throughput) arriving as a Poisson
  process. The parameters are written in :data:`LTE_LIKE` and every report
  prints them. It is a model, not a measurement: LTE-like in its swings
  (a coefficient of variation near 0.8, the throughput changing by a median
  ~20% from one second to the next, outages of seconds) rather than fitted
  to a named data set.

Everything is seeded and pure: a family is a function of its parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from edgesplit.errors import ConfigError
from experiments.traces import Trace


@dataclass(frozen=True)
class MarkovLink:
    """A Markov-modulated throughput process; see the module docstring.

    Attributes:
        family: the family's name in reports.
        levels: each state's throughput relative to the family's median (the
            states in order, worst first).
        mean_dwell_s: mean time in a state, seconds (exponential).
        jump_weights: probability of moving 1, 2, ... states up or down on a
            change (each direction equally likely; clipped at the ends).
        step_s: time between samples, seconds.
        fading_sigma: standard deviation of the log-throughput fading.
        fading_corr: correlation of the fading from one step to the next.
        outage_rate_per_s: outages per second (Poisson).
        outage_mean_s: mean length of an outage, seconds (exponential).
        median_mbps: the family is scaled to this median, Mbit/s (the real
            families' median, so the same ``--bandwidth-scale`` means the same).
        duration_s: length of each trace, seconds.
    """

    family: str = "lte-mm"
    levels: tuple[float, ...] = (0.12, 0.4, 1.0, 1.8, 3.0)
    mean_dwell_s: float = 10.0
    jump_weights: tuple[float, ...] = (0.8, 0.2)
    step_s: float = 1.0
    fading_sigma: float = 0.3
    fading_corr: float = 0.7
    outage_rate_per_s: float = 1 / 120
    outage_mean_s: float = 2.0
    median_mbps: float = 1.5
    duration_s: float = 240.0

    def __post_init__(self) -> None:
        positive = ("mean_dwell_s", "step_s", "outage_mean_s", "median_mbps", "duration_s")
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"MarkovLink {name}={value!r}: expected a finite number > 0")
        if not self.levels or not all(math.isfinite(x) and x > 0 for x in self.levels):
            raise ConfigError(f"MarkovLink levels={self.levels!r}: expected numbers > 0")
        weights = self.jump_weights
        if not weights or any(w < 0 for w in weights) or not math.isclose(sum(weights), 1.0):
            raise ConfigError(f"MarkovLink jump_weights={weights!r}: expected >= 0, summing to 1")
        if not (0 <= self.fading_sigma < 5 and 0 <= self.fading_corr < 1):
            raise ConfigError(
                f"MarkovLink fading_sigma={self.fading_sigma!r}, fading_corr="
                f"{self.fading_corr!r}: expected sigma in [0, 5) and corr in [0, 1)"
            )
        if not (math.isfinite(self.outage_rate_per_s) and self.outage_rate_per_s >= 0):
            raise ConfigError(
                f"MarkovLink outage_rate_per_s={self.outage_rate_per_s!r}: expected >= 0"
            )

    def describe(self) -> str:
        """The parameters, one line, for reports."""
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


#: The LTE-like family of the generalization experiment.
LTE_LIKE = MarkovLink()


def synthesize(spec: MarkovLink, count: int, seed: int) -> list[Trace]:
    """``count`` traces of ``spec``, seeded: the same arguments give the same traces."""
    if count < 1:
        raise ConfigError(f"synthesize count={count!r}: expected >= 1")
    rng = np.random.default_rng([seed, count, len(spec.levels)])
    steps = max(2, int(round(spec.duration_s / spec.step_s)))
    times = np.arange(steps) * spec.step_s
    change_p = 1.0 - math.exp(-spec.step_s / spec.mean_dwell_s)
    outage_p = 1.0 - math.exp(-spec.step_s * spec.outage_rate_per_s)
    outage_end_p = 1.0 - math.exp(-spec.step_s / spec.outage_mean_s)
    innovation = spec.fading_sigma * math.sqrt(1.0 - spec.fading_corr**2)
    jumps = np.arange(1, len(spec.jump_weights) + 1)
    top = len(spec.levels) - 1
    runs = []
    for _ in range(count):
        state = int(rng.integers(len(spec.levels)))
        fading = float(rng.normal(0.0, spec.fading_sigma))
        out = False
        values = np.empty(steps)
        for k in range(steps):
            if rng.random() < change_p:
                jump = int(rng.choice(jumps, p=spec.jump_weights)) * int(rng.choice((-1, 1)))
                state = min(max(state + jump, 0), top)
            fading = spec.fading_corr * fading + innovation * float(rng.normal())
            out = rng.random() >= outage_end_p if out else rng.random() < outage_p
            values[k] = 0.0 if out else spec.levels[state] * math.exp(fading)
        runs.append(values)
    # One factor for the whole family: each trace keeps its own mix of good and bad spells.
    every = np.concatenate(runs)
    median = float(np.median(every[every > 0])) if np.any(every > 0) else 1.0
    return [
        Trace(f"{spec.family}_{i:02d}", spec.family, times, values * (spec.median_mbps / median))
        for i, values in enumerate(runs)
    ]


def time_warped(traces: Sequence[Trace], factor: float, family: str | None = None) -> list[Trace]:
    """``traces`` played ``factor`` times faster (same values, times divided by ``factor``)."""
    if not (math.isfinite(factor) and factor > 0):
        raise ConfigError(f"time warp factor={factor!r}: expected a finite number > 0")
    return [
        Trace(
            t.name,
            family or f"{t.family}-warp{factor:g}",
            np.asarray(t.times) / factor,
            np.asarray(t.mbps),
        )
        for t in traces
    ]


__all__ = ["LTE_LIKE", "MarkovLink", "synthesize", "time_warped"]
