"""What a tail backend is: the protocol every backend implements, and its batch's result.

A backend receives requests as they came off the wire (``wire.EncodedTensor``:
descriptor and compressed payload) and decodes them where the tail runs: in
the cloud node's worker thread for the in-process backends
(:class:`DecodingBackend`: ONNX Runtime, Triton), in the replica for the Ray
tier. The ingress thread never runs a codec or a model.

Capabilities are members of the protocol, never probed: ``parallelism()``
says how many batches the backend computes at once (``None``: one per worker
of the node, as an in-process backend does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

import wire
from edgesplit.bundle import Cut
from edgesplit.errors import WireError

Request = Sequence[wire.EncodedTensor]
"""One request's tensors, undecoded, in header order."""


@dataclass(frozen=True)
class BatchResult:
    """What a backend made of a batch of requests.

    Attributes:
        outputs: the tail's outputs by name, the rows of every request not in
            ``failed``, in request order.
        compute_s: seconds the tail computed.
        decode_s: seconds spent decoding the requests before it, where it ran.
        failed: requests that could not be decoded, by index in the batch:
            (a stable error code of ``wire.error_code``, the message).
    """

    outputs: dict[str, np.ndarray]
    compute_s: float
    decode_s: float = 0.0
    failed: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def service_s(self) -> float:
        """Seconds the batch held where it ran: decoding and the tail."""
        return self.decode_s + self.compute_s


class TailBackend(Protocol):
    """Runs the tail of a cut on a batch and returns the named outputs."""

    name: str
    #: What runs the tails, for the start-up line (an execution provider, a server).
    provider: str

    def infer(self, cut: Cut, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the tail of ``cut`` on decoded ``inputs`` (batch first)."""
        ...

    def run_batch(self, cut: Cut, requests: Sequence[Request], limits: wire.Limits) -> BatchResult:
        """Decode ``requests`` (each checked against ``limits``) and run them as one batch."""
        ...

    def parallelism(self) -> int | None:
        """Batches computed at once (a Ray tier: its running replicas); ``None``: one per worker.

        The divisor of the queue's expected wait, and the replicas gauge.
        """
        ...

    def close(self) -> None:
        """Release sessions and connections."""
        ...


def decode_and_run(
    infer: Callable[[Cut, Mapping[str, np.ndarray]], dict[str, np.ndarray]],
    cut: Cut,
    requests: Sequence[Request],
    limits: wire.Limits,
) -> BatchResult:
    """Decode each request, run those that decode as one batch, time both.

    A request whose tensors cannot be decoded (a corrupt compressed frame) is
    answered on its own, with the wire's error code; the others still run.
    The times are measurements reported to the edge (``Result.compute_s``),
    taken with ``time.perf_counter``; no deadline depends on them.

    Raises:
        BackendError: the tail failed on the batch.
    """
    began = time.perf_counter()
    failed: dict[int, tuple[str, str]] = {}
    decoded: list[dict[str, np.ndarray]] = []
    for i, tensors in enumerate(requests):
        try:
            decoded.append({t.name: t.decode(limits, k) for k, t in enumerate(tensors)})
        except WireError as exc:
            failed[i] = (wire.error_code(exc), str(exc)[:900])
    if not decoded:
        return BatchResult({}, 0.0, time.perf_counter() - began, failed)
    if len(decoded) == 1:
        inputs = decoded[0]
    else:
        inputs = {name: np.concatenate([d[name] for d in decoded]) for name in decoded[0]}
    computing = time.perf_counter()
    outputs = infer(cut, inputs)
    return BatchResult(outputs, time.perf_counter() - computing, computing - began, failed)


class DecodingBackend:
    """Base of the backends whose tails run in this process's worker threads.

    Subclasses give :meth:`infer`; requests are decoded in the calling (worker)
    thread, then run as one batch.
    """

    def infer(self, cut: Cut, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the tail of ``cut`` on decoded ``inputs``."""
        raise NotImplementedError

    def run_batch(self, cut: Cut, requests: Sequence[Request], limits: wire.Limits) -> BatchResult:
        """Decode ``requests`` here and run them as one :meth:`infer` call."""
        return decode_and_run(self.infer, cut, requests, limits)

    def parallelism(self) -> int | None:
        """``None``: the node's worker threads are what computes at once."""
        return None


__all__ = ["BatchResult", "DecodingBackend", "Request", "TailBackend", "decode_and_run"]
