"""Broken ONNX inputs, one file per kind, for tests of how the partitioner refuses them.

Every file but ``not_onnx`` and ``truncated`` is built with ``onnx.helper`` from one
tiny valid Conv/Relu model, changed in exactly one way; none is checked, since most
would fail ``onnx.checker``. Each file is under a kilobyte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
INPUT_SHAPE = (1, 2, 8, 8)
OUTPUT_SHAPE = (1, 4, 8, 8)

BROKEN_KINDS = (
    "truncated",
    "not_onnx",
    "wrong_opset",
    "old_opset",
    "unknown_op",
    "cycle",
    "missing_initializer",
    "zero_size_dim",
    "empty_graph",
    "no_inputs",
)


def _weights() -> list[TensorProto]:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    return [
        numpy_helper.from_array(weight, "conv.weight"),
        numpy_helper.from_array(bias, "conv.bias"),
    ]


def _conv() -> onnx.NodeProto:
    return helper.make_node(
        "Conv", ["input", "conv.weight", "conv.bias"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]
    )


def _relu(source: str = "conv_out", target: str = "output") -> onnx.NodeProto:
    return helper.make_node("Relu", [source], [target], name="relu")


def _value(name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(
    nodes: list[onnx.NodeProto],
    *,
    inputs: list[onnx.ValueInfoProto] | None = None,
    outputs: list[onnx.ValueInfoProto] | None = None,
    initializers: list[TensorProto] | None = None,
    opset: int = OPSET,
    name: str = "tiny",
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [_value("input", INPUT_SHAPE)] if inputs is None else inputs,
        [_value("output", OUTPUT_SHAPE)] if outputs is None else outputs,
        initializer=_weights() if initializers is None else initializers,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=IR_VERSION,
        producer_name="edgesplit-tests",
    )


def valid_model() -> onnx.ModelProto:
    """The tiny valid model every broken one starts from: input -> Conv -> Relu -> output."""
    return _model([_conv(), _relu()])


def _broken_models() -> dict[str, onnx.ModelProto]:
    conv, relu = _conv(), _relu()
    hard_swish = helper.make_node("HardSwish", ["relu_out"], ["output"], name="hard_swish")
    frobnicate = helper.make_node("FrobnicateXYZ", ["relu_out"], ["output"], name="frobnicate")
    # relu reads add_out, add reads relu_out: neither can run first.
    add = helper.make_node("Add", ["conv_out", "relu_out"], ["add_out"], name="add")
    cycle_relu = _relu("add_out", "relu_out")
    tail = helper.make_node("Identity", ["relu_out"], ["output"], name="identity")
    const = helper.make_node(
        "Constant",
        [],
        ["output"],
        name="const",
        value=numpy_helper.from_array(np.ones((1, 4, 2, 2), dtype=np.float32)),
    )
    return {
        "wrong_opset": _model([conv, relu], opset=99),
        # HardSwish came in opset 14; opset 1 does not have it.
        "old_opset": _model([conv, _relu(target="relu_out"), hard_swish], opset=1),
        "unknown_op": _model([conv, _relu(target="relu_out"), frobnicate]),
        "cycle": _model([conv, add, cycle_relu, tail]),
        "missing_initializer": _model([conv, relu], initializers=_weights()[1:]),
        "zero_size_dim": _model(
            [conv, relu],
            inputs=[_value("input", (1, 2, 0, 8))],
            outputs=[_value("output", (1, 4, 0, 8))],
        ),
        "empty_graph": _model([], inputs=[], outputs=[], initializers=[], name="empty"),
        "no_inputs": _model(
            [const],
            inputs=[],
            outputs=[_value("output", (1, 4, 2, 2))],
            initializers=[],
            name="constants",
        ),
    }


def write_broken_corpus(folder: Path) -> dict[str, Path]:
    """Write one broken ``.onnx`` file per kind in ``BROKEN_KINDS`` into ``folder``.

    Kinds: ``truncated`` (a valid model's bytes cut in half), ``not_onnx`` (plain text),
    ``wrong_opset`` (default-domain opset 99), ``old_opset`` (opset 1 on a graph using
    HardSwish, opset 14), ``unknown_op`` (a node ``FrobnicateXYZ`` in the default
    domain), ``cycle`` (two nodes feeding each other), ``missing_initializer`` (the Conv
    weight is neither an initializer, an input nor produced), ``zero_size_dim`` (an
    input dimension of 0), ``empty_graph`` (no nodes, inputs or outputs) and
    ``no_inputs`` (one Constant node, nothing to feed).

    Args:
        folder: Where to write; created if missing.

    Returns:
        The path of each kind's file, keyed by kind.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"{kind}.onnx" for kind in BROKEN_KINDS}
    whole = valid_model().SerializeToString()
    paths["truncated"].write_bytes(whole[: len(whole) // 2])
    # Starts with 'n' (0x6e): protobuf wire type 6, which no parser accepts.
    paths["not_onnx"].write_text("not an ONNX model, just a text file named like one\n")
    for kind, model in _broken_models().items():
        paths[kind].write_bytes(model.SerializeToString())
    return paths


__all__ = ["BROKEN_KINDS", "valid_model", "write_broken_corpus"]
