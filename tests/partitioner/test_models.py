from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgesplit.errors import ModelError
from partitioner.datasets import load_digits_task
from partitioner.export import export_onnx, resolve_model, verify_onnx
from partitioner.models import (
    BRANCHYNET_OUTPUTS,
    MODEL_NAMES,
    EarlyExitCNN,
    ModelSpec,
    build_model,
    load_factory,
)
from partitioner.training import TrainResult, default_cache_dir, evaluate, train_branchynet

FACTORIES = "tests.partitioner.factories"
BIG = pytest.mark.slow


# --- the zoo -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "branchynet-untrained",
        "alexnet",
        "resnet18",
        "mobilenet_v2",
        pytest.param("vgg16", marks=BIG),
        pytest.param("resnet50", marks=BIG),
    ],
)
def test_zoo_model_forward_has_declared_outputs(name: str) -> None:
    spec = build_model(name)
    assert spec.name == name
    assert not spec.module.training
    with torch.no_grad():
        out = spec.module(torch.zeros((2, *spec.input_shape)))
    outputs = (out,) if isinstance(out, torch.Tensor) else out
    assert len(outputs) == len(spec.output_names)
    assert spec.output_names[0] == "logits"
    classes = 10 if spec.class_names else 1000
    assert all(o.shape == (2, classes) for o in outputs)


def test_model_names_cover_the_zoo() -> None:
    assert set(MODEL_NAMES) == {
        "branchynet",
        "branchynet-untrained",
        "alexnet",
        "vgg16",
        "resnet18",
        "resnet50",
        "mobilenet_v2",
        "googlenet",
        "densenet121",
    }


def test_branchynet_spec_names_its_exits() -> None:
    spec = build_model("branchynet-untrained")
    assert spec.input_shape == (1, 32, 32)
    assert spec.output_names == ("logits", "exit_1", "exit_2")
    assert spec.exit_names == ("exit_1", "exit_2")
    assert spec.class_names == tuple("0123456789")


def test_exits_are_cheaper_than_the_backbone() -> None:
    model = EarlyExitCNN()

    def params(*modules: nn.Module) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    full = params(model.block1, model.block2, model.block3, model.classifier)
    assert params(model.block1, model.exit_1) < params(model.block1, model.block2, model.exit_2)
    assert params(model.block1, model.block2, model.exit_2) < full / 2


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("resnet18", seed=0).module.state_dict()
    b = build_model("resnet18", seed=0).module.state_dict()
    c = build_model("resnet18", seed=1).module.state_dict()
    assert torch.equal(torch.rand(1), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match="unknown model name='resnet19'") as info:
        build_model("resnet19")
    assert all(name in str(info.value) for name in MODEL_NAMES)


def test_spec_validation() -> None:
    module = nn.Linear(2, 2)
    with pytest.raises(ModelError, match="input_shape"):
        ModelSpec("m", module, (0, 2), ("logits",))
    with pytest.raises(ModelError, match="unique"):
        ModelSpec("m", module, (2,), ("logits", "logits"))
    with pytest.raises(ModelError, match="must follow the final output"):
        ModelSpec("m", module, (2,), ("logits", "exit_1"), exit_names=("logits",))
    with pytest.raises(ModelError, match="torch.nn.Module"):
        ModelSpec("m", "not a module", (2,), ("logits",))  # type: ignore[arg-type]


# --- factories -----------------------------------------------------------------------


def test_factory_returning_a_module_needs_and_uses_the_input_shape() -> None:
    spec = load_factory(f"{FACTORIES}:tiny", (1, 8, 8))
    assert (spec.name, spec.input_shape, spec.output_names) == ("tiny", (1, 8, 8), ("logits",))
    assert spec.exit_names == () and not spec.module.training
    with pytest.raises(ModelError, match="give its input shape"):
        load_factory(f"{FACTORIES}:tiny")


def test_factory_module_with_tuple_output_gets_exit_names() -> None:
    spec = load_factory(f"{FACTORIES}:tiny_with_exit", (1, 8, 8))
    assert spec.output_names == ("logits", "exit_1")
    assert spec.exit_names == ("exit_1",)


def test_factory_returning_a_spec() -> None:
    spec = load_factory(f"{FACTORIES}:tiny_spec")
    assert spec.name == "tiny-spec" and spec.class_names == ("a", "b", "c")
    assert load_factory(f"{FACTORIES}:tiny_spec", (1, 8, 8)).input_shape == (1, 8, 8)
    with pytest.raises(ModelError, match="does not match"):
        load_factory(f"{FACTORIES}:tiny_spec", (3, 8, 8))


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_colon_here", "not of the form 'package.module:factory'"),
        (":tiny", "not of the form"),
        (f"{FACTORIES}:", "not of the form"),
        (f"{FACTORIES}:tiny:extra", "not of the form"),
        ("no_such_pkg.models:build", "cannot import module 'no_such_pkg.models'"),
        (f"{FACTORIES}:missing", f"module '{FACTORIES}' has no attribute 'missing'"),
        (f"{FACTORIES}:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not callable"),
        (f"{FACTORIES}:returns_string", "returned a str; expected a torch.nn.Module"),
        (f"{FACTORIES}:returns_dict_output", "forward returned dict"),
    ],
)
def test_bad_factories_raise_model_error(ref: str, message: str) -> None:
    with pytest.raises(ModelError, match=message.replace("(", r"\(")):
        load_factory(ref, (1, 8, 8))


def test_factory_forward_failure_names_the_shape() -> None:
    with pytest.raises(ModelError, match=r"forward on input_shape=\(3, 8, 8\) failed"):
        load_factory(f"{FACTORIES}:tiny", (3, 8, 8))


