"""Time of cut discovery and extraction on a 1,000-node graph, against the 30 s goal.

Builds with ``onnx.helper`` a synthetic network of about ``--nodes`` nodes shaped
like a real one with skip connections at several scales: a U-Net/FPN-like stack
(input ``[batch, 3, 32, 32]``, four scales 32/16/8/4 pixels, 8-32 channels) of
conv+relu residual blocks, a longer residual every three blocks, a stride-2
convolution between scales, and on the way up a ``Resize`` whose ``sizes`` come from
the skip's ``Shape`` (as torch exports ``F.interpolate(x, size=skip.shape[-2:])``),
the encoder's skip of that scale concatenated, and an FPN-like box head at each
scale reshaped with the batch read once from the input (``reshape(N, -1, 4)``),
all concatenated into ``boxes`` beside a ``mask`` output. The graph passes
``onnx.checker`` (full check) and runs in ONNX Runtime at batch 1 and 3.

For it, and for zoo models (``fpn_detector`` by default) for comparison, prints
the medians over ``--repeat`` runs, timed with ``time.perf_counter``, of:

- measure + rewrite: what ``prepare`` does before the analysis
  (``partitioner.prepare._localize_shapes``: every tensor measured at batch 1 and
  2, shape arithmetic rewritten, the rewrite checked against the model and
  measured again);
- analyze: ``partitioner.graph.analyze`` alone (frontiers and DADS min-cuts);
- plan + extract: ``plan_cuts``, the ``Extractor`` (ONNX shape inference) and
  every head segment and every tail of every offered cut extracted;

then their total against the goal (under 30 s) and, for reference, one whole
``prepare`` (which also extracts and runs the probe on the 32 samples). Above
the times: node count (as written and after the shape rewrite), candidate sets
considered, cuts offered, offered cuts of several tensors, the largest share
of estimated compute between two offered cuts, and sub-models extracted. The
machine's load average is printed too: the times are wall-clock times.

Run: ``python -m benchmarks.cut_discovery [--nodes N] [--repeat K]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesplit.onnxrt import create_session
from partitioner.extract import Extractor, plan_cuts
from partitioner.graph import DEFAULT_MAX_TENSORS, analyze
from partitioner.prepare import _localize_shapes, prepare
from partitioner.sources import onnx_source

GOAL_S = 30.0
OPSET = 17
SIZE = 32  # input pixels a side; the four scales are 32, 16, 8 and 4
WIDTHS = (8, 16, 24, 32)  # channels at each scale
LONG_EVERY = 3  # a residual from the stage's entry every this many blocks
PROVIDERS = ("CPUExecutionProvider",)


class _Builder:
    """Nodes and seeded random weights of a graph under construction, torch-export names."""

    def __init__(self, seed: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def node(self, op: str, inputs: list[str], scope: str, **attrs) -> str:
        """Append one node of one output; return the output's name."""
        self.count += 1
        name = f"/{scope}/{op}_{self.count}"
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer; return its name."""
        self.weights.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def conv(
        self, x: str, cin: int, cout: int, scope: str, k: int = 3, stride: int = 1, gain: float = 1
    ) -> str:
        """A convolution with He-scaled weights (times ``gain``) and a bias."""
        std = gain * np.sqrt(2.0 / (cin * k * k))
        w = self.rng.standard_normal((cout, cin, k, k)).astype(np.float32) * np.float32(std)
        b = 0.01 * self.rng.standard_normal(cout).astype(np.float32)
        tag = f"{scope}.{self.count}"
        inputs = [x, self.const(f"{tag}.weight", w), self.const(f"{tag}.bias", b)]
        pad = k // 2
        return self.node(
            "Conv", inputs, scope, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4
        )

    def block(self, x: str, c: int, scope: str) -> str:
        """A basic residual block: conv, relu, conv, add, relu (5 nodes)."""
        h = self.node("Relu", [self.conv(x, c, c, scope)], scope)
        h = self.conv(h, c, c, scope, gain=0.3)
        return self.node("Relu", [self.node("Add", [h, x], scope)], scope)

    def stage(self, x: str, c: int, blocks: int, scope: str) -> str:
        """``blocks`` residual blocks, the stage's entry added back every ``LONG_EVERY``."""
        entry = x
        for k in range(blocks):
            x = self.block(x, c, f"{scope}/block{k}")
            if (k + 1) % LONG_EVERY == 0 and k + 1 < blocks:
                x = self.node("Add", [x, entry], f"{scope}/long{k}")
        return x

    def shape_slice(self, x: str, start: int, end: int, scope: str) -> str:
        """``x.shape[start:end]`` as torch exports it: Shape then Slice (2 nodes)."""
        shape = self.node("Shape", [x], scope)
        starts = self.const(f"{scope}.{self.count}.starts", np.array([start], np.int64))
        ends = self.const(f"{scope}.{self.count}.ends", np.array([end], np.int64))
        return self.node("Slice", [shape, starts, ends], scope)

    def upsample_like(self, x: str, skip: str, scope: str) -> str:
        """``F.interpolate(x, size=skip.shape[-2:])``: Resize with sizes from shapes (6 nodes)."""
        sizes = self.node(
            "Concat",
            [self.shape_slice(x, 0, 2, scope), self.shape_slice(skip, 2, 4, scope)],
            scope,
            axis=0,
        )
        return self.node("Resize", [x, "", "", sizes], scope, mode="nearest")


