"""The probation verdict: is a new bundle worse than the one it replaced?

A new bundle serves on probation with the old one kept loaded. Its outcomes
and those of the old bundle's last window are counted in :class:`Health`, and
:func:`judge` compares them: a rise of the error rate rolls back as soon as
enough requests ran, a slower median only at the end of probation, once the
cold first requests are left out.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge_node.config import UpdateConfig
from edge_node.records import Outcome

#: Outcomes kept per bundle: the heartbeat's health and the probation's reference.
WINDOW = 500


@dataclass
class Health:
    """Outcomes of one bundle: how many failed, how long they took."""

    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    failed: deque[bool] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def add(self, outcome: Outcome) -> None:
        """Count ``outcome``: an error is an answer the decision did not plan (a fallback)."""
        self.latencies.append(outcome.latency_s)
        self.failed.append(outcome.finished == "fallback")

    @property
    def window(self) -> int:
        """Outcomes in the window."""
        return len(self.failed)

    def error_rate(self) -> float:
        """Errors per request over the window (NaN when empty)."""
        return sum(self.failed) / len(self.failed) if self.failed else math.nan

    def percentile_ms(self, q: float, skip: int = 0) -> float:
        """Latency percentile over the window, ms, leaving out the first ``skip`` (NaN if none)."""
        values = list(self.latencies)[skip:]
        return float(np.percentile(values, q) * 1e3) if values else math.nan


@dataclass(frozen=True)
class Verdict:
    """A probation's outcome and its figures."""

    regressed: bool
    reason: str


def judge(old: Health, new: Health, config: UpdateConfig, final: bool) -> Verdict | None:
    """Compare the new bundle's health with the old one's; ``None``: no verdict yet.

    Errors are judged as soon as ``min_requests`` ran on the new bundle: a rise
    rolls back at once. Latency is judged only at the end of probation
    (``final``), over the requests after the first fifth (at most 20), which
    warm the new sessions and caches: a verdict on a few cold requests would
    roll back a healthy bundle.
    """
    if new.window < config.min_requests:
        return None
    new_rate = new.error_rate()
    base_rate = old.error_rate() if old.window >= config.min_requests else 0.0
    figures = f"error rate {new_rate:.1%} vs {base_rate:.1%}"
    if new_rate > base_rate + config.max_error_increase:
        return Verdict(True, f"{figures} (tolerated +{config.max_error_increase:.0%})")
    if not final:
        return None
    if old.window >= config.min_requests:
        new_p50 = new.percentile_ms(50, skip=min(new.window // 5, 20))
        base_p50 = old.percentile_ms(50)
        figures += f", p50 {new_p50:.1f} ms vs {base_p50:.1f} ms"
        if new_p50 > base_p50 * config.max_latency_ratio:
            return Verdict(True, f"{figures} (tolerated x{config.max_latency_ratio:g})")
    return Verdict(False, figures)


__all__ = ["WINDOW", "Health", "Verdict", "judge"]
