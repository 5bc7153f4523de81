"""Tail backends: what runs the cloud half of a split.

The protocol every backend implements is :class:`~cloud_node.tail.TailBackend`;
the embedded ONNX Runtime backend here is the default (in-process, no server
needed). Triton (:mod:`cloud_node.triton_backend`) and the Ray tier
(:mod:`cloud_node.ray_tier`) join behind the same protocol;
:func:`make_backend` builds the in-process ones by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from cloud_node.tail import BatchResult, DecodingBackend, Request, TailBackend, decode_and_run
from edgesplit.bundle import Bundle, Cut
from edgesplit.errors import BackendError
from edgesplit.onnxrt import create_session, run_errors


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


__all__ = [
    "BatchResult",
    "DecodingBackend",
    "OnnxRuntimeBackend",
    "Request",
    "TailBackend",
    "decode_and_run",
    "make_backend",
]
