"""Every cut of five zoo architectures: found where the architecture says, and head then tail
computes what the full model computes.

Chains (AlexNet, VGG16) cut after every layer; MobileNetV2 cuts inside its plain blocks but
only after the add of a residual one; GoogLeNet (four parallel branches a block) and
DenseNet121 (each layer reads the concatenation of all before it) cut only between blocks.
The cuts ``analyze`` finds are also checked against a brute-force search: a tensor is a cut
exactly when blocking it disconnects the output from the input.

Sensitivity. With torchvision's random initialization and batch norm's running statistics
left at (0, 1), activations vanish with depth: MobileNetV2's logits are ~3e-9, GoogLeNet's
equal the classifier bias to float32 precision whatever the input, so any tail would match.
Each batch norm therefore gets the statistics of a random batch (weights stay random), the
tolerance is relative to the output's scale, and the test first checks that two inputs give
outputs far further apart than that tolerance.

Speed. Extracting sub-models of the exported model as is costs ~3.8 s a cut for VGG16
(measured on 2 cores: every head or tail copies, serializes and parses its share of the
550 MB of weights), ~2.5 min for its 39 cuts. So each model's weights are moved once to an
ONNX external-data file (``weights.bin``); the graph analyzed and extracted is the same, its
initializers only point into that file, and every head and tail is a small ``.onnx`` beside
it that ONNX Runtime loads the real weights for. That makes a VGG16 cut ~0.5 s, mostly
ONNX Runtime loading weights. The input stays 3x224x224: the time goes to weights, which a
smaller input would not shrink, and the adaptive pools of AlexNet (6x6) and VGG16 (7x7) export
only for a feature map that is a multiple of their output, which needs about 224 at least.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from torch import nn

from edgesplit.onnxrt import create_session
from partitioner.export import export_onnx, resolve_model
from partitioner.extract import CutPlan, Extractor, SegmentPlan, plan_cuts
from partitioner.graph import GraphAnalysis, analyze
from partitioner.models import FINAL_OUTPUT, ModelSpec

pytestmark = pytest.mark.slow

# Float32 sub-models run the same kernels on the same values; differences come
# only from graph optimizations applied differently to each sub-model. The absolute
# tolerance is this fraction of the largest |output|.
ATOL = 1e-4
RTOL = 1e-4
BATCH = 2
MODELS = ("alexnet", "vgg16", "mobilenet_v2", "googlenet", "densenet121")


@dataclass(frozen=True)
class Exported:
    """A zoo model exported to ONNX, its weights moved to one external-data file."""

    spec: ModelSpec
    onnx_path: Path
    model: onnx.ModelProto
    analysis: GraphAnalysis
    split_dir: Path


def _export(name: str, workdir: Path) -> Exported:
    spec = resolve_model(name)  # random weights (seed 0), batch norms calibrated by the zoo
    path = export_onnx(spec, workdir / f"{name}.onnx")
    split_dir = workdir / "split"
    split_dir.mkdir()
    onnx.save_model(
        onnx.load(path),
        split_dir / "model.onnx",
        save_as_external_data=True,
        location="weights.bin",
    )
    model = onnx.load(split_dir / "model.onnx", load_external_data=False)
    return Exported(spec, path, model, analyze(model, FINAL_OUTPUT), split_dir)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Exported]]:
    """Export each model once for all the tests of this module; delete the files after."""
    cache: dict[str, Exported] = {}

    def get(name: str) -> Exported:
        if name not in cache:
            cache[name] = _export(name, tmp_path_factory.mktemp(name))
        return cache[name]

    yield get
    for exported in cache.values():
        shutil.rmtree(exported.onnx_path.parent, ignore_errors=True)


def _input_derived(model: onnx.ModelProto, input_name: str) -> list[onnx.NodeProto]:
    """The nodes that read the input, directly or not, in graph order (weights-only ones drop)."""
    derived = {input_name}
    nodes = []
    for node in model.graph.node:
        if any(name in derived for name in node.input):
            nodes.append(node)
            derived.update(name for name in node.output if name)
    return nodes


def _crossing_tensors(model: onnx.ModelProto, input_name: str, output_name: str) -> list[str]:
    """Brute force: the tensors that, once blocked, leave the output unreachable from the input."""
    nodes = _input_derived(model, input_name)
    successors: dict[str, set[str]] = {}
    for node in nodes:
        for name in node.input:
            successors.setdefault(name, set()).update(out for out in node.output if out)

    def reaches_output(blocked: str) -> bool:
        seen, stack = {input_name}, [input_name]
        while stack:
            for nxt in successors.get(stack.pop(), ()):
                if nxt != blocked and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return output_name in seen

    tensors = [input_name, *(out for node in nodes for out in node.output if out)]
    return [t for t in tensors if t in (input_name, output_name) or not reaches_output(t)]


def _run(
    sub: onnx.ModelProto, path: Path, name_in: str, name_out: str, x: np.ndarray
) -> np.ndarray:
    """Run a sub-model saved beside the weights file; check its boundary names."""
    onnx.save_model(sub, path)  # the initializers stay references into weights.bin
    session = create_session(path)
    assert [i.name for i in session.get_inputs()] == [name_in], path.name
    assert [o.name for o in session.get_outputs()] == [name_out], path.name
    return session.run(None, {name_in: x})[0]


def _split_run(
    exported: Exported,
    extractor: Extractor,
    segments: dict[str, SegmentPlan],
    cut: CutPlan,
    x: np.ndarray,
) -> np.ndarray:
    """Run the head (input -> cut) then the tail (cut -> output) of one cut."""
    analysis, value = exported.analysis, x
    if cut.head:
        (segment,) = cut.head  # no exits: one segment from the input to the cut
        head = extractor.segment(segments[segment])
        path = exported.split_dir / f"head_{cut.id}.onnx"
        value = _run(head, path, analysis.input_name, cut.name, value)
    if cut.has_tail:
        path = exported.split_dir / f"tail_{cut.id}.onnx"
        value = _run(extractor.tail(cut), path, cut.name, analysis.output_name, value)
    return value


@pytest.mark.parametrize("name", MODELS)
def test_every_cut_composes_to_the_full_model(name: str, zoo: Callable[[str], Exported]) -> None:
    exported = zoo(name)
    analysis = exported.analysis
    cuts, segments = plan_cuts(analysis)
    extractor = Extractor(exported.model, analysis)
    x = np.random.default_rng(7).standard_normal((BATCH, *exported.spec.input_shape), np.float32)
    full = create_session(exported.onnx_path)
    reference = full.run([analysis.output_name], {analysis.input_name: x})[0]
    atol = ATOL * float(np.max(np.abs(reference)))
    # Otherwise a tail that ignored its input, or read the wrong tensor, could still match.
    spread = float(np.max(np.abs(reference[0] - reference[1])))
    assert spread > 100 * atol, f"{name}: two inputs give outputs only {spread:.3g} apart"

    for cut in cuts:
        output = _split_run(exported, extractor, segments, cut, x)
        assert output.shape == reference.shape, cut.id
        diff = float(np.max(np.abs(output - reference)))
        assert np.allclose(output, reference, rtol=RTOL, atol=atol), (
            f"{name} cut {cut.id} ({cut.tensor}): head then tail differs from the full model "
            f"by max_abs_diff={diff:.3g} (atol={atol:.3g})"
        )


@pytest.mark.parametrize("name", MODELS)
def test_cuts_are_exactly_the_tensors_every_path_crosses(
    name: str, zoo: Callable[[str], Exported]
) -> None:
    exported = zoo(name)
    analysis = exported.analysis
    expected = _crossing_tensors(exported.model, analysis.input_name, analysis.output_name)
    assert [c.tensor for c in analysis.cuts] == expected


def _producers(analysis: GraphAnalysis, prefix: str) -> list[str]:
    """The nodes under a module path (``/features/denseblock1/``) whose output is a cut."""
    return [c.producer for c in analysis.cuts if c.producer.startswith(prefix)]


def _nodes(exported: Exported, prefix: str) -> list[str]:
    """The input-derived nodes under a module path, in graph order."""
    nodes = _input_derived(exported.model, exported.analysis.input_name)
    return [n.name for n in nodes if n.name.startswith(prefix)]


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_chains_cut_after_every_layer(name: str, zoo: Callable[[str], Exported]) -> None:
    exported = zoo(name)
    producers = [c.producer for c in exported.analysis.cuts[1:]]
    assert producers == _nodes(exported, "")
    # The input, then one cut per layer (dropout vanishes in eval), and forward's flatten.
    layers = [
        m
        for m in exported.spec.module.modules()
        if not list(m.children()) and not isinstance(m, nn.Dropout)
    ]
    assert len(exported.analysis.cuts) == 1 + len(layers) + 1
    assert len(exported.analysis.cuts) == {"alexnet": 21, "vgg16": 39}[name]


def test_mobilenet_v2_cuts_inside_plain_blocks_and_only_after_residual_adds(
    zoo: Callable[[str], Exported],
) -> None:
    from torchvision.models.mobilenetv2 import InvertedResidual

    exported = zoo("mobilenet_v2")
    analysis = exported.analysis
    features = exported.spec.module.get_submodule("features")
    blocks = [
        (index, block)
        for index, block in features.named_children()
        if isinstance(block, InvertedResidual)
    ]
    assert len(blocks) == 17
    assert sum(block.use_res_connect for _, block in blocks) == 10
    for index, block in blocks:
        prefix = f"/features/features.{index}/"
        if block.use_res_connect:
            assert _producers(analysis, prefix) == [f"{prefix}Add"], prefix
        else:
            assert _producers(analysis, prefix) == _nodes(exported, prefix), prefix
    # input; features.0 conv, clip; features.1 dw conv, clip, project conv; six more plain
    # blocks with expand conv, clip, dw conv, clip, project conv; ten residual adds;
    # features.18 conv, clip; pool, flatten, logits: 1 + 2 + 3 + 30 + 10 + 2 + 3.
    assert len(analysis.cuts) == 51


def test_googlenet_cuts_between_inception_blocks_never_inside(
    zoo: Callable[[str], Exported],
) -> None:
    from torchvision.models.googlenet import Inception

    exported = zoo("googlenet")
    analysis = exported.analysis
    inceptions = [
        name
        for name, child in exported.spec.module.named_children()
        if isinstance(child, Inception)
    ]
    assert len(inceptions) == 9
    tensors = [c.tensor for c in analysis.cuts]
    for name in inceptions:
        prefix = f"/{name}/"
        assert len(_nodes(exported, prefix)) > 10, prefix  # four branches of convs
        # The block's output is a cut, nothing inside it is, and so consecutive blocks
        # always have a cut between them.
        assert _producers(analysis, prefix) == [f"{prefix}Concat"], prefix
        assert f"{prefix}Concat_output_0" in tensors
    # input; conv1..3 conv + relu each; maxpool1..4; nine inception concats; avgpool,
    # flatten, fc: 1 + 6 + 4 + 9 + 3.
    assert len(analysis.cuts) == 23


def test_densenet121_cuts_between_dense_blocks_never_inside(
    zoo: Callable[[str], Exported],
) -> None:
    from torchvision.models.densenet import _DenseBlock, _Transition

    exported = zoo("densenet121")
    analysis = exported.analysis
    features = exported.spec.module.get_submodule("features")
    blocks = [name for name, child in features.named_children() if isinstance(child, _DenseBlock)]
    transitions = [
        name for name, child in features.named_children() if isinstance(child, _Transition)
    ]
    assert len(blocks) == 4 and len(transitions) == 3
    for name in blocks:
        prefix = f"/features/{name}/"
        # Every dense layer concatenates all before it; only the block's own last concat,
        # which every later layer's input stays live until, is a cut.
        inner_concats = [n for n in _nodes(exported, prefix) if n.endswith("/Concat")]
        assert len(inner_concats) > 6, prefix
        assert _producers(analysis, prefix) == [f"{prefix}Concat"], prefix
    for name in transitions:
        prefix = f"/features/{name}/"
        # norm, relu, conv, pool: a chain, cut after each.
        assert _producers(analysis, prefix) == _nodes(exported, prefix), prefix
        assert len(_nodes(exported, prefix)) == 4, prefix
    # input; conv0 (norm0 folded in), relu0, pool0; four blocks; three transitions of four;
    # norm5, relu, pool, flatten, logits: 1 + 3 + 4 + 12 + 5.
    assert len(analysis.cuts) == 25
