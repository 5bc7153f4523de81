"""The fleet: which edges report in, on which bundle, how healthy; and the staged rollout.

Each edge sends a ``hello`` every few seconds with its bundle, version,
update state and health over its current bundle (requests, errors, latency
percentiles). The cloud keeps the latest per edge (the fleet view) and
answers with the bundle the edge should run: the stable bundle, or, for the
edges in the rollout's fraction, the candidate release. The choice is a
stable hash of the edge's name and the candidate's id, so raising the fraction
only adds edges, and an edge keeps its group across restarts. An edge that
refused the candidate or rolled it back is never offered it again.

The candidate's release for edges (``release.json``, the manifest, ``edge/``
and ``data/``: never a tail) is served in chunks (``fetch`` -> ``chunk``) over the
same authenticated ZeroMQ channel, only to edges it was offered to, or fetched
by the edge from a URL when the rollout names one.
"""

from __future__ import annotations

import hashlib
import math
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wire
from cloud_node.fleet_view import (
    MAX_NAME,
    EdgeRecord,
    FleetLimits,
    FleetView,
    count,
    encode_page,
    milliseconds,
)
from cloud_node.fleet_view import is_count as _is_count
from edgesplit.bundle import Bundle, sha256_file
from edgesplit.errors import ConfigError
from edgesplit.release import Release, make_edge_release, read_release, release_json

#: Bytes of one ``chunk`` reply: small enough not to hold a slow link for long.
CHUNK_BYTES = 256 * 1024
#: Longest chunk an edge may ask for.
MAX_CHUNK_BYTES = 4 * 1024 * 1024
#: States an edge reports (edge_node.update.UpdateState).
EDGE_STATES = ("serving", "downloading", "retrying", "probation", "rolled_back", "refused")


@dataclass(frozen=True)
class Candidate:
    """A release offered to part of the fleet.

    Attributes:
        archive: the release for edges on the cloud's disk (``release.json``,
            ``manifest.json``, ``edge/`` and ``data/``; no tail): the only bytes ``fetch``
            serves.
        release: its ``release.json``.
        bundle: the full bundle of the release (the cloud serves its tails).
        sha256: the edge archive's sha256, sent with the offer.
        size: the edge archive's size in bytes.
        url: where edges may download the edge archive instead of over ZeroMQ
            (``None``: ZeroMQ); what is published there must be that archive.
    """

    archive: Path
    release: Release
    bundle: Bundle
    sha256: str
    size: int
    url: str | None = None

    @classmethod
    def from_archive(
        cls,
        archive: Path,
        bundle: Bundle,
        url: str | None = None,
        edge_archive: Path | None = None,
    ) -> Candidate:
        """The candidate for the full release ``archive``, whose bundle was unpacked to ``bundle``.

        The release for edges is derived from ``bundle`` and the archive's
        ``release.json`` into ``edge_archive`` (default: ``<bundle id>.edge.tar``
        beside the bundle's directory), byte for byte the one ``edgesplit release``
        wrote beside the full archive: it is what the offer announces and serves.

        Raises:
            UpdateError: the archive's ``release.json`` is unreadable or names
                another bundle.
        """
        text = release_json(archive)
        edge = edge_archive or bundle.root.parent / f"{bundle.id}.edge.tar"
        make_edge_release(bundle, edge, text)
        return cls(edge, read_release(archive), bundle, sha256_file(edge), edge.stat().st_size, url)


