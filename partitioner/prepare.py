"""Load a source model once for profiling and partitioning: cuts, plans, probe values.

Both the profile step (run on the target device) and the partition step
(run anywhere) start from the same :class:`Prepared` model, so they agree on
cut ids, segment ids and the model's identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from edgesplit.bundle import TensorSpec
from edgesplit.errors import ModelError
from edgesplit.onnxrt import create_session
from partitioner.extract import CutPlan, Extractor, SegmentPlan, plan_cuts, wire_names
from partitioner.graph import (
    DEFAULT_MAX_TENSORS,
    GraphAnalysis,
    TensorInfo,
    analyze,
)
from partitioner.shapes import SMALL, Values, localize_shapes

#: ``progress(stage, done, total)``, called as work advances.
Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """A progress callback that reports nothing."""


@dataclass(frozen=True)
class SourceModel:
    """A model ready to profile and partition: its ONNX graph and held-out samples.

    Attributes:
        name: model name (used for Triton model names).
        onnx_path: the ONNX file it was read from.
        outputs: the final outputs' names (the first one is "the" output).
        exits: early-exit output names.
        inputs: each input's name, per-sample shape (no batch axis) and dtype.
        samples: held-out inputs by name, ``[N, *shape]``, for sizes and calibration.
        labels: their classes, or ``None`` (no exit calibration then).
        sample_source: what the samples are, said in the manifest.
        class_names: class labels, if known.
        test_set: ``(inputs, labels)`` shipped as ``data/test.npz``, if any.
        model: the graph as opened (pins and batch applied); read from
            ``onnx_path`` when ``None``.
        fixed_batch: the model runs one sample at a time.
        notes: what opening the file changed, for the user.
    """

    name: str
    onnx_path: Path
    outputs: tuple[str, ...]
    exits: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    samples: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    sample_source: str
    class_names: tuple[str, ...] | None = None
    test_set: tuple[np.ndarray, np.ndarray] | None = None
    model: onnx.ModelProto | None = field(default=None, repr=False, compare=False)
    fixed_batch: bool = False
    notes: tuple[str, ...] = ()

    @property
    def output(self) -> str:
        """The first final output."""
        return self.outputs[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-sample shape of a single-input model."""
        if len(self.inputs) != 1:
            raise ModelError(f"model {self.name!r} has {len(self.inputs)} inputs")
        return self.inputs[0].shape

    @property
    def sample_count(self) -> int:
        """How many held-out samples there are."""
        return len(next(iter(self.samples.values())))


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
    """A loaded model, its cuts and segments, and every cut's tensors on the samples.

    Attributes:
        values: values on the held-out samples, keyed by wire name (each input,
            every cut's tensors, every exit and every final output).
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
    max_tensors: int = DEFAULT_MAX_TENSORS
    _protos: dict[str, onnx.ModelProto] = field(default_factory=dict, repr=False)

    @property
    def input_name(self) -> str:
        """The input of a single-input model."""
        return self.analysis.input_name

    @property
    def input_names(self) -> tuple[str, ...]:
        """Every input the model reads."""
        return self.analysis.inputs

    def values_name(self, tensor: str) -> str:
        """The name ``tensor`` carries in sub-models and on the wire."""
        return self.renames.get(tensor, tensor)

    def feeds(self, names: Sequence[str], count: int) -> dict[str, np.ndarray]:
        """The first ``count`` samples of the values ``names`` (wire names)."""
        return {name: self.values[name][:count] for name in names}

    def input_feeds(self, count: int) -> dict[str, np.ndarray]:
        """The first ``count`` samples of every input."""
        return self.feeds(self.input_names, count)

    def segment(self, seg_id: str) -> onnx.ModelProto:
        """The ONNX model of head segment ``seg_id`` (extracted once)."""
        key = f"segment:{seg_id}"
        if key not in self._protos:
            self._protos[key] = self.extractor.segment(self.segments[seg_id])
        return self._protos[key]

    def tail(self, plan: CutPlan) -> onnx.ModelProto:
        """The tail of ``plan``: its tensors to the outputs the edge lacks (extracted once)."""
        key = f"tail:{plan.id}"
        if key not in self._protos:
            self._protos[key] = self.extractor.tail(plan)
        return self._protos[key]

    def head_outputs(self, plan: CutPlan) -> tuple[str, ...]:
        """What the whole head of ``plan`` computes (source names): tensors and edge outputs."""
        inputs = set(self.input_names)
        wanted = (*plan.tensors, *plan.edge_outputs) if plan.kind != "output" else plan.tensors
        return tuple(dict.fromkeys(t for t in wanted if t not in inputs))

    def head(self, plan: CutPlan) -> onnx.ModelProto:
        """The whole head of ``plan`` as one model: inputs to cut, no exit branches."""
        if self.head_is_one_segment(plan):
            return self.segment(plan.head[0])
        key = f"head:{plan.id}"
        if key not in self._protos:
            self._protos[key] = self.extractor.extract(
                self.input_names, self.head_outputs(plan), f"head_{plan.id}"
            )
        return self._protos[key]

    def head_is_one_segment(self, plan: CutPlan) -> bool:
        """Whether the head of ``plan`` is exactly one segment without exit."""
        return len(plan.head) == 1 and self.segments[plan.head[0]].exit is None

    def activations(self, plan: CutPlan) -> dict[str, np.ndarray]:
        """The cut's tensors on every sample, by wire name, ``[N, *shape]`` each."""
        return {name: self.values[name] for name in plan.names}

    def activation(self, plan: CutPlan) -> np.ndarray:
        """The tensor of a single-tensor cut on every sample."""
        return self.values[plan.name]


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load an ONNX file with a clear error naming it."""
    try:
        return onnx.load(str(path))
    except (OSError, ValueError, DecodeError) as exc:
        raise ModelError(f"{path}: cannot be loaded as ONNX: {exc}") from exc


def run_batched(session, feeds: Mapping[str, np.ndarray], batch: int = 128) -> list[np.ndarray]:
    """Run a session over ``feeds`` (same length each) in batches; concatenate each output."""
    wanted = [i.name for i in session.get_inputs()]
    total = len(next(iter(feeds.values())))
    outs: list[list[np.ndarray]] = []
    for start in range(0, total, batch):
        result = session.run(None, {n: feeds[n][start : start + batch] for n in wanted})
        if not outs:
            outs = [[] for _ in result]
        for acc, value in zip(outs, result, strict=True):
            acc.append(value)
    return [np.concatenate(parts) for parts in outs]


def measure_tensors(
    model: onnx.ModelProto,
    samples: Mapping[str, np.ndarray],
    fixed_batch: bool,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> tuple[dict[str, TensorInfo], Values]:
    """Shape, dtype and batch axis of every node output, from one run on one sample.

    A tensor is batched when its first axis is the batch: with a free batch
    axis, a second run on two samples tells (its first axis doubles); with a
    batch fixed to 1, a first axis of 1 is taken for the batch. Also returns
    the values of the small tensors that are not batched (shapes), at batch 1
    and 2, for :func:`partitioner.shapes.localize_shapes`.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in present:
                probe.graph.output.append(onnx.ValueInfoProto(name=out))
                present.add(out)
    session = create_session(probe.SerializeToString(), providers, 1)
    names = [o.name for o in session.get_outputs()]
    wanted = [i.name for i in session.get_inputs()]

    def run(count: int) -> dict[str, np.ndarray]:
        values = session.run(None, {n: samples[n][:count] for n in wanted})
        return dict(zip(names, values, strict=True))

    one = run(1)
    two = run(2) if not fixed_batch and min(len(v) for v in samples.values()) >= 2 else None
    info = {}
    small: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for name, value in one.items():
        value = np.asarray(value)
        shape = tuple(int(d) for d in value.shape)
        if two is not None:
            other = np.asarray(two[name]).shape
            batched = bool(shape) and shape[0] == 1 and other[:1] == (2,) and other[1:] == shape[1:]
        else:
            batched = bool(shape) and shape[0] == 1
        info[name] = TensorInfo(shape, value.dtype.name, batched)
        if not batched and value.size <= SMALL:
            small[name] = (value, None if two is None else np.asarray(two[name]))
    for name, value in samples.items():
        info[name] = TensorInfo((1, *value.shape[1:]), value.dtype.name, True)
    return info, small


