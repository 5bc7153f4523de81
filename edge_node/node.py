"""The edge node: decide, run the head, exit early or offload, and always answer.

One request: read the monitors into an ``Observation``, ask the policy for a
decision, run the head segment by segment (stopping at a confident exit),
send the cut tensor to the cloud and wait with a deadline. With
``pipeline_depth`` > 1 (:meth:`EdgeNode.stream`) the next input's head runs
while the previous activation is in flight. If the cloud does not answer in
time, answers ``busy`` or an error, or cannot be reached, the edge finishes
the request itself from where its head stopped. A cloud that failed is
marked down with exponential backoff; when the backoff runs out the edge
pings it (requests meanwhile run locally) and uses it again once it
answers. Every request gets exactly one answer, and every outcome is
counted.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_node.head import HeadResult, HeadRunner
from edge_node.link import LinkMonitor
from edge_node.metrics import EdgeMetrics
from edge_node.records import CloudHealth, EdgeConfig, Outcome
from edge_node.transport import CloudClient, Pending, Reply
from edgesplit.bundle import Bundle, Cut, segment_chain
from edgesplit.errors import BundleError, TransportError, WireError
from edgesplit.onnxrt import run_errors
from offload_policy import Decision, Observation
from offload_policy.corrections import CorrectionFactors, Corrections, probe_segment
from offload_policy.energy import device_power, radio

log = logging.getLogger(__name__)


class Policy(Protocol):
    """What the edge asks for a decision."""

    @property
    def name(self) -> str:
        """The policy's name, for logs and metrics."""
        ...

    def decide(self, observation: Observation, state: Any, now: float) -> tuple[Decision, Any]:
        """A decision for the next request, and the policy's new state."""
        ...


class PowerSource(Protocol):
    """A battery or power monitor (see :mod:`edge_node.power`)."""

    def read(self, now: float) -> Any:
        """A reading with ``battery_level``, ``charging`` and ``power_w`` (each may be None)."""
        ...


class Updater(Protocol):
    """What over-the-air updates (:class:`edge_node.update.Updater`) hook into the node."""

    def tick(self, node: EdgeNode, now: float) -> None:
        """Between requests: heartbeat, download progress, switch, probation verdict."""
        ...

    def record(self, outcome: Outcome) -> None:
        """One request's outcome, for the health of the bundle serving."""
        ...


@dataclass
class _Ticket:
    """A request between its head and its answer, with the bundle it started on."""

    began: float
    decision: Decision
    cut: Cut
    head: HeadResult
    bundle: Bundle
    runner: HeadRunner
    x: np.ndarray
    pending: Pending | None = None
    outcome: Outcome | None = None
    #: Seconds of an idle-time head probe run while the offload was in flight.
    probe_s: float = 0.0


