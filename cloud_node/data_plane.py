"""The cloud's data plane: pings answered, infer requests admitted, batched, run and answered.

The ingress hands every message that is not the control plane's here as its
checked header (``wire.read_envelope``): a kind other than ``ping`` or
``infer`` is refused from the header alone; the rest is decoded with its
tensors left encoded (``wire.decode_body``): a :class:`~wire.Ping` gets its
:class:`~wire.Pong` at once; an :class:`~wire.InferRequest` is checked
against the bundle it names and either admitted to the queue or answered at
once (:class:`~wire.ErrorReply`, or :class:`~wire.Busy` when the queue is
full: with the queue's expected delay, so the edge runs the request itself
instead of waiting). Workers (:meth:`DataPlane.work`) take the oldest
request plus every queued request for the same cut (within
``batch_window_s`` and ``max_batch`` rows) and hand them to the backend,
which decodes them where the tail runs and runs them as one batch. Replies
carry the request's queue time and its batch's compute time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

import wire
from cloud_node.admission import AdmissionQueue, Job
from cloud_node.config import CloudConfig
from cloud_node.tail import TailBackend
from cloud_node.tally import Tally
from cloud_node.throttle import LogThrottle
from cloud_node.validate import RequestRejected, check_request
from edgesplit.bundle import Bundle, Cut
from edgesplit.errors import BackendBusy, BackendError, WireError

log = logging.getLogger(__name__)

DATA_KINDS = frozenset({wire.Ping.kind, wire.InferRequest.kind})
"""The message kinds the data plane serves."""

#: Sends a reply's frames to the client of ``identity`` (from a worker thread).
Send = Callable[[bytes, wire.Frames], None]


class DataPlane:
    """Answers pings and runs infer requests for the bundles served.

    Args:
        bundle: the bundle served first (a rollout's candidate joins with
            :meth:`serve_bundle`).
        backend: what runs its tails.
        config: the node's settings (limits, batching, queue).
        tally: the node's counts and outcome metrics (its clock times requests).
        quiet: the node's rate-limited log.
    """

    def __init__(
        self,
        bundle: Bundle,
        backend: TailBackend,
        config: CloudConfig,
        tally: Tally,
        quiet: LogThrottle,
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.config = config
        self.tally = tally
        self.metrics = tally.metrics
        self._clock = tally.clock
        self._quiet = quiet
        self.served: dict[str, tuple[Bundle, TailBackend]] = {bundle.id: (bundle, backend)}
        self._cut_ids = {c.id for c in bundle.manifest.cuts}
        self._replicas = self._replicas_probe(backend)
        self.queue = AdmissionQueue(
            config.queue_size, config.workers, self._replicas, clock=self._clock
        )

    def serve_bundle(self, bundle: Bundle, backend: TailBackend) -> None:
        """Also serve ``bundle``'s tails (a rollout's candidate), with their own backend."""
        self.served[bundle.id] = (bundle, backend)
        self._cut_ids |= {c.id for c in bundle.manifest.cuts}

    def _replicas_probe(self, backend: TailBackend) -> Callable[[], int] | None:
        """The backend's parallelism (exported as the replicas gauge), if it has its own."""
        if backend.parallelism() is None:
            self.metrics.replicas.set(1)
            return None

        def running() -> int:
            count = backend.parallelism() or 1
            self.metrics.replicas.set(count)
            return count

        return running

    # -- the ingress thread --------------------------------------------------------------

    def answer(
        self, envelope: wire.Envelope, received: float, identity: bytes
    ) -> wire.Frames | None:
        """The reply to a data-plane message, or ``None`` when it was admitted.

        ``envelope`` is the message's checked header (``wire.read_envelope``):
        a kind other than ``ping`` or ``infer`` is refused from it alone. An
        ``infer``'s fields are read, then checked against the bundle it names
        (bundle, cut, the tensors declared), and only then its payloads'
        lengths; no payload is decoded. Every error found after the header is
        answered with the request's id (so the edge matches it to its request).
        Never raises for bad input: an unservable request gets an ``error``
        reply and a counted error.
        """
        rid = envelope.request_id
        if envelope.kind not in DATA_KINDS:
            return self._reject(
                RequestRejected(
                    "kind", f"kind={envelope.kind!r}: the cloud node serves infer and ping"
                ),
                rid,
                received,
                None,
            )
        asked: list[str] = []
        admitted: list[tuple[Bundle, TailBackend, Cut]] = []

        def check(message: wire.AnyMessage) -> None:
            # Bundle and cut before payloads: a request the node cannot serve is told so.
            assert isinstance(message, wire.InferRequest)
            asked.append(message.cut)
            bundle, backend = self.served.get(message.bundle, self.served[self.bundle.id])
            admitted.append(
                (bundle, backend, check_request(bundle, message, self.config.max_batch))
            )

        try:
            message = wire.decode_body(
                envelope,
                self.config.limits,
                encoded=True,
                check=check if envelope.kind == wire.InferRequest.kind else None,
            )
        except RequestRejected as exc:
            return self._reject(exc, rid, received, asked[0] if asked else None)
        except WireError as exc:
            return self.refuse(exc, received, rid, admitted[0][2].id if admitted else "-")
        if isinstance(message, wire.Ping):
            self.tally.count("ping")
            pong = wire.Pong(
                message.request_id,
                self.bundle.id,
                ",".join(self.served),
                self.backend.name,
                self.queue.expected_wait_s(),
            )
            return wire.encode(pong)
        assert isinstance(message, wire.InferRequest) and admitted
        bundle, backend, cut = admitted[0]
        tensors = tuple(_encoded(t) for t in message.tensors)
        job = Job(identity, message.request_id, cut, tensors, received, bundle, backend)
        if self.queue.offer(job):
            self.metrics.queue_depth.set(len(self.queue))
            return None
        wait = self.queue.expected_wait_s()
        self.metrics.queue_delay.set(wait)
        return self._busy(
            job, wait, f"queue full ({len(self.queue)} waiting, ~{wait * 1e3:.1f} ms)"
        )

    def _reject(
        self, exc: RequestRejected, request_id: int, received: float, cut: str | None
    ) -> wire.Frames:
        """Count and answer a well-formed request the node cannot serve."""
        self.tally.error(exc.code, received, self._cut_label(cut))
        self._quiet.warning(exc.code, "rejected request id=%d: %s", request_id, exc)
        return _error(request_id, exc.code, str(exc))

    def refuse(
        self, exc: WireError, received: float, request_id: int = 0, cut: str = "-"
    ) -> wire.Frames:
        """Count and answer frames the wire format refused.

        ``request_id`` is the header's once it was read (``0``: no id could be
        trusted); ``cut`` the cut it asked for, once known (a metrics label).
        """
        code = wire.error_code(exc)
        self.tally.error(code, received, cut)
        self._quiet.warning(code, "rejected frame code=%s id=%d error=%s", code, request_id, exc)
        return _error(request_id, code, str(exc))

    def _cut_label(self, cut: str | None) -> str:
        """``cut`` as a metrics label: a cut of the bundle, else ``-`` (labels stay bounded)."""
        return cut if cut is not None and cut in self._cut_ids else "-"

    # -- the workers ---------------------------------------------------------------------

    def work(self, send: Send, gone: Callable[[bytes], bool] | None = None) -> None:
        """Run batches until the queue is closed and drained; hand each reply to ``send``.

        ``gone`` says whether a client has left: its queued work is skipped.
        """
        while True:
            batch = self.queue.take(self.config.max_batch, self.config.batch_window_s)
            if batch is None:
                return
            self.metrics.queue_depth.set(len(self.queue))
            service = 0.0
            try:
                live = self._live(batch, gone)
                replies, service = self._run(live) if live else ([], 0)
                for job, reply in replies:
                    send(job.identity, reply)
            finally:
                self.queue.done(len(batch), service)
            if self._replicas is not None:
                self._replicas()  # keeps the gauge current (the backend caches it)

    def _live(self, batch: list[Job], gone: Callable[[bytes], bool] | None) -> list[Job]:
        """The jobs of ``batch`` whose client is still connected (work for the gone is not done)."""
        if gone is None:
            return batch
        live = [job for job in batch if not gone(job.identity)]
        if len(live) < len(batch):
            self.tally.count("skipped_gone", len(batch) - len(live))
        return live

    def _run(self, batch: list[Job]) -> tuple[list[tuple[Job, wire.Frames]], float]:
        """Run ``batch`` as one backend call (each alone if that fails).

        Returns the replies and the seconds the batch held the backend
        (decoding and compute). Replies report the tail's compute; the rest of
        the wall time (decoding, Serve's queue, the hop to a replica) counts as
        queueing.
        """
        cut = batch[0].cut
        backend = batch[0].backend
        try:
            result = backend.run_batch(cut, [job.tensors for job in batch], self.config.limits)
        except BackendBusy as exc:
            log.warning("backend busy, %d request(s) answered busy error=%s", len(batch), exc)
            self.tally.count("busy_backend")
            wait = max(self.queue.expected_wait_s(), self.config.busy_retry_s)
            return [(job, self._busy(job, wait, str(exc))) for job in batch], 0.0
        except BackendError as exc:
            if len(batch) > 1:
                log.warning("batch of %d failed, running each alone error=%s", len(batch), exc)
                pairs: list[tuple[Job, wire.Frames]] = []
                spent = 0.0
                for job in batch:
                    one, seconds = self._run([job])
                    pairs += one
                    spent += seconds
                return pairs, spent
            log.error("backend failed id=%d error=%s", batch[0].request_id, exc)
            return [self._failed(batch[0], "backend", str(exc))], 0.0
        except Exception as exc:  # noqa: BLE001 - a worker that dies leaves its batch unanswered
            log.exception("backend call failed unexpectedly, %d request(s) answered", len(batch))
            text = f"{type(exc).__name__}: {exc}"
            return [self._failed(job, "backend", text) for job in batch], 0.0
        finished = self._clock()
        self.metrics.backend_bytes.inc(sum(t.nbytes for job in batch for t in job.tensors))
        replies = []
        for index, (code, text) in result.failed.items():
            job = batch[index]
            self._quiet.warning(code, "undecodable tensor id=%d: %s", job.request_id, text)
            replies.append(self._failed(job, code, text))
        served = [job for i, job in enumerate(batch) if i not in result.failed]
        if served:
            compute = result.compute_s
            replies += self._results(served, result.outputs, finished - compute, compute)
        return replies, result.service_s

    def _results(
        self, batch: list[Job], outputs: dict[str, np.ndarray], started: float, compute: float
    ) -> list[tuple[Job, wire.Frames]]:
        """One ``result`` reply per job of a batch, each with its rows of the outputs."""
        cut = batch[0].cut
        wanted = set(batch[0].bundle.manifest.model.outputs)
        self.metrics.compute.labels(cut.id).observe(compute)
        self.metrics.batch_size.observe(len(batch))
        replies = []
        offset = 0
        for job in batch:
            rows = slice(offset, offset + job.rows)
            offset += job.rows
            tensors = tuple(wire.Tensor(n, v[rows]) for n, v in outputs.items() if n in wanted)
            queue_s = max(0.0, started - job.received)
            self.metrics.queue_wait.observe(queue_s)
            self.tally.count("ok")
            self.tally.observe("ok", cut.id, job.received)
            result = wire.Result(job.request_id, tensors, queue_s, compute, cut.id, len(batch))
            replies.append((job, wire.encode(result)))
        return replies

    def _failed(self, job: Job, code: str, text: str) -> tuple[Job, wire.Frames]:
        """Count error ``code`` for ``job`` and give its ``error`` reply."""
        self.tally.error(code, job.received, job.cut.id)
        return job, _error(job.request_id, code, text)

    def _busy(self, job: Job, wait: float, reason: str) -> wire.Frames:
        """A ``busy`` reply: the edge should run ``job`` itself; ``wait`` is the delay announced."""
        self.tally.count("busy")
        self.tally.observe("busy", job.cut.id, job.received)
        message = f"{reason[:600]}; run it on the edge"
        return wire.encode(wire.Busy(job.request_id, wait, len(self.queue), message))

    def close(self) -> None:
        """Close every backend served."""
        for _, backend in self.served.values():
            backend.close()


def _error(request_id: int, code: str, text: str) -> wire.Frames:
    """An ``error`` reply (its message cut to what any header takes)."""
    return wire.encode(wire.ErrorReply(request_id, code, text[:900]))


def _encoded(tensor: wire.AnyTensor) -> wire.EncodedTensor:
    """A request's tensor as the backends take it: as received (an array: sent ``raw``)."""
    if isinstance(tensor, wire.EncodedTensor):
        return tensor
    return wire.EncodedTensor.from_array(tensor.name, tensor.array)


__all__ = ["DATA_KINDS", "DataPlane", "Send"]
