"""Every generated config.pbtxt is a valid Triton ModelConfig that matches its cut and its model.

Parsed with Triton's own protobuf (``tritonclient.grpc.model_config_pb2``),
which rejects unknown fields, bad enums and syntax errors; what it cannot
see (wrong names, dims, batching) is asserted against the manifest and the
tail's ONNX graph. Only a real server catches the rest:
``tests/integration/test_triton_server.py``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from edgesplit.bundle import Bundle, Cut, TensorSpec
from edgesplit.errors import BundleError, ModelError
from partitioner.triton import python_backend_repository, tail_config, to_pbtxt

BUNDLES = ["untrained_bundle", "branchynet_bundle", "resnet18_bundle"]


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def _tail_configs(bundle: Bundle) -> dict[str, mc.ModelConfig]:
    return {
        path.parent.name: parse(path.read_text())
        for path in sorted((bundle.root / "cloud").glob("*/config.pbtxt"))
    }


@pytest.mark.parametrize("fixture", BUNDLES)
def test_one_config_per_tail_and_no_other_model(fixture: str, request) -> None:
    bundle: Bundle = request.getfixturevalue(fixture)
    tails = {c.tail for c in bundle.manifest.cuts if c.tail is not None}
    assert {p.name for p in (bundle.root / "cloud").iterdir()} == tails
    assert set(_tail_configs(bundle)) == tails
    # Every cut but the edge-only one (the final output) has a tail.
    assert [c.tail is None for c in bundle.manifest.cuts] == [
        c.kind == "output" for c in bundle.manifest.cuts
    ]


@pytest.mark.parametrize("fixture", BUNDLES)
def test_every_config_matches_its_cut(fixture: str, request) -> None:
    bundle: Bundle = request.getfixturevalue(fixture)
    m = bundle.manifest
    configs = _tail_configs(bundle)
    for cut in m.cuts:
        if cut.tail is None:
            continue
        config = configs[cut.tail]
        assert config.name == cut.tail, cut.id
        assert config.platform == "onnxruntime_onnx" and config.backend == "", cut.id
        assert config.max_batch_size > 0, cut.id
        assert config.HasField("dynamic_batching"), cut.id
        assert config.dynamic_batching.max_queue_delay_microseconds > 0, cut.id
        assert not config.HasField("sequence_batching") and not config.ensemble_scheduling.step
        # One input per tensor of the cut, in order.
        assert [i.name for i in config.input] == list(cut.names), cut.id
        for declared, tensor in zip(config.input, cut.tensors, strict=True):
            # No batch dimension in dims: Triton adds it because max_batch_size > 0.
            assert tuple(declared.dims) == tensor.shape, cut.id
            assert tensor.dtype == "float32" and declared.data_type == mc.TYPE_FP32, cut.id
            assert not declared.HasField("reshape"), cut.id
        (only_output,) = config.output
        assert only_output.name == m.model.output, cut.id
        assert tuple(only_output.dims) == m.edge_only.shape, cut.id
        assert only_output.data_type == mc.TYPE_FP32, cut.id
    if fixture == "resnet18_bundle":
        assert any(len(c.tensors) > 1 for c in m.cuts), "no tail with several inputs was checked"


@pytest.mark.parametrize("fixture", ["untrained_bundle", "resnet18_bundle"])
def test_every_config_matches_its_onnx_graph(fixture: str, request) -> None:
    """What Triton's ONNX Runtime backend checks at load: names, dims and a free batch dim."""
    bundle: Bundle = request.getfixturevalue(fixture)
    configs = _tail_configs(bundle)
    for cut in bundle.manifest.cuts:
        if cut.tail is None:
            continue
        config = configs[cut.tail]
        graph = onnx.load(str(bundle.tail_path(cut))).graph
        for declared, value in ((config.input, graph.input), (config.output, graph.output)):
            assert [t.name for t in declared] == [v.name for v in value], cut.id
            for tensor, info in zip(declared, value, strict=True):
                batch, *dims = info.type.tensor_type.shape.dim
                assert batch.dim_param and not batch.HasField("dim_value"), (cut.id, batch)
                assert [d.dim_value for d in dims] == list(tensor.dims), cut.id
                assert info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, cut.id


# --- the parser bites ---------------------------------------------------------------------


@pytest.fixture
def good_text() -> str:
    return to_pbtxt(
        tail_config("m__tail__c01", [TensorSpec("c01", (4, 2))], [TensorSpec("y", (3,))])
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max_batch_size", "max_batch"),  # unknown field
        ("dynamic_batching", "dynamic_batcher"),  # unknown message field
        ("TYPE_FP32", "TYPE_FLOAT32"),  # bad enum (the ONNX spelling, not Triton's)
        ("max_batch_size: 16", 'max_batch_size: "16"'),  # string for an int
        ("dims: [ 4, 2 ]", "dims: [ 4, 2"),  # syntax
        ('name: "c01"', "name: c01"),  # unquoted string
        ("  max_queue_delay_microseconds: 1000\n}", "  max_queue_delay_microseconds: 1000\n"),
    ],
)
def test_the_parser_rejects_a_broken_config(good_text: str, old: str, new: str) -> None:
    assert parse(good_text).max_batch_size == 16
    assert old in good_text
    with pytest.raises(text_format.ParseError):
        parse(good_text.replace(old, new, 1))


def test_a_generated_config_is_exactly_what_was_built(good_text: str) -> None:
    expected = mc.ModelConfig(
        name="m__tail__c01",
        platform="onnxruntime_onnx",
        max_batch_size=16,
        input=[mc.ModelInput(name="c01", data_type=mc.TYPE_FP32, dims=[4, 2])],
        output=[mc.ModelOutput(name="y", data_type=mc.TYPE_FP32, dims=[3])],
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=1000),
    )
    assert parse(good_text) == expected


