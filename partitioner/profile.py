"""Profile a model on one target: the edge device or a cloud machine.

``edgesplit profile --device edge`` runs this on the device itself (CPU here;
CUDA or TensorRT execution providers on a Jetson or a GPU server) and writes
a profile JSON file; ``edgesplit partition`` merges an edge and a cloud
profile into a bundle. A profile records, measured here and now:

- per layer: the kernel latency from ONNX Runtime's node profiling and the
  output shape and bytes (the classic per-layer bars);
- per cut: the whole head's latency (edge) or the tail's (cloud), each an
  extracted sub-model timed after a warm-up (median and p95), the peak
  memory of loading and running the head (edge), and the activation's
  shape and bytes raw and after each codec on real sample inputs;
- per head segment (edge): its latency, what the runtime's exit-aware chain
  and the policy's predictions add up;
- which machine, execution provider, threads and batch size it was.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import wire
from edgesplit.bundle import TensorSpec, Timing
from edgesplit.errors import ConfigError, ModelError
from edgesplit.onnxrt import CPU, create_session
from edgesplit.schemas import validate
from partitioner.extract import CutPlan
from partitioner.graph import DEFAULT_MAX_TENSORS
from partitioner.prepare import Prepared, Progress, no_progress
from partitioner.profiling import (
    LayerTiming,
    Repetitions,
    codec_sizes,
    layer_timings,
    machine_info,
    peak_memory,
    time_session,
)

FORMAT = "edgesplit-profile"
FORMAT_VERSION = 2
"""2: cuts of several tensors, models of several inputs."""
ROLES = ("edge", "cloud")


@dataclass(frozen=True)
class ProfileConfig:
    """How to measure.

    Attributes:
        reps: warm-up and timed runs per sub-model.
        providers: execution providers in order of preference (CPU is the fallback).
        threads: ONNX Runtime intra-op threads (0: one per core).
        batch_size: batch of the timed runs.
        codecs: wire codecs whose sizes are measured.
        size_samples: samples encoded per cut for the codec sizes.
        layers: whether to run ONNX Runtime's per-layer node profiling.
        provider_options: options per provider (full name), e.g. TensorRT's fp16 and
            engine cache: profile with the options the edge serves with.
    """

    reps: Repetitions = field(default_factory=Repetitions)
    providers: tuple[str, ...] = (CPU,)
    threads: int = 0
    batch_size: int = 1
    codecs: tuple[str, ...] = field(default_factory=lambda: tuple(wire.SUPPORTED_CODECS))
    size_samples: int = 32
    layers: bool = True
    provider_options: Mapping[str, Mapping[str, str]] | None = None
    max_tensors: int = DEFAULT_MAX_TENSORS

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size}: expected at least 1")
        if self.threads < 0:
            raise ConfigError(f"threads={self.threads}: expected 0 (automatic) or more")
        if self.max_tensors < 1:
            raise ConfigError(f"max_tensors={self.max_tensors}: a cut holds at least one tensor")
        if self.reps.runs < 1 or self.reps.warmup < 0:
            raise ConfigError(f"repetitions {self.reps}: expected runs >= 1 and warmup >= 0")
        unknown = [c for c in self.codecs if c not in wire.SUPPORTED_CODECS]
        if unknown:
            raise ConfigError(
                f"codecs {unknown} are unknown; supported: {', '.join(wire.SUPPORTED_CODECS)}"
            )


@dataclass(frozen=True)
class CutMeasurement:
    """What one target measured about one cut.

    Attributes:
        head: latency of the whole head, input to cut, on the edge (``None``
            on the cloud and for the raw-input cut).
        tail: latency of the tail on the cloud (``None`` on the edge and for
            the final-output cut).
        head_peak_bytes: how far the process's resident memory rose while
            loading and running the head once (edge only; ``None`` if not
            measurable here).
        head_weights_bytes: bytes of the head's weights (edge only).
    """

    id: str
    index: int
    kind: str
    tensors: tuple[str, ...]
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    raw_bytes: int
    encoded_bytes: Mapping[str, float]
    head: Timing | None = None
    tail: Timing | None = None
    head_peak_bytes: int | None = None
    head_weights_bytes: int | None = None


@dataclass(frozen=True)
class TargetProfile:
    """Everything measured on one target, with what it was measured on."""

    role: str
    model: str
    model_id: str
    inputs: tuple[TensorSpec, ...]
    machine: Mapping[str, str]
    providers_requested: tuple[str, ...]
    provider: str
    threads: int
    batch_size: int
    warmup: int
    runs: int
    sample_source: str
    memory_method: str
    created: str
    whole_model: Timing
    layers: tuple[LayerTiming, ...]
    cuts: tuple[CutMeasurement, ...]
    segments: Mapping[str, Timing]

    def cut(self, cut_id: str) -> CutMeasurement:
        """The measurement of cut ``cut_id``."""
        for cut in self.cuts:
            if cut.id == cut_id:
                return cut
        raise ModelError(f"{self.role} profile has no cut {cut_id!r}")

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-ready data."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}


def _weights_bytes(proto) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) * 4 for t in proto.graph.initializer))


def _timed_session(proto, feeds, config: ProfileConfig, measure_memory: bool):
    """Create a session on ``proto``, run it once, time it; memory of the first two steps."""
    wanted = [i.name for i in proto.graph.input]
    feeds = {name: feeds[name] for name in wanted if name in feeds}

    def load_and_run():
        session = create_session(
            proto.SerializeToString(),
            config.providers,
            config.threads,
            provider_options=config.provider_options,
        )
        session.run(None, feeds)
        return session

    if measure_memory:
        session, peak, method = peak_memory(load_and_run)
    else:
        session, peak, method = load_and_run(), None, ""
    timing = time_session(session, feeds, config.reps)
    return timing, session.get_providers()[0], peak, method


def profile_target(
    prepared: Prepared,
    role: str,
    config: ProfileConfig | None = None,
    progress: Progress = no_progress,
) -> TargetProfile:
    """Measure ``prepared`` on this machine as the ``role`` target (edge or cloud)."""
    if role not in ROLES:
        raise ConfigError(f"--device {role}: expected edge or cloud")
    config = config or ProfileConfig()
    batch = config.batch_size
    values = prepared.values
    count = prepared.source.sample_count
    if count < batch:
        raise ConfigError(f"batch_size={batch}: only {count} sample inputs; use a smaller batch")
    if batch > 1 and prepared.source.fixed_batch:
        raise ConfigError(f"batch_size={batch}: the model's batch is fixed to 1")
    plans = prepared.cuts
    steps = len(plans) + (len(prepared.segments) if role == "edge" else 0) + 1
    done = 0
    progress(f"{role}: whole model", done, steps)

    feeds = prepared.input_feeds(batch)
    full = prepared.model.SerializeToString()
    whole = time_session(
        create_session(
            full, config.providers, config.threads, provider_options=config.provider_options
        ),
        feeds,
        config.reps,
    )
    layers: list[LayerTiming] = []
    if config.layers:
        layers = layer_timings(
            full, feeds, config.reps, config.providers, config.threads, config.provider_options
        )
    done += 1
    progress(f"{role}: layers", done, steps)

    provider = CPU
    memory_method = ""
    measured: list[CutMeasurement] = []
    head_timings: dict[str, Timing] = {}
    for plan in plans:
        acts = prepared.activations(plan)
        head = tail = None
        peak = weights = None
        if role == "edge" and plan.kind != "input":
            proto = prepared.head(plan)
            head, provider, peak, memory_method = _timed_session(proto, feeds, config, True)
            weights = _weights_bytes(proto)
            head_timings[plan.id] = head
        if role == "cloud" and plan.kind != "output":
            tail, provider, _, _ = _timed_session(
                prepared.tail(plan), prepared.feeds(plan.names, batch), config, False
            )
        # Bytes on the wire are the edge's to measure (it encodes); the cloud's would repeat them.
        sizes = {} if plan.kind == "output" or role == "cloud" else cut_sizes(acts, config)
        measured.append(
            CutMeasurement(
                id=plan.id,
                index=plan.index,
                kind=plan.kind,
                tensors=plan.tensors,
                names=plan.names,
                shapes=tuple(tuple(int(d) for d in a.shape[1:]) for a in acts.values()),
                dtypes=tuple(a.dtype.name for a in acts.values()),
                raw_bytes=int(sum(a[:1].nbytes for a in acts.values())),
                encoded_bytes=sizes,
                head=head,
                tail=tail,
                head_peak_bytes=peak,
                head_weights_bytes=weights,
            )
        )
        done += 1
        progress(f"{role}: cut {plan.id}", done, steps)

    segments: dict[str, Timing] = {}
    if role == "edge":
        for seg_id, seg in prepared.segments.items():
            owner = next(p for p in plans if p.head and p.head[-1] == seg_id)
            if prepared.head_is_one_segment(owner) and owner.id in head_timings:
                segments[seg_id] = head_timings[owner.id]  # the same model, timed once
            else:
                proto = prepared.segment(seg_id)
                seg_feeds = {i.name: values[i.name][:batch] for i in proto.graph.input}
                segments[seg_id], provider, _, _ = _timed_session(proto, seg_feeds, config, False)
            done += 1
            progress(f"{role}: segment {seg.id}", done, steps)

    source = prepared.source
    return TargetProfile(
        role=role,
        model=source.name,
        model_id=prepared.id,
        inputs=tuple(source.inputs),
        machine=machine_info(),
        providers_requested=tuple(config.providers),
        provider=provider,
        threads=config.threads,
        batch_size=batch,
        warmup=config.reps.warmup,
        runs=config.reps.runs,
        sample_source=source.sample_source,
        memory_method=memory_method,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        whole_model=whole,
        layers=tuple(layers),
        cuts=tuple(measured),
        segments=segments,
    )


def cut_sizes(acts: Mapping[str, np.ndarray], config: ProfileConfig) -> dict[str, float]:
    """Mean bytes per sample of a cut's tensors after each codec, summed over its tensors."""
    total: dict[str, float] = {}
    for value in acts.values():
        for codec, size in codec_sizes(value[: config.size_samples], config.codecs).items():
            total[codec] = total.get(codec, 0.0) + size
    return total