class EdgeNode:
    """Answers requests for one bundle, with or without a cloud."""

    def __init__(
        self,
        bundle: Bundle,
        policy: Policy,
        client: CloudClient | None = None,
        config: EdgeConfig | None = None,
        runner: HeadRunner | None = None,
        *,
        power: PowerSource | None = None,
        metrics: EdgeMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bundle = bundle
        self.policy = policy
        self.client = client
        self.config = config or EdgeConfig()
        self.runner = runner or HeadRunner(bundle)
        self.power = power
        self.metrics = metrics or EdgeMetrics()
        self.clock = clock
        c = self.config
        self.health = CloudHealth(c.backoff_s, c.max_backoff_s)
        self.link = LinkMonitor(
            c.bandwidth_bps,
            c.estimator,
            fixed_bps=c.bandwidth_bps if c.fixed_bandwidth else None,
            fixed_rtt_s=c.rtt_s,
        )
        # What the edge measures of its head and the cloud's tail, fed back into the policy.
        self.corrections = Corrections()
        self.counts: Counter[str] = Counter()
        self.recoveries = 0
        self._state: Any = getattr(policy, "initial_state", lambda: None)()
        self._radio = radio(c.radio)
        self._device = device_power(c.device)
        self._probe: Pending | None = None
        self._cloud_queue_s = 0.0
        self._cloud_queue_at = -math.inf
        self._power_reading: Any = None
        self._power_read_at = -math.inf
        self._last_decision: tuple[str, str] | None = None
        self.metrics.cloud_up.set(1.0 if client is not None else 0.0)
        self.updater: Updater | None = None
        # The bundle served before an update, kept while the new one is on probation: a
        # request whose head fails on the new bundle is answered by the old one.
        self.spare: tuple[Bundle, HeadRunner] | None = None

    def set_policy(self, policy: Policy) -> None:
        """Use ``policy`` from the next request on (its state starts afresh)."""
        self.policy = policy
        self._state = getattr(policy, "initial_state", lambda: None)()

    def switch(
        self, bundle: Bundle, runner: HeadRunner, policy: Policy
    ) -> tuple[Bundle, HeadRunner, Policy]:
        """Serve ``bundle`` from the next request on; return what served until now.

        Requests already started finish on the bundle they started with (each
        carries its own), so a switch between two requests loses none.
        """
        old = (self.bundle, self.runner, self.policy)
        self.bundle, self.runner = bundle, runner
        self.set_policy(policy)
        # The new bundle's profiles are a new reference: what was learned against the old
        # ones does not carry over.
        self.corrections = Corrections()
        return old

    def _serves(self, reply: Reply) -> bool:
        """Whether a ``pong`` says the cloud serves this edge's bundle."""
        meta = reply.message.meta
        served = str(meta.get("bundles") or meta.get("bundle") or "").split(",")
        return self.bundle.id in served

    @property
    def measured_rtt_s(self) -> float:
        """The smoothed round-trip time measured so far, seconds."""
        return self.link.measured_rtt_s

    # -- pairing and probing -----------------------------------------------------------------

    def check_cloud(self, timeout_s: float = 5.0, pings: int = 5) -> str:
        """Ping the cloud, refuse to pair with a different bundle, measure the RTT.

        Returns the cloud's backend name.
        """
        if self.client is None:
            raise TransportError("no cloud endpoint configured")
        fastest, reply = self.client.measure_rtt(timeout_s, pings)
        theirs = reply.message.meta.get("bundle")
        if not self._serves(reply):
            raise BundleError(
                f"cloud at {self.client.endpoint} serves bundle={str(theirs)[:12]}, this edge has "
                f"bundle={self.bundle.id[:12]}; deploy the same bundle on both sides"
            )
        self.link.add_rtt(fastest)
        return str(reply.message.meta.get("backend"))

    def _tend_cloud(self, now: float) -> None:
        """Probe a cloud that is down once its backoff ran out; take the probe's answer."""
        client = self.client
        if client is None or self.health.up:
            return
        if self._probe is not None:
            reply = self._collect(self._probe, deadline=0.0)
            if reply is not None:
                self._probe = None
                if reply.message.kind == "pong" and self._serves(reply):
                    self.health.succeeded()
                    self.recoveries += 1
                    self.counts["cloud_recovered"] += 1
                    self.link.add_rtt(reply.round_trip_s)
                    self.metrics.cloud_up.set(1.0)
                    log.info(
                        "cloud is back endpoint=%s rtt_s=%.4f", client.endpoint, reply.round_trip_s
                    )
                else:
                    self.health.failed(now)
            elif time.perf_counter() > self._probe.sent_at + self.config.timeout_s:
                client.abandon(self._probe)
                self._probe = None
                self.health.failed(now)
            return
        if self.health.available(now):
            try:
                self._probe = client.send("ping", None)
                self.counts["cloud_probes"] += 1
            except TransportError:
                self.health.failed(now)

    def _collect(self, pending: Pending, deadline: float) -> Reply | None:
        """The reply to ``pending`` if it arrives before ``deadline`` (0: only if already here)."""
        assert self.client is not None
        try:
            if deadline == 0.0:
                return self.client.poll(pending)
            return self.client.wait(pending, deadline)
        except WireError as exc:
            log.warning("invalid reply from the cloud error=%s", exc)
            return None

    # -- one request -------------------------------------------------------------------------

    def observe(self, now: float) -> Observation:
        """What the policy is told about the link, the cloud and the battery."""
        link = self.link.reading()
        level, charging = None, True
        reading = self._read_power(now)
        if reading is not None:
            level = getattr(reading, "battery_level", None)
            charging = bool(getattr(reading, "charging", None) or level is None)
        c = self.config
        factors = self.corrections.factors(self.clock()) if c.corrections else CorrectionFactors()
        return Observation(
            bandwidth_bps=link.bandwidth_bps,
            rtt_s=link.rtt_s,
            cloud_available=self.client is not None and self.health.up,
            cloud_queue_s=self._cloud_queue(now),
            battery_level=level,
            charging=charging,
            slo_s=c.slo_s,
            accuracy_floor=c.accuracy_floor,
            edge_factor=factors.edge,
            cloud_factor=factors.cloud,
            expected_queue_s=factors.queue_s,
        )

    def _cloud_queue(self, now: float) -> float:
        """The cloud's last reported queue delay, forgotten after ``queue_memory_s``.

        A cloud that answered ``busy`` gets no offloads while its delay is
        remembered; forgetting it lets the next request find out whether the
        queue has drained.
        """
        if now - self._cloud_queue_at > self.config.queue_memory_s:
            return 0.0
        return self._cloud_queue_s

    def _set_cloud_queue(self, queue_s: float) -> None:
        self._cloud_queue_s = queue_s
        self._cloud_queue_at = self.clock()
        self.metrics.cloud_queue.set(queue_s)

    def _read_power(self, now: float) -> Any:
        if self.power is None:
            return None
        if now - self._power_read_at >= self.config.power_interval_s:
            self._power_reading = self.power.read(now)
            self._power_read_at = now
            level = getattr(self._power_reading, "battery_level", None)
            watts = getattr(self._power_reading, "power_w", None)
            self.metrics.battery.set(math.nan if level is None else level)
            self.metrics.power.set(math.nan if watts is None else watts)
        return self._power_reading

    def infer(self, x: np.ndarray, now: float | None = None) -> Outcome:
        """Answer one request (a batch, usually of one) end to end."""
        return self._finish(self._start(x, now))

    def stream(self, batches: Iterable[np.ndarray]) -> Iterator[Outcome]:
        """Answer every batch in order, up to ``pipeline_depth`` offloads in flight.

        While one activation is on the wire the next input's head runs.
        """
        in_flight: deque[_Ticket] = deque()
        depth = self.config.pipeline_depth
        for x in batches:
            in_flight.append(self._start(x, None))
            self.metrics.in_flight.set(sum(t.pending is not None for t in in_flight))
            while len(in_flight) >= depth:
                yield self._finish(in_flight.popleft())
        while in_flight:
            yield self._finish(in_flight.popleft())
        self.metrics.in_flight.set(0)

    def _start(self, x: np.ndarray, now: float | None) -> _Ticket:
        """Decide, run the head, and send the cut tensor (or answer locally)."""
        began = time.perf_counter()
        now = self.clock() if now is None else now
        if self.updater is not None:
            self.updater.tick(self, now)
        self._tend_cloud(now)
        decision, self._state = self.policy.decide(self.observe(now), self._state, now)
        self._note_decision(decision)
        bundle, runner = self.bundle, self.runner
        manifest = bundle.manifest
        cut = manifest.cut(decision.cut)
        try:
            head = runner.run(
                segment_chain(manifest, cut),
                (manifest.model.input.name, x),
                decision.exit_threshold,
            )
        except run_errors() as exc:
            rescuer = self._rescuer(bundle)
            if rescuer is None:
                raise
            return self._rescue(began, decision, x, rescuer, exc)
        self._learn_head(bundle, head, x)
        ticket = _Ticket(began, decision, cut, head, bundle, runner, x)
        if head.exit is not None:
            ticket.outcome = self._done(ticket, head.value, head.exit)
        elif cut.tail is None:
            ticket.outcome = self._done(ticket, head.value, "edge")
        elif self.client is None:
            ticket.outcome = self._fallback(ticket, "no_cloud")
        elif not self.health.up:
            ticket.outcome = self._fallback(ticket, "cloud_down")
        else:
            try:
                ticket.pending = self.client.send(
                    "infer",
                    {cut.name: head.value},
                    codec=decision.codec,
                    meta={"bundle": bundle.id, "cut": cut.id},
                )
            except TransportError:
                self._cloud_failed("unreachable")
                ticket.outcome = self._fallback(ticket, "unreachable")
            else:
                self._probe_head(ticket)
        return ticket

    def _rescuer(self, failed: Bundle) -> tuple[Bundle, HeadRunner] | None:
        """Another bundle to answer with when ``failed``'s models fail.

        The one kept from before an update (on probation), or the one serving now
        (for a request in flight on a bundle rolled back meanwhile).
        """
        if self.spare is not None and self.spare[0] is not failed:
            return self.spare
        if self.bundle is not failed:
            return self.bundle, self.runner
        return None

    def _rescue(
        self,
        began: float,
        decision: Decision,
        x: np.ndarray,
        rescuer: tuple[Bundle, HeadRunner],
        exc: BaseException,
    ) -> _Ticket:
        """Answer ``x`` edge-only on ``rescuer``: the bundle it started on failed."""
        bundle, runner = rescuer
        log.warning(
            "models failed on a new bundle, answered by bundle=%s error=%s", bundle.id[:12], exc
        )
        manifest = bundle.manifest
        cut = manifest.edge_only
        head = runner.run(
            segment_chain(manifest, cut),
            (manifest.model.input.name, x),
            decision.exit_threshold,
        )
        ticket = _Ticket(began, decision, cut, head, bundle, runner, x)
        ticket.outcome = self._done(ticket, head.value, "fallback", reason="head_failed")
        return ticket

    def _finish(self, ticket: _Ticket) -> Outcome:
        """Wait for the cloud's answer to ``ticket`` (or finish it locally)."""
        if ticket.outcome is not None:
            return ticket.outcome
        pending = ticket.pending
        assert pending is not None and self.client is not None
        try:
            reply = self.client.wait(pending, pending.sent_at + self.config.timeout_s)
        except WireError as exc:
            log.warning("invalid reply from the cloud error=%s", exc)
            self._cloud_failed("bad_reply")
            return self._fallback(ticket, "bad_reply")
        if reply is None:
            self._cloud_failed("timeout")
            return self._fallback(ticket, "timeout")
        meta = reply.message.meta
        output = ticket.bundle.manifest.model.output
        if reply.message.kind != "result" or output not in reply.arrays:
            code = str(meta.get("code", reply.message.kind))
            log.warning("cloud refused request code=%s message=%s", code, meta.get("message"))
            queue_s = meta.get("queue_s")
            if code == "busy":
                self._set_cloud_queue(_seconds(queue_s))
            if code == "busy":
                self.counts["cloud_busy"] += 1
            elif code == "backend":
                self._cloud_failed(code)
            self.metrics.errors.labels(code).inc()
            return self._fallback(ticket, code)
        compute_s = _seconds(meta.get("compute_s"))
        queue_s = _seconds(meta.get("queue_s"))
        self._set_cloud_queue(queue_s)
        self._learn_tail(ticket, compute_s, queue_s)
        if reply.timed:
            self.link.add_transfer(
                self.clock(), pending.bytes_sent, reply.round_trip_s, compute_s, queue_s
            )
        self.health.succeeded()
        return self._done(
            ticket,
            reply.arrays[output],
            "cloud",
            cloud_compute_s=compute_s,
            cloud_queue_s=queue_s,
        )

    def _cloud_failed(self, kind: str) -> None:
        self.health.failed(self.clock())
        self.metrics.errors.labels(kind).inc()
        self.metrics.cloud_up.set(0.0)
        log.warning(
            "cloud marked down kind=%s failures=%d retry_in_s=%.2f",
            kind,
            self.health.failures,
            self.health.down_until - self.clock(),
        )

    def _fallback(self, ticket: _Ticket, reason: str) -> Outcome:
        """Finish locally along the edge-only chain, from the deepest boundary reached."""
        manifest = ticket.bundle.manifest
        chain = segment_chain(manifest, manifest.edge_only)
        head = ticket.head
        stop_name = head.last_stop[0]
        start = next((i for i, s in enumerate(chain) if s.input == stop_name), None)
        if start is None:
            raise BundleError(f"the edge-only chain cannot continue from tensor {stop_name!r}")
        try:
            rest = ticket.runner.run(chain[start:], head.last_stop, ticket.decision.exit_threshold)
        except run_errors() as exc:
            rescuer = self._rescuer(ticket.bundle)
            if rescuer is None:
                raise
            rescued = self._rescue(ticket.began, ticket.decision, ticket.x, rescuer, exc)
            assert rescued.outcome is not None
            return rescued.outcome
        self._learn_head(ticket.bundle, rest, ticket.x)
        return self._done(
            ticket, rest.value, "fallback", extra_compute_s=rest.compute_s, reason=reason
        )

    # -- closed-loop corrections --------------------------------------------------------------

    def _learn_head(self, bundle: Bundle, head: HeadResult, x: np.ndarray) -> None:
        """Feed a head run's measured time, against the edge profile of what ran, back."""
        profile = bundle.manifest.profiles.get("edge")
        if not self.config.corrections or not head.segments or profile is None:
            return
        if _rows(x) != profile.batch_size:
            return  # a batch the profile did not time: no like-for-like ratio
        try:
            predicted = sum(profile.seconds(seg) for seg in head.segments)
        except BundleError:
            return
        now = self.clock()
        self.corrections = self.corrections.observe_edge(now, head.compute_s, predicted)
        self.metrics.correction.labels("edge").set(self.corrections.factors(now).edge)

    def _probe_head(self, ticket: _Ticket) -> None:
        """While an offload that ran no head is in flight, time a head segment (the cheapest).

        Under such a cut the edge's speed is otherwise never measured, and a device
        that recovered would not be noticed; the segment runs while the CPU waits for
        the reply anyway, when the edge term is a second old and says the device is
        slow (:meth:`~offload_policy.corrections.Corrections.probe_due`).
        """
        if not self.config.corrections or ticket.head.segments:
            return
        if not self.corrections.probe_due(self.clock()):
            return
        bundle, manifest = ticket.bundle, ticket.bundle.manifest
        segment = probe_segment(manifest)
        if segment is None:
            return
        start = (manifest.model.input.name, ticket.x)
        try:
            probe = ticket.runner.run([manifest.segments[segment]], start, None)
        except run_errors() as exc:
            log.debug("head probe failed error=%s", exc)
            return
        self.counts["head_probes"] += 1
        ticket.probe_s = probe.compute_s
        self._learn_head(bundle, probe, ticket.x)

    def _learn_tail(self, ticket: _Ticket, compute_s: float, queue_s: float) -> None:
        """Feed the tail time and queue the cloud reported, against the cloud profile, back."""
        profile = ticket.bundle.manifest.profiles.get("cloud")
        tail = ticket.cut.tail
        if not self.config.corrections or profile is None or tail is None:
            return
        now = self.clock()
        self.corrections = self.corrections.observe_queue(now, queue_s)
        if _rows(ticket.x) != profile.batch_size or tail not in profile.timings:
            return
        predicted = profile.seconds(tail)
        self.corrections = self.corrections.observe_cloud(now, compute_s, predicted)
        self.metrics.correction.labels("cloud").set(self.corrections.factors(now).cloud)

    def _note_decision(self, decision: Decision) -> None:
        key = (decision.cut, decision.codec)
        if key != self._last_decision:
            if self._last_decision is not None:
                self.metrics.decision.labels(*self._last_decision).set(0)
            self.metrics.decision.labels(*key).set(1)
            self._last_decision = key
        threshold = decision.exit_threshold
        self.metrics.threshold.set(math.nan if threshold is None else threshold)
        link = self.link.reading()
        self.metrics.bandwidth.set(link.bandwidth_bps)
        self.metrics.rtt.set(link.rtt_s)

    def _done(
        self,
        ticket: _Ticket,
        logits: np.ndarray,
        finished: str,
        *,
        extra_compute_s: float = 0.0,
        cloud_compute_s: float = 0.0,
        cloud_queue_s: float = 0.0,
        reason: str | None = None,
    ) -> Outcome:
        latency = time.perf_counter() - ticket.began
        compute = ticket.head.compute_s + extra_compute_s
        sent = ticket.pending.bytes_sent if ticket.pending is not None else 0
        # An idle-time head probe (see _probe_head) costs energy, not latency.
        energy = self._energy_j(compute + ticket.probe_s, sent, latency)
        self.counts[finished] += 1
        m = self.metrics
        m.requests.labels(finished, ticket.cut.id).inc()
        m.latency.labels(finished, ticket.cut.id).observe(latency)
        m.energy.labels("model").inc(energy)
        if finished.startswith("exit"):
            m.exits.labels(finished).inc()
        if reason:
            self.counts[f"fallback_{reason}"] += 1
            m.fallbacks.labels(reason).inc()
        if ticket.pending is not None:
            m.bytes_sent.inc(sent)
            m.raw_bytes.inc(ticket.pending.raw_bytes)
            if sent:
                m.compression.observe(ticket.pending.raw_bytes / sent)
        spend = getattr(self.power, "spend", None)
        if spend is not None:
            spend(energy)
        outcome = Outcome(
            prediction=np.asarray(logits).argmax(axis=-1),
            finished=finished,
            cut=ticket.cut.id,
            latency_s=latency,
            edge_compute_s=compute,
            bytes_sent=sent,
            cloud_compute_s=cloud_compute_s,
            reason=reason,
            cloud_queue_s=cloud_queue_s,
            energy_j=energy,
            threshold=ticket.decision.exit_threshold,
            codec=ticket.decision.codec,
            bundle=ticket.bundle.id,
        )
        if self.updater is not None:
            self.updater.record(outcome)
        return outcome

    def _energy_j(self, compute_s: float, bytes_sent: int, latency_s: float) -> float:
        """Joules by the power model: compute, radio while sending, idle while waiting."""
        energy = self._device.compute_w * compute_s
        if bytes_sent:
            bandwidth = self.link.reading().bandwidth_bps
            transmit = bytes_sent * 8.0 / bandwidth
            energy += self._radio.uplink_power_w(bandwidth) * transmit
            energy += self._device.idle_w * max(0.0, latency_s - compute_s - transmit)
        return energy


def _rows(x: np.ndarray) -> int:
    """The batch size of an input (its first dimension; 1 for a scalar)."""
    return int(x.shape[0]) if x.ndim else 1


def _seconds(value: object) -> float:
    """A duration from a reply's meta; anything else (missing, negative, NaN) is 0."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value) if math.isfinite(value) else 0.0
    return 0.0
