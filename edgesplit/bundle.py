"""The bundle: what the partitioner writes and every runtime reads.

A bundle is one self-describing directory per model::

    manifest.json     model, cuts, head segments, profiles, exit calibration,
                      codec sizes, sha256 of every file, and the bundle id
    edge/             head segments (ONNX), one chain per kept cut
    cloud/            a Triton model repository: <model>__tail__<cut>/1/model.onnx
    profiles/         the edge and cloud profiles the bundle was built from

This module holds the bundle on disk and its reader; the manifest's data
types (frozen dataclasses, validated once when read) live in
:mod:`edgesplit.manifest` and are re-exported here. It imports no
deep-learning framework.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesplit.errors import BundleError
from edgesplit.manifest import (
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
    compute_bundle_id,
)
from edgesplit.manifest_json import manifest_from_dict, upgrade_v2

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    from edgesplit.schemas import validate  # deferred: jsonschema is slow to import

    version = data.get("format_version") if isinstance(data, dict) else None
    if version not in READABLE_VERSIONS:
        raise BundleError(
            f"{path}: format_version={version!r}; this edgesplit reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: re-partition the model "
            "(`edgesplit partition`) to rebuild the bundle"
        )
    hint = "re-partition the model (`edgesplit partition`) to rebuild the bundle"
    if version == 2:
        validate(data, "manifest-v2", path, hint=hint)
        expected_id = _raw_bundle_id(data)  # the id a version 2 bundle was written with
        data = upgrade_v2(data)
        manifest = manifest_from_dict(data, path)
    else:
        validate(data, "manifest", path, hint=hint)
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


def _raw_bundle_id(data: dict[str, Any]) -> str:
    """sha256 over manifest data as stored, minus the id (how every version computed it)."""
    rest = {k: v for k, v in data.items() if k != "bundle_id"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


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


__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "READABLE_VERSIONS",
    "Bundle",
    "Cut",
    "CutSearch",
    "CutTensor",
    "DeviceProfile",
    "ExitCalibration",
    "Fidelity",
    "Manifest",
    "ModelInfo",
    "PrunedCut",
    "PruningInfo",
    "Segment",
    "TensorSpec",
    "Timing",
    "compute_bundle_id",
    "load_bundle",
    "segment_chain",
    "sha256_file",
    "verify_files",
]