def _stage_blocks(nodes: int) -> list[int]:
    """Blocks in each of the 7 stages (4 down, 3 up) for at least ``nodes`` nodes in all.

    Blocks are added one stage after the other; a block is 5 nodes, and every
    ``LONG_EVERY`` blocks of a stage add a long residual.
    """
    blocks = [1] * 7
    base = len(synthetic_model(blocks).graph.node)
    k = 0
    while base + sum(5 * (b - 1) + (b - 1) // LONG_EVERY for b in blocks) < nodes:
        blocks[k % 7] += 1
        k += 1
    return blocks


def synthetic_model(blocks: list[int], seed: int = 0) -> onnx.ModelProto:
    """The U-Net/FPN-like graph with ``blocks[s]`` residual blocks in stage ``s`` (7 stages).

    Stages 0-3 go down (32 to 4 pixels), stages 4-6 come back up (8 to 32 pixels).
    Outputs: ``mask`` ``[batch, 2, 32, 32]`` and ``boxes`` ``[batch, 340, 4]``.
    """
    b = _Builder(seed)
    x = b.node("Relu", [b.conv("image", 3, WIDTHS[0], "stem")], "stem")
    skips = []
    for level, width in enumerate(WIDTHS):
        if level:
            x = b.conv(x, WIDTHS[level - 1], width, f"down{level}", stride=2)
            x = b.node("Relu", [x], f"down{level}")
        x = b.stage(x, width, blocks[level], f"enc{level}")
        skips.append(x)
    # batch = image.shape[0], read once at the start, used by every head's reshape(N, -1, 4)
    index = b.const("batch.index", np.array(0, np.int64))
    batch = b.node("Gather", [b.node("Shape", ["image"], "batch"), index], "batch", axis=0)
    batch = b.node("Unsqueeze", [batch, b.const("batch.axes", np.array([0], np.int64))], "batch")
    rest = b.const("box.rest", np.array([-1, 4], np.int64))
    box_shape = b.node("Concat", [batch, rest], "batch", axis=0)
    heads = []
    for up, level in enumerate(range(len(WIDTHS) - 1, -1, -1)):
        scope = f"fpn{level}"
        if up:
            width, wider = WIDTHS[level], WIDTHS[level + 1]
            x = b.upsample_like(x, skips[level], f"up{level}")
            x = b.node("Concat", [x, skips[level]], f"up{level}", axis=1)
            x = b.node("Relu", [b.conv(x, wider + width, width, f"up{level}", k=1)], f"up{level}")
            x = b.stage(x, width, blocks[3 + up], f"dec{level}")
        head = b.node("Relu", [b.conv(x, WIDTHS[level], 8, scope)], scope)
        head = b.node("Transpose", [b.conv(head, 8, 4, scope, k=1)], scope, perm=[0, 2, 3, 1])
        heads.append(b.node("Reshape", [head, box_shape], scope))
    boxes = b.node("Concat", heads, "boxes", axis=1)
    mask = b.conv(x, WIDTHS[0], 2, "mask", k=1)
    finals = {boxes: "boxes", mask: "mask"}
    for node in b.nodes:  # the two outputs carry their own names
        node.output[:] = [finals.get(o, o) for o in node.output]
    cells = sum((SIZE >> level) ** 2 for level in range(len(WIDTHS)))
    graph = helper.make_graph(
        b.nodes,
        "cut_discovery_synthetic",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 2, SIZE, SIZE]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", cells, 4]),
        ],
        initializer=b.weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def write_synthetic(nodes: int, path: Path) -> Path:
    """Write the synthetic graph of about ``nodes`` nodes, checked and run in ONNX Runtime."""
    model = synthetic_model(_stage_blocks(nodes))
    onnx.checker.check_model(model, full_check=True)
    session = create_session(model.SerializeToString(), PROVIDERS, 1)
    for n in (1, 3):
        image = np.random.default_rng(n).standard_normal((n, 3, SIZE, SIZE), dtype=np.float32)
        mask, boxes = session.run(["mask", "boxes"], {"image": image})
        cells = sum((SIZE >> level) ** 2 for level in range(len(WIDTHS)))
        if mask.shape != (n, 2, SIZE, SIZE) or boxes.shape != (n, cells, 4):
            raise RuntimeError(f"synthetic graph gives {mask.shape}, {boxes.shape} at batch {n}")
        if not (np.isfinite(mask).all() and np.isfinite(boxes).all()):
            raise RuntimeError("synthetic graph gives non-finite values")
    onnx.save(model, str(path))
    return path


