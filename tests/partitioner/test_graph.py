"""Cut finding and exit placement on small graphs built in the test."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesplit.errors import ModelError
from partitioner.extract import plan_cuts
from partitioner.graph import TensorInfo, analyze


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


def _info(names: list[str], width: int = 4) -> dict[str, TensorInfo]:
    return {n: TensorInfo((1, width), "float32") for n in names}


def test_a_second_input_read_late_is_one_of_the_cut_tensors() -> None:
    # x -> a -> b ; y = b + m (a mask read at the end): every inner cut carries m.
    nodes = [_relu("x", "a"), _matmul("a", "b"), helper.make_node("Add", ["b", "m"], ["y"])]
    model = _model(nodes, ["y"], inputs=("x", "m"))
    analysis = analyze(model, "y", info=_info(["x", "m", "a", "b", "y"]))
    assert analysis.inputs == ("x", "m")
    assert [c.tensors for c in analysis.cuts] == [("x", "m"), ("m", "a"), ("m", "b"), ("y",)]
    # Without measured sizes only single-tensor cuts are offered: here none inside.
    assert [c.kind for c in analyze(model, "y").cuts] == ["input", "output"]


def _skip_model() -> onnx.ModelProto:
    # x -> a ; a -> b -> c -> d (long branch) ; y = a + d: no single tensor inside.
    nodes = [
        _relu("x", "a"),
        _matmul("a", "b"),
        _relu("b", "c"),
        _matmul("c", "d"),
        helper.make_node("Add", ["a", "d"], ["y"], name="add"),
    ]
    return _model(nodes, ["y"])


def test_a_long_skip_gets_cuts_of_two_tensors_inside() -> None:
    analysis = analyze(_skip_model(), "y", info=_info(["x", "a", "b", "c", "d", "y"]))
    inner = [c.tensors for c in analysis.cuts if c.kind == "inner"]
    assert ("a",) in inner and ("a", "b") in inner and ("a", "c") in inner
    assert analysis.largest_gap < 0.5
    # A bound of one tensor per cut leaves only the single-tensor cut.
    bounded = analyze(_skip_model(), "y", info=_info(["x", "a", "b", "c", "d", "y"]), max_tensors=1)
    assert [c.tensors for c in bounded.cuts if c.kind == "inner"] == [("a",)]


def test_a_shape_is_never_a_cut_tensor() -> None:
    # s = Shape(a) is read at the end: no cut after a may carry it (it is no batch).
    shape = np.asarray([1, 4], dtype=np.int64)
    nodes = [
        _relu("x", "a"),
        helper.make_node("Shape", ["a"], ["s"], name="shape"),
        _matmul("a", "b"),
        _relu("b", "c"),
        helper.make_node("Reshape", ["c", "s"], ["y"], name="reshape"),
    ]
    info = _info(["x", "a", "b", "c", "y"])
    info["s"] = TensorInfo(tuple(shape.shape), "int64", batched=False)
    analysis = analyze(_model(nodes, ["y"]), "y", info=info)
    assert all("s" not in c.tensors for c in analysis.cuts)


def test_unknown_output_is_named() -> None:
    model = _model([_relu("x", "y")], ["y"])
    with pytest.raises(ModelError, match="'nope' is not a graph output"):
        analyze(model, "nope")


def test_tensors_that_do_not_separate_the_model_are_refused_in_one_line() -> None:
    from partitioner.extract import CutPlan, Extractor

    model = _skip_model()
    analysis = analyze(model, "y", info=_info(["x", "a", "b", "c", "d", "y"]))
    # "c" alone misses the skip "a": the tail would read a tensor it is not given.
    bogus = CutPlan("c09", 9, "inner", ("c",), ("c",), (), (), True, (), ("y",))
    with pytest.raises(ModelError, match=r"tail_c09: tensors \['c'\] do not separate") as caught:
        Extractor(model, analysis).tail(bogus)
    assert "\n" not in str(caught.value)
