"""The small BYOM zoo models, each opened as a user's ONNX file, partitioned, and split for real.

For each of the seven small zoo graphs (several inputs, several outputs, fixed batch,
converter-style names; see :mod:`partitioner.byom_zoo`) the file is opened with
``onnx_source`` and partitioned once for the module with quick settings and no pruning,
so every cut offered is in the bundle. Then:

- at every cut, the head segments run from the model's inputs, each cut tensor goes
  through the wire's raw codec, the tail runs in ONNX Runtime, and with the outputs
  the head kept on the edge this gives what the original file gives, every output;
- the cuts cover the model: no stretch of a quarter of its compute without one, and
  the models whose skips, branches or second input cross every point in the middle
  get cuts of several tensors;
- the manifest's fidelity says the same: raw is exact, int8 is measured;
- one request per model goes through a real cloud node (real ZeroMQ sockets, ONNX
  Runtime tails) at the cut of the most tensors, and is answered with every output.

Only the codecs these tests read (raw and int8) are measured, on 8 samples: with all
nine codecs on 32 the partitioning alone takes about three minutes on 2 cores; this way
the whole module takes about 20 s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import wire
from edge_node.head import HeadRunner
from edge_node.node import EdgeConfig, EdgeNode
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Cut, segment_chain
from edgesplit.onnxrt import create_session
from offload_policy import Decision, FixedPolicy
from partitioner.byom_zoo import TEST_MODELS, ZOO, sample_inputs, write_zoo_model
from partitioner.partition import PartitionConfig, partition
from partitioner.profile import ProfileConfig
from partitioner.profiling import Repetitions
from partitioner.pruning import PruneConfig
from partitioner.sources import onnx_source
from tests.conftest import RunningCloud

pytestmark = pytest.mark.slow

MODELS = TEST_MODELS

SEVERAL_TENSORS = ("fpn_detector", "unet", "deeplab", "vit", "text_encoder")
"""Models where some point between input and output is crossed by several tensors only:
FPN laterals, U-Net and DeepLab skips, attention residuals, the text encoder's mask."""

SAMPLES = 3
RTOL = 1e-5
"""Split and whole run the same float32 kernels; they differ by rounding only (graph
optimizations fused differently), far below this share of an output's largest value."""

MAX_GAP = 0.25
CODECS = ("raw", "int8")

# What the cloud node accepts by default: a test tensor larger than this is a test bug.
LIMITS = wire.Limits()

CONFIG = PartitionConfig(
    profile=ProfileConfig(reps=Repetitions(1, 2), layers=False, codecs=CODECS, size_samples=8),
    prune=PruneConfig(enabled=False),
    fidelity_samples=8,
)


@dataclass(frozen=True)
class Partitioned:
    """A zoo model written to ONNX and partitioned into a bundle."""

    name: str
    onnx_path: Path
    bundle: Bundle


@pytest.fixture(scope="module", params=MODELS)
def zoo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Partitioned:
    name = request.param
    root = tmp_path_factory.mktemp(name)
    path = write_zoo_model(name, root / f"{name}.onnx")
    bundle = partition(onnx_source(path), root / "bundle", CONFIG)
    return Partitioned(name, path, bundle)


# --------------------------------------------------------------------------- helpers


def _rows(feeds: Mapping[str, np.ndarray], one_at_a_time: bool) -> list[dict[str, np.ndarray]]:
    """``feeds`` as one batch, or as batches of one row each."""
    if not one_at_a_time:
        return [dict(feeds)]
    count = len(next(iter(feeds.values())))
    return [{n: v[i : i + 1] for n, v in feeds.items()} for i in range(count)]


