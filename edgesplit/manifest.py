"""The manifest's data types: what ``manifest.json`` says, as frozen dataclasses.

:class:`Manifest` and its parts (cuts, head segments, device profiles, exit
calibration, pruning) are what every role reads from a bundle; they are
validated once, when read (:mod:`edgesplit.manifest_json`).
:func:`compute_bundle_id` gives a manifest its id. The bundle on disk and
its reader live in :mod:`edgesplit.bundle`, which re-exports these types.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from edgesplit.errors import BundleError

FORMAT = "edgesplit-bundle"
FORMAT_VERSION = 3
"""3: cuts of several tensors, models of several inputs and outputs, fidelity per codec."""

READABLE_VERSIONS = (2, 3)
"""Manifest versions this edgesplit reads (a version 2 manifest is upgraded when read)."""


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's name, per-sample shape (no batch dimension) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class Segment:
    """One ONNX sub-model of a head chain, from one boundary to the next.

    It reads ``inputs`` (wire names) from what the edge has computed so far
    and adds ``outputs``; a segment ending where an exit branches off also
    computes that exit.
    """

    id: str
    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    exit: str | None = None


@dataclass(frozen=True)
class CutTensor:
    """One tensor of a cut.

    Attributes:
        tensor: its name in the source model.
        name: its name in the head and tail models and on the wire.
        shape: per-sample shape, without the batch dimension.
        dtype: numpy dtype name.
        raw_bytes: bytes per sample, uncompressed.
    """

    tensor: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    raw_bytes: int


@dataclass(frozen=True)
class Fidelity:
    """How far the split model's outputs are from the unsplit model's, for one codec.

    Measured on the held-out samples: the head's tensors are encoded and
    decoded with the codec, the tail runs on them, and each final output is
    compared with the whole model's.

    Attributes:
        samples: how many samples were compared.
        agreement: share of samples whose top-1 class (of the first output)
            is the unsplit model's; ``None`` for outputs that are not class scores.
        max_rel_error: per output, the largest |split - whole| over max|whole|.
        mean_rel_error: per output, the mean |split - whole| over mean|whole|.
    """

    samples: int
    agreement: float | None
    max_rel_error: Mapping[str, float]
    mean_rel_error: Mapping[str, float]

    def score(self) -> float:
        """One figure in [0, 1] the policy uses as accuracy relative to the unsplit model.

        The top-1 agreement where there is one; otherwise one minus the worst
        output's mean relative error.
        """
        if self.agreement is not None:
            return self.agreement
        worst = max(self.mean_rel_error.values(), default=0.0)
        return max(0.0, 1.0 - worst)


@dataclass(frozen=True)
class Cut:
    """A split point: the head computes the cut's tensors, the tail starts from them.

    Attributes:
        id: short identifier, ``c00`` for the raw inputs.
        index: depth order, 0 = raw inputs (cloud-only).
        kind: ``input``, ``inner`` or ``output`` (edge-only).
        tensors: what the head sends (for ``output``: the final outputs).
        head: the segment ids the edge runs, in order (empty for cloud-only).
        exits: exits evaluated on the edge before the cut, in order.
        tail: Triton model name of the tail (``None`` for edge-only).
        raw_bytes: bytes per sample of all its tensors, uncompressed.
        encoded_bytes: mean bytes per sample after each codec, all tensors, measured.
        head_peak_bytes: peak memory of loading and running the whole head
            on the edge, measured (``None``: not measurable there).
        edge_outputs: final outputs the head computes (the edge keeps them).
        compute: share of the model's estimated compute done by the head.
        fidelity: per codec, how far the split outputs are from the whole model's.
    """

    id: str
    index: int
    kind: str
    tensors: tuple[CutTensor, ...]
    head: tuple[str, ...]
    exits: tuple[str, ...]
    tail: str | None
    raw_bytes: int
    encoded_bytes: Mapping[str, float] = field(default_factory=dict)
    head_peak_bytes: int | None = None
    edge_outputs: tuple[str, ...] = ()
    compute: float | None = None
    fidelity: Mapping[str, Fidelity] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """The wire names of the cut's tensors, in order."""
        return tuple(t.name for t in self.tensors)

    def _single(self) -> CutTensor:
        if len(self.tensors) != 1:
            raise BundleError(
                f"cut {self.id} holds {len(self.tensors)} tensors {list(self.names)}, not one"
            )
        return self.tensors[0]

    @property
    def tensor(self) -> str:
        """The source name of a single-tensor cut's tensor."""
        return self._single().tensor

    @property
    def name(self) -> str:
        """The wire name of a single-tensor cut's tensor."""
        return self._single().name

    @property
    def shape(self) -> tuple[int, ...]:
        """The per-sample shape of a single-tensor cut's tensor."""
        return self._single().shape

    @property
    def dtype(self) -> str:
        """The dtype of a single-tensor cut's tensor."""
        return self._single().dtype

    def describe_shape(self) -> str:
        """Its tensors' shapes for people: ``64x56x56`` or ``64x56x56 + 128x28x28``."""
        return " + ".join("x".join(map(str, t.shape)) or "scalar" for t in self.tensors)

    def bytes_for(self, codec: str) -> float:
        """Mean bytes per sample sent for this cut with ``codec``, all tensors together."""
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
class PrunedCut:
    """A candidate cut left out of the bundle, and why.

    Attributes:
        id: the cut id it had among all candidates.
        tensors: its tensors in the source model.
        shapes: per-sample shape of each.
        reason: why it can never be the best choice, in words and figures.
        beaten_by: the kept cuts that beat it, most often first.
    """

    id: str
    index: int
    tensors: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    reason: str
    beaten_by: tuple[str, ...]

    def describe_shape(self) -> str:
        """Its tensors' shapes for people."""
        return " + ".join("x".join(map(str, s)) or "scalar" for s in self.shapes)


