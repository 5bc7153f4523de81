"""The fleet control plane against hostile edges: caps, rate limits, admins only, pages."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import wire
from cloud_node.fleet import Fleet, FleetLimits, compare
from cloud_node.fleet_view import OTHER_VERSIONS, STALE_S
from cloud_node.server import CloudNode
from edgesplit.bundle import Bundle
from edgesplit.errors import ConfigError
from tests.conftest import RunningCloud
from tests.wire.frames import raw_frames


class Clock:
    """Wall-clock seconds that move only when told."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fleet_of(bundle: Bundle, clock: Clock | None = None, **limits: Any) -> Fleet:
    return Fleet(bundle, "1", clock=clock or Clock(), limits=FleetLimits(**limits))


def heartbeat(bundle: Bundle, name: str = "", /, request_id: int = 0, **fields: Any) -> wire.Hello:
    """What an honest edge says (edge_node.update.Updater.status); ``fields`` replace it."""
    said: dict[str, Any] = {
        "name": name,
        "bundle": bundle.id,
        "version": "1",
        "state": "serving",
        "requests": 500,
        "errors": 2,
        "p50_ms": 3.0,
        "p95_ms": 7.5,
        "candidate": "",
        "note": "",
    }
    return wire.Hello(request_id, **(said | fields))


UNLIMITED = {"hello_rate": 1e9, "hello_burst": 1e9}


# -- caps and eviction -------------------------------------------------------------------------


def test_a_flood_of_names_from_one_key_keeps_its_newest_records_up_to_the_key_cap(
    untrained_bundle: Bundle,
) -> None:
    clock = Clock()
    fleet = fleet_of(untrained_bundle, clock, **UNLIMITED)
    fleet.heartbeat(heartbeat(untrained_bundle, "gate-1"), "gate-1")
    for i in range(20_000):
        clock.now += 0.001
        fleet.heartbeat(heartbeat(untrained_bundle, f"x{i:05d}"), "flood")
    cap = fleet.limits.max_edges_per_key  # 1,024
    assert cap == 1_024
    flood = [name for name in fleet.edges if name.startswith("flood/")]
    # The least recently seen went first: what is left is the last `cap` names sent.
    assert sorted(flood) == [f"flood/x{i:05d}" for i in range(20_000 - cap, 20_000)]
    assert "gate-1" in fleet.edges  # another key's record is not the flood's to evict
    assert fleet.take_dropped() == {"evicted": 20_000 - cap}
    report = fleet.report(limit=2_000)
    assert report["total"] == cap + 1 and len(report["edges"]) == cap + 1
    assert [r["edges"] for r in report["comparison"]] == [cap + 1]


def test_the_total_cap_evicts_the_least_recently_seen_of_all_keys(
    untrained_bundle: Bundle,
) -> None:
    clock = Clock()
    fleet = fleet_of(untrained_bundle, clock, max_edges=3_000, **UNLIMITED)
    for k in range(10):
        for i in range(1_000):
            clock.now += 0.001
            fleet.heartbeat(heartbeat(untrained_bundle, f"n{i:04d}"), f"key{k}")
            if i % 100 == 0:
                # An edge that keeps reporting is recent, however early it came.
                fleet.heartbeat(heartbeat(untrained_bundle), "gate-1")
    assert len(fleet.edges) == 3_000
    assert "gate-1" in fleet.edges
    assert {name.split("/")[0] for name in fleet.edges} == {"gate-1", "key7", "key8", "key9"}
    assert "key7/n0000" not in fleet.edges and "key7/n0001" in fleet.edges
    assert fleet.edges["gate-1"].hellos == 100
    states = fleet.states()
    assert states == {("1", "serving"): 3_000}


