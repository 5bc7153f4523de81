"""The edge node's values: one request's outcome and the cloud's health.

Its configuration is :class:`edge_node.config.EdgeConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


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
        reason: why a fallback happened (``timeout``, ``unreachable``,
            ``busy``, an error code), else ``None``.
        cloud_queue_s: the cloud's reported queueing time, seconds.
        energy_j: energy attributed to the request by the power model, joules.
        threshold: the exit threshold used (``None``: exits off).
        codec: the codec the cut tensor was (or would have been) sent with.
        bundle: the id of the bundle that answered.
        outputs: every final output by name (an early exit's logits stand for
            the first one).
    """

    prediction: np.ndarray
    finished: str
    cut: str
    latency_s: float
    edge_compute_s: float
    bytes_sent: int = 0
    cloud_compute_s: float = 0.0
    reason: str | None = None
    cloud_queue_s: float = 0.0
    energy_j: float = 0.0
    threshold: float | None = None
    codec: str = ""
    bundle: str = ""
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)


def prediction(output: np.ndarray) -> np.ndarray:
    """The predicted class per row of class scores ``[N, C]``; -1 per row for other outputs."""
    value = np.asarray(output)
    if value.ndim == 2 and value.dtype.kind == "f":
        return value.argmax(axis=-1)
    return np.full(value.shape[0] if value.ndim else 1, -1, dtype=np.int64)


@dataclass
class CloudHealth:
    """Whether the cloud may be used, with exponential backoff and probing after failures."""

    backoff_s: float
    max_backoff_s: float
    failures: int = 0
    down_until: float = 0.0

    @property
    def up(self) -> bool:
        """True until a failure, and again once the cloud answered."""
        return self.failures == 0

    def available(self, now: float) -> bool:
        """True when the cloud is up or its backoff has run out."""
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


__all__ = ["CloudHealth", "Outcome"]