# --- tail_config and to_pbtxt edge cases ----------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        'odd "quoted" name',
        "back\\slash\\",
        "new\nline and\ttab\r",
        "bell\x07 and del\x7f",
        "ünïcödé/層:0",
        "",
    ],
)
def test_names_survive_quoting(name: str) -> None:
    config = parse(
        to_pbtxt(tail_config(name or "m", [TensorSpec(name, (2,))], [TensorSpec(name, (1,))]))
    )
    assert config.input[0].name == name
    assert config.output[0].name == name
    assert config.name == (name or "m")


def test_one_value_per_sample_gets_dims_1_and_an_empty_reshape() -> None:
    config = parse(to_pbtxt(tail_config("m", [TensorSpec("x", ())], [TensorSpec("score", ())])))
    for tensor in (config.input[0], config.output[0]):
        assert list(tensor.dims) == [1]
        assert tensor.HasField("reshape") and list(tensor.reshape.shape) == []


def test_several_tensors_keep_their_order_and_types() -> None:
    inputs = [TensorSpec("a", (3,), "float16"), TensorSpec("b", (1, 2), "int64")]
    outputs = [TensorSpec("z", (5,), "uint8"), TensorSpec("y", (1,), "bool")]
    config = parse(to_pbtxt(tail_config("m", inputs, outputs, max_batch_size=4)))
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("a", mc.TYPE_FP16, [3]),
        ("b", mc.TYPE_INT64, [1, 2]),
    ]
    assert [(t.name, t.data_type) for t in config.output] == [
        ("z", mc.TYPE_UINT8),
        ("y", mc.TYPE_BOOL),
    ]
    assert config.max_batch_size == 4


def test_what_triton_cannot_take_is_refused_when_built() -> None:
    with pytest.raises(ModelError, match="'s'.*complex64"):
        tail_config("m", [TensorSpec("s", (2,), "complex64")], [TensorSpec("y", (1,))])
    with pytest.raises(ModelError, match="max_batch_size=0"):
        tail_config("m", [TensorSpec("x", (2,))], [TensorSpec("y", (1,))], max_batch_size=0)


def test_to_pbtxt_writes_every_kind_of_value() -> None:
    text = to_pbtxt(
        {
            "name": "m",
            "backend": "python",
            "max_batch_size": 8,
            "dynamic_batching": {
                "preferred_batch_size": [2, 4],
                "preserve_ordering": True,
                "max_queue_delay_microseconds": 100,
            },
            "instance_group": [{"kind": "KIND_CPU", "count": 2}, {"kind": "KIND_MODEL"}],
            "parameters": [{"key": "k", "value": {"string_value": "v"}}],
            "model_warmup": [],  # an empty list is left out
            "response_cache": {},  # an empty message is still set
        }
    )
    config = parse(text)
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.dynamic_batching.preserve_ordering is True
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (mc.ModelInstanceGroup.KIND_CPU, 2),
        (mc.ModelInstanceGroup.KIND_MODEL, 0),
    ]
    assert config.parameters["k"].string_value == "v"
    assert not config.model_warmup
    assert config.HasField("response_cache")


# --- the python-backend copy of the repository -------------------------------------------


def _cut(bundle: Bundle, tail: str) -> Cut:
    return next(c for c in bundle.manifest.cuts if c.tail == tail)


def test_python_backend_repository_serves_the_same_models(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    out = tmp_path / "repository"
    names = python_backend_repository(untrained_bundle, out, threads=1)
    assert names == [c.tail for c in untrained_bundle.manifest.cuts if c.tail is not None]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    stock = _tail_configs(untrained_bundle)
    for name in names:
        config = parse((out / name / "config.pbtxt").read_text())
        assert config.backend == "python" and config.platform == ""
        assert [(g.kind, g.count) for g in config.instance_group] == [
            (mc.ModelInstanceGroup.KIND_CPU, 1)
        ]
        assert config.parameters["intra_op_thread_count"].string_value == "1"
        # Everything else is the stock config's, field for field.
        config.backend, config.platform = "", "onnxruntime_onnx"
        del config.instance_group[:]
        config.parameters.clear()
        assert config == stock[name]
        model = (out / name / "1" / "model.onnx").read_bytes()
        assert model == untrained_bundle.tail_path(_cut(untrained_bundle, name)).read_bytes()
        source = (out / name / "1" / "model.py").read_text()
        compile(source, str(out / name / "1" / "model.py"), "exec")
        assert "class TritonPythonModel" in source


def test_python_backend_repository_refuses_a_used_directory_or_a_foreign_config(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "stale").mkdir()
    with pytest.raises(BundleError, match="not an empty directory"):
        python_backend_repository(untrained_bundle, used)

    copy = Bundle(tmp_path / "bundle", untrained_bundle.manifest)
    shutil.copytree(untrained_bundle.root / "cloud", copy.root / "cloud")
    tail = next(c.tail for c in copy.manifest.cuts if c.tail is not None)
    config = copy.root / "cloud" / tail / "config.pbtxt"
    config.write_text(config.read_text().replace('platform: "onnxruntime_onnx"', 'backend: "x"'))
    with pytest.raises(BundleError, match=rf"{tail}/config.pbtxt: not the config"):
        python_backend_repository(copy, tmp_path / "out")

    edge_only = replace(copy.manifest, cuts=tuple(c for c in copy.manifest.cuts if c.tail is None))
    with pytest.raises(BundleError, match="no tail"):
        python_backend_repository(Bundle(copy.root, edge_only), tmp_path / "out2")