def _localize_shapes(
    model: onnx.ModelProto,
    samples: Mapping[str, np.ndarray],
    fixed_batch: bool,
    providers: tuple[str, ...],
) -> tuple[onnx.ModelProto, dict[str, TensorInfo]]:
    """The model with shapes computed where they are used, and its tensors' facts.

    The rewrite (:mod:`partitioner.shapes`) is kept only if it gives the same
    outputs as the model on up to three samples at once; else the model is
    used as it is.
    """
    info, small = measure_tensors(model, samples, fixed_batch, providers)
    changed = localize_shapes(model, info, small)
    if changed is model:
        return model, info
    rows = 1 if fixed_batch else min(3, min(len(v) for v in samples.values()))
    try:
        before = create_session(model.SerializeToString(), providers, 1)
        after = create_session(changed.SerializeToString(), providers, 1)
        feeds = {i.name: samples[i.name][:rows] for i in before.get_inputs()}
        for a, b in zip(before.run(None, feeds), after.run(None, feeds), strict=True):
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-6):
                return model, info
        return changed, measure_tensors(changed, samples, fixed_batch, providers)[0]
    except Exception:  # noqa: BLE001 - a rewrite ONNX Runtime refuses is simply not used
        return model, info


def prepare(
    source: SourceModel,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    threads: int = 0,
    progress: Progress = no_progress,
    *,
    max_tensors: int = DEFAULT_MAX_TENSORS,
) -> Prepared:
    """Load ``source``, find its cuts and compute every cut's tensors on its samples."""
    model = source.model if source.model is not None else load_onnx(source.onnx_path)
    samples = {name: np.asarray(value) for name, value in source.samples.items()}
    progress("probe", 0, 2)
    identity = model_id(model)
    try:
        model, info = _localize_shapes(model, samples, source.fixed_batch, providers)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
        raise ModelError(f"{source.onnx_path}: running the model failed: {exc}") from None
    analysis = analyze(model, source.outputs, source.exits, info=info, max_tensors=max_tensors)
    cut_plans, segment_plans = plan_cuts(analysis)
    extractor = Extractor(model, analysis)
    renamed = wire_names(analysis)
    progress("probe", 1, 2)
    # A probe computes every cut tensor and exit at once on the held-out samples.
    inputs = set(analysis.inputs)
    inner = [t for c in analysis.cuts if c.kind == "inner" for t in c.tensors]
    probe_outputs = list(
        dict.fromkeys(t for t in [*inner, *source.exits, *source.outputs] if t not in inputs)
    )
    probe = create_session(
        extractor.extract(analysis.inputs, probe_outputs, "probe").SerializeToString(),
        providers,
        threads,
    )
    values = run_batched(probe, samples, 1 if source.fixed_batch else 128)
    named = dict(zip([renamed.get(n, n) for n in probe_outputs], values, strict=True))
    named.update(samples)
    progress("probe", 2, 2)
    return Prepared(
        source=source,
        model=model,
        id=identity,
        analysis=analysis,
        cuts=cut_plans,
        segments=segment_plans,
        extractor=extractor,
        values=named,
        renames=renamed,
        max_tensors=max_tensors,
    )