def _concat(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _whole(zoo: Partitioned, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every final output of the original file, run in ONNX Runtime (row by row where its
    batch is fixed to 1)."""
    session = create_session(zoo.onnx_path, threads=1)
    fixed = any(i.shape and i.shape[0] == 1 for i in session.get_inputs())
    outputs = list(zoo.bundle.manifest.model.outputs)
    parts = [
        dict(zip(outputs, session.run(outputs, feeds), strict=True))
        for feeds in _rows(inputs, fixed)
    ]
    return _concat(parts)


def _over_the_wire(values: Mapping[str, np.ndarray], codec: str) -> dict[str, np.ndarray]:
    """``values`` as the cloud decodes them after the edge encoded them with ``codec``."""
    decoded = {}
    for name, value in values.items():
        meta, payload = wire.encode_tensor(name, value, codec)
        decoded[name] = np.array(wire.decode_tensor(meta, bytes(payload), LIMITS))
    return decoded


def _split(
    bundle: Bundle,
    runner: HeadRunner,
    tails: dict[str, ort.InferenceSession],
    cut: Cut,
    feeds: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Every final output, the head run on the edge and the tail on the raw-coded cut."""
    manifest = bundle.manifest
    outputs = manifest.model.outputs
    head = runner.run(segment_chain(manifest, cut), feeds, None)
    if cut.tail is None:
        return head.tensors(outputs)
    if cut.id not in tails:
        tails[cut.id] = create_session(bundle.tail_path(cut), threads=1)
    tail = tails[cut.id]
    assert [i.name for i in tail.get_inputs()] == list(cut.names), cut.id
    tail_outputs = [o.name for o in tail.get_outputs()]
    assert sorted([*tail_outputs, *cut.edge_outputs]) == sorted(outputs), cut.id
    sent = _over_the_wire(head.tensors(cut.names), "raw")
    values = dict(zip(tail_outputs, tail.run(None, sent), strict=True))
    values.update(head.tensors(cut.edge_outputs))
    return {o: values[o] for o in outputs}


def _assert_close(
    got: Mapping[str, np.ndarray], whole: Mapping[str, np.ndarray], what: str
) -> None:
    assert set(got) == set(whole), f"{what}: outputs {sorted(got)}, expected {sorted(whole)}"
    for name, expected in whole.items():
        value = np.asarray(got[name])
        assert value.shape == expected.shape, f"{what} {name}: {value.shape} != {expected.shape}"
        scale = max(1.0, float(np.max(np.abs(expected))))
        diff = float(np.max(np.abs(value.astype(np.float64) - expected)))
        assert diff <= RTOL * scale, (
            f"{what}: output {name!r} differs from the whole model's by {diff:.3g} "
            f"(allowed {RTOL * scale:.3g})"
        )


# --------------------------------------------------------------------------- tests


def test_head_then_tail_is_the_whole_model_at_every_cut(zoo: Partitioned) -> None:
    manifest = zoo.bundle.manifest
    inputs = sample_inputs(zoo.name, SAMPLES)
    assert [i.name for i in manifest.model.inputs] == list(inputs)
    whole = _whole(zoo, inputs)
    # Inputs whose outputs differ by far more than the tolerance: otherwise a tail that
    # ignored what it was sent could match.
    for name, value in whole.items():
        spread = float(np.max(np.abs(value[0] - value[1])))
        assert spread > 10 * RTOL * max(1.0, float(np.max(np.abs(value)))), (name, spread)
    runner = HeadRunner(zoo.bundle, threads=1)
    tails: dict[str, ort.InferenceSession] = {}
    batches = _rows(inputs, manifest.model.fixed_batch)
    for cut in manifest.cuts:
        got = _concat([_split(zoo.bundle, runner, tails, cut, feeds) for feeds in batches])
        _assert_close(got, whole, f"{zoo.name} cut {cut.id} ({cut.describe_shape()})")


def test_the_kept_cuts_cover_the_model(zoo: Partitioned) -> None:
    manifest = zoo.bundle.manifest
    gap = manifest.largest_gap()
    several = [c.id for c in manifest.cuts if len(c.tensors) > 1]
    print(
        f"{zoo.name}: largest gap {gap:.3f}, {len(manifest.cuts)} cuts kept, "
        f"{len(several)} of several tensors (at most {max(len(c.tensors) for c in manifest.cuts)})"
    )
    assert gap is not None and gap < MAX_GAP, f"{zoo.name}: largest gap {gap}"
    if zoo.name in SEVERAL_TENSORS:
        assert several, f"{zoo.name}: every kept cut holds one tensor"


def test_the_manifest_states_the_fidelity_of_every_cut(zoo: Partitioned) -> None:
    manifest = zoo.bundle.manifest
    outputs = set(manifest.model.outputs)
    classifier = ZOO[zoo.name].classifier
    for cut in manifest.cuts:
        if cut.tail is None:
            continue
        assert set(cut.fidelity) >= set(CODECS), (cut.id, sorted(cut.fidelity))
        raw = cut.fidelity["raw"]
        assert raw.samples > 0
        assert set(raw.max_rel_error) == outputs, (cut.id, raw.max_rel_error)
        for name, error in raw.max_rel_error.items():
            assert error < RTOL, f"{zoo.name} cut {cut.id}: raw max_rel_error[{name}] = {error}"
        assert (raw.agreement is not None) == classifier, (cut.id, raw.agreement)
        assert raw.agreement in (None, 1.0), (cut.id, raw.agreement)
        int8 = cut.fidelity["int8"]
        assert int8.samples > 0
        assert set(int8.max_rel_error) == set(int8.mean_rel_error) == outputs
        figures = [*int8.max_rel_error.values(), *int8.mean_rel_error.values()]
        if int8.agreement is not None:
            assert 0.0 <= int8.agreement <= 1.0, (cut.id, int8.agreement)
            figures.append(int8.agreement)
        assert all(np.isfinite(f) for f in figures), (cut.id, int8)


@pytest.fixture
def zoo_cloud(zoo: Partitioned) -> Iterator[RunningCloud]:
    running = RunningCloud(zoo.bundle)
    yield running
    running.stop()


def test_one_request_through_a_real_cloud_node_at_the_widest_cut(
    zoo: Partitioned, zoo_cloud: RunningCloud
) -> None:
    bundle = zoo.bundle
    manifest = bundle.manifest
    cut = max((c for c in manifest.cuts if c.tail is not None), key=lambda c: len(c.tensors))
    assert len(cut.tensors) > 1 or zoo.name not in SEVERAL_TENSORS, cut.id
    inputs = sample_inputs(zoo.name, 1, seed=1)
    policy = FixedPolicy(Decision(cut.id, None, "raw"), manifest.edge_only.id)
    with CloudClient(zoo_cloud.endpoint) as client:
        node = EdgeNode(bundle, policy, client, EdgeConfig(timeout_s=30.0, rtt_s=0.0))
        node.check_cloud()
        outcome = node.infer(inputs)
    assert (outcome.finished, outcome.reason) == ("cloud", None), (cut.id, outcome)
    assert outcome.cut == cut.id and outcome.bytes_sent > 0
    assert set(outcome.outputs) == set(manifest.model.outputs)
    _assert_close(outcome.outputs, _whole(zoo, inputs), f"{zoo.name} via the cloud at {cut.id}")
