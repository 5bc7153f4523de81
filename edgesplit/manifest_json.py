"""Read ``manifest.json`` into a validated :class:`~edgesplit.manifest.Manifest`.

Outside data is converted once, here: every field is checked for presence and
type, and an error names the file, the field (``cuts[3].head``) and what to
do about it.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from edgesplit.errors import BundleError
from edgesplit.manifest import (
    FORMAT,
    FORMAT_VERSION,
    READABLE_VERSIONS,
    Cut,
    CutSearch,
    CutTensor,
    DeviceProfile,
    ExitCalibration,
    Fidelity,
    Manifest,
    ModelInfo,
    PrunedCut,
    PruningInfo,
    Segment,
    TensorSpec,
    Timing,
)


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

    def opt(self, data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if data.get(key) is None:
            return None
        return self.get(data, key, kind, where)

    def ints(self, data: dict[str, Any], key: str, where: str) -> tuple[int, ...]:
        values = self.get(data, key, list, where)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise self.fail(f"{where}.{key}", f"expected non-negative integers, got {values}")
        return tuple(values)

    def strs(self, data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
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

    def table(self, data: dict[str, Any], key: str, where: str) -> tuple[tuple[float, ...], ...]:
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


def _cut_tensor(r: _Reader, data: Any, where: str) -> CutTensor:
    return CutTensor(
        tensor=r.get(data, "tensor", str, where),
        name=r.get(data, "name", str, where),
        shape=r.ints(data, "shape", where),
        dtype=r.get(data, "dtype", str, where),
        raw_bytes=r.get(data, "raw_bytes", int, where),
    )


def _errors(r: _Reader, data: Any, key: str, where: str) -> dict[str, float]:
    values = r.get(data, key, dict, where)
    return {str(k): float(r.get(values, k, float, f"{where}.{key}")) for k in values}


def _fidelity(r: _Reader, data: Any, where: str) -> Fidelity:
    return Fidelity(
        samples=r.get(data, "samples", int, where),
        agreement=r.opt(data, "agreement", float, where),
        max_rel_error=_errors(r, data, "max_rel_error", where),
        mean_rel_error=_errors(r, data, "mean_rel_error", where),
    )


def _cut(r: _Reader, data: Any, where: str) -> Cut:
    kind = r.get(data, "kind", str, where)
    if kind not in ("input", "inner", "output"):
        raise r.fail(f"{where}.kind", f"expected input, inner or output, got {kind!r}")
    sizes = r.get(data, "encoded_bytes", dict, where)
    encoded = {str(k): float(r.get(sizes, k, float, f"{where}.encoded_bytes")) for k in sizes}
    tensors = tuple(
        _cut_tensor(r, t, f"{where}.tensors[{i}]")
        for i, t in enumerate(r.get(data, "tensors", list, where))
    )
    if not tensors:
        raise r.fail(f"{where}.tensors", "a cut holds at least one tensor")
    fidelity = r.get(data, "fidelity", dict, where)
    return Cut(
        id=r.get(data, "id", str, where),
        index=r.get(data, "index", int, where),
        kind=kind,
        tensors=tensors,
        head=r.strs(data, "head", where),
        exits=r.strs(data, "exits", where),
        tail=r.opt(data, "tail", str, where),
        raw_bytes=r.get(data, "raw_bytes", int, where),
        encoded_bytes=encoded,
        head_peak_bytes=r.opt(data, "head_peak_bytes", int, where),
        edge_outputs=r.strs(data, "edge_outputs", where),
        compute=r.opt(data, "compute", float, where),
        fidelity={
            str(codec): _fidelity(r, value, f"{where}.fidelity.{codec}")
            for codec, value in fidelity.items()
        },
    )


def _pruned(r: _Reader, data: Any, where: str) -> PrunedCut:
    shapes = r.get(data, "shapes", list, where)
    return PrunedCut(
        id=r.get(data, "id", str, where),
        index=r.get(data, "index", int, where),
        tensors=r.strs(data, "tensors", where),
        shapes=tuple(
            r.ints({"shape": shape}, "shape", f"{where}.shapes[{i}]")
            for i, shape in enumerate(shapes)
        ),
        reason=r.get(data, "reason", str, where),
        beaten_by=r.strs(data, "beaten_by", where),
    )


def _cut_search(r: _Reader, data: Any, where: str) -> CutSearch:
    return CutSearch(
        candidates=r.get(data, "candidates", int, where),
        offered=r.get(data, "offered", int, where),
        max_tensors=r.get(data, "max_tensors", int, where),
        largest_gap=r.get(data, "largest_gap", float, where),
        compute_measure=r.get(data, "compute_measure", str, where),
    )


def upgrade_v2(data: dict[str, Any]) -> dict[str, Any]:
    """A version 2 manifest (one input, one output, single-tensor cuts) as version 3 data.

    Every version 2 bundle is a version 3 bundle with one tensor per cut; its
    files do not change, so it loads and serves as it did.
    """
    up = copy.deepcopy(data)
    up["format_version"] = 3
    model = up["model"]
    model["inputs"] = [model.pop("input")]
    model["outputs"] = [model.pop("output")]
    model["fixed_batch"] = False
    for cut in up["cuts"]:
        tensor = {
            "tensor": cut.pop("tensor"),
            "name": cut.pop("name"),
            "shape": cut.pop("shape"),
            "dtype": cut.pop("dtype"),
            "raw_bytes": cut["raw_bytes"],
        }
        cut["tensors"] = [tensor]
        cut["edge_outputs"] = []
        cut["compute"] = None
        cut["fidelity"] = {}
    for segment in up["segments"].values():
        segment["inputs"] = [segment.pop("input")]
        segment["outputs"] = [segment.pop("output")]
    for pruned in up["pruned"]:
        pruned["tensors"] = [pruned.pop("tensor")]
        pruned["shapes"] = [pruned.pop("shape")]
    up["cut_search"] = None
    return up


def _pruning(r: _Reader, data: Any, where: str) -> PruningInfo:
    low, high = r.floats(r.get(data, "bandwidth_mbps", list, where), f"{where}.bandwidth_mbps")
    return PruningInfo(
        bandwidth_mbps=(low, high),
        bandwidth_points=r.get(data, "bandwidth_points", int, where),
        rtt_s=r.floats(r.get(data, "rtt_s", list, where), f"{where}.rtt_s"),
        radios=r.strs(data, "radios", where),
        device=r.get(data, "device", str, where),
        candidates=r.get(data, "candidates", int, where),
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
            f"format={FORMAT!r} versions {', '.join(map(str, READABLE_VERSIONS))}",
        )
    m = r.get(data, "model", dict, "manifest")
    model = ModelInfo(
        name=r.get(m, "name", str, "model"),
        inputs=tuple(
            _tensor_spec(r, t, f"model.inputs[{i}]")
            for i, t in enumerate(r.get(m, "inputs", list, "model"))
        ),
        outputs=r.strs(m, "outputs", "model"),
        exits=r.strs(m, "exits", "model"),
        class_names=tuple(m["class_names"]) if m.get("class_names") is not None else None,
        fixed_batch=r.get(m, "fixed_batch", bool, "model"),
    )
    if not model.inputs or not model.outputs:
        raise r.fail("model", "expected at least one input and one output")
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
            r.strs(s, "inputs", w),
            r.strs(s, "outputs", w),
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
    pruned = tuple(
        _pruned(r, p, f"pruned[{i}]") for i, p in enumerate(r.get(data, "pruned", list, "manifest"))
    )
    raw_pruning = data.get("pruning")
    raw_search = data.get("cut_search")
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
        pruned=pruned,
        pruning=None if raw_pruning is None else _pruning(r, raw_pruning, "pruning"),
        cut_search=None if raw_search is None else _cut_search(r, raw_search, "cut_search"),
    )
