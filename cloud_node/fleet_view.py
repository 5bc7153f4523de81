"""The fleet view: the latest heartbeat of each edge, bounded, paged and summed as it comes.

Edges choose what they declare, and one key may declare any number of names,
so everything here is bounded: records per key and in all (the least
recently seen evicted), recorded heartbeats per key (a token bucket), the
length of every declared string and the rows of the comparison. A page of
the view costs its own rows (the names are kept sorted as they come and go),
and the comparison by version and the counts by state are kept current on
every heartbeat, so reading them costs the number of versions, not of edges.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from edgesplit.errors import ConfigError

#: Edges not heard from for this long are shown as stale.
STALE_S = 60.0
#: Characters kept of the name an edge declares: a DNS name's 253. Fixed, not a limit
#: of a fleet's: a ``fetch`` names its edge the same way as the ``hello`` (``edge_name``).
MAX_NAME = 253
#: The comparison's row for the versions beyond ``FleetLimits.max_versions``.
OTHER_VERSIONS = "(other versions)"


@dataclass(frozen=True)
class FleetLimits:
    """How much of the cloud's memory and time the edges' heartbeats may take.

    Attributes:
        max_edges: records kept in all; a new edge beyond it evicts the least
            recently seen one (about 1 KB a record: 100,000 take ~100 MB).
        max_edges_per_key: records one CURVE key may hold (plaintext clients share
            one allowance); a new name beyond it evicts that key's least recently
            seen record. A DaemonSet's nodes share one key, hence room for 1,024.
        hello_rate: heartbeats per second one key may have recorded, sustained;
            one beyond gets its ``welcome`` (its assignment) but changes no record.
            128/s carries 1,024 edges on one key at one heartbeat in 10 s, x1.25.
        hello_burst: heartbeats one key may have recorded at once (the token
            bucket's size): a whole DaemonSet starting together.
        max_text: characters kept of the declared bundle, version and candidate.
        max_note: characters kept of the declared note.
        max_count: the most requests (and errors) an edge may report.
        max_latency_ms: the most milliseconds a latency percentile may be.
        max_versions: rows of the comparison (versions heard from); edges on
            versions beyond it are summed in one row, ``(other versions)``. The
            stable and the candidate's versions always have their own row.
        page_edges: edges in one page of ``fleet status`` unless asked otherwise.
        max_page_edges: the most edges a client may ask for in one page.
        page_bytes: the most bytes of one page's JSON (fewer edges when they are long).
    """

    max_edges: int = 100_000
    max_edges_per_key: int = 1_024
    hello_rate: float = 128.0
    hello_burst: float = 1_024.0
    max_text: int = 128
    max_note: int = 200
    max_count: int = 10**9
    max_latency_ms: float = 1e7
    max_versions: int = 32
    page_edges: int = 500
    max_page_edges: int = 2_000
    page_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name in (
            "max_edges",
            "max_edges_per_key",
            "max_text",
            "max_note",
            "max_count",
            "max_versions",
            "page_edges",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"fleet {name}={value!r}: expected an int >= 1")
        if not self.page_edges <= self.max_page_edges:
            raise ConfigError(
                f"fleet page_edges={self.page_edges} above max_page_edges={self.max_page_edges}"
            )
        if not self.page_bytes >= 64 * 1024:
            raise ConfigError(f"fleet page_bytes={self.page_bytes}: expected >= 65536")
        for name in ("hello_rate", "max_latency_ms"):
            if not getattr(self, name) > 0 or not math.isfinite(getattr(self, name)):
                raise ConfigError(f"fleet {name}={getattr(self, name)}: expected > 0")
        if not self.hello_burst >= 1 or not math.isfinite(self.hello_burst):
            raise ConfigError(f"fleet hello_burst={self.hello_burst}: expected >= 1")


@dataclass(slots=True)
class EdgeRecord:
    """The latest a given edge said about itself, and when.

    ``label`` (its row in the comparison) and ``release`` (its version as a
    metric label) are the cloud's bookkeeping, not part of the report.
    """

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
    label: str = field(default="", repr=False, compare=False)
    release: str = field(default="other", repr=False, compare=False)

    @property
    def error_rate(self) -> float:
        """Errors per request over the edge's current window (NaN before any request)."""
        return self.errors / self.requests if self.requests else math.nan

    def row(self, now: float) -> dict[str, Any]:
        """The record as a report row, JSON-ready (NaN for unknown figures)."""
        age = now - self.last_seen
        return {
            "name": self.name,
            "key": self.key,
            "bundle": self.bundle,
            "version": self.version,
            "state": self.state,
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "candidate": self.candidate,
            "note": self.note,
            "group": self.group,
            "last_seen": self.last_seen,
            "first_seen": self.first_seen,
            "hellos": self.hellos,
            "error_rate": self.error_rate,
            "age_s": age,
            "stale": age > STALE_S,
        }


@dataclass(slots=True)
class _Sums:
    """One version's fresh edges summed.

    Latencies are summed as integer microseconds times requests, so that taking
    an edge out leaves exactly what was there before it came (no float drift).
    """

    edges: int = 0
    requests: int = 0
    errors: int = 0
    weight: int = 0
    p50_us: int = 0
    p95_us: int = 0

    def add(self, e: EdgeRecord, sign: int) -> None:
        self.edges += sign
        self.requests += sign * e.requests
        self.errors += sign * e.errors
        if e.requests and math.isfinite(e.p50_ms) and math.isfinite(e.p95_ms):
            self.weight += sign * e.requests
            self.p50_us += sign * e.requests * round(e.p50_ms * 1000)
            self.p95_us += sign * e.requests * round(e.p95_ms * 1000)

    def row(self, version: str) -> dict[str, Any]:
        w = self.weight
        return {
            "version": version,
            "edges": self.edges,
            "requests": self.requests,
            "error_rate": self.errors / self.requests if self.requests else math.nan,
            "p50_ms": self.p50_us / w / 1000 if w else math.nan,
            "p95_ms": self.p95_us / w / 1000 if w else math.nan,
        }


class FleetView:
    """The records, bounded and ordered three ways; not thread-safe (``Fleet`` locks it).

    ``records`` holds the least recently seen first (evictions take from the
    front), each key's names likewise, the names sorted (pages), and the names
    heard from within ``STALE_S`` (``_fresh``, oldest first), so that an edge
    falling silent leaves the sums once, when it turns stale.
    """

    def __init__(self, limits: FleetLimits) -> None:
        self.limits = limits
        self.records: OrderedDict[str, EdgeRecord] = OrderedDict()
        #: Heartbeats not recorded (``hello_rate``) and records evicted, since the start.
        self.dropped: Counter[str] = Counter()
        self._by_key: dict[str, OrderedDict[str, None]] = {}
        self._names: list[str] = []
        self._fresh: OrderedDict[str, None] = OrderedDict()
        self._versions: dict[str, _Sums] = {}
        self._states: Counter[tuple[str, str]] = Counter()
        self._stale: Counter[str] = Counter()
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def admit(self, key: str, now: float) -> bool:
        """Whether a heartbeat of ``key`` may change the view now (takes a token if so)."""
        limits = self.limits
        tokens, at = self._buckets.get(key, (limits.hello_burst, now))
        tokens = min(limits.hello_burst, tokens + max(0.0, now - at) * limits.hello_rate)
        admitted = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if admitted else tokens, now)
        if not admitted:
            self.dropped["hello_rate"] += 1
        return admitted

    def put(self, record: EdgeRecord, reserved: tuple[str, ...]) -> list[str]:
        """Store ``record`` as its edge's latest; return the names evicted to make room.

        ``reserved``: versions that keep a comparison row of their own (stable, candidate).
        """
        now = record.last_seen
        self._expire(now)
        name = record.name
        old = self.records.pop(name, None)
        evicted: list[str] = []
        if old is not None:
            self._take(old)
            self._leave_key(old)
        else:
            own = self._by_key.get(record.key)
            if own is not None and len(own) >= self.limits.max_edges_per_key:
                evicted.append(self._evict(next(iter(own))))
            if len(self.records) >= self.limits.max_edges:
                evicted.append(self._evict(next(iter(self.records))))
            bisect.insort(self._names, name)
        self.records[name] = record
        self._by_key.setdefault(record.key, OrderedDict())[name] = None
        self._fresh[name] = None
        label = record.version or record.bundle[:12]
        if (
            label not in self._versions
            and len(self._versions) >= self.limits.max_versions
            and label not in reserved
        ):
            label = OTHER_VERSIONS
        record.label = label
        self._versions.setdefault(label, _Sums()).add(record, 1)
        self._states[(record.release, record.state)] += 1
        return evicted

    def page(self, after: str | None, limit: int, now: float) -> tuple[list[dict], str | None]:
        """Up to ``limit`` rows by name, after the name ``after``; and the next page's cursor."""
        start = 0 if after is None else bisect.bisect_right(self._names, after)
        names = self._names[start : start + limit]
        more = start + limit < len(self._names)
        rows = [self.records[n].row(now) for n in names]
        return rows, names[-1] if more and names else None

    def comparison(self, now: float) -> list[dict[str, Any]]:
        """Per version, the edges heard from within ``STALE_S``: see ``fleet.compare``."""
        self._expire(now)
        return [sums.row(version) for version, sums in sorted(self._versions.items())]

    def states(self, now: float) -> dict[tuple[str, str], int]:
        """Edges by (release label, state), the stale ones as state ``stale``."""
        self._expire(now)
        counts = {key: n for key, n in self._states.items() if n}
        counts.update({(release, "stale"): n for release, n in self._stale.items() if n})
        return counts

    # -- bookkeeping -------------------------------------------------------------------------

    def _take(self, record: EdgeRecord) -> None:
        """Take ``record`` out of the sums (the fresh ones, or the stale count)."""
        if record.name in self._fresh:
            del self._fresh[record.name]
            sums = self._versions[record.label]
            sums.add(record, -1)
            if not sums.edges:
                del self._versions[record.label]
            self._dec(self._states, (record.release, record.state))
        else:
            self._dec(self._stale, record.release)

    def _evict(self, name: str) -> str:
        record = self.records.pop(name)
        self._take(record)
        self._leave_key(record)
        del self._names[bisect.bisect_left(self._names, name)]
        self.dropped["evicted"] += 1
        return name

    def _leave_key(self, record: EdgeRecord) -> None:
        own = self._by_key[record.key]
        del own[record.name]
        if not own:
            del self._by_key[record.key]

    def _expire(self, now: float) -> None:
        """Move the records not heard from within ``STALE_S`` from the sums to the stale count."""
        fresh = self._fresh
        while fresh:
            name = next(iter(fresh))
            record = self.records[name]
            if now - record.last_seen <= STALE_S:
                return
            self._take(record)
            self._stale[record.release] += 1

    @staticmethod
    def _dec(counter: Counter[Any], key: Any) -> None:
        counter[key] -= 1
        if not counter[key]:
            del counter[key]


