"""The bundle: what the partitioner writes and every runtime reads.

A bundle is one self-describing directory per model::

    manifest.json     model, cuts, head segments, profiles, exit calibration,
                      codec sizes, sha256 of every file, and the bundle id
    edge/             head segments (ONNX), one chain per kept cut
    cloud/            a Triton model repository: <model>__tail__<cut>/1/model.onnx

This module holds the bundle's data types (frozen dataclasses, validated once
when read) and the reader. It imports no deep-learning framework.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgesplit.errors import BundleError

FORMAT = "edgesplit-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's name, per-sample shape (no batch dimension) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class Segment:
    """One ONNX sub-model of a head chain, from one cut to the next.

    A segment ending where an exit branches off also computes that exit.
    """

    id: str
    file: str
    input: str
    output: str
    exit: str | None = None


@dataclass(frozen=True)
class Cut:
    """A split point: the head computes ``name``, the tail starts from it.

    Attributes:
        id: short identifier, ``c00`` for the raw input.
        index: depth order, 0 = raw input (cloud-only).
        kind: ``input``, ``inner`` or ``output`` (edge-only).
        tensor: the tensor's name in the source model.
        name: the tensor's name in the head and tail models and on the wire.
        shape: per-sample shape, without the batch dimension.
        head: the segment ids the edge runs, in order (empty for cloud-only).
        exits: exits evaluated on the edge before the cut, in order.
        tail: Triton model name of the tail (``None`` for edge-only).
        raw_bytes: bytes of the cut tensor per sample, uncompressed.
        encoded_bytes: mean bytes per sample after each codec, measured.
    """

    id: str
    index: int
    kind: str
    tensor: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    head: tuple[str, ...]
    exits: tuple[str, ...]
    tail: str | None
    raw_bytes: int
    encoded_bytes: Mapping[str, float] = field(default_factory=dict)

    def bytes_for(self, codec: str) -> float:
        """Mean bytes per sample sent for this cut with ``codec``."""
        if self.kind == "output":
            return 0.0
        try:
            return self.encoded_bytes[codec]
        except KeyError:
            raise BundleError(
                f"cut {self.id}: no measured size for codec={codec!r}; measured: "
                f"{sorted(self.encoded_bytes)}"
            ) from None


@dataclass(frozen=True)
class Timing:
    """Latency of one sub-model, in seconds, over ``runs`` timed runs."""

    median_s: float
    p95_s: float
    runs: int


@dataclass(frozen=True)
class DeviceProfile:
    """Latencies measured on one target (the edge device or a cloud machine).

    Attributes:
        role: ``edge`` or ``cloud``.
        machine: host name, CPU model, ONNX Runtime version, ...
        provider: the execution provider the sessions really used.
        threads: ONNX Runtime intra-op threads.
        batch_size: batch size of the timed runs.
        timings: segment id (edge) or tail model name (cloud) -> timing.
    """

    role: str
    machine: Mapping[str, str]
    provider: str
    threads: int
    batch_size: int
    timings: Mapping[str, Timing]

    def seconds(self, key: str) -> float:
        """Median latency of ``key``; a clear error if it was not profiled."""
        try:
            return self.timings[key].median_s
        except KeyError:
            raise BundleError(f"{self.role} profile has no timing for {key!r}") from None


@dataclass(frozen=True)
class ExitCalibration:
    """How often each exit fires and how accurate it is, per confidence threshold.

    Exits are evaluated in depth order; a sample leaves at the first exit
    whose max softmax reaches the threshold. Measured on held-out data.

    Attributes:
        thresholds: the confidence grid.
        exits: exit names in depth order.
        rate: ``rate[t][k]``: fraction of all samples leaving at exit ``k``.
        accuracy: ``accuracy[t][k]``: accuracy of those samples (nan if none).
        remaining_accuracy: ``remaining_accuracy[t][m]``: accuracy of the final
            output on the samples that none of the first ``m`` exits took.
        final_accuracy: accuracy of the final output on all samples.
        samples: number of held-out samples.
    """

    thresholds: tuple[float, ...]
    exits: tuple[str, ...]
    rate: tuple[tuple[float, ...], ...]
    accuracy: tuple[tuple[float, ...], ...]
    remaining_accuracy: tuple[tuple[float, ...], ...]
    final_accuracy: float
    samples: int

    def threshold_index(self, threshold: float) -> int:
        """Index of ``threshold`` on the grid (exact match within 1e-9)."""
        for i, value in enumerate(self.thresholds):
            if abs(value - threshold) < 1e-9:
                return i
        raise BundleError(
            f"threshold={threshold} is not on the calibrated grid {list(self.thresholds)}"
        )

    def expected(self, threshold: float | None, active: int) -> tuple[tuple[float, ...], float]:
        """Exit rates of the first ``active`` exits and the end-to-end accuracy.

        ``threshold=None`` disables exits.
        """
        if threshold is None or active == 0:
            return (), self.final_accuracy
        t = self.threshold_index(threshold)
        rates = self.rate[t][:active]
        acc = sum(r * a for r, a in zip(rates, self.accuracy[t][:active], strict=True) if r > 0)
        acc += (1.0 - sum(rates)) * self.remaining_accuracy[t][active]
        return rates, acc


@dataclass(frozen=True)
class ModelInfo:
    """What the bundle's model takes and gives."""

    name: str
    input: TensorSpec
    output: str
    exits: tuple[str, ...]
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Manifest:
    """Everything ``manifest.json`` says, validated."""

    model: ModelInfo
    cuts: tuple[Cut, ...]
    segments: Mapping[str, Segment]
    profiles: Mapping[str, DeviceProfile]
    calibration: ExitCalibration | None
    files: Mapping[str, str]
    codecs: tuple[str, ...]
    sample_source: str
    created_by: str
    bundle_id: str = ""

    def cut(self, cut_id: str) -> Cut:
        """The cut named ``cut_id``."""
        for cut in self.cuts:
            if cut.id == cut_id:
                return cut
        raise BundleError(f"bundle has no cut {cut_id!r}; cuts: {[c.id for c in self.cuts]}")

    @property
    def edge_only(self) -> Cut:
        """The cut at the final output (everything on the edge)."""
        return self.cuts[-1]

    @property
    def cloud_only(self) -> Cut:
        """The cut at the raw input (everything in the cloud)."""
        return self.cuts[0]

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data."""
        data = asdict(self)
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, **data}
        return data


def compute_bundle_id(manifest: Manifest) -> str:
    """sha256 over the manifest's content (file hashes included), minus the id itself."""
    data = manifest.to_dict()
    data.pop("bundle_id", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Reader:
    """Typed access to manifest JSON with errors that name the field and the file."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> BundleError:
        return BundleError(
            f"{self.source}: {where}: {problem}; re-run `edgesplit partition` to rebuild the bundle"
        )

    def get(self, data: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(data, dict):
            raise self.fail(where, f"expected an object, got {type(data).__name__}")
        if key not in data:
            raise self.fail(where, f"missing field {key!r}")
        value = data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(f"{where}.{key}", f"expected {_kind_name(kind)}, got {value!r:.60}")
        return value

    def opt(self, data: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if data.get(key) is None:
            return None
        return self.get(data, key, kind, where)

    def ints(self, data: dict, key: str, where: str) -> tuple[int, ...]:
        values = self.get(data, key, list, where)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise self.fail(f"{where}.{key}", f"expected non-negative integers, got {values}")
        return tuple(values)

    def strs(self, data: dict, key: str, where: str) -> tuple[str, ...]:
        values = self.get(data, key, list, where)
        if not all(isinstance(v, str) for v in values):
            raise self.fail(f"{where}.{key}", f"expected strings, got {values}")
        return tuple(values)

    def floats(self, values: Any, where: str) -> tuple[float, ...]:
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) or v is None for v in values
        ):
            raise self.fail(where, f"expected a list of numbers, got {values!r:.60}")
        return tuple(math.nan if v is None else float(v) for v in values)

    def table(self, data: dict, key: str, where: str) -> tuple[tuple[float, ...], ...]:
        rows = self.get(data, key, list, where)
        return tuple(self.floats(row, f"{where}.{key}[{i}]") for i, row in enumerate(rows))


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _tensor_spec(r: _Reader, data: Any, where: str) -> TensorSpec:
    return TensorSpec(
        r.get(data, "name", str, where),
        r.ints(data, "shape", where),
        r.get(data, "dtype", str, where),
    )


def _cut(r: _Reader, data: Any, where: str) -> Cut:
    kind = r.get(data, "kind", str, where)
    if kind not in ("input", "inner", "output"):
        raise r.fail(f"{where}.kind", f"expected input, inner or output, got {kind!r}")
    sizes = r.get(data, "encoded_bytes", dict, where)
    encoded = {str(k): float(r.get(sizes, k, float, f"{where}.encoded_bytes")) for k in sizes}
    return Cut(
        id=r.get(data, "id", str, where),
        index=r.get(data, "index", int, where),
        kind=kind,
        tensor=r.get(data, "tensor", str, where),
        name=r.get(data, "name", str, where),
        shape=r.ints(data, "shape", where),
        dtype=r.get(data, "dtype", str, where),
        head=r.strs(data, "head", where),
        exits=r.strs(data, "exits", where),
        tail=r.opt(data, "tail", str, where),
        raw_bytes=r.get(data, "raw_bytes", int, where),
        encoded_bytes=encoded,
    )


def _profile(r: _Reader, data: Any, where: str) -> DeviceProfile:
    timings = {}
    raw = r.get(data, "timings", dict, where)
    for key, value in raw.items():
        w = f"{where}.timings.{key}"
        timings[key] = Timing(
            r.get(value, "median_s", float, w),
            r.get(value, "p95_s", float, w),
            r.get(value, "runs", int, w),
        )
    machine = r.get(data, "machine", dict, where)
    return DeviceProfile(
        role=r.get(data, "role", str, where),
        machine={str(k): str(v) for k, v in machine.items()},
        provider=r.get(data, "provider", str, where),
        threads=r.get(data, "threads", int, where),
        batch_size=r.get(data, "batch_size", int, where),
        timings=timings,
    )


def _calibration(r: _Reader, data: Any, where: str) -> ExitCalibration:
    cal = ExitCalibration(
        thresholds=r.floats(r.get(data, "thresholds", list, where), f"{where}.thresholds"),
        exits=r.strs(data, "exits", where),
        rate=r.table(data, "rate", where),
        accuracy=r.table(data, "accuracy", where),
        remaining_accuracy=r.table(data, "remaining_accuracy", where),
        final_accuracy=r.get(data, "final_accuracy", float, where),
        samples=r.get(data, "samples", int, where),
    )
    n, k = len(cal.thresholds), len(cal.exits)
    shapes = {
        "rate": (cal.rate, k),
        "accuracy": (cal.accuracy, k),
        "remaining_accuracy": (cal.remaining_accuracy, k + 1),
    }
    for name, (rows, width) in shapes.items():
        if len(rows) != n or any(len(row) != width for row in rows):
            raise r.fail(f"{where}.{name}", f"expected {n} rows of {width} values")
    return cal


def manifest_from_dict(data: Any, source: Path) -> Manifest:
    """Validate manifest JSON data; errors name ``source`` and the field."""
    r = _Reader(source)
    fmt = r.get(data, "format", str, "manifest")
    version = r.get(data, "format_version", int, "manifest")
    if fmt != FORMAT or version != FORMAT_VERSION:
        raise r.fail(
            "manifest",
            f"format={fmt!r} version={version}; this edgesplit reads "
            f"format={FORMAT!r} version={FORMAT_VERSION}",
        )
    m = r.get(data, "model", dict, "manifest")
    model = ModelInfo(
        name=r.get(m, "name", str, "model"),
        input=_tensor_spec(r, r.get(m, "input", dict, "model"), "model.input"),
        output=r.get(m, "output", str, "model"),
        exits=r.strs(m, "exits", "model"),
        class_names=tuple(m["class_names"]) if m.get("class_names") is not None else None,
    )
    cuts = tuple(
        _cut(r, c, f"cuts[{i}]") for i, c in enumerate(r.get(data, "cuts", list, "manifest"))
    )
    if len(cuts) < 2 or cuts[0].kind != "input" or cuts[-1].kind != "output":
        raise r.fail("cuts", "expected the raw input first and the final output last")
    segments = {}
    for key, s in r.get(data, "segments", dict, "manifest").items():
        w = f"segments.{key}"
        segments[key] = Segment(
            r.get(s, "id", str, w),
            r.get(s, "file", str, w),
            r.get(s, "input", str, w),
            r.get(s, "output", str, w),
            r.opt(s, "exit", str, w),
        )
    for cut in cuts:
        for seg in cut.head:
            if seg not in segments:
                raise r.fail(f"cut {cut.id}.head", f"unknown segment {seg!r}")
    profiles = {
        role: _profile(r, p, f"profiles.{role}")
        for role, p in r.get(data, "profiles", dict, "manifest").items()
    }
    raw_cal = data.get("calibration")
    files = r.get(data, "files", dict, "manifest")
    return Manifest(
        model=model,
        cuts=cuts,
        segments=segments,
        profiles=profiles,
        calibration=None if raw_cal is None else _calibration(r, raw_cal, "calibration"),
        files={str(k): str(v) for k, v in files.items()},
        codecs=r.strs(data, "codecs", "manifest"),
        sample_source=r.get(data, "sample_source", str, "manifest"),
        created_by=r.get(data, "created_by", str, "manifest"),
        bundle_id=r.get(data, "bundle_id", str, "manifest"),
    )


@dataclass(frozen=True)
class Bundle:
    """A bundle on disk: its directory and its validated manifest."""

    root: Path
    manifest: Manifest

    @property
    def id(self) -> str:
        """The bundle id (sha256 of the manifest, file hashes included)."""
        return self.manifest.bundle_id

    def segment_path(self, segment_id: str) -> Path:
        """Path of a head segment's ONNX file."""
        return self.root / self.manifest.segments[segment_id].file

    def tail_path(self, cut: Cut) -> Path:
        """Path of the tail ONNX file of ``cut`` inside the Triton repository."""
        if cut.tail is None:
            raise BundleError(f"cut {cut.id} is edge-only: it has no tail")
        return self.root / "cloud" / cut.tail / "1" / "model.onnx"

    def files_for(self, role: str) -> list[str]:
        """The manifest's files that ``role`` (edge, cloud or all) needs."""
        prefix = {"edge": ("edge/",), "cloud": ("cloud/",), "all": ("edge/", "cloud/")}[role]
        return [f for f in self.manifest.files if f.startswith(prefix)]


def load_bundle(root: Path | str, *, verify: str = "all") -> Bundle:
    """Read and validate a bundle; check the sha256 of the files ``verify`` needs.

    Args:
        root: the bundle directory.
        verify: ``edge``, ``cloud``, ``all`` or ``none``: whose files to hash.

    Raises:
        BundleError: missing directory or manifest, malformed manifest, a
            missing file, or a file whose sha256 does not match.
    """
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(
            f"{root}: no such bundle directory; create one with `edgesplit partition`"
        )
    if not path.is_file():
        raise BundleError(f"{path}: missing; {root} is not a bundle (run `edgesplit partition`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: cannot be read as JSON: {exc}") from exc
    manifest = manifest_from_dict(data, path)
    expected_id = compute_bundle_id(manifest)
    if manifest.bundle_id != expected_id:
        raise BundleError(
            f"{path}: bundle_id does not match the manifest's content "
            f"(stored={manifest.bundle_id[:12]} computed={expected_id[:12]}); the manifest was "
            "edited or corrupted: re-run `edgesplit partition`"
        )
    bundle = Bundle(root, manifest)
    if verify != "none":
        verify_files(bundle, bundle.files_for(verify))
    return bundle


def verify_files(bundle: Bundle, files: Iterable[str]) -> None:
    """Check that each file exists and matches its sha256 in the manifest."""
    for rel in files:
        path = bundle.root / rel
        if not path.is_file():
            raise BundleError(f"{bundle.root}: file {rel} listed in manifest.json is missing")
        actual = sha256_file(path)
        if actual != bundle.manifest.files[rel]:
            raise BundleError(
                f"{bundle.root / MANIFEST}: sha256 of {rel} does not match "
                f"(expected={bundle.manifest.files[rel][:12]} actual={actual[:12]}); "
                "re-run `edgesplit partition`"
            )


def segment_chain(manifest: Manifest, cut: Cut) -> Sequence[Segment]:
    """The head segments of ``cut``, in the order the edge runs them."""
    return [manifest.segments[s] for s in cut.head]