def test_the_sums_kept_by_heartbeats_match_a_recount(untrained_bundle: Bundle) -> None:
    """Comparison and states, kept current through updates, evictions and stale edges,
    equal what a count over every record gives (``compare``, the metric's labels)."""
    rng = random.Random(7)
    clock = Clock()
    fleet = fleet_of(untrained_bundle, clock, max_edges=40, max_edges_per_key=15, **UNLIMITED)
    versions = ["1", "2", "3", ""]
    states = ["serving", "downloading", "probation", "refused", "bogus"]
    for step in range(4_000):
        clock.now += rng.choice([0.1, 1.0, 5.0, 30.0]) if rng.random() < 0.3 else 0.0
        requests = rng.choice([0, 1, 37, 500, 10**12, -3, True, "x"])
        meta = heartbeat(
            untrained_bundle,
            f"e{rng.randrange(30)}",
            version=rng.choice(versions),
            bundle=rng.choice([untrained_bundle.id, "f" * 64, ""]),
            state=rng.choice(states),
            requests=requests,
            errors=rng.choice([0, 1, 3, 600]),
            p50_ms=rng.choice([1.5, 2.25, math.nan, math.inf, -1.0, 12.0, None]),
            p95_ms=rng.choice([4.0, 9.125, math.nan, 1e300]),
        )
        fleet.heartbeat(meta, rng.choice(["a", "b", "c", None]))
        if step % 50 == 0:
            rows = [e.row(clock.now) for e in fleet.edges.values()]
            kept = fleet.report(limit=100)["comparison"]
            expected = compare(rows)
            assert [r["version"] for r in kept] == [r["version"] for r in expected]
            for got, want in zip(kept, expected, strict=True):
                for key in ("edges", "requests"):
                    assert got[key] == want[key]
                for key in ("error_rate", "p50_ms", "p95_ms"):
                    assert got[key] == pytest.approx(want[key], rel=1e-3, nan_ok=True)
            known = {untrained_bundle.id: "1"}
            recount: dict[tuple[str, str], int] = {}
            for e in fleet.edges.values():
                stale = clock.now - e.last_seen > STALE_S
                key = (known.get(e.bundle, "other"), "stale" if stale else e.state)
                recount[key] = recount.get(key, 0) + 1
            assert fleet.states() == recount


def test_the_comparison_keeps_a_bounded_number_of_versions(untrained_bundle: Bundle) -> None:
    fleet = fleet_of(untrained_bundle, max_versions=4, **UNLIMITED)
    for i in range(50):
        fleet.heartbeat(heartbeat(untrained_bundle, f"e{i}", version=f"v{i}"), "k")
    fleet.heartbeat(heartbeat(untrained_bundle, "stable", version="1"), "k")
    rows = {r["version"]: r["edges"] for r in fleet.report()["comparison"]}
    # Four versions of their own, the stable's always among them; the rest summed.
    assert rows == {"v0": 1, "v1": 1, "v2": 1, "v3": 1, OTHER_VERSIONS: 46, "1": 1}


# -- heartbeats: rate and fields ---------------------------------------------------------------


def test_heartbeats_beyond_a_keys_rate_are_answered_but_change_nothing(
    untrained_bundle: Bundle,
) -> None:
    clock = Clock()
    fleet = fleet_of(untrained_bundle, clock, hello_rate=2.0, hello_burst=3.0)
    welcome = wire.Welcome(0, untrained_bundle.id, "1", "A")
    for i in range(3):  # the bucket's three tokens
        assert fleet.heartbeat(heartbeat(untrained_bundle, note=f"n{i}"), "gate-1") == welcome
    assert fleet.edges["gate-1"].hellos == 3
    # The fourth at the same instant: its edge is told its assignment, its record stays.
    assert fleet.heartbeat(heartbeat(untrained_bundle, note="late"), "gate-1") == welcome
    assert fleet.edges["gate-1"].note == "n2" and fleet.edges["gate-1"].hellos == 3
    # A name the key has no record for is assigned nothing (it keeps what it runs).
    unknown = fleet.heartbeat(heartbeat(untrained_bundle, "other"), "gate-1")
    assert unknown.assigned == "" and "gate-1/other" not in fleet.edges
    # Another key has a bucket of its own.
    assert fleet.heartbeat(heartbeat(untrained_bundle), "gate-2") == welcome
    clock.now += 0.4  # 0.8 of a token: still nothing
    fleet.heartbeat(heartbeat(untrained_bundle, note="early"), "gate-1")
    assert fleet.edges["gate-1"].hellos == 3
    clock.now += 0.1  # one token (0.8 + 2/s x 0.1 s)
    fleet.heartbeat(heartbeat(untrained_bundle, note="on time"), "gate-1")
    assert fleet.edges["gate-1"].note == "on time" and fleet.edges["gate-1"].hellos == 4
    clock.now += 100.0  # a full bucket again, never more than its size
    for _ in range(5):
        fleet.heartbeat(heartbeat(untrained_bundle), "gate-1")
    assert fleet.edges["gate-1"].hellos == 7
    assert fleet.take_dropped() == {"hello_rate": 5}  # late, other, early, 2 of the 5
    assert fleet.take_dropped() == {}
    # A clock that steps back gives no tokens.
    clock.now -= 1_000.0
    fleet.heartbeat(heartbeat(untrained_bundle), "gate-1")
    assert fleet.edges["gate-1"].hellos == 7


