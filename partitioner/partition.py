"""Partition an ONNX model into a bundle: cut, profile, calibrate, prune, write.

One call of :func:`partition` does, for one model:

1. find every single-tensor cut and the exits' branch points, plan the head
   segments and tails, and compute every cut tensor on held-out samples
   (:mod:`partitioner.prepare`);
2. take the edge and the cloud profile given (measured on the targets with
   ``edgesplit profile``), or measure whichever is missing on this machine
   (:mod:`partitioner.profile`);
3. calibrate the exits on the held-out labels;
4. prune the cuts that are never optimal (:mod:`partitioner.pruning`);
5. write ``edge/`` (head segments of the kept cuts), ``cloud/`` (a Triton
   model repository, one tail per kept cut), ``profiles/``, ``data/`` and
   ``manifest.json`` into a temporary directory, then move it into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from edgesplit import __version__
from edgesplit.bundle import (
    MANIFEST,
    Bundle,
    Cut,
    CutSearch,
    CutTensor,
    DeviceProfile,
    Fidelity,
    Manifest,
    ModelInfo,
    Segment,
    TensorSpec,
    compute_bundle_id,
    load_bundle,
    sha256_file,
)
from partitioner.calibration import DEFAULT_THRESHOLDS, calibrate
from partitioner.extract import CutPlan
from partitioner.fidelity import measure_fidelity
from partitioner.prepare import Prepared, Progress, SourceModel, no_progress, prepare
from partitioner.profile import (
    ProfileConfig,
    TargetProfile,
    check_matches,
    cut_sizes,
    load_profile,
    profile_target,
    save_profile,
)
from partitioner.pruning import PruneConfig, PruneResult, prune
from partitioner.triton import tail_config, to_pbtxt

__all__ = ["PartitionConfig", "SourceModel", "partition"]


@dataclass(frozen=True)
class PartitionConfig:
    """How to profile (when a target's profile is not given), calibrate, prune and write.

    Attributes:
        profile: how to measure on this machine.
        edge_profile: a profile measured on the edge device, used instead of
            measuring the edge here.
        cloud_profile: the same for the cloud machine.
        thresholds: the exit confidence grid to calibrate.
        prune: the operating range a cut must be optimal in to be kept.
        max_batch_size: Triton's dynamic batching limit for the tails.
        fidelity_samples: held-out samples each kept cut and codec is compared on.
    """

    profile: ProfileConfig = field(default_factory=ProfileConfig)
    edge_profile: Path | None = None
    cloud_profile: Path | None = None
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    prune: PruneConfig = field(default_factory=PruneConfig)
    max_batch_size: int = 16
    fidelity_samples: int = 32


def _target(
    prepared: Prepared, role: str, given: Path | None, config: ProfileConfig, progress: Progress
) -> TargetProfile:
    if given is None:
        return profile_target(prepared, role, config, progress)
    profile = load_profile(given)
    check_matches(profile, prepared, role, given)
    return profile


def partition(
    source: SourceModel,
    out_dir: Path | str,
    config: PartitionConfig | None = None,
    progress: Progress | None = None,
) -> Bundle:
    """Cut, profile, calibrate and prune ``source`` and write its bundle to ``out_dir``.

    An existing bundle at ``out_dir`` is replaced only once the new one is
    complete. Returns the bundle as read back (hashes verified).
    """
    config = config or PartitionConfig()
    report = progress or no_progress
    out_dir = Path(out_dir)
    prepared = prepare(
        source,
        config.profile.providers,
        config.profile.threads,
        report,
        max_tensors=config.profile.max_tensors,
    )
    edge = _target(prepared, "edge", config.edge_profile, config.profile, report)
    cloud = _target(prepared, "cloud", config.cloud_profile, config.profile, report)

    calibration = None
    if source.exits and source.labels is not None:
        calibration = calibrate(
            [prepared.values[e] for e in source.exits],
            prepared.values[source.output],
            source.labels,
            source.exits,
            config.thresholds,
        )
    codecs = config.profile.codecs
    candidates = _manifest(prepared, edge, cloud, calibration, codecs, prepared.cuts, {})
    pruning = prune(candidates, config.prune)
    kept = [p for p in prepared.cuts if p.id in pruning.kept]
    fidelity = measure_fidelity(prepared, kept, codecs, config.fidelity_samples, report)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".partition-", dir=out_dir.parent) as tmp:
        staging = Path(tmp) / "bundle"
        _write_models(staging, prepared, kept, config, report)
        (staging / "profiles").mkdir()
        save_profile(edge, staging / "profiles" / "edge.json")
        save_profile(cloud, staging / "profiles" / "cloud.json")
        if source.test_set is not None:
            (staging / "data").mkdir()
            np.savez_compressed(
                staging / "data" / "test.npz", inputs=source.test_set[0], labels=source.test_set[1]
            )
        files = {
            str(p.relative_to(staging)): sha256_file(p)
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        manifest = _manifest(
            prepared, edge, cloud, calibration, codecs, kept, files, pruning, fidelity
        )
        manifest = replace(manifest, bundle_id=compute_bundle_id(manifest))
        (staging / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=1, allow_nan=True))
        _replace_dir(staging, out_dir)
    return load_bundle(out_dir)


def _tail_name(prepared: Prepared, plan: CutPlan) -> str | None:
    return f"{prepared.source.name}__tail__{plan.id}" if plan.kind != "output" else None


def _manifest(
    prepared: Prepared,
    edge: TargetProfile,
    cloud: TargetProfile,
    calibration,
    codecs: tuple[str, ...],
    plans: list[CutPlan],
    files: dict[str, str],
    pruning: PruneResult | None = None,
    fidelity: Mapping[str, Mapping[str, Fidelity]] | None = None,
) -> Manifest:
    """The manifest of a bundle holding the cuts ``plans``, figures from the two profiles."""
    source = prepared.source
    cuts = []
    for plan in plans:
        measured = edge.cut(plan.id)
        sizes = dict(measured.encoded_bytes)
        missing = [c for c in codecs if c not in sizes and plan.kind != "output"]
        if missing:  # the edge profile measured other codecs: measure them here
            acts = {n: a[:32] for n, a in prepared.activations(plan).items()}
            sizes.update(cut_sizes(acts, replace(ProfileConfig(), codecs=tuple(missing))))
        tensors = tuple(
            CutTensor(tensor, name, tuple(shape), dtype, int(_nbytes(shape, dtype)))
            for tensor, name, shape, dtype in zip(
                measured.tensors, measured.names, measured.shapes, measured.dtypes, strict=True
            )
        )
        cuts.append(
            Cut(
                id=plan.id,
                index=plan.index,
                kind=plan.kind,
                tensors=tensors,
                head=plan.head,
                exits=plan.exits,
                tail=_tail_name(prepared, plan),
                raw_bytes=measured.raw_bytes,
                encoded_bytes={c: sizes[c] for c in codecs if c in sizes},
                head_peak_bytes=measured.head_peak_bytes,
                edge_outputs=plan.edge_outputs if plan.kind != "output" else (),
                compute=round(plan.compute, 6),
                fidelity=dict((fidelity or {}).get(plan.id, {})),
            )
        )
    seg_ids = list(dict.fromkeys(s for p in plans for s in p.head))
    segments = {}
    for seg_id in seg_ids:
        seg = prepared.segments[seg_id]
        segments[seg_id] = Segment(
            seg_id,
            f"edge/seg__{seg_id}.onnx",
            tuple(prepared.values_name(t) for t in seg.inputs),
            tuple(prepared.values_name(t) for t in seg.outputs),
            seg.exit,
        )
    tails = {_tail_name(prepared, p): cloud.cut(p.id).tail for p in plans if p.kind != "output"}
    profiles = {
        "edge": DeviceProfile(
            "edge",
            edge.machine,
            edge.provider,
            edge.threads,
            edge.batch_size,
            {s: edge.segments[s] for s in seg_ids},
        ),
        "cloud": DeviceProfile(
            "cloud",
            cloud.machine,
            cloud.provider,
            cloud.threads,
            cloud.batch_size,
            {name: timing for name, timing in tails.items() if name and timing},
        ),
    }
    analysis = prepared.analysis
    return Manifest(
        model=ModelInfo(
            name=source.name,
            inputs=tuple(s for s in source.inputs if s.name in analysis.inputs),
            outputs=tuple(source.outputs),
            exits=tuple(e.name for e in analysis.exits),
            class_names=source.class_names,
            fixed_batch=source.fixed_batch,
        ),
        cuts=tuple(cuts),
        segments=segments,
        profiles=profiles,
        calibration=calibration,
        files=files,
        codecs=tuple(codecs),
        sample_source=source.sample_source,
        created_by=f"edgesplit {__version__}",
        pruned=pruning.pruned if pruning else (),
        pruning=pruning.info if pruning else None,
        cut_search=CutSearch(
            candidates=analysis.candidates,
            offered=len(analysis.cuts),
            max_tensors=prepared.max_tensors,
            largest_gap=round(analysis.largest_gap, 6),
        ),
    )


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _write_models(
    staging: Path,
    prepared: Prepared,
    kept: list[CutPlan],
    config: PartitionConfig,
    report: Progress,
) -> None:
    """Write the head segments and the Triton tails of the kept cuts."""
    (staging / "edge").mkdir(parents=True)
    seg_ids = list(dict.fromkeys(s for p in kept for s in p.head))
    tails = [p for p in kept if p.kind != "output"]
    total = len(seg_ids) + len(tails)
    max_batch = 1 if prepared.source.fixed_batch else config.max_batch_size
    for done, seg_id in enumerate(seg_ids, start=1):
        onnx.save(prepared.segment(seg_id), str(staging / "edge" / f"seg__{seg_id}.onnx"))
        report("write", done, total)
    for done, plan in enumerate(tails, start=len(seg_ids) + 1):
        name = _tail_name(prepared, plan)
        assert name is not None
        model_dir = staging / "cloud" / name
        (model_dir / "1").mkdir(parents=True)
        onnx.save(prepared.tail(plan), str(model_dir / "1" / "model.onnx"))
        pbtxt = to_pbtxt(
            tail_config(
                name,
                [_spec(prepared, n) for n in plan.names],
                [_spec(prepared, o) for o in plan.tail_outputs],
                max_batch_size=max_batch,
            )
        )
        (model_dir / "config.pbtxt").write_text(pbtxt + "\n")
        report("write", done, total)


def _spec(prepared: Prepared, name: str) -> TensorSpec:
    value = prepared.values[name]
    return TensorSpec(name, tuple(int(d) for d in value.shape[1:]), value.dtype.name)


def _replace_dir(staging: Path, target: Path) -> None:
    """Move a finished bundle into place, replacing an old one only at the end."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
