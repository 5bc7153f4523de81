"""Run a cut's head on the device, segment by segment, stopping at a confident exit."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from edgesplit.bundle import Bundle, Cut, Segment
from edgesplit.onnxrt import create_session


@dataclass(frozen=True)
class HeadResult:
    """What the head produced.

    Attributes:
        exit: the exit that answered, or ``None`` if none was confident.
        value: that exit's logits, or else the tensor at the end of the head
            (the cut tensor to send; the final output on an edge-only cut).
        last_stop: (tensor name, value) of the deepest exit boundary reached (or
            the start), from which the edge-only chain can continue locally.
        compute_s: time spent in ONNX Runtime, seconds.
        segments: ids of the segments that ran, in order (what ``compute_s`` timed).
    """

    exit: str | None
    value: np.ndarray
    last_stop: tuple[str, np.ndarray]
    compute_s: float
    segments: tuple[str, ...] = ()


def confidence(logits: np.ndarray) -> np.ndarray:
    """Max softmax probability per row."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return 1.0 / exp.sum(axis=-1)


class HeadRunner:
    """ONNX Runtime sessions for a bundle's head segments, loaded on first use."""

    def __init__(
        self,
        bundle: Bundle,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int = 0,
        provider_options: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.bundle = bundle
        self._providers = tuple(providers)
        self._threads = threads
        self._options = provider_options
        self._sessions: dict[str, ort.InferenceSession] = {}
        self.provider = self._providers[0]

    def session(self, segment: Segment) -> ort.InferenceSession:
        """The session of ``segment`` (loaded once)."""
        found = self._sessions.get(segment.id)
        if found is None:
            found = create_session(
                self.bundle.root / segment.file,
                self._providers,
                self._threads,
                provider_options=self._options,
            )
            self.provider = found.get_providers()[0]
            self._sessions[segment.id] = found
        return found

    def sessions(self) -> list[ort.InferenceSession]:
        """The sessions loaded so far."""
        return list(self._sessions.values())

    def warm(self, cuts: Sequence[Cut]) -> None:
        """Load every segment of ``cuts`` now rather than on the first request."""
        for cut in cuts:
            for seg_id in cut.head:
                self.session(self.bundle.manifest.segments[seg_id])

    def run(
        self,
        segments: Sequence[Segment],
        start: tuple[str, np.ndarray],
        threshold: float | None,
    ) -> HeadResult:
        """Run ``segments`` from ``start``; answer at the first exit reaching ``threshold``.

        ``threshold=None`` disables exits. Exits are judged on the whole batch:
        a batch leaves only if every row is confident.
        """
        name, value = start
        stop = start
        spent = 0.0
        ran: list[str] = []
        for segment in segments:
            session = self.session(segment)
            began = time.perf_counter()
            outputs = session.run(None, {segment.input: value})
            spent += time.perf_counter() - began
            ran.append(segment.id)
            named = {o.name: v for o, v in zip(session.get_outputs(), outputs, strict=True)}
            name, value = segment.output, named[segment.output]
            if segment.exit is None:
                continue
            stop = (name, value)
            if threshold is not None:
                logits = named[segment.exit]
                if bool(np.all(confidence(logits) >= threshold)):
                    return HeadResult(segment.exit, logits, stop, spent, tuple(ran))
        return HeadResult(None, value, stop, spent, tuple(ran))