@dataclass(frozen=True)
class PruningInfo:
    """The conditions under which every pruned cut was never optimal.

    Attributes:
        bandwidth_mbps: lowest and highest uplink bandwidth considered.
        bandwidth_points: log-spaced bandwidths evaluated in that range.
        rtt_s: round-trip times considered.
        radios: radio power models considered (energy of transmission).
        device: the edge device power model (energy of computation).
        candidates: number of candidate cuts before pruning.
    """

    bandwidth_mbps: tuple[float, float]
    bandwidth_points: int
    rtt_s: tuple[float, ...]
    radios: tuple[str, ...]
    device: str
    candidates: int


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
    """What the bundle's model takes and gives.

    Attributes:
        inputs: every input, with its per-sample shape and dtype.
        outputs: the final outputs; the first is the one a classifier's
            prediction is read from.
        fixed_batch: the model runs one sample at a time (its batch axis is
            fixed to 1): the edge sends one sample a request, the cloud does
            not batch requests together.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    exits: tuple[str, ...]
    class_names: tuple[str, ...] | None = None
    fixed_batch: bool = False

    @property
    def input(self) -> TensorSpec:
        """The input of a single-input model."""
        if len(self.inputs) != 1:
            raise BundleError(
                f"model {self.name!r} takes {len(self.inputs)} inputs "
                f"{[i.name for i in self.inputs]}: give one array per name"
            )
        return self.inputs[0]

    @property
    def output(self) -> str:
        """The first final output."""
        return self.outputs[0]


@dataclass(frozen=True)
class CutSearch:
    """How the partitioner looked for cuts, and how well they cover the model.

    Attributes:
        candidates: distinct cut sets considered (frontiers and min-cuts).
        offered: cuts offered before pruning.
        max_tensors: the most tensors one cut could hold.
        largest_gap: the largest share of edge compute between two offered cuts.
        compute_measure: what the compute shares are measured in.
    """

    candidates: int
    offered: int
    max_tensors: int
    largest_gap: float
    compute_measure: str = "estimated multiply-adds"


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
    pruned: tuple[PrunedCut, ...] = ()
    pruning: PruningInfo | None = None
    cut_search: CutSearch | None = None

    def cut(self, cut_id: str) -> Cut:
        """The cut named ``cut_id``."""
        for cut in self.cuts:
            if cut.id == cut_id:
                return cut
        raise BundleError(f"bundle has no cut {cut_id!r}; cuts: {[c.id for c in self.cuts]}")

    def largest_gap(self) -> float | None:
        """The largest share of edge compute between two kept cuts (``None``: not known)."""
        points = [c.compute for c in self.cuts]
        if any(p is None for p in points):
            return None
        ordered = sorted({0.0, 1.0, *[float(p) for p in points if p is not None]})
        return max(b - a for a, b in zip(ordered, ordered[1:], strict=False))

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


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "Cut",
    "CutSearch",
    "CutTensor",
    "DeviceProfile",
    "Fidelity",
    "ExitCalibration",
    "Manifest",
    "ModelInfo",
    "PrunedCut",
    "PruningInfo",
    "Segment",
    "TensorSpec",
    "Timing",
    "compute_bundle_id",
]
