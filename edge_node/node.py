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
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import wire
from edge_node.cloud_watch import CloudWatch, Pairing
from edge_node.config import EdgeConfig
from edge_node.energy import EnergyAccount
from edge_node.feedback import Feedback
from edge_node.head import HeadResult, HeadRunner
from edge_node.link import LinkMonitor
from edge_node.metrics import EdgeMetrics
from edge_node.power_monitor import PowerMonitor
from edge_node.records import CloudHealth, Outcome, prediction
from edge_node.switch import BundleUpdates, DropSpare, SwitchBack, SwitchTo
from edge_node.transport import CloudClient, Pending
from edgesplit.bundle import Bundle, Cut, segment_chain
from edgesplit.errors import TransportError, WireError
from edgesplit.feeds import Feeds, as_feeds, batch_of
from edgesplit.onnxrt import run_errors
from offload_policy import Decision, Observation, Policy
from offload_policy.corrections import Corrections

log = logging.getLogger(__name__)


@dataclass
class _Ticket:
    """A request between its head and its answer, with the bundle it started on."""

    began: float
    decision: Decision
    cut: Cut
    head: HeadResult
    bundle: Bundle
    runner: HeadRunner
    x: dict[str, np.ndarray]
    pending: Pending | None = None
    outcome: Outcome | None = None
    #: Seconds of an idle-time head probe run while the offload was in flight.
    probe_s: float = 0.0


