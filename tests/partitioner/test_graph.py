"""Cut finding and exit placement on small graphs built in the test."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesplit.errors import ModelError
from partitioner.extract import plan_cuts
from partitioner.graph import analyze


def _model(
    nodes: list[onnx.NodeProto], outputs: list[str], inputs: tuple[str, ...] = ("x",)
) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 4]) for name in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 4]) for name in outputs],
        initializer=[weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _relu(src: str, dst: str) -> onnx.NodeProto:
    return helper.make_node("Relu", [src], [dst], name=f"relu_{dst}")


def _matmul(src: str, dst: str) -> onnx.NodeProto:
    return helper.make_node("MatMul", [src, "w"], [dst], name=f"mm_{dst}")


def test_chain_every_tensor_is_a_cut() -> None:
    model = _model([_relu("x", "a"), _matmul("a", "b"), _relu("b", "y")], ["y"])
    analysis = analyze(model, "y")
    assert [c.tensor for c in analysis.cuts] == ["x", "a", "b", "y"]
    assert [c.kind for c in analysis.cuts] == ["input", "inner", "inner", "output"]


def test_residual_block_has_no_cut_inside() -> None:
    # x -> a ; a -> b -> c ; d = a + c (skip) ; y = relu(d): b and c are inside the block.
    nodes = [
        _relu("x", "a"),
        _matmul("a", "b"),
        _relu("b", "c"),
        helper.make_node("Add", ["a", "c"], ["d"], name="add"),
        _relu("d", "y"),
    ]
    analysis = analyze(_model(nodes, ["y"]), "y")
    assert [c.tensor for c in analysis.cuts] == ["x", "a", "d", "y"]


def test_parallel_branches_merge_then_cut() -> None:
    # Inception-like: two branches from a, concatenated (here: added) into m.
    nodes = [
        _relu("x", "a"),
        _matmul("a", "b1"),
        _relu("a", "b2"),
        _relu("b1", "b1r"),
        helper.make_node("Add", ["b1r", "b2"], ["m"], name="merge"),
        _matmul("m", "y"),
    ]
    analysis = analyze(_model(nodes, ["y"]), "y")
    assert [c.tensor for c in analysis.cuts] == ["x", "a", "m", "y"]


def test_exit_branch_does_not_break_cuts_and_is_placed() -> None:
    nodes = [_relu("x", "a"), _matmul("a", "e"), _matmul("a", "b"), _relu("b", "y")]
    analysis = analyze(_model(nodes, ["y", "e"]), "y", ["e"])
    assert [c.tensor for c in analysis.cuts] == ["x", "a", "b", "y"]
    assert analysis.exits[0].name == "e"
    assert analysis.exits[0].branch_tensor == "a"


def test_heads_stop_at_exits_and_share_segments() -> None:
    nodes = [_relu("x", "a"), _matmul("a", "e"), _matmul("a", "b"), _relu("b", "y")]
    analysis = analyze(_model(nodes, ["y", "e"]), "y", ["e"])
    cuts, segments = plan_cuts(analysis)
    by_tensor = {c.tensor: c for c in cuts}
    assert by_tensor["x"].head == ()
    assert by_tensor["a"].head == ("c00__c01",)
    assert segments["c00__c01"].exit == "e"
    # Deeper cuts reuse the exit segment, then continue from its boundary.
    assert by_tensor["b"].head == ("c00__c01", "c01__c02")
    assert by_tensor["y"].head == ("c00__c01", "c01__c03")
    assert by_tensor["y"].exits == ("e",)
    assert not by_tensor["y"].has_tail
    assert by_tensor["b"].name == "c02"  # inner cuts travel under their id


def test_exit_reading_past_its_branch_point_is_refused() -> None:
    # e needs both a and c, but c lies inside a residual block: no single cut covers e.
    nodes = [
        _relu("x", "a"),
        _matmul("a", "b"),
        _relu("b", "c"),
        helper.make_node("Add", ["a", "c"], ["e"], name="exit"),
        helper.make_node("Add", ["a", "c"], ["d"], name="add"),
        _relu("d", "y"),
    ]
    with pytest.raises(ModelError, match="exit 'e' reads backbone tensors"):
        analyze(_model(nodes, ["y", "e"]), "y", ["e"])


def test_two_inputs_are_refused() -> None:
    nodes = [helper.make_node("Add", ["x", "z"], ["y"], name="add")]
    with pytest.raises(ModelError, match="2 graph inputs"):
        analyze(_model(nodes, ["y"], inputs=("x", "z")), "y")


def test_unknown_output_is_named() -> None:
    model = _model([_relu("x", "y")], ["y"])
    with pytest.raises(ModelError, match="'nope' is not a graph output"):
        analyze(model, "nope")
