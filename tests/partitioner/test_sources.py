"""A user's ONNX file: what is accepted, and one clear error for everything else."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgesplit.errors import ModelError
from partitioner.sources import onnx_source


def _save(tmp_path: Path, inputs, nodes, outputs, name: str = "m.onnx") -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_a_fixed_shape_model_is_accepted(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [_vi("x", ["N", 4])],
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["y"], ["z"])],
        [_vi("z", ["N", 4])],
    )
    source = onnx_source(path)
    assert source.input_shape == (4,) and source.output == "z" and source.exits == ()
    assert source.samples["x"].shape[1:] == (4,)


def test_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x00\x01 certainly not a protobuf \xff" * 10)
    with pytest.raises(ModelError, match=r"broken.onnx: cannot be loaded as ONNX"):
        onnx_source(path)


def test_two_inputs_are_taken_with_samples_of_each(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [_vi("a", ["N", 4]), _vi("b", ["N", 4])],
        [helper.make_node("Add", ["a", "b"], ["z"])],
        [_vi("z", ["N", 4])],
    )
    source = onnx_source(path)
    assert [i.name for i in source.inputs] == ["a", "b"]
    assert source.samples["a"].shape == source.samples["b"].shape == (32, 4)


def test_an_unpinned_dimension_is_named_with_the_flag_to_pin_it(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [_vi("x", ["N", 3, "H", 8])],
        [helper.make_node("Relu", ["x"], ["z"])],
        [_vi("z", ["N", 3, "H", 8])],
    )
    with pytest.raises(
        ModelError, match=r"input 'x' dimension 2 is dynamic \(H\); pin it with --input-shape x="
    ):
        onnx_source(path)
    source = onnx_source(path, input_shapes={"x": (1, 3, 5, 8)})
    assert source.input_shape == (3, 5, 8) and source.samples["x"].shape[1:] == (3, 5, 8)


@pytest.mark.parametrize(
    ("pins", "message"),
    [
        ({"y": (1, 3, 5, 8)}, r"--input-shape names \['y'\], which are not inputs"),
        ({"x": (1, 3, 5)}, r"--input-shape x=1x3x5: rank 3, but input 'x' has rank 4"),
        ({"x": (1, 4, 5, 8)}, r"--input-shape x: dimension 1 is 4, but the model fixes it to 3"),
    ],
)
def test_bad_pins_are_named(tmp_path: Path, pins, message: str) -> None:
    path = _save(
        tmp_path,
        [_vi("x", ["N", 3, "H", 8])],
        [helper.make_node("Relu", ["x"], ["z"])],
        [_vi("z", ["N", 3, "H", 8])],
    )
    with pytest.raises(ModelError, match=message):
        onnx_source(path, input_shapes=pins)


def test_every_broken_file_is_one_line_naming_it(tmp_path: Path) -> None:
    from tests.partitioner.broken_models import BROKEN_KINDS, write_broken_corpus

    corpus = write_broken_corpus(tmp_path)
    assert sorted(corpus) == sorted(BROKEN_KINDS)
    for kind, path in corpus.items():
        with pytest.raises(ModelError) as caught:
            onnx_source(path)
        text = str(caught.value)
        assert "\n" not in text and str(path) in text, (kind, text)
        assert len(text) < 600, (kind, text)
        expected = {
            "cycle": "the graph has a cycle",
            "missing_initializer": "reads tensor 'conv.weight', which no node",
            "zero_size_dim": "dimension 2 has size 0",
            "empty_graph": "the graph has no nodes",
            "no_inputs": "the graph has no inputs",
            "unknown_op": "FrobnicateXYZ",
        }.get(kind)
        assert expected is None or expected in text, (kind, text)


def test_nodes_out_of_order_are_put_in_order(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [_vi("x", ["N", 4])],
        [helper.make_node("Neg", ["y"], ["z"]), helper.make_node("Relu", ["x"], ["y"])],
        [_vi("z", ["N", 4])],
    )
    source = onnx_source(path)
    assert source.model is not None
    assert [n.op_type for n in source.model.graph.node] == ["Relu", "Neg"]


def test_an_exit_that_is_not_an_output(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [_vi("x", ["N", 4])],
        [helper.make_node("Relu", ["x"], ["z"])],
        [_vi("z", ["N", 4])],
    )
    with pytest.raises(ModelError, match=r"exits \['exit_9'\] are not outputs"):
        onnx_source(path, exits=["exit_9"])


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such ONNX file"):
        onnx_source(tmp_path / "nope.onnx")