class EdgeNode:
    """Answers requests for one bundle, with or without a cloud.

    Args:
        bundle: the bundle to serve.
        policy: what decides each request's cut, exit threshold and codec.
        client: the cloud's client; ``None``: edge only.
        config: see :class:`~edge_node.config.EdgeConfig`.
        runner: the bundle's head sessions (default: made here, on the CPU).
        power: where battery and power readings come from (``None``: mains, no reading).
        metrics: where the node counts (give the updater the same).
        updater: over-the-air updates (:class:`edge_node.update.Updater`), told of every
            tick and outcome and asked between requests for a switch; ``None``: none.
        pairing: the pairing with the cloud done before the node was built
            (:func:`~edge_node.cloud_watch.pair`): its round trip is the link's first.
        clock: the clock of every decision and deadline, seconds.
    """

    def __init__(
        self,
        bundle: Bundle,
        policy: Policy,
        client: CloudClient | None = None,
        config: EdgeConfig | None = None,
        runner: HeadRunner | None = None,
        *,
        power: PowerMonitor | None = None,
        metrics: EdgeMetrics | None = None,
        updater: BundleUpdates | None = None,
        pairing: Pairing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bundle = bundle
        self.client = client
        self.config = config or EdgeConfig()
        self.runner = runner or HeadRunner(bundle)
        self.metrics = metrics or EdgeMetrics()
        self.updater = updater
        self.clock = clock
        c = self.config
        self.link = LinkMonitor(
            c.bandwidth_bps,
            c.estimator,
            fixed_bps=c.bandwidth_bps if c.fixed_bandwidth else None,
            fixed_rtt_s=c.rtt_s,
        )
        if pairing is not None:
            self.link.add_rtt(pairing.rtt_s)
        self.counts: Counter[str] = Counter()
        health = CloudHealth(c.backoff_s, c.max_backoff_s)
        self.cloud = CloudWatch(client, health, self.link, self.metrics, self.counts, clock)
        # What the edge measures of its head and the cloud's tail, fed back into the policy.
        self.feedback = Feedback(c.corrections, self.metrics, clock)
        self.set_policy(policy)
        self.energy = EnergyAccount(power, c.radio, c.device, c.power_interval_s, self.metrics)
        # The bundle served before an update, kept while the new one is on probation: a
        # request whose head fails on the new bundle is answered by the old one.
        self.spare: tuple[Bundle, HeadRunner] | None = None

    def set_policy(self, policy: Policy) -> None:
        """Use ``policy`` from the next request on (its state starts afresh)."""
        self.policy = policy
        self._state: Any = policy.initial_state()

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
        self.feedback.corrections = Corrections()
        return old

    @property
    def health(self) -> CloudHealth:
        """Whether the cloud is up, and its backoff."""
        return self.cloud.health

    @property
    def recoveries(self) -> int:
        """Times a cloud marked down answered a probe and was used again."""
        return self.cloud.recoveries

    @property
    def measured_rtt_s(self) -> float:
        """The smoothed round-trip time measured so far, seconds."""
        return self.link.measured_rtt_s

    def check_cloud(self, timeout_s: float = 5.0, pings: int = 5) -> str:
        """Ping the cloud, refuse to pair with a different bundle, measure the RTT.

        Returns the cloud's backend name.
        """
        return self.cloud.check(self.bundle.id, timeout_s, pings)

    def _between_requests(self, updater: BundleUpdates, now: float) -> None:
        """Tell the updater the time and what is served; carry out the switch it asks for."""
        updater.tick(now, self.bundle, None if self.spare is None else self.spare[0])
        request = updater.next_switch()
        if isinstance(request, SwitchTo):
            self.spare = (self.bundle, self.runner)
            self.switch(request.bundle, request.runner, request.policy)
        elif isinstance(request, SwitchBack):
            if self.spare is None or self.spare[0].id != request.bundle.id:
                kept = "none" if self.spare is None else self.spare[0].id[:12]
                # The updater logs it and drops the request: declined once, not every request.
                updater.declined(
                    request, f"asked to switch back to {request.bundle.id[:12]}, kept {kept}"
                )
                return
            (bundle, runner), self.spare = self.spare, None
            self.switch(bundle, runner, request.policy)
        elif isinstance(request, DropSpare):
            self.spare = None
        else:
            return
        updater.switched(request, now)

    # -- one request -------------------------------------------------------------------------

    def observe(self, now: float) -> Observation:
        """What the policy is told about the link, the cloud and the battery."""
        link = self.link.reading()
        level, charging = None, True
        reading = self.energy.reading(now)
        if reading is not None:
            level = reading.battery_level
            charging = bool(reading.charging or level is None)
        c = self.config
        factors = self.feedback.factors()
        return Observation(
            bandwidth_bps=link.bandwidth_bps,
            rtt_s=link.rtt_s,
            cloud_available=self.cloud.usable,
            cloud_queue_s=self.cloud.queue_s(now, c.queue_memory_s),
            battery_level=level,
            charging=charging,
            slo_s=c.slo_s,
            accuracy_floor=c.accuracy_floor,
            edge_factor=factors.edge,
            cloud_factor=factors.cloud,
            expected_queue_s=factors.queue_s,
        )

    def infer(self, x: np.ndarray | Feeds, now: float | None = None) -> Outcome:
        """Answer one request (a batch, usually of one) end to end.

        ``x`` is a single-input model's array, or one array per input name.
        """
        return self._finish(self._start(x, now))

    def stream(self, batches: Iterable[np.ndarray | Feeds]) -> Iterator[Outcome]:
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

    def _start(self, given: np.ndarray | Feeds, now: float | None) -> _Ticket:
        """Decide, run the head, and send the cut's tensors (or answer locally)."""
        began = time.perf_counter()
        now = self.clock() if now is None else now
        if self.updater is not None:
            self._between_requests(self.updater, now)
        self.cloud.tend(now, self.bundle.id, self.config.timeout_s)
        decision, self._state = self.policy.decide(self.observe(now), self._state, now)
        link = self.link.reading()
        self.metrics.decided(decision, link.bandwidth_bps, link.rtt_s)
        bundle, runner = self.bundle, self.runner
        manifest = bundle.manifest
        cut = manifest.cut(decision.cut)
        x = as_feeds(given, manifest.model.inputs)
        try:
            head = runner.run(segment_chain(manifest, cut), x, decision.exit_threshold)
        except run_errors() as exc:
            rescuer = self._rescuer(bundle)
            if rescuer is None:
                raise
            return self._rescue(began, decision, x, rescuer, exc)
        self.feedback.head(manifest, head, batch_of(x))
        ticket = _Ticket(began, decision, cut, head, bundle, runner, x)
        if head.exit is not None:
            ticket.outcome = self._done(ticket, {manifest.model.output: head.value}, head.exit)
        elif cut.tail is None:
            ticket.outcome = self._done(ticket, head.tensors(manifest.model.outputs), "edge")
        elif self.client is None:
            ticket.outcome = self._fallback(ticket, "no_cloud")
        elif not self.cloud.health.up:
            ticket.outcome = self._fallback(ticket, "cloud_down")
        else:
            try:
                tensors = tuple(
                    wire.Tensor(name, value) for name, value in head.tensors(cut.names).items()
                )
                request = wire.InferRequest(self.client.new_id(), bundle.id, cut.id, tensors)
                ticket.pending = self.client.send(request, codec=decision.codec)
            except TransportError:
                self.cloud.failed("unreachable")
                ticket.outcome = self._fallback(ticket, "unreachable")
            else:
                # While the activation is on the wire: time a head segment if one is due.
                probe_s = self.feedback.probe(manifest, runner, x, head)
                if probe_s is not None:
                    self.counts["head_probes"] += 1
                    ticket.probe_s = probe_s
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
        x: dict[str, np.ndarray],
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
        head = runner.run(segment_chain(manifest, cut), x, decision.exit_threshold)
        ticket = _Ticket(began, decision, cut, head, bundle, runner, x)
        if head.exit is not None:
            outputs = {manifest.model.output: head.value}
        else:
            outputs = head.tensors(manifest.model.outputs)
        ticket.outcome = self._done(ticket, outputs, "fallback", reason="head_failed")
        return ticket

    def _finish(self, ticket: _Ticket) -> Outcome:
        """Wait for the cloud's answer to ``ticket`` (or finish it locally)."""
        if ticket.outcome is not None:
            return ticket.outcome
        pending = ticket.pending
        assert pending is not None and self.client is not None
        try:
            reply = self.client.wait(pending, self.config.timeout_s)
        except WireError as exc:
            log.warning("invalid reply from the cloud error=%s", exc)
            self.cloud.failed("bad_reply")
            return self._fallback(ticket, "bad_reply")
        if reply is None:
            self.cloud.failed("timeout")
            return self._fallback(ticket, "timeout")
        message = reply.message
        if isinstance(message, wire.Result):
            manifest = ticket.bundle.manifest
            outputs = {**ticket.head.tensors(ticket.cut.edge_outputs), **message.arrays()}
            if all(name in outputs for name in manifest.model.outputs):
                compute_s, queue_s = message.compute_s, message.queue_s
                self.cloud.set_queue(queue_s)
                rows = batch_of(ticket.x)
                self.feedback.tail(manifest, ticket.cut.tail, rows, compute_s, queue_s)
                if reply.timed:
                    self.link.add_transfer(
                        self.clock(), pending.bytes_sent, reply.round_trip_s, compute_s, queue_s
                    )
                self.cloud.health.succeeded()
                return self._done(
                    ticket,
                    {name: outputs[name] for name in manifest.model.outputs},
                    "cloud",
                    cloud_compute_s=compute_s,
                    cloud_queue_s=queue_s,
                )
        return self._refused(ticket, message)

    def _refused(self, ticket: _Ticket, message: wire.AnyMessage) -> Outcome:
        """The cloud answered ``ticket`` with no result (busy, an error): finish it locally."""
        code, text = message.kind, ""
        if isinstance(message, wire.Busy | wire.ErrorReply):
            code, text = message.code or message.kind, message.message
        log.warning("cloud refused request code=%s message=%s", code, text)
        if code == "busy":
            self.cloud.set_queue(message.queue_s if isinstance(message, wire.Busy) else 0.0)
            self.counts["cloud_busy"] += 1
        elif code == "backend":
            self.cloud.failed(code)
        self.metrics.errors.labels(code).inc()
        return self._fallback(ticket, code)

    def _fallback(self, ticket: _Ticket, reason: str) -> Outcome:
        """Finish locally along the edge-only chain, from the deepest boundary reached."""
        manifest = ticket.bundle.manifest
        chain = segment_chain(manifest, manifest.edge_only)
        # Segments the head ran already are skipped: the chain goes on from what it computed.
        try:
            rest = ticket.runner.run(chain, ticket.head.values, ticket.decision.exit_threshold)
        except run_errors() as exc:
            rescuer = self._rescuer(ticket.bundle)
            if rescuer is None:
                raise
            rescued = self._rescue(ticket.began, ticket.decision, ticket.x, rescuer, exc)
            assert rescued.outcome is not None
            return rescued.outcome
        self.feedback.head(manifest, rest, batch_of(ticket.x))
        if rest.exit is not None:
            outputs = {manifest.model.output: rest.value}
        else:
            outputs = rest.tensors(manifest.model.outputs)
        return self._done(
            ticket, outputs, "fallback", extra_compute_s=rest.compute_s, reason=reason
        )

    # -- closed-loop corrections --------------------------------------------------------------

    @property
    def corrections(self) -> Corrections:
        """What the edge learned of its head and the cloud's tail against the profiles."""
        return self.feedback.corrections

    def _done(
        self,
        ticket: _Ticket,
        outputs: Mapping[str, np.ndarray],
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
        # An idle-time head probe (Feedback.probe) costs energy, not latency.
        bandwidth = self.link.reading().bandwidth_bps
        energy = self.energy.joules(compute + ticket.probe_s, sent, latency, bandwidth)
        self.counts[finished] += 1
        if reason:
            self.counts[f"fallback_{reason}"] += 1
        self.energy.spend(energy)
        outcome = Outcome(
            prediction=prediction(outputs[ticket.bundle.manifest.model.output]),
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
            outputs=dict(outputs),
        )
        self.metrics.answered(outcome, None if ticket.pending is None else ticket.pending.raw_bytes)
        if self.updater is not None:
            self.updater.record(outcome)
        return outcome


__all__ = ["CloudHealth", "EdgeConfig", "EdgeNode", "Outcome", "Policy"]
