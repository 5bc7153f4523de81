"""Tail backends: what runs the cloud half of a split.

One small protocol, :class:`TailBackend`; the embedded ONNX Runtime backend
is the default (in-process, no server needed). Triton and the Ray tier join
behind the same protocol.

A backend receives requests as they came off the wire (``wire.EncodedTensor``:
descriptor and compressed payload) and decodes them where the tail runs: in
the cloud node's worker thread for the in-process backends, in the replica for
the Ray tier. The ingress thread never runs a codec or a model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import onnxruntime as ort

import wire
from edgesplit.bundle import Bundle, Cut
from edgesplit.errors import BackendError, WireError
from edgesplit.onnxrt import create_session, run_errors

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

    Raises:
        BackendError: the tail failed on the batch.
    """
    began = time.perf_counter()
    failed: dict[int, tuple[str, str]] = {}
    decoded: list[dict[str, np.ndarray]] = []
    for i, tensors in enumerate(requests):
        try:
            decoded.append({t.meta.name: t.decode(limits, k) for k, t in enumerate(tensors)})
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


class OnnxRuntimeBackend(DecodingBackend):
    """Tails run in-process with ONNX Runtime, one session per cut, loaded up front."""

    name = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int = 0,
    ) -> None:
        self._sessions: dict[str, ort.InferenceSession] = {
            cut.id: create_session(bundle.tail_path(cut), providers, threads)
            for cut in bundle.manifest.cuts
            if cut.tail is not None
        }
        first = next(iter(self._sessions.values()), None)
        self.provider = first.get_providers()[0] if first else providers[0]

    def infer(self, cut: Cut, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the tail of ``cut``; the input names must match the tail's."""
        session = self._sessions.get(cut.id)
        if session is None:
            raise BackendError(f"no tail loaded for cut {cut.id} (edge-only cuts have none)")
        expected = {i.name for i in session.get_inputs()}
        if set(inputs) != expected:
            raise BackendError(
                f"cut {cut.id}: tail expects inputs {sorted(expected)}, got {sorted(inputs)}"
            )
        try:
            values = session.run(None, dict(inputs))
        except run_errors() as exc:
            raise BackendError(f"cut {cut.id}: tail failed: {exc}") from exc
        return {o.name: v for o, v in zip(session.get_outputs(), values, strict=True)}

    def close(self) -> None:
        """Drop the sessions."""
        self._sessions.clear()


def make_backend(
    bundle: Bundle,
    kind: str,
    providers: Sequence[str],
    threads: int,
    triton_url: str,
    triton_timeout_s: float,
) -> TailBackend:
    """The tail backend ``kind`` (``onnxruntime`` or ``triton``) for ``bundle``.

    One place for both the cloud node and the Ray tier's replicas; providers are
    the config's names (``cpu``, ``cuda``...), resolved against what is installed.
    """
    if kind == "triton":
        from cloud_node.triton_backend import TritonBackend

        return TritonBackend(bundle, triton_url, timeout_s=triton_timeout_s)
    from edgesplit.providers import resolve_providers

    return OnnxRuntimeBackend(bundle, resolve_providers(tuple(providers)), threads=threads)
