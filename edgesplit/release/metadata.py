"""What ``release.json`` says (:class:`Release`), read and checked, and what an edge's part holds.

``release.json`` names the bundle inside a release archive, its version and
model, when it was made, its ``sequence`` (for rollback protection) and its
signature. The archive itself is written by :mod:`edgesplit.release.pack`
and checked and unpacked by :mod:`edgesplit.release.unpack`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesplit.bundle import MANIFEST, Bundle
from edgesplit.errors import RollbackError, UpdateError

RELEASE = "release.json"
RELEASE_FORMAT = "edgesplit-release"
#: Largest sequence number: fits a signed 64-bit integer (msgpack, JSON readers).
MAX_SEQUENCE = 2**63 - 1
#: What a release for an edge holds besides ``release.json`` and the manifest: the heads
#: (``edge/``) and the bundle's test inputs (``data/``, for ``--inputs bundle``); never
#: the tails (``cloud/``) nor the profiles the partitioner measured.
EDGE_PARTS = ("edge/", "data/")
#: The top-level names in an edge's bundle directory.
EDGE_NAMES = frozenset({RELEASE, MANIFEST, *(part.rstrip("/") for part in EDGE_PARTS)})
_SIGNED_FIELDS = ("format", "bundle_id", "version", "model", "created")


@dataclass(frozen=True)
class Release:
    """What ``release.json`` says.

    Attributes:
        bundle_id: the id of the bundle inside (sha256 of its manifest).
        version: the release's human label, e.g. ``2026.11.30-1``.
        model: the model's name.
        created: when the release was made (ISO 8601, UTC).
        signature: ``{"alg", "key", "value"}`` or ``None`` (unsigned).
        sequence: grows with every release of the fleet (>= 1, signed); an edge
            refuses one lower than the release it has committed. 0: a release made
            before sequences existed (no field in ``release.json``, none signed).
    """

    bundle_id: str
    version: str
    model: str
    created: str
    signature: dict[str, str] | None = None
    sequence: int = 0

    def signed_bytes(self) -> bytes:
        """The bytes a signature covers: the fields above, canonical JSON.

        A release without a sequence signs the fields it had before sequences
        existed, so its signature still verifies; removing a sequence from a
        release changes these bytes, so that breaks its signature.
        """
        data = {"format": RELEASE_FORMAT, **self._fields()}
        names = _SIGNED_FIELDS + (("sequence",) if self.sequence else ())
        return json.dumps({k: data[k] for k in names}, sort_keys=True).encode()

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "bundle_id": self.bundle_id,
            "version": self.version,
            "model": self.model,
            "created": self.created,
        }
        if self.sequence:
            fields["sequence"] = self.sequence
        return fields

    def to_json(self) -> str:
        """``release.json``'s text."""
        return json.dumps(
            {"format": RELEASE_FORMAT, **self._fields(), "signature": self.signature}, indent=1
        )


def parse_release(data: bytes, where: Path) -> Release:
    """``release.json``'s bytes, validated."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UpdateError(f"{where}: {RELEASE} is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != RELEASE_FORMAT:
        raise UpdateError(f"{where}: {RELEASE} has no format={RELEASE_FORMAT!r}")
    fields: dict[str, str] = {}
    for name in ("bundle_id", "version", "model", "created"):
        value = raw.get(name)
        if not isinstance(value, str) or not value or len(value) > 256:
            raise UpdateError(f"{where}: {RELEASE} field {name!r} is {value!r}, expected a string")
        fields[name] = value
    signature = raw.get("signature")
    if signature is not None and not (
        isinstance(signature, dict)
        and all(isinstance(signature.get(k), str) for k in ("alg", "key", "value"))
    ):
        raise UpdateError(f"{where}: {RELEASE} signature is malformed: {signature!r}")
    sequence = raw.get("sequence", 0)
    if "sequence" in raw and not is_sequence(sequence):
        raise UpdateError(
            f"{where}: {RELEASE} sequence={str(sequence)[:30]!r}, expected an integer "
            f"1..{MAX_SEQUENCE}"
        )
    return Release(**fields, signature=signature, sequence=sequence)


def is_sequence(value: object) -> bool:
    """Whether ``value`` is a valid release sequence: an integer 1..MAX_SEQUENCE, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SEQUENCE


def check_sequence(release: Release, committed: tuple[int, str] | None, where: str) -> None:
    """Refuse ``release`` if it is older than the release an edge has committed.

    ``committed`` is that release's ``(sequence, bundle id)``, ``None`` when the
    edge has committed none with a sequence (then any release is taken). Older
    is a lower sequence, or the same sequence for another bundle; a release
    without a sequence (0) is older than any with one.

    Raises:
        RollbackError: a rollback, saying both sequences and how to force it.
    """
    if committed is None:
        return
    sequence, bundle_id = committed
    if release.sequence > sequence or (
        release.sequence == sequence and release.bundle_id == bundle_id
    ):
        return
    have = f"sequence {release.sequence}" if release.sequence else "no sequence (an older format)"
    than = "the same as" if release.sequence == sequence else "older than"
    raise RollbackError(
        f"{where}: rollback refused: release {release.version} (bundle {release.bundle_id[:12]}) "
        f"has {have}, {than} the committed release's sequence {sequence} (bundle "
        f"{bundle_id[:12]}); to take it anyway set [update] allow_downgrade = true on this edge"
    )


def is_bundle_id(value: str) -> bool:
    """Whether ``value`` looks like a bundle id: 64 lowercase hex digits (a sha256)."""
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def edge_only(root: Path) -> bool:
    """Whether a bundle directory holds only what an edge needs (no tail, nothing else)."""
    return all(p.name in EDGE_NAMES for p in root.iterdir())


def edge_files(bundle: Bundle) -> list[str]:
    """The manifest's files a release for edges carries (``EDGE_PARTS``), sorted."""
    return sorted(f for f in bundle.manifest.files if f.startswith(EDGE_PARTS))


__all__ = [
    "EDGE_NAMES",
    "EDGE_PARTS",
    "MAX_SEQUENCE",
    "RELEASE",
    "RELEASE_FORMAT",
    "Release",
    "check_sequence",
    "edge_files",
    "edge_only",
    "is_bundle_id",
    "is_sequence",
    "parse_release",
]
