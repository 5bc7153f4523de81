"""Partition an ONNX model into a bundle: cut, extract, profile, calibrate, write.

One call of :func:`partition` does, for one model on this machine:

1. find every single-tensor cut and the exits' branch points (``graph``);
2. plan the head segments and tails, and extract them as ONNX (``extract``);
3. run a probe model on held-out samples to get every cut's activation and
   every exit's logits; measure the bytes per sample of each wire codec;
4. time every segment (edge profile) and every tail (cloud profile);
5. calibrate the exits on the held-out labels;
6. write ``edge/``, ``cloud/`` (a Triton model repository), ``data/`` and
   ``manifest.json`` into a temporary directory, then move it into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

import wire
from edgesplit import __version__
from edgesplit.bundle import (
    MANIFEST,
    Bundle,
    Cut,
    DeviceProfile,
    Manifest,
    ModelInfo,
    Segment,
    TensorSpec,
    Timing,
    compute_bundle_id,
    load_bundle,
    sha256_file,
)
from edgesplit.errors import ModelError
from edgesplit.onnxrt import create_session
from partitioner.calibration import DEFAULT_THRESHOLDS, calibrate
from partitioner.extract import CutPlan, Extractor, plan_cuts, wire_names
from partitioner.graph import analyze
from partitioner.profiling import (
    Repetitions,
    codec_sizes,
    machine_info,
    time_session,
)
from partitioner.triton import tail_config, to_pbtxt

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SourceModel:
    """A model ready to partition: its ONNX file and held-out samples.

    Attributes:
        name: model name (used for Triton model names).
        onnx_path: ONNX file with a dynamic batch dimension.
        output: the final output's name.
        exits: early-exit output names.
        input_shape: per-sample input shape (no batch dimension).
        samples: held-out inputs ``[N, *input_shape]`` for sizes and calibration.
        labels: their classes, or ``None`` (no exit calibration then).
        sample_source: what the samples are, said in the manifest.
        class_names: class labels, if known.
        test_set: ``(inputs, labels)`` shipped as ``data/test.npz``, if any.
    """

    name: str
    onnx_path: Path
    output: str
    exits: tuple[str, ...]
    input_shape: tuple[int, ...]
    samples: np.ndarray
    labels: np.ndarray | None
    sample_source: str
    class_names: tuple[str, ...] | None = None
    test_set: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class PartitionConfig:
    """How to profile and what to write."""

    codecs: tuple[str, ...] = field(default_factory=lambda: tuple(wire.SUPPORTED_CODECS))
    reps: Repetitions = field(default_factory=Repetitions)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 0
    size_samples: int = 32
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    max_batch_size: int = 16


def _run_batched(session, name: str, data: np.ndarray, batch: int = 128) -> list[np.ndarray]:
    """Run a session over ``data`` in batches and concatenate each output."""
    outs: list[list[np.ndarray]] = []
    for start in range(0, len(data), batch):
        result = session.run(None, {name: data[start : start + batch]})
        if not outs:
            outs = [[] for _ in result]
        for acc, value in zip(outs, result, strict=True):
            acc.append(value)
    return [np.concatenate(parts) for parts in outs]


def partition(
    source: SourceModel,
    out_dir: Path | str,
    config: PartitionConfig | None = None,
    progress: Progress | None = None,
) -> Bundle:
    """Cut, profile and calibrate ``source`` and write its bundle to ``out_dir``.

    An existing bundle at ``out_dir`` is replaced only once the new one is
    complete. Returns the bundle as read back (hashes verified).
    """
    config = config or PartitionConfig()
    report = progress or (lambda stage, done, total: None)
    out_dir = Path(out_dir)
    try:
        model = onnx.load(str(source.onnx_path))
    except (OSError, ValueError, DecodeError) as exc:
        raise ModelError(f"{source.onnx_path}: cannot be loaded as ONNX: {exc}") from exc
    analysis = analyze(model, source.output, source.exits)
    cut_plans, segment_plans = plan_cuts(analysis)
    extractor = Extractor(model, analysis)
    renamed = wire_names(analysis)

    # A probe computes every cut tensor and exit at once on the held-out samples.
    inner = [c.tensor for c in analysis.cuts if c.kind == "inner"]
    probe_outputs = [*inner, *source.exits, source.output]
    probe = create_session(
        extractor.extract([analysis.input_name], probe_outputs, "probe").SerializeToString(),
        config.providers,
        config.threads,
    )
    report("probe", 0, 1)
    values = _run_batched(probe, analysis.input_name, source.samples.astype(np.float32))
    named = dict(zip([renamed.get(n, n) for n in probe_outputs], values, strict=True))
    named[analysis.input_name] = source.samples.astype(np.float32)
    report("probe", 1, 1)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".partition-", dir=out_dir.parent) as tmp:
        staging = Path(tmp) / "bundle"
        (staging / "edge").mkdir(parents=True)
        edge_timings, cloud_timings = {}, {}
        edge_provider = cloud_provider = "CPUExecutionProvider"
        segments: dict[str, Segment] = {}
        total = len(segment_plans) + sum(c.has_tail for c in cut_plans)
        done = 0
        for seg in segment_plans.values():
            proto = extractor.segment(seg)
            rel = f"edge/seg__{seg.id}.onnx"
            onnx.save(proto, str(staging / rel))
            session = create_session(proto.SerializeToString(), config.providers, config.threads)
            edge_provider = session.get_providers()[0]
            in_name = session.get_inputs()[0].name
            edge_timings[seg.id] = time_session(session, {in_name: named[in_name][:1]}, config.reps)
            segments[seg.id] = Segment(
                seg.id, rel, in_name, renamed.get(seg.output_tensor, seg.output_tensor), seg.exit
            )
            done += 1
            report("profile", done, total)

        out_shape = tuple(int(d) for d in named[source.output].shape[1:])
        cuts: list[Cut] = []
        for plan in cut_plans:
            act = named[plan.name]
            shape = tuple(int(d) for d in act.shape[1:])
            tail_name = None
            if plan.has_tail:
                tail_name = f"{source.name}__tail__{plan.id}"
                cloud_timings[tail_name], cloud_provider = _write_tail(
                    staging, extractor, plan, tail_name, act, source.output, out_shape, config
                )
                done += 1
                report("profile", done, total)
            sizes = (
                {}
                if plan.kind == "output"
                else codec_sizes(act[: config.size_samples], config.codecs)
            )
            cuts.append(
                Cut(
                    id=plan.id,
                    index=plan.index,
                    kind=plan.kind,
                    tensor=plan.tensor,
                    name=plan.name,
                    shape=shape,
                    dtype="float32",
                    head=plan.head,
                    exits=plan.exits,
                    tail=tail_name,
                    raw_bytes=int(act[:1].nbytes),
                    encoded_bytes=sizes,
                )
            )

        calibration = None
        if source.exits and source.labels is not None:
            calibration = calibrate(
                [named[e] for e in source.exits],
                named[source.output],
                source.labels,
                source.exits,
                config.thresholds,
            )
        if source.test_set is not None:
            (staging / "data").mkdir()
            np.savez_compressed(
                staging / "data" / "test.npz", inputs=source.test_set[0], labels=source.test_set[1]
            )

        info = machine_info()
        profiles = {
            "edge": DeviceProfile("edge", info, edge_provider, config.threads, 1, edge_timings),
            "cloud": DeviceProfile("cloud", info, cloud_provider, config.threads, 1, cloud_timings),
        }
        files = {
            str(p.relative_to(staging)): sha256_file(p)
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        manifest = Manifest(
            model=ModelInfo(
                name=source.name,
                input=TensorSpec(analysis.input_name, tuple(source.input_shape), "float32"),
                output=source.output,
                exits=tuple(e.name for e in analysis.exits),
                class_names=source.class_names,
            ),
            cuts=tuple(cuts),
            segments=segments,
            profiles=profiles,
            calibration=calibration,
            files=files,
            codecs=tuple(config.codecs),
            sample_source=source.sample_source,
            created_by=f"edgesplit {__version__}",
        )
        manifest = replace(manifest, bundle_id=compute_bundle_id(manifest))
        (staging / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=1, allow_nan=True))
        _replace_dir(staging, out_dir)
    return load_bundle(out_dir)


def _write_tail(
    staging: Path,
    extractor: Extractor,
    plan: CutPlan,
    tail_name: str,
    activation: np.ndarray,
    output: str,
    out_shape: tuple[int, ...],
    config: PartitionConfig,
) -> tuple[Timing, str]:
    """Write one tail into the Triton repository and time it on one sample."""
    proto = extractor.tail(plan)
    model_dir = staging / "cloud" / tail_name
    (model_dir / "1").mkdir(parents=True)
    onnx.save(proto, str(model_dir / "1" / "model.onnx"))
    shape = tuple(int(d) for d in activation.shape[1:])
    pbtxt = to_pbtxt(
        tail_config(
            tail_name,
            [TensorSpec(plan.name, shape)],
            [TensorSpec(output, out_shape)],
            max_batch_size=config.max_batch_size,
        )
    )
    (model_dir / "config.pbtxt").write_text(pbtxt + "\n")
    session = create_session(proto.SerializeToString(), config.providers, config.threads)
    timing = time_session(session, {plan.name: activation[:1]}, config.reps)
    return timing, session.get_providers()[0]


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
