"""Find where an ONNX graph can be cut, and where its early exits branch off.

A *cut* is a set of tensors that together separate the model's inputs from
its final outputs: the head computes them, the tail needs nothing else. Two
trivial cuts bracket the list: the raw inputs (cloud-only) and the final
outputs (edge-only). Found on the ONNX graph, so it works for models from
any framework.

Candidates come from two places:

- the *frontier* after each node of the graph's topological order: the
  input-derived tensors computed so far that a later node still reads. A
  graph input read late (an attention mask) or a final output computed early
  (a second head) is simply one of the frontier's tensors. A frontier of one
  tensor is a classic single-tensor cut (every path crosses it); all of those
  are offered.
- DADS' min-cut (Hu et al., INFOCOM 2019): on the graph weighted by each
  tensor's bytes, the cheapest set of tensors that separates the nodes of a
  stretch's beginning from those after its end, which need not be a frontier
  of the file's node order (a feature pyramid's lateral convolutions, say).

The edge compute is split into stretches of equal estimated work; in each,
the smallest candidate (bytes per sample) is offered when it is smaller than
every single-tensor cut there or when the stretch has none, and only with at
most ``max_tensors`` tensors. A tensor can be in a cut only if it carries the
batch along its first axis and does not describe shapes (the output of a
``Shape`` and what is computed from it alone); a node that reads a tensor of
that kind is kept on the same side as its producer.

This module is pure: it reads an ``onnx.ModelProto`` (and the shapes a probe
run measured) and returns values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from edgesplit.errors import ModelError

DEFAULT_MAX_TENSORS = 8
"""The most tensors a cut may hold unless configured otherwise."""

DEFAULT_STRETCHES = 32
"""Stretches of equal estimated edge compute, each offered its smallest cut."""

_SHAPE_OPS = frozenset({"Shape", "Size"})


@dataclass(frozen=True)
class TensorInfo:
    """What a probe run measured about one tensor, for one sample.

    Attributes:
        shape: the shape with the batch axis first.
        dtype: numpy dtype name.
        batched: whether the first axis is the batch (scales with it).
    """

    shape: tuple[int, ...]
    dtype: str
    batched: bool = True

    @property
    def nbytes(self) -> int:
        """Bytes of one sample of this tensor."""
        per_sample = self.shape[1:] if self.batched else self.shape
        return int(math.prod(per_sample)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class CutPoint:
    """A set of tensors at which the model can be split.

    Attributes:
        index: position in depth order, 0 for the raw inputs.
        tensors: the ONNX tensor names the head computes and the tail reads.
        kind: ``"input"`` (cloud-only), ``"inner"`` or ``"output"`` (edge-only).
        producer: the last ONNX node (name or op type) the head runs.
        compute: the share of the model's estimated compute the head does, 0-1.
        nbytes: bytes per sample of all its tensors together.
        origin: ``"frontier"`` (of the node order) or ``"min-cut"``.
        edge_outputs: final outputs the head computes already (a second head
            branching off early): the edge keeps them, the tail computes the rest.
    """

    index: int
    tensors: tuple[str, ...]
    kind: str
    producer: str
    compute: float = 0.0
    nbytes: int = 0
    origin: str = "frontier"
    edge_outputs: tuple[str, ...] = ()

    @property
    def tensor(self) -> str:
        """The tensor of a single-tensor cut."""
        if len(self.tensors) != 1:
            raise ModelError(f"cut {self.index} holds {len(self.tensors)} tensors, not one")
        return self.tensors[0]


@dataclass(frozen=True)
class ExitPoint:
    """An early-exit output and the single-tensor cut it branches off."""

    name: str
    branch_tensor: str


@dataclass(frozen=True)
class GraphAnalysis:
    """The cuts and exits of one model, in depth order.

    Attributes:
        inputs: the graph inputs (initializers listed as inputs excluded).
        outputs: the final outputs the tail computes, exits excluded.
        cuts: every offered cut, in depth (compute) order.
        exits: early exits, in depth order.
        candidates: how many distinct frontiers and min-cuts were considered.
        largest_gap: the largest share of edge compute between two offered cuts.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    cuts: tuple[CutPoint, ...]
    exits: tuple[ExitPoint, ...]
    candidates: int = 0
    largest_gap: float = 0.0
    work: Mapping[str, float] = field(default_factory=dict, repr=False)

    @property
    def input_name(self) -> str:
        """The input of a single-input model."""
        if len(self.inputs) != 1:
            raise ModelError(f"model has {len(self.inputs)} inputs {list(self.inputs)}")
        return self.inputs[0]

    @property
    def output_name(self) -> str:
        """The first final output."""
        return self.outputs[0]

    def cut_index(self, tensor: str) -> int:
        """Return the depth index of the single-tensor cut at ``tensor``."""
        for cut in self.cuts:
            if cut.tensors == (tensor,):
                return cut.index
        raise KeyError(tensor)


