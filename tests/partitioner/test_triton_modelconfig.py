"""Every generated config.pbtxt parses into Triton's own ModelConfig protobuf."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from edgesplit.bundle import Bundle, TensorSpec
from partitioner.triton import tail_config, to_pbtxt


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("name", ["untrained_bundle", "resnet18_bundle"])
def test_every_tail_config_is_a_valid_model_config(name: str, request) -> None:
    bundle: Bundle = request.getfixturevalue(name)
    m = bundle.manifest
    configs = sorted((bundle.root / "cloud").glob("*/config.pbtxt"))
    assert len(configs) == sum(c.tail is not None for c in m.cuts)
    output_shape = None
    for cut in m.cuts:
        if cut.tail is None:
            continue
        path = bundle.root / "cloud" / cut.tail / "config.pbtxt"
        config = _parse(path.read_text())
        assert config.name == path.parent.name == cut.tail
        assert config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == 16
        assert config.HasField("dynamic_batching")
        assert config.dynamic_batching.max_queue_delay_microseconds > 0
        assert [i.name for i in config.input] == [cut.name]
        # Dims exclude the batch dimension: Triton adds it when max_batch_size > 0.
        assert tuple(config.input[0].dims) == cut.shape
        assert config.input[0].data_type == model_config_pb2.TYPE_FP32
        assert [o.name for o in config.output] == [m.model.output]
        assert config.output[0].data_type == model_config_pb2.TYPE_FP32
        output_shape = output_shape or tuple(config.output[0].dims)
        assert tuple(config.output[0].dims) == output_shape
        assert (path.parent / "1" / "model.onnx").is_file()


def test_the_parser_bites() -> None:
    good = to_pbtxt(
        tail_config("m", [TensorSpec("c01", (4,))], [TensorSpec("y", (2,))], max_batch_size=8)
    )
    assert _parse(good).max_batch_size == 8
    for broken in (
        good.replace("max_batch_size", "max_batch"),  # unknown field
        good.replace("TYPE_FP32", "TYPE_FLOAT99"),  # bad enum
        good.replace("dims: [ 4 ]", "dims: [ 4"),  # syntax
    ):
        with pytest.raises(text_format.ParseError):
            _parse(broken)


def test_names_are_quoted_and_shapes_written_whole(tmp_path: Path) -> None:
    config = _parse(
        to_pbtxt(
            tail_config(
                "resnet18__tail__c05",
                [TensorSpec('odd "name"', (3, 224, 224))],
                [TensorSpec("logits", (1000,))],
                max_batch_size=4,
            )
        )
    )
    assert config.input[0].name == 'odd "name"'
    assert list(config.input[0].dims) == [3, 224, 224]
    assert config.max_batch_size == 4
