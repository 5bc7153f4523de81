"""Run a cut's head on the device, segment by segment, stopping at a confident exit."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from edgesplit.bundle import Bundle, Cut, Segment
from edgesplit.errors import BundleError
from edgesplit.onnxrt import create_session


@dataclass(frozen=True)
class HeadResult:
    """What the head produced.

    Attributes:
        exit: the exit that answered, or ``None`` if none was confident.
        value: that exit's logits, or else the first output of the last
            segment run (the cut's first tensor; the first final output on an
            edge-only cut).
        values: every value known after the run by wire name: the inputs and
            each segment's outputs (the cut's tensors are taken from here).
        compute_s: time spent in ONNX Runtime, seconds.
        segments: ids of the segments that ran, in order (what ``compute_s`` timed).
    """

    exit: str | None
    value: np.ndarray
    values: Mapping[str, np.ndarray]
    compute_s: float
    segments: tuple[str, ...] = ()

    def tensors(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The values named ``names``: a cut's tensors or a model's outputs."""
        missing = [n for n in names if n not in self.values]
        if missing:
            raise BundleError(f"the head computed no {missing}; it has {sorted(self.values)}")
        return {n: self.values[n] for n in names}


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
        start: Mapping[str, np.ndarray],
        threshold: float | None,
    ) -> HeadResult:
        """Run ``segments`` from the values ``start``; answer at the first confident exit.

        ``start`` holds the model's inputs by name, or what an earlier run
        computed (a segment whose outputs are all known already is skipped, so
        a fallback continues the edge-only chain where a head stopped).
        ``threshold=None`` disables exits. Exits are judged on the whole batch:
        a batch leaves only if every row is confident.
        """
        values = dict(start)
        value = next(iter(values.values())) if values else np.empty(0)
        spent = 0.0
        ran: list[str] = []
        for segment in segments:
            if segment.outputs and all(name in values for name in segment.outputs):
                continue
            missing = [name for name in segment.inputs if name not in values]
            if missing:
                raise BundleError(f"head segment {segment.id} needs {missing}, not computed")
            session = self.session(segment)
            reads = [i.name for i in session.get_inputs()]
            if not set(reads) <= set(segment.inputs):
                # A model that is not the segment's (a broken update): a model failure.
                raise ValueError(
                    f"head segment {segment.id}: its model reads {reads}, the bundle says "
                    f"{list(segment.inputs)}"
                )
            began = time.perf_counter()
            outputs = session.run(None, {name: values[name] for name in reads})
            spent += time.perf_counter() - began
            ran.append(segment.id)
            named = {o.name: v for o, v in zip(session.get_outputs(), outputs, strict=True)}
            wanted = (*segment.outputs, *([segment.exit] if segment.exit else []))
            lacking = [n for n in wanted if n not in named]
            if lacking:
                raise ValueError(f"head segment {segment.id}: its model gives no {lacking}")
            values.update(named)
            if segment.outputs:
                value = named[segment.outputs[0]]
            if segment.exit is None or threshold is None:
                continue
            logits = named[segment.exit]
            if bool(np.all(confidence(logits) >= threshold)):
                return HeadResult(segment.exit, logits, values, spent, tuple(ran))
        return HeadResult(None, value, values, spent, tuple(ran))
