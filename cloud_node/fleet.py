"""The fleet: which edges report in, on which bundle, how healthy; and the staged rollout.

Each edge sends a ``hello`` every few seconds with its bundle, version,
update state and health over its current bundle (requests, errors, latency
percentiles). The cloud keeps the latest per edge (the fleet view) and
answers with the bundle the edge should run: the stable bundle, or, for the
edges in the rollout's fraction, the candidate release. The choice is a
stable hash of the edge's name and the candidate's id, so raising the fraction
only adds edges, and an edge keeps its group across restarts. An edge that
refused the candidate or rolled it back is never offered it again.

The candidate's archive is served in chunks (``fetch`` -> ``chunk``) over the
same authenticated ZeroMQ channel, or fetched by the edge from a URL when the
rollout names one.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgesplit.bundle import Bundle, sha256_file
from edgesplit.errors import ConfigError
from edgesplit.release import Release, read_release

#: Bytes of one ``chunk`` reply: small enough not to hold a slow link for long.
CHUNK_BYTES = 256 * 1024
#: Longest chunk an edge may ask for.
MAX_CHUNK_BYTES = 4 * 1024 * 1024
#: Edges not heard from for this long are shown as stale.
STALE_S = 60.0
#: States an edge reports (edge_node.update.UpdateState).
EDGE_STATES = ("serving", "downloading", "retrying", "probation", "rolled_back", "refused")
_MAX_EDGES = 100_000


@dataclass(frozen=True)
class Candidate:
    """A release offered to part of the fleet.

    Attributes:
        archive: the release archive on the cloud's disk.
        release: its ``release.json``.
        bundle: the bundle inside (the cloud serves its tails).
        sha256: the archive's sha256, sent with the offer.
        size: the archive's size in bytes.
        url: where edges may download it instead of over ZeroMQ (``None``: ZeroMQ).
    """

    archive: Path
    release: Release
    bundle: Bundle
    sha256: str
    size: int
    url: str | None = None

    @classmethod
    def from_archive(cls, archive: Path, bundle: Bundle, url: str | None = None) -> Candidate:
        """The candidate for ``archive``, whose bundle was unpacked to ``bundle``."""
        return cls(
            archive,
            read_release(archive),
            bundle,
            sha256_file(archive),
            archive.stat().st_size,
            url,
        )


@dataclass
class EdgeRecord:
    """The latest a given edge said about itself, and when."""

    name: str
    key: str
    bundle: str
    version: str
    state: str
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    candidate: str
    note: str
    group: str
    last_seen: float
    first_seen: float
    hellos: int = 1

    @property
    def error_rate(self) -> float:
        """Errors per request over the edge's current window (NaN before any request)."""
        return self.errors / self.requests if self.requests else math.nan