def test_resolve_model_accepts_zoo_names_and_factories() -> None:
    assert resolve_model("branchynet-untrained").name == "branchynet-untrained"
    assert resolve_model(f"{FACTORIES}:tiny", (1, 8, 8)).name == "tiny"
    with pytest.raises(ModelError, match="package.module:factory"):
        resolve_model("nope")


# --- ONNX export ---------------------------------------------------------------------


def _run_onnx(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})


@pytest.fixture(scope="module")
def branchynet_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, Path]:
    spec = build_model("branchynet-untrained")
    return spec, export_onnx(spec, tmp_path_factory.mktemp("onnx") / "branchynet.onnx")


def test_export_has_named_outputs_and_dynamic_batch(
    branchynet_onnx: tuple[ModelSpec, Path],
) -> None:
    _, path = branchynet_onnx
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == list(BRANCHYNET_OUTPUTS)
    for value in (*graph.input, *graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    names = [node.name for node in graph.node]
    assert any(n.startswith("/block2/") for n in names)  # module paths survive
    assert not any(node.op_type == "BatchNormalization" for node in graph.node)  # folded


@pytest.mark.parametrize("batch", [1, 3])
def test_export_matches_torch_at_any_batch(
    branchynet_onnx: tuple[ModelSpec, Path], batch: int
) -> None:
    spec, path = branchynet_onnx
    x = np.random.default_rng(batch).standard_normal((batch, 1, 32, 32), dtype=np.float32)
    got = _run_onnx(path, x)
    with torch.no_grad():
        want = spec.module(torch.from_numpy(x))
    for g, w in zip(got, want, strict=True):
        assert g.shape == (batch, 10)
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=1e-4)


def test_export_leaves_no_temporary_files(branchynet_onnx: tuple[ModelSpec, Path]) -> None:
    _, path = branchynet_onnx
    assert sorted(p.name for p in path.parent.iterdir()) == ["branchynet.onnx"]


def test_export_of_a_factory_model(tmp_path: Path) -> None:
    spec = load_factory(f"{FACTORIES}:tiny_with_exit", (1, 8, 8))
    path = export_onnx(spec, tmp_path / "sub" / "tiny.onnx")
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["logits", "exit_1"]


def test_export_rejects_wrong_output_count(tmp_path: Path) -> None:
    spec = load_factory(f"{FACTORIES}:tiny", (1, 8, 8))
    wrong = ModelSpec("tiny", spec.module, spec.input_shape, ("logits", "exit_1"))
    with pytest.raises(ModelError, match="forward returns 1 outputs"):
        export_onnx(wrong, tmp_path / "tiny.onnx")
    assert not list(tmp_path.iterdir())


def test_verify_detects_a_different_model(branchynet_onnx: tuple[ModelSpec, Path]) -> None:
    _, path = branchynet_onnx
    other = build_model("branchynet-untrained", seed=1)
    with pytest.raises(ModelError, match="differs from torch"):
        verify_onnx(other, path)


@BIG
def test_export_resnet18_matches_torch(tmp_path: Path) -> None:
    spec = build_model("resnet18")
    path = export_onnx(spec, tmp_path / "resnet18.onnx")
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32)
    (got,) = _run_onnx(path, x)
    with torch.no_grad():
        want = spec.module(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 1000)
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))


# --- training ------------------------------------------------------------------------

SMALL = {"epochs": 2, "n_train": 3000}


@BIG
def test_training_is_cached_deterministic_and_orders_the_exits(tmp_path: Path) -> None:
    seen: list[int] = []
    first = train_branchynet(tmp_path / "a", **SMALL, progress=lambda e, n, m: seen.append(e))
    assert not first.cached and seen == [1, 2]
    assert first.weights_path.parent == tmp_path / "a"
    assert first.weights_path.name.startswith("branchynet-")
    sidecar = json.loads(first.weights_path.with_suffix(".json").read_text())
    assert sidecar["accuracy"] == first.accuracy
    acc = first.accuracy
    assert set(acc) == {"logits", "exit_1", "exit_2"}
    assert acc["exit_1"] < acc["logits"]

    start = time.perf_counter()
    hit = train_branchynet(tmp_path / "a", **SMALL)
    assert time.perf_counter() - start < 1.0
    assert hit == TrainResult(first.weights_path, acc, first.train_seconds, True, first.config)

    again = train_branchynet(tmp_path / "b", **SMALL)
    assert again.accuracy == acc  # same config -> same weights -> same accuracies
    a = torch.load(first.weights_path, weights_only=True)
    b = torch.load(again.weights_path, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)

    model = EarlyExitCNN()
    model.load_state_dict(a)
    assert evaluate(model, load_digits_task("test")) == acc
    assert not torch.are_deterministic_algorithms_enabled()  # restored after training


def test_other_config_gets_another_cache_key(tmp_path: Path) -> None:
    from partitioner.training import TrainConfig

    assert TrainConfig(epochs=2).cache_key() != TrainConfig(epochs=3).cache_key()
    assert TrainConfig(epochs=2).cache_key() == TrainConfig(epochs=2).cache_key()


def test_unwritable_cache_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match="set EDGESPLIT_CACHE to a writable folder"):
        train_branchynet(blocker / "cache", **SMALL)


def test_default_cache_dir_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGESPLIT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("EDGESPLIT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "edgesplit"


@BIG
def test_build_trained_branchynet() -> None:
    # Shares the user cache with the suite's branchynet bundle fixture: trains once.
    spec = build_model("branchynet")
    result = train_branchynet(default_cache_dir())
    assert result.cached
    accuracy = result.accuracy
    assert evaluate(spec.module, load_digits_task("test")) == accuracy
    assert accuracy["exit_1"] < accuracy["exit_2"] < accuracy["logits"]
    assert accuracy["logits"] >= 0.9