@dataclass
class Result:
    """What one model's runs measured; times in seconds, one per repetition."""

    name: str
    nodes: int = 0
    nodes_rewritten: int = 0
    rewrite_kept: bool = False
    candidates: int = 0
    offered: int = 0
    multi: int = 0
    largest_gap: float = 0.0
    submodels: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)

    def median(self, stage: str) -> float:
        """The median time of ``stage`` over the repetitions."""
        return statistics.median(self.times[stage])


STAGES = ("measure + rewrite", "analyze", "plan + extract")


def _timed(result: Result, stage: str, work: Callable[[], object]) -> object:
    start = time.perf_counter()
    value = work()
    result.times.setdefault(stage, []).append(time.perf_counter() - start)
    return value


def measure(name: str, path: Path, repeat: int, max_tensors: int) -> Result:
    """Time the three steps of cut discovery on the ONNX file ``path``, ``repeat`` times."""
    source = onnx_source(path)
    samples = {n: np.asarray(v) for n, v in source.samples.items()}
    result = Result(name, nodes=len(source.model.graph.node))
    for _ in range(repeat):
        model, info = _timed(
            result,
            STAGES[0],
            lambda: _localize_shapes(source.model, samples, source.fixed_batch, PROVIDERS),
        )
        analysis = _timed(
            result,
            STAGES[1],
            lambda m=model, i=info: analyze(
                m, source.outputs, source.exits, info=i, max_tensors=max_tensors
            ),
        )

        def extract_all(m=model, a=analysis) -> int:
            plans, segments = plan_cuts(a)
            extractor = Extractor(m, a)
            for segment in segments.values():
                extractor.segment(segment)
            tails = [p for p in plans if p.has_tail]
            for plan in tails:
                extractor.tail(plan)
            return len(segments) + len(tails)

        result.submodels = _timed(result, STAGES[2], extract_all)
        _timed(result, "prepare()", lambda: prepare(source, max_tensors=max_tensors))
    inner = [c for c in analysis.cuts if c.kind == "inner"]
    result.nodes_rewritten = len(model.graph.node)
    result.rewrite_kept = model is not source.model
    result.candidates = analysis.candidates
    result.offered = len(analysis.cuts)
    result.multi = sum(len(c.tensors) > 1 for c in inner)
    result.largest_gap = analysis.largest_gap
    return result


