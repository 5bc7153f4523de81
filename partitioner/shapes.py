"""Compute shape arithmetic where it is used, so that no shape crosses a cut.

Exported graphs compute shapes once and use them far away: ``x.size(0)``
read at the start feeds every ``reshape(batch, -1, 4)`` of a detector's
heads, ``F.interpolate(x, size=skip.shape[-2:])`` reads the shape of a skip
connection next to the upsampling of another tensor. Such a value is not a
batch of activations (it cannot travel with a request) and it keeps its
source, or itself, alive across every cut in between.

But with every per-sample shape fixed, each such value is a function of the
batch size alone, and an affine one in practice (``[N, -1, 4]``,
``[N * 8, 64]``, constant image sizes). :func:`localize_shapes` replaces each
shape-like input of a node that works on activations with ``a + b * N``,
where ``N`` is read from that node's own activation input, ``a`` and ``b``
from the values the probe measured at batch 1 and 2. The shape arithmetic it
replaced is left without readers and dropped. The rewritten model is
checked against the original on real inputs before it is used
(:mod:`partitioner.prepare`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from partitioner.graph import TensorInfo, graph_inputs

SMALL = 64
"""The most elements a shape-like value may have to be recomputed locally."""

Values = Mapping[str, tuple[np.ndarray, np.ndarray | None]]
"""Small values measured at batch 1 and at batch 2 (``None``: the batch is fixed)."""


def _derived(model: onnx.ModelProto) -> set[str]:
    derived = set(graph_inputs(model))
    for node in model.graph.node:
        if any(name in derived for name in node.input):
            derived.update(o for o in node.output if o)
    return derived


def _affine(one: np.ndarray, two: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(a, b)`` with value(N) = a + b * N from the values at N = 1 and 2."""
    if two is None:
        return one, np.zeros_like(one)
    if one.shape != two.shape or one.dtype != two.dtype:
        return None
    slope = two - one
    return one - slope, slope


def _live_nodes(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """``nodes`` minus those no graph output depends on."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(n for n in node.input if n)
    return list(reversed(keep))


def localize_shapes(
    model: onnx.ModelProto, info: Mapping[str, TensorInfo], values: Values
) -> onnx.ModelProto:
    """A copy of ``model`` with shape-like inputs recomputed from each node's own batch.

    The nodes stay in topological order: each value is computed just before the
    node that reads it, from an input that node reads too. Returns ``model``
    itself when nothing applies.
    """
    derived = _derived(model)
    made: dict[tuple[str, str], str] = {}
    constants: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    changed = False
    for index, node in enumerate(model.graph.node):
        anchor = next(
            (
                n
                for n in node.input
                if n in derived and n in info and info[n].batched and len(info[n].shape) >= 1
            ),
            None,
        )
        if anchor is None:
            nodes.append(node)
            continue
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for j, name in enumerate(node.input):
            if not name or name not in derived or name not in values or info[name].batched:
                continue
            key = (name, anchor)
            if key not in made:
                local = _local_value(name, anchor, values[name], f"{index}_{j}", nodes, constants)
                if local is None:
                    continue
                made[key] = local
            new.input[j] = made[key]
            changed = True
        nodes.append(new)
    if not changed:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(_live_nodes(out, nodes))
    used = {n for node in out.graph.node for n in node.input}
    out.graph.initializer.extend(t for t in constants if t.name in used)
    del out.graph.value_info[:]
    return out


def _local_value(
    name: str,
    anchor: str,
    measured: tuple[np.ndarray, np.ndarray | None],
    tag: str,
    nodes: list[onnx.NodeProto],
    constants: list[onnx.TensorProto],
) -> str | None:
    """Append nodes computing ``name``'s value from ``anchor``'s batch; the new name."""
    fit = _affine(np.asarray(measured[0]), None if measured[1] is None else np.asarray(measured[1]))
    if fit is None:
        return None
    offset, slope = fit
    prefix = f"{name}__at_{tag}"
    if not np.any(slope):
        constants.append(numpy_helper.from_array(np.ascontiguousarray(offset), prefix))
        return prefix
    if offset.dtype.kind not in "iuf":
        return None
    zero = numpy_helper.from_array(np.asarray(0, dtype=np.int64), f"{prefix}_zero")
    a = numpy_helper.from_array(np.ascontiguousarray(offset), f"{prefix}_a")
    b = numpy_helper.from_array(np.ascontiguousarray(slope), f"{prefix}_b")
    constants += [zero, a, b]
    batch = f"{prefix}_n"
    nodes.append(helper.make_node("Shape", [anchor], [f"{prefix}_shape"], name=f"{prefix}_shape"))
    nodes.append(
        helper.make_node("Gather", [f"{prefix}_shape", zero.name], [batch], axis=0, name=batch)
    )
    if offset.dtype != np.int64:
        to = helper.np_dtype_to_tensor_dtype(offset.dtype)
        nodes.append(helper.make_node("Cast", [batch], [f"{batch}_cast"], to=to, name=f"{batch}_c"))
        batch = f"{batch}_cast"
    nodes.append(helper.make_node("Mul", [batch, b.name], [f"{prefix}_bn"], name=f"{prefix}_bn"))
    nodes.append(helper.make_node("Add", [a.name, f"{prefix}_bn"], [prefix], name=prefix))
    return prefix
