"""A model whose batch is fixed to 1 and cannot be freed: served one sample at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import wire
from edgesplit.bundle import Bundle
from tests.conftest import RunningCloud, ask_cloud


def _fixed_model(path: Path) -> Path:
    """x[1, 4] -> relu -> concat with a constant [1, 4] -> matmul -> y[1, 3].

    The constant has a batch of 1 too: a batch of two cannot be concatenated to it.
    """
    rng = np.random.default_rng(0)
    const = numpy_helper.from_array(rng.standard_normal((1, 4)).astype(np.float32), "bias_row")
    weight = numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Concat", ["a", "bias_row"], ["b"], axis=1, name="concat"),
        helper.make_node("Relu", ["b"], ["c"], name="relu2"),
        helper.make_node("MatMul", ["c", "w"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=[const, weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def fixed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.pruning import PruneConfig
    from partitioner.sources import onnx_source

    root = tmp_path_factory.mktemp("fixed")
    source = onnx_source(_fixed_model(root / "fixed.onnx"))
    assert source.fixed_batch and "one sample at a time" in source.notes[0]
    config = PartitionConfig(
        profile=ProfileConfig(reps=Repetitions(1, 2), layers=False, size_samples=4),
        prune=PruneConfig(enabled=False),
    )
    return partition(source, root / "bundle", config)


@pytest.fixture(scope="module")
def running(fixed_bundle: Bundle) -> Iterator[RunningCloud]:
    cloud = RunningCloud(fixed_bundle)
    yield cloud
    cloud.stop()


def test_the_bundle_says_so_and_its_tails_take_one_sample(fixed_bundle: Bundle) -> None:
    m = fixed_bundle.manifest
    assert m.model.fixed_batch
    for cut in m.cuts:
        if cut.tail is not None:
            config = (fixed_bundle.root / "cloud" / cut.tail / "config.pbtxt").read_text()
            assert "max_batch_size: 1\n" in config, cut.id
            assert cut.fidelity["raw"].max_rel_error["y"] < 1e-6


def _call(endpoint: str, request: wire.InferRequest) -> wire.AnyMessage:
    return ask_cloud(endpoint, request)


def test_the_cloud_takes_one_sample_a_request(fixed_bundle: Bundle, running: RunningCloud) -> None:
    cut = fixed_bundle.manifest.cloud_only
    two = wire.InferRequest(1, fixed_bundle.id, cut.id, (wire.Tensor("x", np.ones((2, 4), "f4")),))
    refused = _call(running.endpoint, two)
    assert isinstance(refused, wire.ErrorReply) and refused.code == "shape"
    assert "batch=2 outside 1..1" in refused.message
    one = wire.InferRequest(2, fixed_bundle.id, cut.id, (wire.Tensor("x", np.ones((1, 4), "f4")),))
    answer = _call(running.endpoint, one)
    assert isinstance(answer, wire.Result) and answer.arrays()["y"].shape == (1, 3)
