"""Execution providers: names, options, and what a real ONNX Runtime session uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgesplit.errors import ConfigError
from edgesplit.onnxrt import CPU, create_session
from edgesplit.providers import (
    CUDA,
    DEFAULT_ORDER,
    OPENVINO,
    PROBE_MODEL,
    TENSORRT,
    options_by_provider,
    provider_options,
    report_providers,
    resolve_providers,
)

GPU_HERE = CUDA in ort.get_available_providers()


def _double_model(path: Path) -> Path:
    """y = x + x on float[2, 3], written with onnx.helper."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "double", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_default_order_and_short_names() -> None:
    assert resolve_providers(None) == [TENSORRT, CUDA, OPENVINO, CPU]
    assert resolve_providers(["TensorRT", "cuda"]) == [TENSORRT, CUDA, CPU]
    assert resolve_providers(["cudaexecutionprovider", "OpenVINO"]) == [CUDA, OPENVINO, CPU]
    assert resolve_providers("cuda, cpu") == [CUDA, CPU]
    assert resolve_providers(["cuda", "CUDA", "CUDAExecutionProvider"]) == [CUDA, CPU]
    assert resolve_providers([]) == [CPU]


def test_cpu_ends_the_order() -> None:
    # Providers after CPU would never get a node.
    assert resolve_providers(["cpu", "cuda"]) == [CPU]
    assert resolve_providers(["openvino", "cpu", "tensorrt"]) == [OPENVINO, CPU]


def test_other_providers_onnxruntime_knows_are_accepted() -> None:
    assert resolve_providers(["coremlexecutionprovider"]) == ["CoreMLExecutionProvider", CPU]


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_providers(["cuda", "tpu"])
    message = str(info.value)
    assert message.startswith("execution provider 'tpu' is unknown; valid: tensorrt, cuda, ")
    assert "openvino, cpu" in message
    assert ", ".join(DEFAULT_ORDER) in message
    with pytest.raises(ConfigError, match="'gpu' is unknown"):
        provider_options("gpu")


def test_tensorrt_options_give_an_engine_cache(tmp_path: Path) -> None:
    assert provider_options("tensorrt", tmp_path / "engines", fp16=True) == {
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(tmp_path / "engines"),
    }
    assert provider_options(TENSORRT) == {"trt_fp16_enable": "False"}
    assert provider_options("openvino", tmp_path) == {"cache_dir": str(tmp_path)}
    assert provider_options("cuda", tmp_path, fp16=True) == {}
    assert provider_options("CPU", tmp_path) == {}
    assert options_by_provider(resolve_providers(None), tmp_path) == {
        TENSORRT: {
            "trt_fp16_enable": "False",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(tmp_path),
        },
        OPENVINO: {"cache_dir": str(tmp_path)},
    }


def test_probe_model_is_a_valid_identity_model() -> None:
    model = onnx.load_from_string(PROBE_MODEL)
    onnx.checker.check_model(model)
    assert [node.op_type for node in model.graph.node] == ["Identity"]
    session = create_session(PROBE_MODEL, threads=1)
    x = np.array([1.5], dtype=np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x)


def test_cpu_session_runs_and_report_says_cpu(tmp_path: Path) -> None:
    path = _double_model(tmp_path / "double.onnx")
    session = create_session(path, resolve_providers(["cpu"]), threads=1)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], 2 * x)
    report = report_providers(["cpu"], session)
    assert report.used == CPU
    assert report.active == (CPU,)
    assert report.fell_back is False
    assert report.skipped == ()
    assert report.describe() == f"execution provider: {CPU} (asked {CPU})"


@pytest.mark.skipif(GPU_HERE, reason="this ONNX Runtime build has CUDA")
def test_cuda_first_falls_back_to_cpu_and_says_so(tmp_path: Path) -> None:
    path = _double_model(tmp_path / "double.onnx")
    report = report_providers(["cuda", "cpu"], path)
    assert report.requested == (CUDA, CPU)
    assert report.used == CPU
    assert report.fell_back is True
    assert report.skipped == ((CUDA, "not in this ONNX Runtime build"),)
    assert report.describe() == (
        f"execution provider: {CPU} (asked {CUDA} > {CPU}); "
        f"fell back past {CUDA}: not in this ONNX Runtime build"
    )


@pytest.mark.skipif(GPU_HERE, reason="this ONNX Runtime build has CUDA")
def test_default_order_on_the_probe_model_with_tensorrt_options(tmp_path: Path) -> None:
    report = report_providers(engine_cache_dir=tmp_path, fp16=True)
    assert report.requested == DEFAULT_ORDER
    assert report.used == CPU
    assert [name for name, _ in report.skipped] == [TENSORRT, CUDA, OPENVINO]
    assert report.in_build == tuple(ort.get_available_providers())


def test_create_session_drops_options_of_providers_not_in_the_build(tmp_path: Path) -> None:
    path = _double_model(tmp_path / "double.onnx")
    order = resolve_providers(["tensorrt", "cpu"])
    options = options_by_provider(order, tmp_path / "engines", fp16=True)
    session = create_session(path, order, threads=1, provider_options=options)
    assert session.get_providers()[-1] == CPU
    x = np.ones((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], 2 * x)
    assert session.get_provider_options()[CPU] == {}
