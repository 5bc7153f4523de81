"""Cut an ONNX model into head segments and tails.

Decide apart from doing: :func:`plan_cuts` turns a graph analysis into the
list of cuts and segments (pure data), :class:`Extractor` builds each ONNX
sub-model. Boundary tensors are renamed to short, portable names that the
head's outputs, the tail's inputs, the wire and the Triton config all share:
a single-tensor cut's tensor is named after the cut (``c05``), the other
tensors of a multi-tensor cut after the first cut holding them and their
place in it (``c07_2``); the model's inputs and final outputs keep theirs.

A head is a chain of segments; each segment reads the tensors of one
boundary (the inputs, or an exit's branch point) and computes the next
boundary's tensors that it does not already have. The edge keeps every
value computed so far, so a tensor that skips past a boundary (or a graph
input read late, such as an attention mask) is taken from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx
import onnx.utils

from edgesplit.errors import ModelError
from partitioner.graph import CutPoint, GraphAnalysis, topological_nodes


@dataclass(frozen=True)
class SegmentPlan:
    """A head segment to extract: from one boundary's tensors to the next's.

    Attributes:
        inputs: tensors it reads (source names).
        outputs: tensors it computes (source names), the exit excluded.
        exit: the early exit it also computes, if any.
    """

    id: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    exit: str | None


@dataclass(frozen=True)
class CutPlan:
    """A cut and what the edge and the cloud run for it.

    Attributes:
        tensors: the tensors the head sends (source names).
        names: their names in the sub-models and on the wire.
        edge_outputs: final outputs the head computes (kept on the edge).
        tail_outputs: final outputs the tail computes.
        compute: share of the model's estimated compute in the head.
    """

    id: str
    index: int
    kind: str
    tensors: tuple[str, ...]
    names: tuple[str, ...]
    head: tuple[str, ...]
    exits: tuple[str, ...]
    has_tail: bool
    edge_outputs: tuple[str, ...] = ()
    tail_outputs: tuple[str, ...] = ()
    compute: float = 0.0
    origin: str = "frontier"

    @property
    def name(self) -> str:
        """The wire name of a single-tensor cut."""
        if len(self.names) != 1:
            raise ModelError(f"cut {self.id} holds {len(self.names)} tensors")
        return self.names[0]

    @property
    def tensor(self) -> str:
        """The source tensor of a single-tensor cut."""
        if len(self.tensors) != 1:
            raise ModelError(f"cut {self.id} holds {len(self.tensors)} tensors")
        return self.tensors[0]


def cut_id(index: int) -> str:
    """The short id of the cut at depth ``index``."""
    return f"c{index:02d}"


def wire_names(analysis: GraphAnalysis) -> dict[str, str]:
    """Source tensor name -> the name it carries in sub-models and on the wire."""
    keep = {*analysis.inputs, *analysis.outputs}
    names: dict[str, str] = {}
    inner = [c for c in analysis.cuts if c.kind == "inner"]
    for cut in inner:
        if len(cut.tensors) == 1 and cut.tensors[0] not in keep:
            names[cut.tensors[0]] = cut_id(cut.index)
    for cut in inner:
        for k, tensor in enumerate(cut.tensors):
            if tensor not in keep and tensor not in names:
                names[tensor] = f"{cut_id(cut.index)}_{k}"
    return names


def _boundary(cut: CutPoint) -> tuple[str, ...]:
    return cut.tensors if cut.kind != "output" else ()


def plan_cuts(analysis: GraphAnalysis) -> tuple[list[CutPlan], dict[str, SegmentPlan]]:
    """Cuts in depth order and the head segments they share.

    A head is a chain of segments that stops at every exit's branch point,
    so the edge can answer as soon as an exit is confident and skip the rest.
    """
    branch_of = {e.branch_tensor: e.name for e in analysis.exits}
    stops = sorted(
        c.index for c in analysis.cuts if len(c.tensors) == 1 and c.tensors[0] in branch_of
    )
    renames = wire_names(analysis)
    segments: dict[str, SegmentPlan] = {}
    cuts: list[CutPlan] = []
    for cut in analysis.cuts:
        boundaries = [0, *[s for s in stops if 0 < s <= cut.index]]
        if cut.index and boundaries[-1] != cut.index:
            boundaries.append(cut.index)
        head = []
        for start, end in zip(boundaries, boundaries[1:], strict=False):
            seg_id = f"{cut_id(start)}__{cut_id(end)}"
            first, last = analysis.cuts[start], analysis.cuts[end]
            reads = first.tensors
            wanted = (*_boundary(last), *last.edge_outputs)
            if last.kind == "output":
                wanted = last.tensors
            before = set(first.edge_outputs) | set(reads)
            computes = tuple(dict.fromkeys(t for t in wanted if t not in before))
            exit_name = branch_of.get(last.tensors[0]) if len(last.tensors) == 1 else None
            if last.kind != "inner":
                exit_name = None
            segments[seg_id] = SegmentPlan(seg_id, reads, computes, exit_name)
            head.append(seg_id)
        exits = tuple(branch_of[analysis.cuts[s].tensors[0]] for s in stops if s <= cut.index)
        edge_outputs = cut.tensors if cut.kind == "output" else cut.edge_outputs
        cuts.append(
            CutPlan(
                id=cut_id(cut.index),
                index=cut.index,
                kind=cut.kind,
                tensors=cut.tensors,
                names=tuple(renames.get(t, t) for t in cut.tensors),
                head=tuple(head),
                exits=exits,
                has_tail=cut.kind != "output",
                edge_outputs=tuple(edge_outputs),
                tail_outputs=tuple(o for o in analysis.outputs if o not in edge_outputs),
                compute=cut.compute,
                origin=cut.origin,
            )
        )
    return cuts, segments


def _rename(model: onnx.ModelProto, renames: dict[str, str]) -> onnx.ModelProto:
    """Rename tensors everywhere in a graph (inputs, outputs, nodes, value infos)."""
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.name in renames:
            info.name = renames[info.name]
    return model


class Extractor:
    """Builds sub-models of one ONNX model (shape inference runs once)."""

    def __init__(self, model: onnx.ModelProto, analysis: GraphAnalysis) -> None:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
            raise ModelError(f"ONNX shape inference failed: {exc}") from exc
        self._extractor = onnx.utils.Extractor(inferred)
        self._renames = wire_names(analysis)
        self._analysis = analysis
        self._opset = model.opset_import
        self._ir_version = model.ir_version

    def extract(self, inputs: Sequence[str], outputs: Sequence[str], name: str) -> onnx.ModelProto:
        """The sub-model computing ``outputs`` from ``inputs``, tensors renamed.

        Raises:
            ModelError: ``inputs`` do not separate ``outputs`` from the rest of
                the model (the sub-model would read a tensor it is not given).
        """
        try:
            sub = self._extractor.extract_model(list(inputs), list(outputs))
        except (KeyError, ValueError, onnx.checker.ValidationError) as exc:
            raise ModelError(f"{name}: ONNX extraction failed: {exc}") from exc
        sub.graph.name = name
        del sub.opset_import[:]
        sub.opset_import.extend(self._opset)
        sub.ir_version = self._ir_version
        try:
            topological_nodes(sub)
        except ModelError as exc:
            raise ModelError(
                f"{name}: tensors {list(inputs)} do not separate {list(outputs)} from the "
                f"model's inputs: {exc}"
            ) from None
        return _rename(sub, self._renames)

    def segment(self, plan: SegmentPlan) -> onnx.ModelProto:
        """A head segment: the next boundary's new tensors plus the exit at its end."""
        outputs = [*plan.outputs, *([plan.exit] if plan.exit else [])]
        return self.extract(plan.inputs, outputs, f"segment_{plan.id}")

    def tail(self, plan: CutPlan) -> onnx.ModelProto:
        """The tail of ``plan``: from the cut's tensors to the outputs the edge lacks."""
        return self.extract(plan.tensors, plan.tail_outputs, f"tail_{plan.id}")
