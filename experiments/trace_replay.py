"""Replay a bandwidth trace on a live link: its rate set along the trace's points.

:func:`replay` starts a :class:`TraceReplay` thread that calls the link's
``set_rate`` at each point's time (a :class:`~experiments.shaped_link.ShapedLink`
changes tbf, a :class:`~experiments.relay.RelayLink` its pacers).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Literal, Protocol

from edgesplit.errors import ConfigError, EdgesplitError
from experiments.traces import Trace

log = logging.getLogger(__name__)

Direction = Literal["uplink", "downlink", "both"]


class RateShapedLink(Protocol):
    """What a replay drives: a link whose rate is set live (ShapedLink, RelayLink)."""

    edge_ns: str

    def set_rate(self, uplink_bps: float | None, downlink_bps: float | None = None) -> None:
        """Change the rate, bits/s; None leaves that direction as it is."""


def rate_points(trace: Trace | Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(time_s, bits/s) points of a Trace (Mbit/s converted) or of a sequence, checked."""
    if isinstance(trace, Trace):
        return list(zip(trace.times.tolist(), (trace.mbps * 1e6).tolist(), strict=True))
    points = [(float(t), float(bps)) for t, bps in trace]
    if not points:
        raise ConfigError("trace_points=[]: expected at least one (time_s, bps) point")
    for i, (t, bps) in enumerate(points):
        if not (math.isfinite(t) and t >= 0 and math.isfinite(bps) and bps >= 0):
            raise ConfigError(f"trace point {i}: time_s={t!r} bps={bps!r}: expected finite >= 0")
        if i and t < points[i - 1][0]:
            raise ConfigError(f"trace point {i}: time_s={t!r} is before the previous point")
    return points


class TraceReplay(threading.Thread):
    """The thread :func:`replay` starts; ``applied`` lists (seconds since start, bits/s) set."""

    def __init__(
        self,
        link: RateShapedLink,
        points: list[tuple[float, float]],
        stop_event: threading.Event,
        time_scale: float,
        direction: Direction,
        period_s: float | None,
    ) -> None:
        super().__init__(name=f"replay-{link.edge_ns}", daemon=True)
        self.link, self.points, self.stop_event = link, points, stop_event
        self.time_scale, self.direction, self.period_s = time_scale, direction, period_s
        self.applied: list[tuple[float, float]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        """Apply each point at its time; stop early when the stop event is set."""
        start = time.monotonic()
        offset = 0.0
        try:
            while True:
                for t, bps in self.points:
                    wait = start + (offset + t) * self.time_scale - time.monotonic()
                    if self.stop_event.wait(max(wait, 0.0)):
                        return
                    up = bps if self.direction in ("uplink", "both") else None
                    down = bps if self.direction in ("downlink", "both") else None
                    self.link.set_rate(up, down)
                    self.applied.append((time.monotonic() - start, bps))
                if self.period_s is None:
                    return
                offset += self.period_s
        except EdgesplitError as exc:
            self.error = exc
            log.exception("replay_failed edge_ns=%s", self.link.edge_ns)


def replay(
    link: RateShapedLink,
    trace_points: Trace | Sequence[tuple[float, float]],
    stop_event: threading.Event,
    time_scale: float = 1.0,
    *,
    direction: Direction = "uplink",
    loop: bool = False,
) -> TraceReplay:
    """Start a thread that sets ``link``'s rate along (time_s, bits/s) points or a Trace.

    Point ``(t, bps)`` is applied ``t x time_scale`` seconds after the start
    (0.1 plays ten times faster); the last rate holds after the last point.
    ``loop`` repeats a Trace every ``duration_s`` (its wrap-around) until
    ``stop_event`` is set. Join the returned thread; its ``error`` says why it
    stopped early.
    """
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ConfigError(f"replay time_scale={time_scale!r}: expected a finite number > 0")
    if loop and not isinstance(trace_points, Trace):
        raise ConfigError("replay loop=True: needs a Trace (its duration_s is the period)")
    period = trace_points.duration_s if isinstance(trace_points, Trace) and loop else None
    thread = TraceReplay(link, rate_points(trace_points), stop_event, time_scale, direction, period)
    thread.start()
    return thread


__all__ = ["Direction", "RateShapedLink", "TraceReplay", "rate_points", "replay"]