def save_profile(profile: TargetProfile, path: Path) -> None:
    """Write ``profile`` as JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(profile.to_dict(), indent=1) + "\n")
    os.replace(tmp, path)


def _timing(data: Mapping[str, Any] | None) -> Timing | None:
    if data is None:
        return None
    return Timing(float(data["median_s"]), float(data["p95_s"]), int(data["runs"]))


def profile_from_dict(data: Any, source: Path) -> TargetProfile:
    """Validate profile JSON against the shipped schema and build a :class:`TargetProfile`."""
    validate(data, "profile", source, hint="re-run `edgesplit profile` to measure it again")
    if data["format_version"] != FORMAT_VERSION:
        raise ModelError(
            f"{source}: profile format_version={data['format_version']}; this edgesplit reads "
            f"{FORMAT_VERSION}: re-run `edgesplit profile`"
        )
    return TargetProfile(
        role=data["role"],
        model=data["model"],
        model_id=data["model_id"],
        inputs=tuple(
            TensorSpec(spec["name"], tuple(spec["shape"]), spec["dtype"]) for spec in data["inputs"]
        ),
        machine={str(k): str(v) for k, v in data["machine"].items()},
        providers_requested=tuple(data["providers_requested"]),
        provider=data["provider"],
        threads=data["threads"],
        batch_size=data["batch_size"],
        warmup=data["warmup"],
        runs=data["runs"],
        sample_source=data["sample_source"],
        memory_method=data["memory_method"],
        created=data["created"],
        whole_model=_timing(data["whole_model"]),  # type: ignore[arg-type]
        layers=tuple(
            LayerTiming(
                name=layer["name"],
                op=layer["op"],
                provider=layer["provider"],
                output_shape=tuple(layer["output_shape"]),
                output_bytes=layer["output_bytes"],
                median_s=float(layer["median_s"]),
                p95_s=float(layer["p95_s"]),
            )
            for layer in data["layers"]
        ),
        cuts=tuple(
            CutMeasurement(
                id=c["id"],
                index=c["index"],
                kind=c["kind"],
                tensors=tuple(c["tensors"]),
                names=tuple(c["names"]),
                shapes=tuple(tuple(shape) for shape in c["shapes"]),
                dtypes=tuple(c["dtypes"]),
                raw_bytes=c["raw_bytes"],
                encoded_bytes={str(k): float(v) for k, v in c["encoded_bytes"].items()},
                head=_timing(c.get("head")),
                tail=_timing(c.get("tail")),
                head_peak_bytes=c.get("head_peak_bytes"),
                head_weights_bytes=c.get("head_weights_bytes"),
            )
            for c in data["cuts"]
        ),
        segments={k: _timing(v) for k, v in data["segments"].items()},  # type: ignore[misc]
    )


def load_profile(path: Path | str) -> TargetProfile:
    """Read a profile file; a clear error names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such profile; write one with `edgesplit profile`")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot be read as JSON: {exc}") from exc
    return profile_from_dict(data, path)