def table(results: list[Result], repeat: int) -> list[str]:
    """The figures of each model side by side, times as medians."""
    row = "{:<28}" + " {:>16}" * len(results)
    lines = [row.format("", *[r.name for r in results])]
    facts = [
        ("nodes (as written)", lambda r: f"{r.nodes}"),
        ("shape rewrite kept", lambda r: "yes" if r.rewrite_kept else "no"),
        ("nodes (shapes rewritten)", lambda r: f"{r.nodes_rewritten}"),
        ("candidate sets", lambda r: f"{r.candidates}"),
        ("offered cuts (in+out incl.)", lambda r: f"{r.offered}"),
        ("  of several tensors", lambda r: f"{r.multi}"),
        ("largest gap", lambda r: f"{r.largest_gap:.1%}"),
        ("sub-models extracted", lambda r: f"{r.submodels}"),
    ]
    for label, show in facts:
        lines.append(row.format(label, *[show(r) for r in results]))
    lines.append(f"median s of {repeat}:")
    for stage in STAGES:
        lines.append(row.format(f"  {stage}", *[f"{r.median(stage):.2f}" for r in results]))
    totals = [sum(r.median(s) for s in STAGES) for r in results]
    lines.append(row.format("  total", *[f"{t:.2f}" for t in totals]))
    verdicts = [f"{'met' if t < GOAL_S else 'MISSED'} ({t / GOAL_S:.0%})" for t in totals]
    lines.append(row.format(f"  goal < {GOAL_S:.0f} s", *verdicts))
    whole = [f"{r.median('prepare()'):.2f}" for r in results]
    lines.append(row.format("  whole prepare() (ref.)", *whole))
    return lines


def main() -> None:
    """Build the synthetic graph, time cut discovery on it and on the zoo models, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="size of the synthetic graph")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each step (median)")
    parser.add_argument(
        "--zoo",
        action="append",
        default=None,
        help="zoo model to compare with (repeatable; default fpn_detector; 'none': none)",
    )
    parser.add_argument("--max-tensors", type=int, default=DEFAULT_MAX_TENSORS)
    args = parser.parse_args()
    zoo = [z for z in (args.zoo or ["fpn_detector"]) if z != "none"]
    with tempfile.TemporaryDirectory(prefix="cut-discovery-") as tmp:
        start = time.perf_counter()
        path = write_synthetic(args.nodes, Path(tmp) / "synthetic.onnx")
        nodes = len(onnx.load(str(path)).graph.node)
        print(
            f"synthetic graph: {nodes} nodes (asked {args.nodes}), passes onnx.checker and runs "
            f"in ONNX Runtime; built in {time.perf_counter() - start:.1f} s"
        )
        paths = {f"synthetic {nodes}": path}
        if zoo:
            from partitioner.byom_zoo import write_zoo_model

            for name in zoo:
                paths[name] = write_zoo_model(name, Path(tmp) / f"{name}.onnx")
        results = []
        for name, model_path in paths.items():
            results.append(measure(name, model_path, args.repeat, args.max_tensors))
            print(f"{name}: done", flush=True)
    print(f"\ncpus={os.cpu_count()} load average={os.getloadavg()[0]:.2f} (1 min)")
    print("\n".join(table(results, args.repeat)))


if __name__ == "__main__":
    main()
