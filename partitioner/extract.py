"""Cut an ONNX model into head segments and tails.

Decide apart from doing: :func:`plan_cuts` turns a graph analysis into the
list of cuts and segments (pure data), :func:`extract` builds each ONNX
sub-model. Boundary tensors are renamed to the cut id (``c05``) so that the
head's output, the tail's input, the wire and the Triton config all use one
short, portable name; the model input and final output keep theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx.utils

from edgesplit.errors import ModelError
from partitioner.graph import GraphAnalysis


@dataclass(frozen=True)
class SegmentPlan:
    """A head segment to extract: from one boundary tensor to the next."""

    id: str
    input_tensor: str
    output_tensor: str
    exit: str | None


@dataclass(frozen=True)
class CutPlan:
    """A cut and what the edge and the cloud run for it."""

    id: str
    index: int
    kind: str
    tensor: str
    name: str
    head: tuple[str, ...]
    exits: tuple[str, ...]
    has_tail: bool


def cut_id(index: int) -> str:
    """The short id of the cut at depth ``index``."""
    return f"c{index:02d}"


def plan_cuts(analysis: GraphAnalysis) -> tuple[list[CutPlan], dict[str, SegmentPlan]]:
    """Cuts in depth order and the head segments they share.

    A head is a chain of segments that stops at every exit's branch point,
    so the edge can answer as soon as an exit is confident and skip the rest.
    """
    branch_of = {e.branch_tensor: e.name for e in analysis.exits}
    index_of = {c.tensor: c.index for c in analysis.cuts}
    stops = sorted({index_of[e.branch_tensor] for e in analysis.exits})
    segments: dict[str, SegmentPlan] = {}
    cuts: list[CutPlan] = []
    for cut in analysis.cuts:
        if cut.kind == "input":
            name = cut.tensor
        elif cut.kind == "output":
            name = analysis.output_name
        else:
            name = cut_id(cut.index)
        boundaries = [0, *[s for s in stops if 0 < s <= cut.index]]
        if cut.index and boundaries[-1] != cut.index:
            boundaries.append(cut.index)
        head = []
        for start, end in zip(boundaries, boundaries[1:], strict=False):
            seg_id = f"{cut_id(start)}__{cut_id(end)}"
            tensor = analysis.cuts[end].tensor
            segments[seg_id] = SegmentPlan(
                seg_id, analysis.cuts[start].tensor, tensor, branch_of.get(tensor)
            )
            head.append(seg_id)
        exits = tuple(branch_of[analysis.cuts[s].tensor] for s in stops if s <= cut.index)
        cuts.append(
            CutPlan(
                id=cut_id(cut.index),
                index=cut.index,
                kind=cut.kind,
                tensor=cut.tensor,
                name=name,
                head=tuple(head),
                exits=exits,
                has_tail=cut.kind != "output",
            )
        )
    return cuts, segments


def wire_names(analysis: GraphAnalysis) -> dict[str, str]:
    """Original tensor name -> the name it carries in sub-models and on the wire."""
    names = {}
    for cut in analysis.cuts:
        if cut.kind == "inner":
            names[cut.tensor] = cut_id(cut.index)
    return names


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
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
            raise ModelError(f"ONNX shape inference failed: {exc}") from exc
        self._extractor = onnx.utils.Extractor(inferred)
        self._renames = wire_names(analysis)
        self._analysis = analysis
        self._opset = model.opset_import
        self._ir_version = model.ir_version

    def extract(self, inputs: list[str], outputs: list[str], name: str) -> onnx.ModelProto:
        """The sub-model computing ``outputs`` from ``inputs``, tensors renamed."""
        sub = self._extractor.extract_model(inputs, outputs)
        sub.graph.name = name
        del sub.opset_import[:]
        sub.opset_import.extend(self._opset)
        sub.ir_version = self._ir_version
        return _rename(sub, self._renames)

    def segment(self, plan: SegmentPlan) -> onnx.ModelProto:
        """A head segment: its boundary tensor plus the exit branching at its end."""
        outputs = [plan.output_tensor] + ([plan.exit] if plan.exit else [])
        return self.extract([plan.input_tensor], outputs, f"segment_{plan.id}")

    def tail(self, plan: CutPlan) -> onnx.ModelProto:
        """The tail of ``plan``: from the cut tensor to the final output."""
        return self.extract([plan.tensor], [self._analysis.output_name], f"tail_{plan.id}")