def check_matches(profile: TargetProfile, prepared: Prepared, role: str, source: Path) -> None:
    """Refuse a profile of another model, another role, or with other cuts."""
    if profile.role != role:
        raise ModelError(f"{source}: is a {profile.role} profile, given as the {role} profile")
    if profile.model_id != prepared.id:
        raise ModelError(
            f"{source}: was measured on another model (model_id {profile.model_id[:12]}, "
            f"this model is {prepared.id[:12]}); profile the same ONNX file "
            "(`edgesplit export` writes it) on the target"
        )
    if profile.batch_size != 1:
        raise ModelError(
            f"{source}: measured at batch size {profile.batch_size}; the bundle's "
            "predictions are per request: profile with --batch-size 1"
        )
    ids = [c.id for c in profile.cuts]
    expected = [p.id for p in prepared.cuts]
    if ids != expected:
        raise ModelError(f"{source}: cuts {ids} differ from this model's cuts {expected}")
    if role == "edge":
        missing = sorted(set(prepared.segments) - set(profile.segments))
        if missing:
            raise ModelError(f"{source}: no timing for head segments {missing}")


def predicted_split_s(edge: TargetProfile, cloud: TargetProfile, cut_id: str) -> float:
    """Head (edge) plus tail (cloud) median latency of a cut, wire time excluded."""
    head = edge.cut(cut_id).head
    tail = cloud.cut(cut_id).tail
    return (head.median_s if head else 0.0) + (tail.median_s if tail else 0.0)


def measure_split_s(prepared: Prepared, plan: CutPlan, config: ProfileConfig) -> Timing:
    """Time the head then the tail of ``plan`` back to back, as one request does."""
    batch = config.batch_size
    feeds = prepared.input_feeds(batch)
    head = (
        None
        if plan.kind == "input"
        else create_session(
            prepared.head(plan).SerializeToString(),
            config.providers,
            config.threads,
            provider_options=config.provider_options,
        )
    )
    tail = (
        None
        if plan.kind == "output"
        else create_session(
            prepared.tail(plan).SerializeToString(),
            config.providers,
            config.threads,
            provider_options=config.provider_options,
        )
    )

    class _Composed:
        def run(self, _outputs, feed):
            known = dict(feed)
            if head is not None:
                wanted = [i.name for i in head.get_inputs()]
                outs = head.run(None, {n: known[n] for n in wanted})
                known.update(zip([o.name for o in head.get_outputs()], outs, strict=True))
            if tail is None:
                return [known[n] for n in plan.names]
            return tail.run(None, {n: known[n] for n in plan.names})

    return time_session(_Composed(), feeds, config.reps)  # type: ignore[arg-type]