def test_the_default_rate_carries_a_daemonset_and_stops_a_flood(untrained_bundle: Bundle) -> None:
    clock = Clock()
    fleet = fleet_of(untrained_bundle, clock)
    # 1,000 nodes on one key, each reporting every 10 s, starting together: all recorded.
    for _ in range(6):
        for i in range(1_000):
            clock.now += 10.0 / 1_000
            fleet.heartbeat(heartbeat(untrained_bundle, f"jetson-{i:04d}"), "edge")
    assert len(fleet.edges) == 1_000
    assert {e.hellos for e in fleet.edges.values()} == {6}
    assert fleet.take_dropped() == {}
    # One key sending 20,000 heartbeats in 1.3 s (the probe's flood): most are not recorded.
    for i in range(20_000):
        clock.now += 1.3 / 20_000
        fleet.heartbeat(heartbeat(untrained_bundle, f"x{i}"), "flood")
    dropped = fleet.take_dropped()
    recorded = 20_000 - dropped["hello_rate"]
    assert recorded <= 1_024 + 128 * 1.3 + 1
    assert sum(name.startswith("flood/") for name in fleet.edges) <= 1_024


def test_declared_fields_are_cut_and_numbers_kept_sane(untrained_bundle: Bundle) -> None:
    fleet = fleet_of(untrained_bundle, **UNLIMITED)
    long = "é" * 10_000
    fleet.heartbeat(
        wire.Hello(
            0,
            name=long,
            bundle=long,
            version=long,
            state=long,
            candidate=long,
            note=long,
            requests=10**15,
            errors=10**16,
            p50_ms=math.inf,
            p95_ms=-4.0,
        ),
        "k",
    )
    (record,) = fleet.edges.values()
    assert len(record.name) == len("k/") + 253
    assert len(record.bundle) == len(record.version) == len(record.candidate) == 128
    assert len(record.note) == 200 and record.state == "serving"
    assert record.requests == record.errors == 10**9
    assert record.p50_ms == 1e7 and math.isnan(record.p95_ms)
    # Values the wire refuses (wire.FieldError), built here: the fleet's own bounds hold.
    fleet.heartbeat(wire.Hello(0, requests=True, errors=-1, p50_ms="3", p95_ms=None), "j")  # type: ignore[arg-type]
    odd = fleet.edges["j"]
    assert odd.requests == odd.errors == 0 and math.isnan(odd.p50_ms)
    fleet.heartbeat(wire.Hello(0, requests=10, errors=50), "i")
    assert fleet.edges["i"].errors == 10  # no more errors than requests


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_edges", 0),
        ("max_edges_per_key", 0),
        ("max_versions", 0),
        ("max_note", True),
        ("page_edges", 5_000),
        ("page_bytes", 1_000),
        ("hello_rate", math.nan),
        ("hello_burst", 0.5),
    ],
)
def test_limits_are_checked(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        FleetLimits(**{field: value})


# -- pages -------------------------------------------------------------------------------------


def walk(fleet: Fleet, limit: int | None = None) -> list[str]:
    """Every edge's name, page by page as the CLI asks (through the JSON it is sent)."""
    names: list[str] = []
    after = None
    while True:
        text = fleet.report_json(after, limit)
        assert len(text) <= fleet.limits.page_bytes
        page = json.loads(text)
        names += [e["name"] for e in page["edges"]]
        if page["next"] is None:
            return names
        assert page["next"] == names[-1]
        after = page["next"]


def test_pages_list_every_edge_once_in_order(untrained_bundle: Bundle) -> None:
    fleet = fleet_of(untrained_bundle, max_edges_per_key=2_000, **UNLIMITED)
    for i in range(1_234):
        fleet.heartbeat(heartbeat(untrained_bundle, f"n{(i * 7919) % 1_234}"), "k")
    expected = sorted(fleet.edges)
    assert walk(fleet) == expected  # 500 a page
    assert walk(fleet, 1) == expected
    assert walk(fleet, 1_234) == expected
    page = fleet.report(after="k/n999", limit=10)  # the last name
    assert page["edges"] == [] and page["next"] is None and page["total"] == 1_234
    for after, limit in ((None, 0), (None, 2_001), (None, "9"), (None, True), (5, None)):
        with pytest.raises(ValueError, match="limit|after"):
            fleet.report(after, limit)


def test_a_page_of_long_rows_is_cut_to_its_bytes(untrained_bundle: Bundle) -> None:
    fleet = fleet_of(untrained_bundle, page_bytes=64 * 1024, **UNLIMITED)
    for i in range(300):
        # Characters that JSON escapes: 12 bytes each.
        fleet.heartbeat(heartbeat(untrained_bundle, f"n{i:03d}", note="\U0001f600" * 200), "k")
    first = json.loads(fleet.report_json(limit=300))
    assert 0 < len(first["edges"]) < 300 and first["next"] == first["edges"][-1]["name"]
    assert walk(fleet, 300) == sorted(fleet.edges)


# -- the cloud: admins only, counted -----------------------------------------------------------


def errors(node: CloudNode, kind: str) -> float | None:
    """``edgesplit_cloud_errors_total{kind}`` as exported."""
    return node.metrics.registry.get_sample_value("edgesplit_cloud_errors_total", {"kind": kind})


def _fleet_request(node: CloudNode, client: str | None, **fields: Any) -> wire.AnyMessage:
    reply = node.handle(wire.encode(wire.FleetQuery(3, **fields)), 0.0, b"", client)
    assert reply is not None
    return wire.decode(reply)


def test_only_admins_read_the_fleet_view_or_change_the_rollout(
    untrained_bundle: Bundle,
) -> None:
    fleet = Fleet(untrained_bundle, "1")
    cloud = RunningCloud(untrained_bundle, fleet=fleet, admins=frozenset({"ops"}))
    try:
        node = cloud.node
        fleet.heartbeat(heartbeat(untrained_bundle), "gate-1")
        for client in ("gate-1", None):
            for fields in ({"op": "status"}, {}, {"op": "rollout", "fraction": 0.0}):
                refused = _fleet_request(node, client, **fields)
                assert isinstance(refused, wire.ErrorReply) and refused.code == "forbidden"
                assert "--fleet-admins" in refused.message
        assert node.counts["error_forbidden"] == 6 and errors(node, "forbidden") == 6
        assert node.counts["fleet"] == 0
        ok = _fleet_request(node, "ops", op="status", limit=1)
        assert isinstance(ok, wire.FleetReport)
        bad = _fleet_request(node, "ops", op="status", limit=0)
        assert isinstance(bad, wire.ErrorReply) and bad.code == "fleet"
        refused = _fleet_request(node, "ops", op="rollout", fraction=0.5)  # no candidate
        assert isinstance(refused, wire.ErrorReply) and refused.code == "rollout"
        assert node.counts["error_rollout"] == 1 and node.counts["error_fleet"] == 1
        assert errors(node, "rollout") == 1 and errors(node, "fleet") == 1
    finally:
        cloud.stop()


def test_heartbeats_over_the_rate_are_counted_by_the_cloud(untrained_bundle: Bundle) -> None:
    clock = Clock()
    fleet = fleet_of(untrained_bundle, clock, hello_rate=1.0, hello_burst=2.0)
    cloud = RunningCloud(untrained_bundle, fleet=fleet)
    try:
        for i in range(10):
            reply = cloud.node.handle(
                wire.encode(heartbeat(untrained_bundle, f"n{i % 2}", request_id=i)),
                0.0,
                b"",
                "gate-1",
            )
            assert reply is not None and isinstance(wire.decode(reply), wire.Welcome)
        assert cloud.node.counts["error_hello_rate"] == 8
        assert errors(cloud.node, "hello_rate") == 8
        assert len(fleet.edges) == 2
    finally:
        cloud.stop()


@pytest.mark.slow
@pytest.mark.integration
def test_fleet_status_lists_100000_edges_page_by_page(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    """A fleet at its total cap served by a real cloud node over ZeroMQ: `edgesplit fleet
    status` (a process) lists every edge, as JSON and as text; one page is cheap."""
    fleet = Fleet(untrained_bundle, "1")
    began = time.perf_counter()
    for k in range(100):  # a hundred DaemonSets of a thousand nodes
        for i in range(1_000):
            meta = heartbeat(untrained_bundle, f"jetson-{i:04d}", note="committed: p50 x1.02")
            fleet.heartbeat(meta, f"site-{k:03d}")
    filled = time.perf_counter() - began
    assert len(fleet.edges) == 100_000
    names = sorted(fleet.edges)
    cloud = RunningCloud(untrained_bundle, fleet=fleet)
    try:
        costs = []
        for after in (None, names[50_000], names[-600]):
            request = wire.encode(wire.FleetQuery(1, "status", after=after))
            t0 = time.perf_counter()
            reply = cloud.node.handle(request, 0.0)
            costs.append(time.perf_counter() - t0)
            assert reply is not None
            report = wire.decode(reply)
            assert isinstance(report, wire.FleetReport)
            assert len(report.json) <= fleet.limits.page_bytes
        assert max(costs) < 0.25, costs  # a page costs its 500 rows (~5 ms), not the fleet

        def fleet_cli(*args: str) -> subprocess.CompletedProcess:
            command = [sys.executable, "-m", "edgesplit", "fleet", "status", *args]
            command += ["--connect", cloud.endpoint, "--insecure"]
            return subprocess.run(command, capture_output=True, text=True, timeout=300)

        t0 = time.perf_counter()
        listed = fleet_cli("--json")
        json_s = time.perf_counter() - t0
        assert listed.returncode == 0, listed.stderr[-2000:]
        report = json.loads(listed.stdout)
        assert [e["name"] for e in report["edges"]] == names
        assert report["total"] == 100_000 and "next" not in report
        assert report["comparison"][0]["edges"] == 100_000
        t0 = time.perf_counter()
        table = fleet_cli()
        text_s = time.perf_counter() - t0
        assert table.returncode == 0, table.stderr[-2000:]
        lines = table.stdout.splitlines()
        assert "100000 edge(s)" in lines
        assert sum(line.startswith("site-") for line in lines) == 100_000
        assert "by version" in table.stdout
        pages = cloud.node.counts["fleet"]
        assert pages == 3 + 2 * 200  # 3 above, 200 pages of 500 per listing
    finally:
        cloud.stop()
    print(  # noqa: T201 - the figures, for docs/updates.md
        f"\nfleet of 100,000: filled in {filled:.2f} s; one page (500 edges) "
        f"{min(costs) * 1e3:.1f}-{max(costs) * 1e3:.1f} ms on the ingress; "
        f"`fleet status --json` {json_s:.1f} s, as text {text_s:.1f} s ({pages} pages)"
    )


def test_a_flood_of_names_cannot_push_other_keys_edges_out_of_the_offer(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    from cloud_node.fleet import Candidate
    from edgesplit.release import Release

    release = Release("c" * 64, "2", "m", "2026-12-03T00:00:00Z", sequence=2)
    candidate = Candidate(tmp_path / "r.edge.tar", release, untrained_bundle, "0" * 64, 1)
    fleet = Fleet(
        untrained_bundle,
        "1",
        candidate,
        1.0,
        clock=Clock(),
        limits=FleetLimits(max_edges=300, max_edges_per_key=100, **UNLIMITED),
    )
    assert fleet.heartbeat(heartbeat(untrained_bundle, "gate-1"), "gate-1").assigned == "c" * 64
    for i in range(5_000):
        fleet.heartbeat(heartbeat(untrained_bundle, f"n{i}"), "mallory")
    assert "gate-1" in fleet.offered  # another key's edge keeps its offer
    mallory = [n for n in fleet.offered if n.startswith("mallory/")]
    assert len(mallory) == 100 and "mallory/n4999" in mallory
    assert len(fleet.offered) <= 300


def test_a_heartbeat_with_a_field_of_the_wrong_type_is_refused_by_name(
    untrained_bundle: Bundle,
) -> None:
    fleet = fleet_of(untrained_bundle, **UNLIMITED)
    cloud = RunningCloud(untrained_bundle, fleet=fleet)
    try:
        bad = raw_frames("hello", 4, {"name": "e", "requests": "many"})  # no typed sender would
        reply = cloud.node.handle(bad, 0.0, b"", "gate-1")
        assert reply is not None
        refused = wire.decode(reply)
        assert isinstance(refused, wire.ErrorReply) and refused.code == "header"
        assert "hello field 'requests': must be an int, got str" in refused.message
        assert not fleet.edges and cloud.node.counts["hello"] == 0
        good = cloud.node.handle(wire.encode(heartbeat(untrained_bundle, "e")), 0.0, b"", "k")
        assert good is not None and isinstance(wire.decode(good), wire.Welcome)
    finally:
        cloud.stop()