@dataclass
class Fleet:
    """The fleet view and the rollout; thread-safe (the ingress calls it, so does the CLI).

    Attributes:
        stable: the bundle every edge runs unless it is in the rollout.
        stable_version: its label (the release version, or the id's first 12 digits).
        candidate: the release being rolled out, or ``None``.
        fraction: share of the fleet offered the candidate, 0..1.
        clock: wall-clock seconds (last-seen times are wall-clock for people).
        limits: caps on the records and heartbeats, the declared fields and the pages.
        refused: per edge, the candidates it refused or rolled back (never offered again).
    """

    stable: Bundle
    stable_version: str
    candidate: Candidate | None = None
    fraction: float = 0.0
    clock: Any = time.time
    limits: FleetLimits = field(default_factory=FleetLimits)
    refused: dict[str, set[str]] = field(default_factory=dict)
    #: Names of the edges offered the candidate (oldest first): only they may fetch it.
    offered: dict[str, None] = field(default_factory=dict)
    _offered_by_key: dict[str, dict[str, None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _view: FleetView = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._view = FleetView(self.limits)
        self.set_fraction(self.fraction)

    @property
    def edges(self) -> Mapping[str, EdgeRecord]:
        """Each edge's latest record by name, the least recently seen first (read-only)."""
        return self._view.records

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

    def heartbeat(self, hello: wire.Hello, key_name: str | None) -> wire.Welcome:
        """Record an edge's heartbeat; answer with its assigned bundle (maybe an offer).

        An edge is named by its CURVE key's name (authenticated); edges sharing one
        key (a DaemonSet's) are told apart by the name they give, as ``key/name``.
        A heartbeat beyond its key's rate (``limits.hello_rate``) changes nothing:
        its edge, if it has a record, is told its assignment; a name without one is
        assigned nothing (``assigned`` empty: the edge keeps what it runs). A new
        edge beyond the caps evicts the least recently seen record (of its key, or
        of all). Every declared value is cut to the fleet's limits here.
        """
        name = edge_name(hello.name, key_name)
        key = key_name or ""
        limits = self.limits
        now = self.clock()
        rid = hello.request_id
        with self._lock:
            group = self.group(name)
            old = self._view.records.get(name)
            if not self._view.admit(key, now):
                if old is None:
                    return wire.Welcome(rid, "", group=group, note="over the key's rate")
                return self._assignment(rid, name, group)
            state = _text(hello.state, "serving", limits.max_text)
            candidate = _text(hello.candidate, "", limits.max_text)
            if (
                state in ("rolled_back", "refused")
                and self.candidate is not None
                and candidate == self.candidate.release.bundle_id
            ):
                self.refused.setdefault(name, set()).add(candidate)
            bundle = _text(hello.bundle, "", limits.max_text)
            requests = count(hello.requests, limits.max_count)
            record = EdgeRecord(
                name=name,
                key=key,
                bundle=bundle,
                version=_text(hello.version, "", limits.max_text),
                state=state if state in EDGE_STATES else "serving",
                requests=requests,
                errors=min(count(hello.errors, limits.max_count), requests),
                p50_ms=milliseconds(hello.p50_ms, limits.max_latency_ms),
                p95_ms=milliseconds(hello.p95_ms, limits.max_latency_ms),
                candidate=candidate,
                note=_text(hello.note, "", limits.max_note),
                group=group,
                last_seen=now,
                first_seen=old.first_seen if old else now,
                hellos=(old.hellos + 1) if old else 1,
                release=self._releases().get(bundle, "other"),
            )
            for gone in self._view.put(record, tuple(self._releases().values())):
                self.refused.pop(gone, None)
            return self._assignment(rid, name, group)

    def _releases(self) -> dict[str, str]:
        """The bundles this cloud knows, by id: their version labels (metric labels)."""
        known = {self.stable.id: self.stable_version}
        if self.candidate is not None:
            known[self.candidate.release.bundle_id] = self.candidate.release.version
        return known

    def _assignment(self, request_id: int, name: str, group: str) -> wire.Welcome:
        c = self.candidate
        if c is None or group == "A" or c.release.bundle_id in self.refused.get(name, ()):
            return wire.Welcome(request_id, self.stable.id, self.stable_version, "A")
        # Called under the lock, by heartbeat. Remembered so that this edge, and only the
        # edges offered it, may fetch the release (a fraction lowered meanwhile included).
        self.offered.pop(name, None)
        self.offered[name] = None
        # Bounded as the view is: per key (one key's new names push out its own oldest,
        # never another key's edges) and in total.
        key = name.split("/", 1)[0]
        own = self._offered_by_key.setdefault(key, {})
        own.pop(name, None)
        own[name] = None
        while len(own) > self.limits.max_edges_per_key:
            oldest = next(iter(own))
            del own[oldest]
            self.offered.pop(oldest, None)
        while len(self.offered) > self.limits.max_edges:
            oldest = next(iter(self.offered))
            del self.offered[oldest]
            self._offered_by_key.get(oldest.split("/", 1)[0], {}).pop(oldest, None)
        return wire.Welcome(
            request_id,
            c.release.bundle_id,
            c.release.version,
            "B",
            sha256=c.sha256,
            size=c.size,
            chunk=CHUNK_BYTES,
            url=c.url or None,
        )

    def chunk(
        self,
        bundle_id: object,
        offset: object,
        length: object,
        name: object = None,
        key_name: str | None = None,
    ) -> bytes:
        """Bytes ``[offset, offset + length)`` of the candidate's release for edges.

        Only for an edge the candidate was offered to, named as :meth:`heartbeat`
        names it: by ``key_name`` (its CURVE key's) and the ``name`` it declares.
        Admins are no exception: no key obtains a tail (``archive`` has none) or a
        release it was not offered.

        Raises:
            PermissionError: this edge was not offered the candidate.
            ValueError: not the candidate, or a range outside the archive.
        """
        c = self.candidate
        if c is None or bundle_id != c.release.bundle_id:
            raise ValueError(f"bundle {str(bundle_id)[:12]} is not offered here")
        edge = edge_name(name, key_name)
        with self._lock:
            offered = edge in self.offered
        if not offered:
            raise PermissionError(
                f"edge {edge[:80]!r} was not offered bundle {c.release.bundle_id[:12]}: a release "
                "is served only to the edges it is offered to"
            )
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

    def report(self, after: object = None, limit: object = None) -> dict[str, Any]:
        """One page of the fleet view and the A/B comparison, JSON-ready.

        The page holds up to ``limit`` edges (default ``limits.page_edges``) by
        name, from the first after ``after``; ``next`` is the cursor of the page
        after it (``None``: the last), ``total`` the edges in the view. A page
        costs its own rows; the comparison is kept current by every heartbeat.

        Raises:
            ValueError: ``after`` is not a string or ``limit`` not in 1..max_page_edges.
        """
        limits = self.limits
        if after is not None and not isinstance(after, str):
            raise ValueError(f"after={str(after)[:40]!r}: expected the name of an edge")
        if limit is None:
            limit = limits.page_edges
        if (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 1 <= limit <= limits.max_page_edges
        ):
            raise ValueError(f"limit={str(limit)[:40]!r}: expected 1..{limits.max_page_edges}")
        now = self.clock()
        with self._lock:
            edges, cursor = self._view.page(after, limit, now)
            total = len(self._view)
            comparison = self._view.comparison(now)
        c = self.candidate
        return {
            "stable": {"bundle": self.stable.id, "version": self.stable_version},
            "candidate": None
            if c is None
            else {"bundle": c.release.bundle_id, "version": c.release.version, "size": c.size},
            "fraction": self.fraction,
            "total": total,
            "edges": edges,
            "next": cursor,
            "comparison": comparison,
        }

    def report_json(self, after: object = None, limit: object = None) -> bytes:
        """:meth:`report` as JSON of at most about ``limits.page_bytes`` (fewer edges if long).

        Raises:
            ValueError: as :meth:`report`.
        """
        return encode_page(self.report(after, limit), self.limits.page_bytes)

    def states(self) -> dict[tuple[str, str], int]:
        """Edges by (version, state), the stale ones apart.

        Versions are the stable's and the candidate's labels, any other is ``other``:
        edges choose what they report, the metric's labels stay bounded. Costs the
        number of such pairs, not of edges (the counts are kept by every heartbeat).
        """
        now = self.clock()
        with self._lock:
            return self._view.states(now)

    def take_dropped(self) -> dict[str, int]:
        """Heartbeats not recorded (``hello_rate``), records evicted (``evicted``), since asked."""
        with self._lock:
            dropped = dict(self._view.dropped)
            self._view.dropped.clear()
        return dropped


def compare(edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per bundle version: edges, requests, error rate and latency (request-weighted).

    Over report rows, the stale ones left out; edges whose latencies are unknown
    count in the requests, not in the latency. The fleet keeps the same sums
    current as heartbeats come (``FleetView.comparison``); this is their reference.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in edges:
        if not e.get("stale"):
            groups.setdefault(e["version"] or e["bundle"][:12], []).append(e)
    rows = []
    for version, members in sorted(groups.items()):
        requests = sum(e["requests"] for e in members)
        errors = sum(e["errors"] for e in members)
        weighted = [
            (e["requests"], e["p50_ms"], e["p95_ms"])
            for e in members
            if e["requests"] and math.isfinite(e["p50_ms"]) and math.isfinite(e["p95_ms"])
        ]
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


def edge_name(declared: object, key_name: str | None) -> str:
    """An edge's name in the fleet: its CURVE key's, ``key/name`` for a shared key.

    :meth:`Fleet.heartbeat` names edges so; :meth:`Fleet.chunk` names the fetching
    edge the same way, so only an edge offered a release downloads it.
    """
    text = _text(declared, "")
    if key_name and text and text != key_name:
        return f"{key_name}/{text}"
    return key_name or text or "unnamed"


def _text(value: object, default: str, limit: int = MAX_NAME) -> str:
    """A declared string cut to ``limit`` characters; ``default`` unless a non-empty string.

    Interned: the few bundle ids and versions of a fleet are held once, not per edge.
    """
    return sys.intern(value[:limit]) if isinstance(value, str) and value else default


__all__ = ["CHUNK_BYTES", "Candidate", "EdgeRecord", "Fleet", "FleetLimits", "compare", "edge_name"]
