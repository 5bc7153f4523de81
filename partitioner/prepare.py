"""Load a source model once for profiling and partitioning: cuts, plans, probe values.

Both the profile step (run on the target device) and the partition step
(run anywhere) start from the same :class:`Prepared` model, so they agree on
cut ids, segment ids and the model's identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from edgesplit.errors import ModelError
from edgesplit.onnxrt import create_session
from partitioner.extract import CutPlan, Extractor, SegmentPlan, plan_cuts, wire_names
from partitioner.graph import GraphAnalysis, analyze

#: ``progress(stage, done, total)``, called as work advances.
Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """A progress callback that reports nothing."""


@dataclass(frozen=True)
class SourceModel:
    """A model ready to profile and partition: its ONNX file and held-out samples.

    Attributes:
        name: model name (used for Triton model names).
        onnx_path: ONNX file with a dynamic batch dimension.
        output: the final output's name.
        exits: early-exit output names.
        input_shape: per-sample input shape (no batch dimension).
        samples: held-out inputs ``[N, *input_shape]`` for sizes and calibration.
        labels: their classes, or ``None`` (no exit calibration then).
        sample_source: what the samples are, said in the manifest.
        class_names: class labels, if known.
        test_set: ``(inputs, labels)`` shipped as ``data/test.npz``, if any.
    """

    name: str
    onnx_path: Path
    output: str
    exits: tuple[str, ...]
    input_shape: tuple[int, ...]
    samples: np.ndarray
    labels: np.ndarray | None
    sample_source: str
    class_names: tuple[str, ...] | None = None
    test_set: tuple[np.ndarray, np.ndarray] | None = None


def model_id(model: onnx.ModelProto) -> str:
    """sha256 of what the model computes: its graph and opsets, not file metadata.

    Two exports of the same network give the same id, so a profile measured
    on the device can be matched to the model partitioned elsewhere.
    """
    digest = hashlib.sha256()
    for opset in sorted((o.domain, o.version) for o in model.opset_import):
        digest.update(f"{opset[0]}:{opset[1]};".encode())
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    graph.doc_string = ""
    for node in graph.node:
        node.doc_string = ""
    digest.update(graph.SerializeToString(deterministic=True))
    return digest.hexdigest()


@dataclass
class Prepared:
    """A loaded model, its cuts and segments, and every cut's activation on the samples.

    Attributes:
        values: activations on the held-out samples, keyed by wire name (the
            input, each inner cut ``cNN``, every exit and the final output).
    """

    source: SourceModel
    model: onnx.ModelProto
    id: str
    analysis: GraphAnalysis
    cuts: list[CutPlan]
    segments: dict[str, SegmentPlan]
    extractor: Extractor
    values: dict[str, np.ndarray]
    renames: dict[str, str] = field(default_factory=dict)
    _protos: dict[str, onnx.ModelProto] = field(default_factory=dict, repr=False)

    @property
    def input_name(self) -> str:
        """The model input's name."""
        return self.analysis.input_name

    def values_name(self, tensor: str) -> str:
        """The name ``tensor`` carries in sub-models and on the wire."""
        return self.renames.get(tensor, tensor)

    def segment(self, seg_id: str) -> onnx.ModelProto:
        """The ONNX model of head segment ``seg_id`` (extracted once)."""
        key = f"segment:{seg_id}"
        if key not in self._protos:
            self._protos[key] = self.extractor.segment(self.segments[seg_id])
        return self._protos[key]

    def tail(self, plan: CutPlan) -> onnx.ModelProto:
        """The tail of ``plan``: cut tensor to final output (extracted once)."""
        key = f"tail:{plan.id}"
        if key not in self._protos:
            self._protos[key] = self.extractor.tail(plan)
        return self._protos[key]

    def head(self, plan: CutPlan) -> onnx.ModelProto:
        """The whole head of ``plan`` as one model: input to cut, no exit branches."""
        if len(plan.head) == 1 and self.segments[plan.head[0]].exit is None:
            return self.segment(plan.head[0])
        key = f"head:{plan.id}"
        if key not in self._protos:
            self._protos[key] = self.extractor.extract(
                [self.input_name], [plan.tensor], f"head_{plan.id}"
            )
        return self._protos[key]

    def head_is_one_segment(self, plan: CutPlan) -> bool:
        """Whether the head of ``plan`` is exactly one segment without exit."""
        return len(plan.head) == 1 and self.segments[plan.head[0]].exit is None

    def activation(self, plan: CutPlan) -> np.ndarray:
        """The cut tensor of ``plan`` on every sample, ``[N, *shape]``."""
        return self.values[plan.name]


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load an ONNX file with a clear error naming it."""
    try:
        return onnx.load(str(path))
    except (OSError, ValueError, DecodeError) as exc:
        raise ModelError(f"{path}: cannot be loaded as ONNX: {exc}") from exc


def run_batched(session, name: str, data: np.ndarray, batch: int = 128) -> list[np.ndarray]:
    """Run a session over ``data`` in batches and concatenate each output."""
    outs: list[list[np.ndarray]] = []
    for start in range(0, len(data), batch):
        result = session.run(None, {name: data[start : start + batch]})
        if not outs:
            outs = [[] for _ in result]
        for acc, value in zip(outs, result, strict=True):
            acc.append(value)
    return [np.concatenate(parts) for parts in outs]


def prepare(
    source: SourceModel,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    threads: int = 0,
    progress: Progress = no_progress,
) -> Prepared:
    """Load ``source``, find its cuts and compute every cut tensor on its samples."""
    model = load_onnx(source.onnx_path)
    analysis = analyze(model, source.output, source.exits)
    cut_plans, segment_plans = plan_cuts(analysis)
    extractor = Extractor(model, analysis)
    renamed = wire_names(analysis)
    # A probe computes every cut tensor and exit at once on the held-out samples.
    inner = [c.tensor for c in analysis.cuts if c.kind == "inner"]
    probe_outputs = [*inner, *source.exits, source.output]
    progress("probe", 0, 1)
    probe = create_session(
        extractor.extract([analysis.input_name], probe_outputs, "probe").SerializeToString(),
        providers,
        threads,
    )
    samples = source.samples.astype(np.float32)
    values = run_batched(probe, analysis.input_name, samples)
    named = dict(zip([renamed.get(n, n) for n in probe_outputs], values, strict=True))
    named[analysis.input_name] = samples
    progress("probe", 1, 1)
    return Prepared(
        source=source,
        model=model,
        id=model_id(model),
        analysis=analysis,
        cuts=cut_plans,
        segments=segment_plans,
        extractor=extractor,
        values=named,
        renames=renamed,
    )