def graph_inputs(model: onnx.ModelProto) -> list[str]:
    """The graph's real inputs: initializers some converters list as inputs left out."""
    initializers = {init.name for init in model.graph.initializer}
    return [inp.name for inp in model.graph.input if inp.name not in initializers]


def topological_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The graph's nodes in an order where every tensor is produced before it is read.

    Keeps the file's order when it already is one (it usually is).

    Raises:
        ModelError: a cycle, or a node reading a tensor nothing provides.
    """
    graph = model.graph
    nodes = list(graph.node)
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    known |= {i.values.name for i in graph.sparse_initializer}
    produced_by = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                produced_by[out] = i
    for node in nodes:
        for name in node.input:
            if name and name not in known and name not in produced_by:
                raise ModelError(
                    f"node {node.name or node.op_type!r} reads tensor {name!r}, which no node, "
                    "initializer or input provides (a missing initializer?)"
                )
    if _in_order(nodes, known):
        return nodes
    return _kahn(nodes, known, produced_by)


def _in_order(nodes: Sequence[onnx.NodeProto], known: set[str]) -> bool:
    """Whether every node reads only what is known or produced by an earlier node."""
    available = set(known)
    for node in nodes:
        if any(name and name not in available for name in node.input):
            return False
        available.update(node.output)
    return True


def _kahn(
    nodes: list[onnx.NodeProto], known: set[str], produced_by: Mapping[str, int]
) -> list[onnx.NodeProto]:
    """Kahn's topological sort, stable in the file's order; a cycle is a ModelError."""
    waiting = {
        i: {produced_by[n] for n in node.input if n and n not in known}
        for i, node in enumerate(nodes)
    }
    readers: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, deps in waiting.items():
        for dep in deps:
            readers[dep].append(i)
    ready = sorted(i for i, deps in waiting.items() if not deps)
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for reader in readers[i]:
            waiting[reader].discard(i)
            if not waiting[reader]:
                ready.append(reader)
        ready.sort()
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op_type for i in range(len(nodes)) if waiting[i]][:3]
        raise ModelError(f"the graph has a cycle (through nodes {stuck})")
    return [nodes[i] for i in order]


def _ancestor_nodes(nodes: Sequence[onnx.NodeProto], targets: set[str]) -> set[int]:
    """Indices of the nodes that any of ``targets`` depends on (``nodes`` topo-sorted)."""
    needed = set(targets)
    keep: set[int] = set()
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        if any(out in needed for out in node.output):
            keep.add(i)
            needed.update(name for name in node.input if name)
    return keep


def _tensor_ancestors(nodes: Sequence[onnx.NodeProto], targets: set[str]) -> set[str]:
    """All tensors (``targets`` included) that ``targets`` are computed from."""
    needed = set(targets)
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        if any(out in needed for out in node.output):
            needed.update(name for name in node.input if name)
    return needed


def node_work(
    node: onnx.NodeProto,
    shapes: Mapping[str, tuple[int, ...]],
    weights: Mapping[str, tuple[int, ...]],
) -> float:
    """Estimated work of one node for one sample: multiply-adds, or elements touched.

    Only for placing cuts along the model's compute; the profile measures time.
    """
    out_elems = sum(math.prod(shapes.get(o, (1,))[1:] or (1,)) for o in node.output if o)
    op = node.op_type
    if op in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in weights:
        kernel = weights[node.input[1]]
        if op == "Conv":
            return float(out_elems * math.prod(kernel[1:]))
        in_elems = math.prod(shapes.get(node.input[0], (1, 1))[1:] or (1,))
        return float(in_elems * math.prod(kernel[1:]))
    if op in ("MatMul", "Gemm", "MatMulInteger", "FusedMatMul") and node.input:
        first = shapes.get(node.input[0]) or weights.get(node.input[0])
        if first:
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            inner = first[0] if (op == "Gemm" and trans_a) else first[-1]
            return float(out_elems * max(1, inner))
    return float(max(1, out_elems))


@dataclass
class _Graph:
    """The nodes on the way to the outputs and the facts every search step needs."""

    nodes: list[onnx.NodeProto]
    order: list[int]  # relevant, input-derived nodes, topologically sorted
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    info: Mapping[str, TensorInfo]
    cuttable: set[str]
    readers: dict[str, list[int]]
    producer: dict[str, int]
    work: dict[int, float]
    total: float
    position: dict[int, int] = field(default_factory=dict)  # node index -> place in order


def _prepare(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    info: Mapping[str, TensorInfo],
) -> _Graph:
    relevant = _ancestor_nodes(nodes, set(outputs))
    derived = set(inputs)
    shape_like: set[str] = set()
    order = []
    for i in sorted(relevant):
        node = nodes[i]
        reads = [n for n in node.input if n in derived]
        if not reads:
            continue  # computed from weights alone: the side that needs it recomputes it
        order.append(i)
        outs = [o for o in node.output if o]
        derived.update(outs)
        if node.op_type in _SHAPE_OPS or all(n in shape_like for n in reads):
            shape_like.update(outs)
    cuttable = {
        name
        for name in derived
        if name not in shape_like
        and name in info
        and info[name].batched
        and len(info[name].shape) >= 1
    }
    readers: dict[str, list[int]] = {}
    producer: dict[str, int] = {}
    for i in order:
        for name in nodes[i].input:
            if name in derived:
                readers.setdefault(name, []).append(i)
        for out in nodes[i].output:
            if out:
                producer[out] = i
    shapes = {name: t.shape for name, t in info.items()}
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    work = {i: node_work(nodes[i], shapes, weights) for i in order}
    position = {i: pos for pos, i in enumerate(order)}
    total = sum(work.values())
    return _Graph(
        nodes, order, inputs, outputs, info, cuttable, readers, producer, work, total, position
    )


@dataclass(frozen=True)
class _Candidate:
    """A cut set found by the search.

    ``last`` is the place in the order of its head's deepest node, ``size`` how
    many nodes its head holds (a frontier's head is the order up to ``last``).
    """

    tensors: tuple[str, ...]
    last: int
    size: int
    compute: float
    nbytes: int
    producer: str
    origin: str
    edge_outputs: tuple[str, ...] = ()


def _frontiers(g: _Graph) -> list[_Candidate]:
    """The live input-derived tensors after each node of the order."""
    last_use: dict[str, int] = {}
    for pos, i in enumerate(g.order):
        for name in g.nodes[i].input:
            if name in g.readers:
                last_use[name] = pos
    last_read = dict(last_use)
    end = len(g.order)
    for name in g.outputs:
        last_use[name] = end
    outputs = set(g.outputs)
    live = {name for name in g.inputs if last_use.get(name, -1) >= 0}
    born: dict[str, int] = {name: -1 for name in g.inputs}
    found: list[_Candidate] = []
    done = 0.0
    for pos, i in enumerate(g.order):
        node = g.nodes[i]
        done += g.work[i]
        for name in node.input:
            if name in live and last_use.get(name, -1) <= pos:
                live.discard(name)
        for out in node.output:
            if out and last_use.get(out, -1) > pos:
                live.add(out)
                born[out] = pos
        if pos == end - 1 or live <= outputs:
            continue  # only final outputs left: the edge-only cut, added apart
        kept = {n for n in live & outputs if last_read.get(n, -1) <= pos}  # read by none later
        tensors = tuple(sorted(live - kept, key=lambda n: (born[n], n)))
        found.append(
            _Candidate(
                tensors,
                pos,
                pos + 1,
                done / g.total if g.total else 0.0,
                sum(g.info[n].nbytes for n in tensors),
                node.name or node.op_type,
                "frontier",
                tuple(n for n in g.outputs if n in live),  # computed: the edge has them
            )
        )
    return found


def _min_cut(g: _Graph, head_forced: set[int], tail_forced: set[int]) -> _Candidate | None:
    """DADS: the cheapest tensors (bytes) separating ``head_forced`` from ``tail_forced``."""
    import networkx as nx  # the partitioner's dependency; imported only where a cut is searched

    flow = nx.DiGraph()
    source, sink = "__source__", "__sink__"
    infinite = float("inf")
    for name, reader_ids in g.readers.items():
        if name in g.producer:
            start: object = g.producer[name]
        else:
            start = ("input", name)
            flow.add_edge(source, start, capacity=infinite)
        tap = ("tensor", name)
        cost = g.info[name].nbytes if name in g.cuttable else infinite
        flow.add_edge(start, tap, capacity=float(cost))
        flow.add_edge(tap, start, capacity=infinite)  # the head never reads the tail's tensors
        for reader in reader_ids:
            flow.add_edge(tap, reader, capacity=infinite)
            flow.add_edge(reader, tap, capacity=infinite)
    for i in head_forced:
        flow.add_edge(source, i, capacity=infinite)
    for i in tail_forced:
        flow.add_edge(i, sink, capacity=infinite)
    try:
        value, (reach, _) = nx.minimum_cut(flow, source, sink)
    except nx.NetworkXUnbounded:
        return None
    if not math.isfinite(value):
        return None
    head = frozenset(i for i in reach if isinstance(i, int))
    if not head:
        return None
    tensors = []
    for name, reader_ids in g.readers.items():
        made_here = g.producer.get(name) in head if name in g.producer else True
        if made_here and any(r not in head for r in reader_ids):
            tensors.append(name)
    if not tensors:
        return None
    position = g.position
    tensors.sort(key=lambda n: (position.get(g.producer.get(n, -1), -1), n))
    last = max(head, key=lambda i: position[i])
    return _Candidate(
        tuple(tensors),
        position[last],
        len(head),
        sum(g.work[i] for i in head) / g.total if g.total else 0.0,
        sum(g.info[n].nbytes for n in tensors),
        g.nodes[last].name or g.nodes[last].op_type,
        "min-cut",
        tuple(n for n in g.outputs if g.producer.get(n) in head),
    )


def _valid(g: _Graph, cand: _Candidate, max_tensors: int) -> bool:
    return len(cand.tensors) <= max_tensors and all(n in g.cuttable for n in cand.tensors)


def _choose(
    g: _Graph, found: list[_Candidate], max_tensors: int, stretches: int, min_cuts: bool
) -> list[_Candidate]:
    """Every single-tensor frontier, plus each stretch's smallest set where it is smaller."""
    chosen: dict[tuple[str, ...], _Candidate] = {
        c.tensors: c for c in found if len(c.tensors) == 1 and _valid(g, c, max_tensors)
    }
    bounds = np.linspace(0.0, 1.0, stretches + 1)
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        inside = [c for c in found if low < c.compute <= high]
        singles = [c for c in inside if c.tensors in chosen]
        options = [c for c in inside if _valid(g, c, max_tensors)]
        if min_cuts and inside:
            start = min(c.last for c in inside)
            stop = max(c.last for c in inside)
            head_forced = set(g.order[: start + 1])
            tail_forced = set(g.order[stop + 1 :])
            if tail_forced:
                best = _min_cut(g, head_forced, tail_forced)
                if best is not None and _valid(g, best, max_tensors):
                    options.append(best)
        if not options:
            continue
        best = min(options, key=lambda c: (c.nbytes, len(c.tensors), -c.compute))
        if best.tensors in chosen:
            continue
        if not singles or best.nbytes < min(c.nbytes for c in singles):
            chosen[best.tensors] = best
    return sorted(chosen.values(), key=lambda c: (c.compute, c.size))


def largest_gap(compute: Sequence[float]) -> float:
    """The largest share of compute between two consecutive cuts (0 and 1 included)."""
    points = sorted({0.0, 1.0, *compute})
    return max((b - a for a, b in zip(points, points[1:], strict=False)), default=1.0)


def analyze(
    model: onnx.ModelProto,
    outputs: str | Sequence[str],
    exit_names: Sequence[str] = (),
    *,
    info: Mapping[str, TensorInfo] | None = None,
    max_tensors: int = DEFAULT_MAX_TENSORS,
    stretches: int = DEFAULT_STRETCHES,
    min_cuts: bool = True,
) -> GraphAnalysis:
    """Find the cuts of ``model`` on the way to ``outputs`` and place its exits.

    Args:
        model: an ONNX model (its nodes are put in topological order here).
        outputs: the final output(s); the tail computes them.
        exit_names: early-exit outputs; each must branch off a single-tensor cut.
        info: shape, dtype and batch axis of every input-derived tensor for one
            sample (a probe run measures them); without it every tensor counts
            as batched and one byte, so only single-tensor cuts are found.
        max_tensors: the most tensors one cut may hold.
        stretches: the edge compute is split in this many equal stretches,
            each offered its smallest cut.
        min_cuts: also search DADS' min-cut in each stretch.

    Raises:
        ModelError: no inputs, unknown outputs, an output that depends on no
            input, a cycle, or an exit that does not branch off a cut.
    """
    if max_tensors < 1:
        raise ModelError(f"max_tensors={max_tensors}: a cut holds at least one tensor")
    wanted = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    inputs = tuple(graph_inputs(model))
    if not inputs:
        raise ModelError("model has no graph inputs (only constants): nothing to split")
    names = [out.name for out in model.graph.output]
    for name in (*wanted, *exit_names):
        if name not in names:
            raise ModelError(f"output {name!r} is not a graph output; the model has {names}")
    nodes = topological_nodes(model)
    ancestors = _tensor_ancestors(nodes, set(wanted))
    for name in wanted:
        if not set(inputs) & _tensor_ancestors(nodes, {name}):
            raise ModelError(f"output {name!r} depends on none of the inputs {list(inputs)}")
    used = tuple(name for name in inputs if name in ancestors)
    if info is None:
        info, max_tensors = {}, 1
    known = dict(info)
    for node in nodes:
        for out in node.output:
            known.setdefault(out, TensorInfo((1, 1), "uint8"))
    for name in used:
        known.setdefault(name, TensorInfo((1, 1), "uint8"))
    g = _prepare(model, nodes, used, wanted, known)
    found = _frontiers(g)
    chosen = _choose(g, found, max_tensors, stretches, min_cuts and bool(info))

    input_bytes = sum(known[n].nbytes for n in used)
    points = [CutPoint(0, used, "input", "input", 0.0, input_bytes)]
    for cand in chosen:
        points.append(
            CutPoint(
                len(points),
                cand.tensors,
                "inner",
                cand.producer,
                cand.compute,
                cand.nbytes,
                cand.origin,
                cand.edge_outputs,
            )
        )
    output_bytes = sum(known[n].nbytes for n in wanted)
    last = max((g.producer[n] for n in wanted if n in g.producer), default=None)
    producer = "output" if last is None else (nodes[last].name or nodes[last].op_type)
    points.append(CutPoint(len(points), wanted, "output", producer, 1.0, output_bytes))

    exits = tuple(_place_exit(nodes, points, g, name) for name in exit_names)
    order = {cut.tensors: cut.index for cut in points}
    exits = tuple(sorted(exits, key=lambda e: order[(e.branch_tensor,)]))
    candidates = len({c.tensors for c in found})
    return GraphAnalysis(
        used,
        wanted,
        tuple(points),
        exits,
        candidates,
        largest_gap([p.compute for p in points]),
        {(nodes[i].name or f"{nodes[i].op_type}_{i}"): w for i, w in g.work.items()},
    )


def _place_exit(
    nodes: Sequence[onnx.NodeProto], cuts: Sequence[CutPoint], g: _Graph, exit_name: str
) -> ExitPoint:
    """Find the deepest single-tensor cut an exit depends on; it may read nothing later."""
    backbone = {out for i in g.order for out in nodes[i].output} | set(g.inputs)
    needed = _tensor_ancestors(nodes, {exit_name}) & backbone
    candidates = [
        cut
        for cut in cuts
        if len(cut.tensors) == 1 and cut.tensors[0] in needed and cut.kind == "inner"
    ]
    if not candidates and not (needed & set(g.inputs)):
        raise ModelError(f"exit {exit_name!r} does not depend on the model input")
    if not candidates:
        raise ModelError(
            f"exit {exit_name!r} branches off before the first cut; edgesplit needs each exit "
            "to branch off a single tensor that every input->output path crosses"
        )
    branch = candidates[-1]
    covered = _tensor_ancestors(nodes, {branch.tensors[0]})
    stray = sorted(needed - covered)
    if stray:
        raise ModelError(
            f"exit {exit_name!r} reads backbone tensors {stray[:3]} beyond cut "
            f"{branch.tensors[0]!r}; edgesplit needs each exit to branch off a single tensor "
            "that every input->output path crosses"
        )
    return ExitPoint(exit_name, branch.tensors[0])
