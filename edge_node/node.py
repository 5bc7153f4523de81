"""The edge node: decide, run the head, exit early or offload, and always answer.

One request: ask the policy for a decision, run the head segment by segment
(stopping at a confident exit), send the cut tensor to the cloud and wait
with a deadline. If the cloud does not answer in time, or answers with an
error, the edge finishes the request itself from where its head stopped and
marks the cloud down with exponential backoff. Every request gets an answer.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_node.head import HeadResult, HeadRunner
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, segment_chain
from edgesplit.errors import BundleError, TransportError, WireError
from offload_policy import Decision, Observation

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


@dataclass(frozen=True)
class EdgeConfig:
    """How the edge node talks to the cloud.

    Attributes:
        timeout_s: deadline for the cloud's reply, seconds.
        backoff_s: first pause after a cloud failure; doubles up to ``max_backoff_s``.
        max_backoff_s: longest pause before the cloud is tried again.
        bandwidth_bps: the uplink bandwidth the policy is told (static for now).
        rtt_s: the round-trip time the policy is told; ``None``: the fastest of
            the pings sent when pairing with the cloud.
    """

    timeout_s: float = 1.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    bandwidth_bps: float = 10e6
    rtt_s: float | None = None


@dataclass(frozen=True)
class Outcome:
    """How one request was answered.

    Attributes:
        prediction: predicted class per row.
        finished: ``exit_*`` (an early exit), ``cloud``, ``edge`` (edge-only
            cut) or ``fallback`` (the cloud failed; finished locally).
        cut: the cut the policy chose.
        latency_s: wall time from input to answer, seconds.
        edge_compute_s: ONNX Runtime time on the edge, seconds.
        bytes_sent: bytes put on the wire for this request.
        cloud_compute_s: the cloud's reported tail time, seconds.
        reason: why a fallback happened (``timeout``, an error code), else ``None``.
    """

    prediction: np.ndarray
    finished: str
    cut: str
    latency_s: float
    edge_compute_s: float
    bytes_sent: int = 0
    cloud_compute_s: float = 0.0
    reason: str | None = None


@dataclass
class CloudHealth:
    """Whether the cloud may be tried, with exponential backoff after failures."""

    backoff_s: float
    max_backoff_s: float
    failures: int = 0
    down_until: float = 0.0

    def available(self, now: float) -> bool:
        """True when the cloud is up or its backoff has run out (the next request probes)."""
        return now >= self.down_until

    def failed(self, now: float) -> None:
        """Record a failure: stay away for backoff x 2^(failures-1), capped."""
        self.failures += 1
        pause = min(self.max_backoff_s, self.backoff_s * 2 ** (self.failures - 1))
        self.down_until = now + pause

    def succeeded(self) -> None:
        """Record an answer: the cloud is up again."""
        self.failures = 0
        self.down_until = 0.0


class EdgeNode:
    """Answers requests for one bundle, with or without a cloud."""

    def __init__(
        self,
        bundle: Bundle,
        policy: Policy,
        client: CloudClient | None = None,
        config: EdgeConfig | None = None,
        runner: HeadRunner | None = None,
    ) -> None:
        self.bundle = bundle
        self.policy = policy
        self.client = client
        self.config = config or EdgeConfig()
        self.runner = runner or HeadRunner(bundle)
        self.health = CloudHealth(self.config.backoff_s, self.config.max_backoff_s)
        self.counts: Counter[str] = Counter()
        self._state: Any = None
        self.measured_rtt_s = 0.0
        self._input = self.bundle.manifest.model.input.name
        self._output = self.bundle.manifest.model.output

    def check_cloud(self, timeout_s: float = 5.0, pings: int = 5) -> str:
        """Ping the cloud, refuse to pair with a different bundle, measure the RTT.

        Returns the cloud's backend name.
        """
        if self.client is None:
            raise TransportError("no cloud endpoint configured")
        self.measured_rtt_s, reply = self.client.measure_rtt(timeout_s, pings)
        theirs = reply.message.meta.get("bundle")
        if theirs != self.bundle.id:
            raise BundleError(
                f"cloud at {self.client.endpoint} serves bundle={str(theirs)[:12]}, this edge has "
                f"bundle={self.bundle.id[:12]}; deploy the same bundle on both sides"
            )
        return str(reply.message.meta.get("backend"))

    def observe(self, now: float) -> Observation:
        """What the policy is told about the link and the cloud."""
        return Observation(
            bandwidth_bps=self.config.bandwidth_bps,
            rtt_s=self.measured_rtt_s if self.config.rtt_s is None else self.config.rtt_s,
            cloud_available=self.client is not None and self.health.available(now),
        )

    def infer(self, x: np.ndarray, now: float | None = None) -> Outcome:
        """Answer one request (a batch, usually of one) end to end."""
        began = time.perf_counter()
        now = time.monotonic() if now is None else now
        decision, self._state = self.policy.decide(self.observe(now), self._state, now)
        manifest = self.bundle.manifest
        cut = manifest.cut(decision.cut)
        head = self.runner.run(
            segment_chain(manifest, cut), (self._input, x), decision.exit_threshold
        )
        if head.exit is not None:
            return self._done(head.value, head.exit, cut.id, began, head.compute_s)
        if cut.tail is None:
            return self._done(head.value, "edge", cut.id, began, head.compute_s)
        if self.client is None:
            return self._fallback(head, decision, began, "no_cloud", 0)
        try:
            reply, sent = self.client.request(
                "infer",
                {cut.name: head.value},
                codec=decision.codec,
                meta={"bundle": self.bundle.id, "cut": cut.id},
                timeout_s=self.config.timeout_s,
            )
        except WireError as exc:
            log.warning("invalid reply from the cloud error=%s", exc)
            self.health.failed(time.monotonic())
            return self._fallback(head, decision, began, "bad_reply", 0)
        if reply is None:
            self.health.failed(time.monotonic())
            return self._fallback(head, decision, began, "timeout", sent)
        if reply.message.kind != "result" or self._output not in reply.arrays:
            code = str(reply.message.meta.get("code", reply.message.kind))
            log.warning(
                "cloud refused request code=%s message=%s", code, reply.message.meta.get("message")
            )
            if code in ("busy", "backend"):
                self.health.failed(time.monotonic())
            return self._fallback(head, decision, began, code, sent)
        self.health.succeeded()
        return self._done(
            reply.arrays[self._output],
            "cloud",
            cut.id,
            began,
            head.compute_s,
            bytes_sent=sent,
            cloud_compute_s=float(reply.message.meta.get("compute_s") or 0.0),
        )

    def _fallback(
        self, head: HeadResult, decision: Decision, began: float, reason: str, sent: int
    ) -> Outcome:
        """Finish locally along the edge-only chain, from the deepest boundary reached."""
        manifest = self.bundle.manifest
        chain = segment_chain(manifest, manifest.edge_only)
        stop_name = head.last_stop[0]
        start = next((i for i, s in enumerate(chain) if s.input == stop_name), None)
        if start is None:
            raise BundleError(f"the edge-only chain cannot continue from tensor {stop_name!r}")
        rest = self.runner.run(chain[start:], head.last_stop, decision.exit_threshold)
        return self._done(
            rest.value,
            "fallback",
            decision.cut,
            began,
            head.compute_s + rest.compute_s,
            bytes_sent=sent,
            reason=reason,
        )

    def _done(
        self,
        logits: np.ndarray,
        finished: str,
        cut: str,
        began: float,
        compute_s: float,
        *,
        bytes_sent: int = 0,
        cloud_compute_s: float = 0.0,
        reason: str | None = None,
    ) -> Outcome:
        self.counts[finished] += 1
        if reason:
            self.counts[f"fallback_{reason}"] += 1
        return Outcome(
            prediction=np.asarray(logits).argmax(axis=-1),
            finished=finished,
            cut=cut,
            latency_s=time.perf_counter() - began,
            edge_compute_s=compute_s,
            bytes_sent=bytes_sent,
            cloud_compute_s=cloud_compute_s,
            reason=reason,
        )
