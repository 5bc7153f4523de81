"""What the edge knows of its link, measured from its own traffic.

The round-trip time comes from pings (at pairing and when probing a cloud
that was down) and from offloaded requests of one packet (their wire time
is negligible); the uplink bandwidth from every larger offloaded request
whose reply the edge was waiting for (``Reply.timed``): bytes sent over the
round trip less the cloud's reported queue and compute time and the RTT.
Until the first such sample the edge assumes a prior bandwidth.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from edgesplit.errors import PolicyError
from offload_policy.estimator_registry import make_estimator
from offload_policy.estimators import RttEstimator, ThroughputEstimator, sample_from_transfer

log = logging.getLogger(__name__)

#: A reply to a message no larger than this (one Ethernet frame) times the path, not the link.
SMALL_TRANSFER_BYTES = 1500
#: RTT measurements whose minimum is taken out of each transfer.
RTT_WINDOW = 16


@dataclass(frozen=True)
class LinkReading:
    """The link as the policy is told it.

    Attributes:
        bandwidth_bps: uplink estimate (the prior until ``samples`` > 0).
        rtt_s: smoothed round-trip time.
        samples: bandwidth samples taken so far.
        source: ``prior``, ``measured`` or ``fixed`` (a configured override).
    """

    bandwidth_bps: float
    rtt_s: float
    samples: int
    source: str


class LinkMonitor:
    """Bandwidth and RTT estimates fed by the edge's transfers.

    Args:
        prior_bps: bandwidth assumed before the first measurement.
        estimator: ``tracked``, ``harmonic``, ``ewma``, ``last`` or ``robust``.
        fixed_bps: always report this bandwidth (measurements are still taken).
        fixed_rtt_s: always report this RTT.
    """

    def __init__(
        self,
        prior_bps: float,
        estimator: str = "tracked",
        *,
        fixed_bps: float | None = None,
        fixed_rtt_s: float | None = None,
    ) -> None:
        if not prior_bps > 0:
            raise PolicyError(f"prior bandwidth {prior_bps!r} bit/s: expected > 0")
        self.prior_bps = prior_bps
        self.estimator_name = estimator
        self._bandwidth: ThroughputEstimator = make_estimator(estimator)
        self._rtt = RttEstimator()
        self.fixed_bps = fixed_bps
        self.fixed_rtt_s = fixed_rtt_s
        self.samples = 0
        self.rejected = 0
        self._recent_rtts: deque[float] = deque(maxlen=RTT_WINDOW)

    def add_rtt(self, rtt_s: float) -> None:
        """One measured round trip (a ping, or a transfer too small to carry a bandwidth)."""
        self._rtt = self._rtt.update(rtt_s)
        self._recent_rtts.append(rtt_s)

    def add_transfer(
        self,
        now: float,
        nbytes: int,
        round_trip_s: float,
        cloud_compute_s: float,
        cloud_queue_s: float,
    ) -> float | None:
        """One offloaded request's figures; the throughput sample taken, bits/s, or ``None``.

        The RTT taken out is the smallest recently seen (the path's propagation
        delay), not the smoothed one, which queueing inflates.
        """
        rtt = min(self._recent_rtts, default=0.0)
        try:
            sample = sample_from_transfer(
                now,
                nbytes,
                round_trip_s,
                cloud_compute_s,
                cloud_queue_s,
                rtt,
                rtt_var_s=self._rtt.rttvar_s or 0.0,
            )
        except PolicyError as exc:
            # The cloud reported more time than the round trip took: its clock or units are off.
            self.rejected += 1
            log.warning("transfer not used for bandwidth error=%s", exc)
            return None
        if nbytes <= SMALL_TRANSFER_BYTES:
            # One packet spends microseconds on the wire at any rate worth measuring; what its
            # round trip adds to the path's is jitter (queues, the edge's own scheduling), not
            # bandwidth: 668 B held 14 ms by a CPU-starved edge read as 0.4 Mbit/s on a
            # 1.5 Mbit/s link. It refines the RTT instead.
            self.add_rtt(max(0.0, round_trip_s - cloud_compute_s - cloud_queue_s))
            return None
        if sample is None:
            # Too short to measure a bandwidth. Not an RTT either: feeding a larger message
            # back as an RTT would inflate the RTT and make every later transfer look too
            # short to measure.
            log.debug("transfer too short to measure nbytes=%d wall_s=%.6f", nbytes, round_trip_s)
            return None
        self._bandwidth = self._bandwidth.update(sample)
        self.samples += 1
        log.debug(
            "bandwidth sample bps=%.0f nbytes=%d wall_s=%.6f rtt_s=%.6f estimate_bps=%.0f",
            sample.bits_per_s,
            nbytes,
            round_trip_s,
            rtt,
            self._bandwidth.estimate(),
        )
        return sample.bits_per_s

    def forget_bandwidth(self) -> None:
        """Start the bandwidth estimate afresh from the prior; the RTT measured so far stays."""
        self._bandwidth = make_estimator(self.estimator_name)
        self.samples = 0

    @property
    def measured_rtt_s(self) -> float:
        """The smoothed RTT measured so far (0 before any), whatever the override."""
        return self._rtt.srtt_s or 0.0

    def reading(self) -> LinkReading:
        """The current estimates."""
        rtt = self.fixed_rtt_s if self.fixed_rtt_s is not None else (self._rtt.srtt_s or 0.0)
        if self.fixed_bps is not None:
            return LinkReading(self.fixed_bps, rtt, self.samples, "fixed")
        if self._bandwidth.ready:
            estimate = self._bandwidth.estimate()
            if estimate > 0:
                return LinkReading(estimate, rtt, self.samples, "measured")
        return LinkReading(self.prior_bps, rtt, self.samples, "prior")

    def timeout_s(self, floor_s: float) -> float:
        """A reply deadline from the RTT (RFC 6298 style), never below ``floor_s``."""
        return max(floor_s, self._rtt.timeout_s(initial_s=floor_s))

    def describe(self) -> str:
        """What the monitor measures, for the start-up report."""
        if self.fixed_bps is not None:
            return f"bandwidth fixed at {self.fixed_bps / 1e6:g} Mbit/s (configured)"
        return (
            f"bandwidth from offloaded transfers ({self.estimator_name} estimator, prior "
            f"{self.prior_bps / 1e6:g} Mbit/s), RTT from pings and small transfers"
        )
