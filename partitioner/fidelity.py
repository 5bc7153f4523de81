"""How far a split model's outputs are from the unsplit model's, per kept cut and codec.

For every kept cut with a tail and every codec, the cut's tensors on the
held-out samples are encoded and decoded as the edge sends them (one sample
a request; once per quantizer, since compression is lossless), the tail runs
on them, and each final output is compared with the whole model's: the top-1
agreement where the first output holds class scores, and per output the
largest and the mean relative error. These are what the policy uses as
accuracy where the model has no labels, and what ``edgesplit show`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

import wire
from edgesplit.bundle import Fidelity
from edgesplit.onnxrt import create_session
from partitioner.extract import CutPlan
from partitioner.prepare import Prepared, Progress, no_progress, run_batched

_TINY = 1e-12
_LIMITS = wire.Limits(max_tensor_bytes=1 << 31, max_total_bytes=1 << 31)


def is_class_scores(value: np.ndarray) -> bool:
    """Whether an output looks like class scores: ``[N, C]`` floats with C >= 2."""
    return value.ndim == 2 and value.shape[1] >= 2 and value.dtype.kind == "f"


def compare(
    split: Mapping[str, np.ndarray], whole: Mapping[str, np.ndarray], first: str
) -> Fidelity:
    """The :class:`Fidelity` of outputs ``split`` against ``whole`` (same names, same rows)."""
    max_rel, mean_rel = {}, {}
    for name, expected in whole.items():
        got = np.asarray(split[name], dtype=np.float64)
        ref = np.asarray(expected, dtype=np.float64)
        diff = np.abs(got - ref)
        scale_max = max(float(np.max(np.abs(ref), initial=0.0)), _TINY)
        scale_mean = max(float(np.mean(np.abs(ref))) if ref.size else 0.0, _TINY)
        max_rel[name] = float(np.max(diff, initial=0.0) / scale_max)
        mean_rel[name] = float(np.mean(diff) / scale_mean) if diff.size else 0.0
    agreement = None
    reference = np.asarray(whole[first])
    if is_class_scores(reference):
        agreement = float(np.mean(np.argmax(split[first], axis=1) == np.argmax(reference, axis=1)))
    rows = len(reference)
    return Fidelity(rows, agreement, max_rel, mean_rel)


def _round_trip(value: np.ndarray, codec: str) -> np.ndarray:
    """``value`` as the cloud decodes it after the edge encoded it, one sample a request."""
    rows = []
    for i in range(len(value)):
        meta, payload = wire.encode_tensor("t", value[i : i + 1], codec)
        rows.append(wire.decode_tensor(meta, payload, _LIMITS))
    return np.concatenate(rows)


def measure_fidelity(
    prepared: Prepared,
    plans: Sequence[CutPlan],
    codecs: Sequence[str],
    samples: int = 32,
    progress: Progress = no_progress,
) -> dict[str, dict[str, Fidelity]]:
    """Cut id -> codec -> :class:`Fidelity`, for every plan with a tail."""
    source = prepared.source
    count = min(samples, source.sample_count)
    outputs = source.outputs
    whole = {o: prepared.values[o][:count] for o in outputs}
    batch = 1 if source.fixed_batch else 64
    result: dict[str, dict[str, Fidelity]] = {}
    todo = [p for p in plans if p.kind != "output"]
    for done, plan in enumerate(todo, start=1):
        session = create_session(prepared.tail(plan).SerializeToString(), ("CPUExecutionProvider",))
        names = [o.name for o in session.get_outputs()]
        # Compression is lossless: a codec's figures are its quantizer's, measured once.
        by_quantizer: dict[str, Fidelity] = {}
        for codec in codecs:
            quantizer = wire.parse_codec(codec).quantizer
            if quantizer in by_quantizer:
                continue
            feeds = {n: _round_trip(prepared.values[n][:count], quantizer) for n in plan.names}
            values = dict(zip(names, run_batched(session, feeds, batch), strict=True))
            values.update({o: whole[o] for o in plan.edge_outputs})
            by_quantizer[quantizer] = compare(values, whole, outputs[0])
        result[plan.id] = {c: by_quantizer[wire.parse_codec(c).quantizer] for c in codecs}
        progress("fidelity", done, len(todo))
    return result
