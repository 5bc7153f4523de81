"""The profile step: what it measures, how it is stored, and how partition merges it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgesplit.bundle import Timing, load_bundle
from edgesplit.errors import ConfigError, ModelError
from partitioner.partition import PartitionConfig, partition
from partitioner.prepare import Prepared, prepare
from partitioner.profile import (
    ProfileConfig,
    TargetProfile,
    check_matches,
    load_profile,
    measure_split_s,
    predicted_split_s,
    profile_target,
    save_profile,
)
from partitioner.profiling import Repetitions
from partitioner.pruning import PruneConfig
from partitioner.sources import load_source

QUICK = ProfileConfig(reps=Repetitions.quick(), size_samples=8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    work = tmp_path_factory.mktemp("prepared")
    source = load_source("branchynet-untrained", work, calibration_samples=200, test_samples=50)
    return prepare(source)


@pytest.fixture(scope="module")
def edge(prepared: Prepared) -> TargetProfile:
    return profile_target(prepared, "edge", QUICK)


@pytest.fixture(scope="module")
def cloud(prepared: Prepared) -> TargetProfile:
    return profile_target(prepared, "cloud", QUICK)


def test_edge_profile_times_every_head_and_segment(prepared: Prepared, edge: TargetProfile) -> None:
    assert [c.id for c in edge.cuts] == [p.id for p in prepared.cuts]
    for cut in edge.cuts:
        assert cut.tail is None
        if cut.kind == "input":
            assert cut.head is None
        else:
            assert cut.head is not None and 0 < cut.head.median_s <= cut.head.p95_s
            assert cut.head.runs == QUICK.reps.runs
    assert set(edge.segments) == set(prepared.segments)
    assert edge.provider == "CPUExecutionProvider"
    assert edge.machine["cpu"] and edge.machine["onnxruntime"]
    assert edge.batch_size == 1 and edge.runs == 7 and edge.warmup == 2


def test_cloud_profile_times_every_tail(edge: TargetProfile, cloud: TargetProfile) -> None:
    for cut in cloud.cuts:
        assert cut.head is None and cut.head_peak_bytes is None
        assert (cut.tail is None) == (cut.kind == "output")
    assert cloud.cuts[0].tail is not None  # cloud-only: the whole model in the cloud


def test_layers_come_from_node_profiling(edge: TargetProfile) -> None:
    ops = {layer.op for layer in edge.layers}
    assert "Conv" in ops or "FusedConv" in ops
    assert all(layer.median_s >= 0 and layer.provider for layer in edge.layers)
    conv = next(layer for layer in edge.layers if "Conv" in layer.op)
    assert conv.output_bytes == 4 * int(np.prod(conv.output_shape))
    # The kernels account for most of a run (the rest is ORT's per-run overhead). On a
    # model of ~40 µs the profiler's own cost per node (a few µs) is of the same order,
    # so it is allowed for.
    kernels = sum(layer.median_s for layer in edge.layers)
    assert 0 < kernels <= 3 * edge.whole_model.median_s + 5e-6 * len(edge.layers)


def test_sizes_and_memory_of_each_cut(edge: TargetProfile) -> None:
    inner = [c for c in edge.cuts if c.kind == "inner"]
    for cut in inner:
        assert cut.raw_bytes == 4 * sum(int(np.prod(s)) for s in cut.shapes)
        assert cut.encoded_bytes["int8"] < cut.raw_bytes
        assert cut.head_peak_bytes is not None and cut.head_peak_bytes > 0
    weights = [c.head_weights_bytes for c in edge.cuts if c.head_weights_bytes is not None]
    assert weights == sorted(weights) and weights[-1] > weights[0]


def test_round_trip(tmp_path: Path, edge: TargetProfile) -> None:
    path = tmp_path / "edge.json"
    save_profile(edge, path)
    assert load_profile(path) == edge


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(role="phone"), r"role: 'phone' is not one of"),
        (lambda d: d["cuts"][1].pop("head"), r"cuts\[1\]: 'head' is a required property"),
        (lambda d: d["cuts"][2]["head"].update(median_s=-1), r"cuts\[2\].head.median_s"),
        (lambda d: d.update(format="something-else"), "format"),
    ],
)
def test_bad_profile_names_file_and_field(
    tmp_path: Path, edge: TargetProfile, edit, message
) -> None:
    data = edge.to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message) as info:
        load_profile(path)
    assert str(path) in str(info.value)


def test_unreadable_profiles(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such profile"):
        load_profile(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot be read as JSON"):
        load_profile(tmp_path / "x.json")


def test_profile_of_another_model_or_role_is_refused(
    prepared: Prepared, edge: TargetProfile
) -> None:
    where = Path("edge.json")
    check_matches(edge, prepared, "edge", where)
    with pytest.raises(ModelError, match="is a edge profile, given as the cloud profile"):
        check_matches(edge, prepared, "cloud", where)
    with pytest.raises(ModelError, match="measured on another model"):
        check_matches(replace(edge, model_id="0" * 64), prepared, "edge", where)
    with pytest.raises(ModelError, match="batch size 4"):
        check_matches(replace(edge, batch_size=4), prepared, "edge", where)


def test_bad_config_is_refused(prepared: Prepared) -> None:
    with pytest.raises(ConfigError, match="batch_size=0"):
        ProfileConfig(batch_size=0)
    with pytest.raises(ConfigError, match="codecs"):
        ProfileConfig(codecs=("gzip",))
    with pytest.raises(ConfigError, match="--device phone"):
        profile_target(prepared, "phone", QUICK)


def test_batch_size_is_recorded(prepared: Prepared) -> None:
    profile = profile_target(prepared, "cloud", replace(QUICK, batch_size=4, layers=False))
    assert profile.batch_size == 4 and profile.layers == ()


def test_partition_uses_the_given_profiles(
    tmp_path: Path, prepared: Prepared, edge: TargetProfile, cloud: TargetProfile
) -> None:
    # A device 10x slower than this machine: partition must take its figures, not re-measure.
    slow = replace(
        edge,
        segments={
            k: Timing(v.median_s * 10, v.p95_s * 10, v.runs) for k, v in edge.segments.items()
        },
    )
    save_profile(slow, tmp_path / "edge.json")
    save_profile(cloud, tmp_path / "cloud.json")
    config = PartitionConfig(
        profile=QUICK,
        edge_profile=tmp_path / "edge.json",
        cloud_profile=tmp_path / "cloud.json",
        prune=PruneConfig(enabled=False),
    )
    bundle = partition(prepared.source, tmp_path / "bundle", config)
    timings = bundle.manifest.profiles["edge"].timings
    for seg_id, timing in timings.items():
        assert timing.median_s == pytest.approx(edge.segments[seg_id].median_s * 10)
    tails = bundle.manifest.profiles["cloud"].timings
    for cut in bundle.manifest.cuts:
        if cut.tail:
            assert tails[cut.tail] == cloud.cut(cut.id).tail
    stored = load_profile(bundle.root / "profiles" / "edge.json")
    assert stored == slow
    assert "profiles/edge.json" in bundle.manifest.files


def test_split_prediction_matches_measurement_on_a_real_model(
    prepared: Prepared, edge: TargetProfile, cloud: TargetProfile
) -> None:
    # Not a timing assertion (benchmarks/profile_accuracy.py checks the 10%): the
    # measured composition must be a real, positive figure near the prediction.
    plan = prepared.cuts[len(prepared.cuts) // 2]
    measured = measure_split_s(prepared, plan, QUICK)
    predicted = predicted_split_s(edge, cloud, plan.id)
    assert measured.median_s > 0 and predicted > 0
    assert 0.2 < measured.median_s / predicted < 5


def test_sidecar_declares_exits(tmp_path: Path, prepared: Prepared) -> None:
    import shutil

    from partitioner.sources import onnx_source

    path = tmp_path / "model.onnx"
    shutil.copy(prepared.source.onnx_path, path)
    path.with_suffix(".exits.json").write_text(
        json.dumps({"exits": list(prepared.source.exits), "output": prepared.source.output})
    )
    source = onnx_source(path)
    assert source.exits == prepared.source.exits and source.output == prepared.source.output
    path.with_suffix(".exits.json").write_text(json.dumps({"exits": "exit_1"}))
    with pytest.raises(ModelError, match=r"model.exits.json: expected"):
        onnx_source(path)


def test_bundle_of_given_profiles_loads_cleanly(tmp_path: Path, prepared: Prepared) -> None:
    bundle = partition(
        prepared.source,
        tmp_path / "b",
        PartitionConfig(profile=replace(QUICK, layers=False)),
    )
    assert load_bundle(bundle.root).id == bundle.id


def test_pruned_cuts_are_not_written(
    tmp_path: Path, prepared: Prepared, edge: TargetProfile, cloud: TargetProfile
) -> None:
    # An edge 100x slower than this machine: some inner cuts win somewhere, most do not.
    slow = replace(
        edge,
        segments={k: Timing(v.median_s * 100, v.p95_s, v.runs) for k, v in edge.segments.items()},
    )
    save_profile(slow, tmp_path / "edge.json")
    save_profile(cloud, tmp_path / "cloud.json")
    config = PartitionConfig(
        profile=QUICK, edge_profile=tmp_path / "edge.json", cloud_profile=tmp_path / "cloud.json"
    )
    bundle = partition(prepared.source, tmp_path / "bundle", config)
    m = bundle.manifest
    kept = {c.id for c in m.cuts}
    assert m.pruned and kept.isdisjoint(p.id for p in m.pruned)
    assert len(kept) + len(m.pruned) == len(prepared.cuts)
    assert m.pruning is not None and m.pruning.candidates == len(prepared.cuts)
    tails = {p.name for p in (bundle.root / "cloud").iterdir()}
    assert tails == {c.tail for c in m.cuts if c.tail}
    segments = {p.name for p in (bundle.root / "edge").iterdir()}
    assert segments == {f"seg__{s}.onnx" for c in m.cuts for s in c.head}
