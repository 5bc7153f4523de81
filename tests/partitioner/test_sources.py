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
    assert source.samples.shape[1:] == (4,)


def test_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x00\x01 certainly not a protobuf \xff" * 10)
    with pytest.raises(ModelError, match=r"broken.onnx: not a valid ONNX model"):
        onnx_source(path)


def test_two_inputs_are_refused(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [_vi("a", ["N", 4]), _vi("b", ["N", 4])],
        [helper.make_node("Add", ["a", "b"], ["z"])],
        [_vi("z", ["N", 4])],
    )
    with pytest.raises(ModelError, match=r"m.onnx: has 2 inputs; edgesplit splits single-input"):
        onnx_source(path)


def test_an_unpinned_dimension_is_named(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [_vi("x", ["N", 3, "H", 8])],
        [helper.make_node("Relu", ["x"], ["z"])],
        [_vi("z", ["N", 3, "H", 8])],
    )
    with pytest.raises(ModelError, match=r"input 'x' dimension 2 is dynamic \(H\); re-export"):
        onnx_source(path)


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
