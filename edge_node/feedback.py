"""Closed-loop corrections: what the edge measures, against the bundle's profiles, fed back.

Each head run's time against the edge profile of the segments that ran, each
tail time and queue delay the cloud reports against the cloud profile, go into
:class:`~offload_policy.corrections.Corrections`; the policy is told the
factors. Only like for like counts: a batch the profile did not time teaches
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge_node.head import HeadResult, HeadRunner
from edge_node.metrics import EdgeMetrics
from edgesplit.bundle import Manifest
from edgesplit.errors import BundleError
from edgesplit.feeds import Feeds, batch_of
from edgesplit.onnxrt import run_errors
from offload_policy.corrections import CorrectionFactors, Corrections, probe_segment

log = logging.getLogger(__name__)


class Feedback:
    """The node's corrections (see the module's docstring); off, it learns and tells nothing.

    Args:
        enabled: learn and tell the factors (``EdgeConfig.corrections``).
        metrics: where the factors are shown (``correction``).
        clock: the node's clock, seconds.
    """

    def __init__(self, enabled: bool, metrics: EdgeMetrics, clock: Callable[[], float]) -> None:
        self.enabled = enabled
        self.corrections = Corrections()
        self._metrics = metrics
        self._clock = clock

    def factors(self) -> CorrectionFactors:
        """What the policy is told now (all 1, no queue, when off)."""
        return self.corrections.factors(self._clock()) if self.enabled else CorrectionFactors()

    def head(self, manifest: Manifest, head: HeadResult, rows: int) -> None:
        """A head run of ``rows`` inputs: its measured time against the edge profile."""
        profile = manifest.profiles.get("edge")
        if not self.enabled or not head.segments or profile is None:
            return
        if rows != profile.batch_size:
            return  # a batch the profile did not time: no like-for-like ratio
        try:
            predicted = sum(profile.seconds(seg) for seg in head.segments)
        except BundleError:
            return
        now = self._clock()
        self.corrections = self.corrections.observe_edge(now, head.compute_s, predicted)
        self._metrics.correction.labels("edge").set(self.corrections.factors(now).edge)

    def probe(
        self, manifest: Manifest, runner: HeadRunner, x: Feeds, head: HeadResult
    ) -> float | None:
        """Time a head segment (the cheapest) while an offload that ran no head (``head``) waits.

        Under such a cut the edge's speed is otherwise never measured, and a device
        that recovered would not be noticed; the segment runs while the CPU waits for
        the reply anyway, when the edge term is a second old and says the device is
        slow (:meth:`~offload_policy.corrections.Corrections.probe_due`). Returns the
        probe's seconds, ``None`` when none ran.
        """
        if not self.enabled or head.segments or not self.corrections.probe_due(self._clock()):
            return None
        segment = probe_segment(manifest)
        if segment is None:
            return None
        try:
            probe = runner.run([manifest.segments[segment]], x, None)
        except run_errors() + (BundleError,) as exc:
            log.debug("head probe failed error=%s", exc)
            return None
        self.head(manifest, probe, batch_of(x))
        return probe.compute_s

    def tail(
        self, manifest: Manifest, tail: str | None, rows: int, compute_s: float, queue_s: float
    ) -> None:
        """The tail time and queue delay the cloud reported, against the cloud profile."""
        profile = manifest.profiles.get("cloud")
        if not self.enabled or profile is None or tail is None:
            return
        now = self._clock()
        self.corrections = self.corrections.observe_queue(now, queue_s)
        if rows != profile.batch_size or tail not in profile.timings:
            return
        predicted = profile.seconds(tail)
        self.corrections = self.corrections.observe_cloud(now, compute_s, predicted)
        self._metrics.correction.labels("cloud").set(self.corrections.factors(now).cloud)


__all__ = ["Feedback"]
