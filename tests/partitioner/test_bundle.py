"""Bundles are self-describing and tamper-evident: errors name the file and the field."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from edgesplit.bundle import MANIFEST, Bundle, compute_bundle_id, load_bundle
from edgesplit.errors import BundleError, ModelError
from edgesplit.manifest_json import manifest_from_dict


@pytest.fixture
def copy(untrained_bundle: Bundle, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(untrained_bundle.root, target)
    return target


def _edit_manifest(root: Path, edit) -> None:
    path = root / MANIFEST
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_round_trip_keeps_every_field(untrained_bundle: Bundle) -> None:
    manifest = untrained_bundle.manifest
    again = manifest_from_dict(
        json.loads((untrained_bundle.root / MANIFEST).read_text()), Path("m")
    )
    assert again == manifest
    assert compute_bundle_id(again) == manifest.bundle_id


def test_layout_is_a_triton_repository(untrained_bundle: Bundle) -> None:
    root = untrained_bundle.root
    for cut in untrained_bundle.manifest.cuts:
        if cut.tail is None:
            continue
        model_dir = root / "cloud" / cut.tail
        assert (model_dir / "1" / "model.onnx").is_file()
        config = (model_dir / "config.pbtxt").read_text()
        assert f'name: "{cut.tail}"' in config
        assert "dynamic_batching" in config and "max_batch_size: 16" in config
        assert f'name: "{cut.name}"' in config
        assert f"dims: [ {', '.join(map(str, cut.shape))} ]" in config
    assert sorted(p.name for p in (root / "edge").iterdir()) == sorted(
        Path(s.file).name for s in untrained_bundle.manifest.segments.values()
    )


def test_every_file_is_hashed(untrained_bundle: Bundle) -> None:
    on_disk = {
        str(p.relative_to(untrained_bundle.root))
        for p in untrained_bundle.root.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }
    assert on_disk == set(untrained_bundle.manifest.files)


def test_tampered_segment_is_refused_on_the_edge_only(copy: Path) -> None:
    segment = next((copy / "edge").iterdir())
    segment.write_bytes(segment.read_bytes() + b"\0")
    with pytest.raises(BundleError, match=f"sha256 of edge/{segment.name} does not match"):
        load_bundle(copy, verify="edge")
    load_bundle(copy, verify="cloud")  # the cloud does not hold that file


def test_tampered_tail_is_refused_on_the_cloud(copy: Path) -> None:
    tail = next((copy / "cloud").iterdir()) / "1" / "model.onnx"
    tail.write_bytes(b"not onnx")
    with pytest.raises(BundleError, match="re-run `edgesplit partition`"):
        load_bundle(copy, verify="cloud")


def test_missing_file_is_named(copy: Path) -> None:
    victim = next((copy / "edge").iterdir())
    victim.unlink()
    with pytest.raises(
        BundleError, match=f"file edge/{victim.name} listed in manifest.json is missing"
    ):
        load_bundle(copy)


def test_edited_manifest_changes_the_id(copy: Path) -> None:
    _edit_manifest(copy, lambda d: d["cuts"][1].update(raw_bytes=1))
    with pytest.raises(BundleError, match="bundle_id does not match"):
        load_bundle(copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format_version=99), "version=99"),
        (lambda d: d["cuts"][1].pop("head"), r"cuts\[1\]: 'head' is a required property"),
        (lambda d: d["cuts"][2].update(index="two"), r"cuts\[2\].index: 'two' is not of type"),
        (lambda d: d["cuts"][1].update(kind="middle"), r"cuts\[1\].kind: 'middle' is not one of"),
        (lambda d: d["files"].update({"../etc/passwd": "0" * 64}), "does not match"),
        (lambda d: d["pruned"].append({"id": "c99"}), r"pruned\[0\]: 'index' is a required"),
        (lambda d: d["cuts"][1].update(head=["nope"]), "unknown segment 'nope'"),
        (lambda d: d["calibration"].update(rate=[[0.5]]), "calibration.rate: expected"),
    ],
)
def test_malformed_manifest_names_the_field(copy: Path, edit, message: str) -> None:
    _edit_manifest(copy, edit)
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)


def test_not_json_and_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such bundle directory"):
        load_bundle(tmp_path / "absent")
    with pytest.raises(BundleError, match="manifest.json: missing"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="cannot be read as JSON"):
        load_bundle(tmp_path)


def test_partition_replaces_a_bundle_only_when_complete(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.sources import load_source

    target = tmp_path / "bundle"
    shutil.copytree(untrained_bundle.root, target)
    broken = load_source("branchynet-untrained", tmp_path, calibration_samples=50, test_samples=10)
    broken = type(broken)(**{**broken.__dict__, "outputs": ("no_such_output",)})
    with pytest.raises(ModelError, match="no_such_output"):
        partition(broken, target, PartitionConfig(profile=ProfileConfig(reps=Repetitions.quick())))
    assert load_bundle(target).id == untrained_bundle.id  # the old bundle still serves


def _as_version_2(data: dict) -> dict:
    """A version 3 manifest of single-tensor cuts, one input and one output, as version 2 had it."""
    old = json.loads(json.dumps(data))
    old["format_version"] = 2
    model = old["model"]
    model["input"] = model.pop("inputs")[0]
    model["output"] = model.pop("outputs")[0]
    del model["fixed_batch"]
    for cut in old["cuts"]:
        (tensor,) = cut.pop("tensors")
        cut.update(tensor=tensor["tensor"], name=tensor["name"], shape=tensor["shape"])
        cut["dtype"] = tensor["dtype"]
        for key in ("edge_outputs", "compute", "fidelity"):
            del cut[key]
    for segment in old["segments"].values():
        (segment["input"],) = segment.pop("inputs")
        (segment["output"],) = segment.pop("outputs")
    for pruned in old["pruned"]:
        (pruned["tensor"],) = pruned.pop("tensors")
        (pruned["shape"],) = pruned.pop("shapes")
    del old["cut_search"]
    rest = {k: v for k, v in old.items() if k != "bundle_id"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), allow_nan=True)
    old["bundle_id"] = hashlib.sha256(text.encode()).hexdigest()
    return old


def test_a_version_2_bundle_still_loads_and_serves_its_cuts(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    root = tmp_path / "old"
    shutil.copytree(untrained_bundle.root, root)
    data = json.loads((root / "manifest.json").read_text())
    assert all(len(c["tensors"]) == 1 for c in data["cuts"])
    old = _as_version_2(data)
    (root / "manifest.json").write_text(json.dumps(old))
    loaded = load_bundle(root)
    assert loaded.id == old["bundle_id"]
    m, new = loaded.manifest, untrained_bundle.manifest
    assert [c.names for c in m.cuts] == [c.names for c in new.cuts]
    assert m.model.inputs == new.model.inputs and m.model.outputs == new.model.outputs
    assert {s.id: (s.inputs, s.outputs) for s in m.segments.values()} == {
        s.id: (s.inputs, s.outputs) for s in new.segments.values()
    }
    # Edited after it was written: its id no longer matches, as for any version.
    old["cuts"][1]["raw_bytes"] += 1
    (root / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(BundleError, match="bundle_id does not match"):
        load_bundle(root)


def test_an_unknown_manifest_version_says_re_partition(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    root = tmp_path / "ancient"
    shutil.copytree(untrained_bundle.root, root)
    data = json.loads((root / "manifest.json").read_text())
    data["format_version"] = 1
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"format_version=1; .*re-partition the model"):
        load_bundle(root)
