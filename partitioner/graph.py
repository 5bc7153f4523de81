"""Find where an ONNX graph can be cut, and where its early exits branch off.

A *cut* is a tensor that every path from the model input to the final output
crosses: the head computes it, the tail needs nothing else. Two trivial cuts
bracket the list: the raw input (cloud-only) and the final output (edge-only).
Found on the ONNX graph, so it works for models from any framework.

This module is pure: it reads an ``onnx.ModelProto`` and returns values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from edgesplit.errors import ModelError


@dataclass(frozen=True)
class CutPoint:
    """A tensor at which the model can be split.

    Attributes:
        index: position in depth order, 0 for the raw input.
        tensor: the ONNX tensor name.
        kind: ``"input"`` (cloud-only), ``"inner"`` or ``"output"`` (edge-only).
        producer: the ONNX node (name or op type) that computes the tensor.
    """

    index: int
    tensor: str
    kind: str
    producer: str


@dataclass(frozen=True)
class ExitPoint:
    """An early-exit output and the backbone cut it branches off."""

    name: str
    branch_tensor: str


@dataclass(frozen=True)
class GraphAnalysis:
    """The cuts and exits of one model, in depth order."""

    input_name: str
    output_name: str
    cuts: tuple[CutPoint, ...]
    exits: tuple[ExitPoint, ...]

    def cut_index(self, tensor: str) -> int:
        """Return the depth index of the cut at ``tensor``."""
        for cut in self.cuts:
            if cut.tensor == tensor:
                return cut.index
        raise KeyError(tensor)


def _graph_inputs(model: onnx.ModelProto) -> list[str]:
    initializers = {init.name for init in model.graph.initializer}
    return [inp.name for inp in model.graph.input if inp.name not in initializers]


def _ancestor_nodes(nodes: Sequence[onnx.NodeProto], targets: set[str]) -> set[int]:
    """Indices of the nodes that any of ``targets`` depends on (graph is topo-sorted)."""
    needed = set(targets)
    keep: set[int] = set()
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        if any(out in needed for out in node.output):
            keep.add(i)
            needed.update(name for name in node.input if name)
    return keep


def _tensor_ancestors(nodes: Sequence[onnx.NodeProto], target: str) -> set[str]:
    """All tensors (including ``target``) that ``target`` is computed from."""
    needed = {target}
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        if any(out in needed for out in node.output):
            needed.update(name for name in node.input if name)
    return needed


def _single_tensor_cuts(
    nodes: Sequence[onnx.NodeProto], relevant: set[int], input_name: str, output_name: str
) -> list[tuple[str, str]]:
    """Tensors that every input->output path crosses, as (tensor, producer) in depth order.

    Walks the relevant nodes in topological order keeping the set of *live*
    input-derived tensors (computed, still read by a later relevant node).
    A freshly produced tensor that is the only live one is crossed by every
    path: any other path would keep another tensor alive across it.
    """
    order = sorted(relevant)
    last_use: dict[str, int] = {}
    for pos, i in enumerate(order):
        for name in nodes[i].input:
            if name:
                last_use[name] = pos
    last_use[output_name] = len(order)
    derived = {input_name}
    live = {input_name}
    cuts: list[tuple[str, str]] = []
    for pos, i in enumerate(order):
        node = nodes[i]
        for name in node.input:
            if name in live and last_use.get(name, -1) <= pos:
                live.discard(name)
        produced = [out for out in node.output if out and any(inp in derived for inp in node.input)]
        derived.update(produced)
        live.update(out for out in produced if last_use.get(out, -1) > pos)
        for out in produced:
            if live == {out}:
                cuts.append((out, node.name or node.op_type))
    return cuts


def analyze(
    model: onnx.ModelProto, output_name: str, exit_names: Sequence[str] = ()
) -> GraphAnalysis:
    """Find the cuts of ``model`` on the path to ``output_name`` and place its exits.

    Args:
        model: a topologically sorted ONNX model with exactly one graph input.
        output_name: the final output; the tail computes it.
        exit_names: early-exit outputs; each must branch off a single-tensor cut.

    Raises:
        ModelError: several or no graph inputs, unknown outputs, or an exit
            that does not branch off a cut.
    """
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise ModelError(
            f"model has {len(inputs)} graph inputs {inputs}; edgesplit splits models with "
            "exactly one input tensor"
        )
    input_name = inputs[0]
    outputs = [out.name for out in model.graph.output]
    for name in (output_name, *exit_names):
        if name not in outputs:
            raise ModelError(f"output {name!r} is not a graph output; the model has {outputs}")
    nodes = list(model.graph.node)
    relevant = _ancestor_nodes(nodes, {output_name})
    if input_name not in _tensor_ancestors(nodes, output_name):
        raise ModelError(f"output {output_name!r} does not depend on input {input_name!r}")

    inner = _single_tensor_cuts(nodes, relevant, input_name, output_name)
    points = [CutPoint(0, input_name, "input", "input")]
    for tensor, producer in inner:
        kind = "output" if tensor == output_name else "inner"
        points.append(CutPoint(len(points), tensor, kind, producer))
    if points[-1].tensor != output_name:
        points.append(CutPoint(len(points), output_name, "output", "output"))

    exits = tuple(_place_exit(nodes, points, relevant, name) for name in exit_names)
    order = {cut.tensor: cut.index for cut in points}
    exits = tuple(sorted(exits, key=lambda e: order[e.branch_tensor]))
    return GraphAnalysis(input_name, output_name, tuple(points), exits)


def _place_exit(
    nodes: Sequence[onnx.NodeProto], cuts: Sequence[CutPoint], relevant: set[int], exit_name: str
) -> ExitPoint:
    """Find the deepest cut an exit depends on, and check it depends on nothing later."""
    backbone = {out for i in relevant for out in nodes[i].output} | {cuts[0].tensor}
    needed = _tensor_ancestors(nodes, exit_name) & backbone
    candidates = [cut for cut in cuts if cut.tensor in needed and cut.kind != "output"]
    if not candidates:
        raise ModelError(f"exit {exit_name!r} does not depend on the model input")
    branch = candidates[-1]
    covered = _tensor_ancestors(nodes, branch.tensor)
    stray = sorted(needed - covered)
    if stray:
        raise ModelError(
            f"exit {exit_name!r} reads backbone tensors {stray[:3]} beyond cut "
            f"{branch.tensor!r}; edgesplit needs each exit to branch off a single tensor that "
            "every input->output path crosses"
        )
    return ExitPoint(exit_name, branch.tensor)