@dataclass
class Fleet:
    """The fleet view and the rollout; thread-safe (the ingress calls it, so does the CLI).

    Attributes:
        stable: the bundle every edge runs unless it is in the rollout.
        stable_version: its label (the release version, or the id's first 12 digits).
        candidate: the release being rolled out, or ``None``.
        fraction: share of the fleet offered the candidate, 0..1.
        clock: wall-clock seconds (last-seen times are wall-clock for people).
    """

    stable: Bundle
    stable_version: str
    candidate: Candidate | None = None
    fraction: float = 0.0
    clock: Any = time.time
    edges: dict[str, EdgeRecord] = field(default_factory=dict)
    refused: dict[str, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.set_fraction(self.fraction)

    def set_fraction(self, fraction: float) -> None:
        """Offer the candidate to this share of the fleet (0 stops the rollout, 1 everyone)."""
        if isinstance(fraction, bool) or not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
            raise ConfigError(f"rollout fraction={fraction}: expected 0..1")
        if fraction > 0 and self.candidate is None:
            raise ConfigError("rollout fraction > 0 but no candidate release: give --offer")
        self.fraction = fraction

    def group(self, name: str) -> str:
        """``B`` if edge ``name`` is in the rollout's fraction, else ``A``."""
        if self.candidate is None:
            return "A"
        digest = hashlib.sha256(f"{name}\0{self.candidate.release.bundle_id}".encode()).digest()
        return "B" if int.from_bytes(digest[:8], "big") / 2**64 < self.fraction else "A"

    def hello(self, meta: Mapping[str, object], key_name: str | None) -> dict[str, Any]:
        """Record an edge's heartbeat; return the ``welcome`` meta (its assigned bundle).

        An edge is named by its CURVE key's name (authenticated); edges sharing one
        key (a DaemonSet's) are told apart by the name they give, as ``key/name``.
        """
        declared = _text(meta.get("name"), "")
        if key_name and declared and declared != key_name:
            name = f"{key_name}/{declared}"
        else:
            name = key_name or declared or "unnamed"
        now = self.clock()
        with self._lock:
            old = self.edges.get(name)
            if old is None and len(self.edges) >= _MAX_EDGES:
                return {"assigned": "", "group": "A", "note": "fleet full; not tracked"}
            state = _text(meta.get("state"), "serving")
            candidate = _text(meta.get("candidate"), "")
            if (
                state in ("rolled_back", "refused")
                and self.candidate is not None
                and candidate == self.candidate.release.bundle_id
            ):
                self.refused.setdefault(name, set()).add(candidate)
            group = self.group(name)
            record = EdgeRecord(
                name=name,
                key=key_name or "",
                bundle=_text(meta.get("bundle"), ""),
                version=_text(meta.get("version"), ""),
                state=state if state in EDGE_STATES else "serving",
                requests=_count(meta.get("requests")),
                errors=_count(meta.get("errors")),
                p50_ms=_number(meta.get("p50_ms")),
                p95_ms=_number(meta.get("p95_ms")),
                candidate=candidate,
                note=_text(meta.get("note"), ""),
                group=group,
                last_seen=now,
                first_seen=old.first_seen if old else now,
                hellos=(old.hellos + 1) if old else 1,
            )
            self.edges[name] = record
            return self._assignment(name, group)

    def _assignment(self, name: str, group: str) -> dict[str, Any]:
        c = self.candidate
        if c is None or group == "A" or c.release.bundle_id in self.refused.get(name, ()):
            return {"assigned": self.stable.id, "version": self.stable_version, "group": "A"}
        offer: dict[str, Any] = {
            "assigned": c.release.bundle_id,
            "version": c.release.version,
            "group": "B",
            "sha256": c.sha256,
            "size": c.size,
            "chunk": CHUNK_BYTES,
        }
        if c.url:
            offer["url"] = c.url
        return offer

    def chunk(self, bundle_id: object, offset: object, length: object) -> bytes:
        """Bytes ``[offset, offset + length)`` of the candidate's archive.

        Raises:
            ValueError: not the candidate, or a range outside the archive.
        """
        c = self.candidate
        if c is None or bundle_id != c.release.bundle_id:
            raise ValueError(f"bundle {str(bundle_id)[:12]} is not offered here")
        if not _is_count(offset) or not _is_count(length):
            raise ValueError("fetch needs int offset and length")
        assert isinstance(offset, int) and isinstance(length, int)
        if not 0 <= offset < c.size or not 0 < length <= MAX_CHUNK_BYTES:
            raise ValueError(
                f"range offset={offset} length={length} outside the archive of {c.size} bytes "
                f"(chunks of at most {MAX_CHUNK_BYTES})"
            )
        try:
            with c.archive.open("rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except OSError as exc:
            raise ValueError(f"the release archive cannot be read on the cloud: {exc}") from exc

    def report(self) -> dict[str, Any]:
        """The fleet view and the A/B comparison, JSON-ready."""
        now = self.clock()
        with self._lock:
            edges = [asdict(e) | {"error_rate": e.error_rate} for e in self.edges.values()]
        for edge in edges:
            edge["age_s"] = now - edge["last_seen"]
            edge["stale"] = edge["age_s"] > STALE_S
        c = self.candidate
        return {
            "stable": {"bundle": self.stable.id, "version": self.stable_version},
            "candidate": None
            if c is None
            else {"bundle": c.release.bundle_id, "version": c.release.version, "size": c.size},
            "fraction": self.fraction,
            "edges": sorted(edges, key=lambda e: e["name"]),
            "comparison": compare(edges),
        }

    def states(self) -> dict[tuple[str, str], int]:
        """Edges by (version, state), the stale ones apart.

        Versions are the stable's and the candidate's labels, any other is ``other``:
        edges choose what they report, the metric's labels stay bounded.
        """
        now = self.clock()
        known = {self.stable.id: self.stable_version}
        if self.candidate is not None:
            known[self.candidate.release.bundle_id] = self.candidate.release.version
        counts: dict[tuple[str, str], int] = {}
        with self._lock:
            for e in self.edges.values():
                state = "stale" if now - e.last_seen > STALE_S else e.state
                key = (known.get(e.bundle, "other"), state)
                counts[key] = counts.get(key, 0) + 1
        return counts


def compare(edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per bundle version: edges, requests, error rate and latency (request-weighted)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in edges:
        if not e.get("stale"):
            groups.setdefault(e["version"] or e["bundle"][:12], []).append(e)
    rows = []
    for version, members in sorted(groups.items()):
        requests = sum(e["requests"] for e in members)
        errors = sum(e["errors"] for e in members)
        weighted = [(e["requests"], e["p50_ms"], e["p95_ms"]) for e in members if e["requests"]]
        total = sum(w for w, _, _ in weighted)
        rows.append(
            {
                "version": version,
                "edges": len(members),
                "requests": requests,
                "error_rate": errors / requests if requests else math.nan,
                "p50_ms": sum(w * p for w, p, _ in weighted) / total if total else math.nan,
                "p95_ms": sum(w * p for w, _, p in weighted) / total if total else math.nan,
            }
        )
    return rows


def _text(value: object, default: str) -> str:
    return value[:200] if isinstance(value, str) and value else default


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(value: object) -> int:
    return value if isinstance(value, int) and _is_count(value) else 0


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


__all__ = ["CHUNK_BYTES", "Candidate", "EdgeRecord", "Fleet", "compare"]