def encode_page(report: dict[str, Any], page_bytes: int) -> bytes:
    """``report`` (one page) as JSON of at most about ``page_bytes``.

    Rows are cut off the end when they are long (the cursor moves back with
    them); at least one row is kept.
    """
    text = json.dumps(report, allow_nan=True).encode()
    rows = report["edges"]
    if len(text) <= page_bytes or len(rows) <= 1:
        return text
    # Bytes of all but the rows and the cursor; then each row, and its name as the cursor.
    spent = len(text) - len(json.dumps(rows)) - len(json.dumps(report["next"])) + 2
    kept = 0
    for row in rows:
        spent += len(json.dumps(row, allow_nan=True)) + 2
        if kept and spent + len(json.dumps(row["name"])) > page_bytes:
            break
        kept += 1
    cut = rows[:kept]
    return json.dumps(report | {"edges": cut, "next": cut[-1]["name"]}, allow_nan=True).encode()


def count(value: object, limit: int) -> int:
    """A declared count: an int in 0..limit (more is ``limit``; anything else 0)."""
    if not is_count(value):
        return 0
    assert isinstance(value, int)
    return min(value, limit)


def is_count(value: object) -> bool:
    """Whether ``value`` is a non-negative int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def milliseconds(value: object, limit: float) -> float:
    """A declared latency: a number in 0..limit ms (more is ``limit``; anything else NaN)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(min(value, limit))
    return math.nan


__all__ = [
    "MAX_NAME",
    "OTHER_VERSIONS",
    "STALE_S",
    "EdgeRecord",
    "FleetLimits",
    "FleetView",
    "encode_page",
]
