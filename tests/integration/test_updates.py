"""Over-the-air bundle updates, for real: releases, a cloud node offering one, edges taking it.

Every test runs a real cloud node (ZeroMQ ROUTER, CURVE where it matters) and
real edge nodes with ONNX Runtime heads; bundles are real partitioned bundles,
varied on disk (a new id, a broken tail, a broken head) with their manifests
re-hashed as the partitioner would.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import wire
from benchmarks.ota_update import variant
from cloud_node.backends import OnnxRuntimeBackend
from cloud_node.fleet import Candidate, Fleet
from cloud_node.server import CloudConfig
from edge_node.bundle_store import committed_bundle
from edge_node.config import UpdateConfig
from edge_node.download import Downloader
from edge_node.head import HeadRunner
from edge_node.metrics import EdgeMetrics
from edge_node.node import EdgeConfig, EdgeNode
from edge_node.records import Outcome
from edge_node.transport import CloudClient
from edge_node.update import Updater
from edgesplit.bundle import MANIFEST, Bundle, sha256_file
from edgesplit.errors import UpdateError
from edgesplit.release import (
    edge_release_path,
    load_signing_key,
    load_verify_key,
    make_release,
    read_release,
    unpack_release,
    write_signing_keys,
)
from edgesplit.security import generate_keys, load_allowed, load_keypair, load_public_key
from offload_policy import Decision, FixedPolicy
from tests.conftest import RunningCloud

CUT = "c03"  # every request is offloaded at this cut: the tail matters


# -- bundles and releases ----------------------------------------------------------------------


def swap_tails(root: Path) -> None:
    """Give every tail another cut's model: the cloud fails every request (wrong input)."""
    tails = sorted((root / "cloud").glob("*/1/model.onnx"))
    models = [p.read_bytes() for p in tails]
    for path, model in zip(tails, models[1:] + models[:1], strict=True):
        path.write_bytes(model)


def swap_heads(root: Path) -> None:
    """Give every head segment another's model: sessions load, every run fails."""
    segments = sorted((root / "edge").glob("*.onnx"))
    models = [p.read_bytes() for p in segments]
    for path, model in zip(segments, models[1:] + models[:1], strict=True):
        path.write_bytes(model)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A release-signing pair, another (untrusted) one, and CURVE keys for a cloud and edges."""
    root = tmp_path_factory.mktemp("keys")
    sign, verify = write_signing_keys(root, "release")
    other, _ = write_signing_keys(root, "mallory")
    generate_keys(root / "cloud", "cloud")
    for name in ("gate-1", "gate-2", "admin"):
        generate_keys(root / "edges", name)
    return {"sign": sign, "verify": verify, "other": other, "root": root}


def release_of(
    bundle: Bundle, out: Path, version: str, sign_key: Path | None, sequence: int | None = None
) -> Path:
    """The full release ``out/vVERSION.tar``, its edge part beside it (``vVERSION.edge.tar``).

    Its sequence is ``sequence``, else the version when that is a number.
    """
    key = load_signing_key(sign_key) if sign_key is not None else None
    if sequence is None and version.isdigit():
        sequence = int(version)
    full = out / f"v{version}.tar"
    return make_release(
        bundle, version, full, key, sequence=sequence, edge_out=edge_release_path(full)
    )


# -- a cloud offering a release, edges taking it -----------------------------------------------


class Cloud(RunningCloud):
    """A cloud node serving ``stable`` and offering ``archive`` to ``fraction`` of the edges."""

    def __init__(
        self,
        stable: Bundle,
        archive: Path | None,
        unpack_to: Path,
        fraction: float = 1.0,
        url: str | None = None,
        keys: dict[str, Path] | None = None,
    ) -> None:
        candidate = None
        if archive is not None:
            _, unpacked = unpack_release(archive, unpack_to)
            candidate = Candidate.from_archive(archive, unpacked, url)
        self.fleet = Fleet(stable, "1", candidate, fraction if candidate else 0.0)
        config = CloudConfig(bind="tcp://127.0.0.1:*")
        if keys is not None:
            config = CloudConfig(
                bind="tcp://127.0.0.1:*",
                keys=load_keypair(keys["root"] / "cloud" / "cloud.key_secret"),
                allowed=load_allowed(keys["root"] / "edges"),
            )
        self.candidate = candidate
        super().__init__(
            stable,
            config=config,
            fleet=self.fleet,
            admins=frozenset({"admin"}) if keys is not None else None,
        )

    def _start(self) -> None:
        if self.candidate is not None:
            bundle = self.candidate.bundle
            self.node.serve_bundle(bundle, OnnxRuntimeBackend(bundle, threads=1))
        super()._start()


@pytest.fixture
def clouds() -> Iterator[list[Cloud]]:
    started: list[Cloud] = []
    yield started
    for cloud in started:
        cloud.stop()


class Edge:
    """A real edge node with its updater; ``run`` answers inputs until a condition holds."""

    def __init__(
        self,
        bundle: Bundle,
        endpoint: str,
        state_dir: Path,
        name: str = "gate-1",
        verify: Path | None = None,
        curve: dict[str, Path] | None = None,
        probation_s: float = 0.6,
        base: Bundle | None = None,
        allow_downgrade: bool = False,
    ) -> None:
        base = base or bundle

        def client() -> CloudClient:
            if curve is None:
                return CloudClient(endpoint)
            return CloudClient(
                endpoint,
                keys=load_keypair(curve["root"] / "edges" / f"{name}.key_secret"),
                server_key=load_public_key(curve["root"] / "cloud" / "cloud.key"),
            )

        def policy(b: Bundle) -> FixedPolicy:
            return FixedPolicy(Decision(CUT, None, "raw"), b.manifest.edge_only.id)

        own = client()
        metrics = EdgeMetrics()
        self.updater = Updater(
            UpdateConfig(
                state_dir=state_dir,
                name=name,
                interval_s=0.05,
                probation_s=probation_s,
                min_requests=8,
                verify_keys=None if verify is None else (load_verify_key(verify),),
                fetch_timeout_s=5.0,
                base=base.id,
                base_root=base.root,
                allow_downgrade=allow_downgrade,
            ),
            "1",
            client,
            lambda b: HeadRunner(b, threads=1),
            policy,
            client=own,
            metrics=metrics,
        )
        self.node = EdgeNode(
            bundle,
            policy(bundle),
            own,
            EdgeConfig(timeout_s=2.0, backoff_s=0.2, max_backoff_s=0.5, rtt_s=0.0),
            metrics=metrics,
            updater=self.updater,
        )
        self.outcomes: list[Outcome] = []
        self.inputs = 0

    def run(self, until: Callable[[], bool], timeout_s: float = 60.0) -> None:
        """Answer requests (a batch of one each, 5 ms apart) until ``until()`` or timeout."""
        shape = self.node.bundle.manifest.model.input.shape
        rng = np.random.default_rng(len(self.outcomes))
        deadline = time.monotonic() + timeout_s
        while not until():
            assert time.monotonic() < deadline, (
                f"timed out: state={self.updater.state} note={self.updater.note} "
                f"events={self.updater.events}"
            )
            self.inputs += 1
            self.outcomes.append(
                self.node.infer(rng.standard_normal((1, *shape), dtype=np.float32))
            )
            time.sleep(0.005)

    def more(self, n: int) -> None:
        """Answer ``n`` more requests."""
        target = len(self.outcomes) + n
        self.run(lambda: len(self.outcomes) >= target)

    def close(self) -> None:
        assert self.node.client is not None
        self.node.client.close()


def results(edge: Edge) -> list[str]:
    return [r for r, _ in edge.updater.events]


# -- releases on their own ---------------------------------------------------------------------


def test_release_round_trip_signed_and_deterministic(
    untrained_bundle: Bundle, keys: dict[str, Path], tmp_path: Path
) -> None:
    key = load_signing_key(keys["sign"])
    a = make_release(untrained_bundle, "2", tmp_path / "a.tar", key, created="2026-11-30T00:00:00Z")
    b = make_release(untrained_bundle, "2", tmp_path / "b.tar", key, created="2026-11-30T00:00:00Z")
    assert sha256_file(a) == sha256_file(b)
    release = read_release(a)
    assert release.bundle_id == untrained_bundle.id and release.version == "2"
    assert release.signature is not None and release.signature["alg"] == "ed25519"
    got, bundle = unpack_release(
        a,
        tmp_path / "store",
        verify_keys=[load_verify_key(keys["verify"])],
        expected_sha256=sha256_file(a),
    )
    assert bundle.id == untrained_bundle.id == got.bundle_id
    assert bundle.root == tmp_path / "store" / untrained_bundle.id
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [untrained_bundle.id]


def _rewrite(
    archive: Path, out: Path, change: Callable[[str, bytes], bytes | None], extra=()
) -> Path:
    """A copy of a release archive with members changed (None drops one), extra appended."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src:
            fh = src.extractfile(member)
            assert fh is not None
            data = change(member.name, fh.read())
            if data is None:
                continue
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
        for info, data in extra:
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def _flip_first_segment() -> Callable[[str, bytes], bytes]:
    """A member changer that flips the last byte of the first head segment."""
    done: list[str] = []

    def change(name: str, data: bytes) -> bytes:
        if name.startswith("edge/") and name.endswith(".onnx") and not done:
            done.append(name)
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    return change


def test_refusals_name_what_is_wrong_and_leave_nothing_staged(
    untrained_bundle: Bundle, keys: dict[str, Path], tmp_path: Path
) -> None:
    trusted = [load_verify_key(keys["verify"])]
    signed = release_of(untrained_bundle, tmp_path, "2", keys["sign"])
    unsigned = release_of(untrained_bundle, tmp_path, "3", None)
    foreign = make_release(
        untrained_bundle, "4", tmp_path / "foreign.tar", load_signing_key(keys["other"])
    )
    store = tmp_path / "store"
    cases: list[tuple[Path, dict, str]] = [
        (unsigned, {"verify_keys": trusted}, "unsigned"),
        (foreign, {"verify_keys": trusted}, "does not verify with any trusted key"),
        (signed, {"verify_keys": trusted, "expected_sha256": "0" * 64}, "corrupt download"),
    ]
    tampered_file = _rewrite(signed, tmp_path / "t1.tar", _flip_first_segment())
    cases.append((tampered_file, {"verify_keys": trusted}, "sha256 of edge/"))

    def edit_manifest(name: str, data: bytes) -> bytes:
        if name != MANIFEST:
            return data
        manifest = json.loads(data)
        manifest["created_by"] = "someone else"
        return json.dumps(manifest).encode()

    cases.append(
        (
            _rewrite(signed, tmp_path / "t2.tar", edit_manifest),
            {"verify_keys": trusted},
            "bundle_id does not match",
        )
    )
    traversal = tarfile.TarInfo("../escape.txt")
    traversal.size = 3
    cases.append(
        (
            _rewrite(signed, tmp_path / "t3.tar", lambda n, d: d, extra=[(traversal, b"bad")]),
            {"verify_keys": trusted},
            "not a plain relative file",
        )
    )
    link = tarfile.TarInfo("edge/link.onnx")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    cases.append(
        (
            _rewrite(signed, tmp_path / "t4.tar", lambda n, d: d, extra=[(link, None)]),
            {},
            "not a plain relative file",
        )
    )
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all")
    cases.append((tmp_path / "junk.tar", {}, "not a readable release archive"))
    for archive, kwargs, expected in cases:
        with pytest.raises(UpdateError, match=expected):
            unpack_release(archive, store, **kwargs)
        leftovers = list(store.iterdir()) if store.exists() else []
        assert leftovers == [], f"{archive.name}: left {leftovers}"


def test_fleet_groups_are_stable_and_grow_with_the_fraction(
    untrained_bundle: Bundle, keys: dict[str, Path], tmp_path: Path
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    archive = release_of(v2, tmp_path, "2", keys["sign"])
    fleet = Fleet(untrained_bundle, "1", Candidate.from_archive(archive, v2), 0.25)
    names = [f"edge-{i}" for i in range(400)]
    quarter = {n for n in names if fleet.group(n) == "B"}
    assert 60 <= len(quarter) <= 140  # 100 expected
    fleet.set_fraction(0.5)
    half = {n for n in names if fleet.group(n) == "B"}
    assert quarter < half and 160 <= len(half) <= 240
    on_v1 = wire.Hello(1, bundle=untrained_bundle.id)
    offer = fleet.heartbeat(replace(on_v1, version="1"), next(iter(quarter)))
    # The offer is the edge part, derived by the cloud: the very bytes `release` wrote.
    assert offer.assigned == v2.id and offer.sha256 == sha256_file(edge_release_path(archive))
    stay = fleet.heartbeat(on_v1, next(n for n in names if n not in half))
    assert stay == wire.Welcome(1, untrained_bundle.id, "1", "A")
    # An edge that rolled the candidate back is never offered it again.
    edge = next(iter(quarter))
    fleet.heartbeat(replace(on_v1, state="rolled_back", candidate=v2.id), edge)
    assert fleet.heartbeat(on_v1, edge).assigned == untrained_bundle.id
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(Exception, match="fraction"):
            fleet.set_fraction(bad)


def test_edges_sharing_a_key_are_told_apart_by_the_name_they_give(
    untrained_bundle: Bundle,
) -> None:
    fleet = Fleet(untrained_bundle, "1")
    for key, name in (
        ("edge", "jetson-a"),
        ("edge", "jetson-b"),
        ("gate-1", "gate-1"),
        (None, "x"),
    ):
        fleet.heartbeat(wire.Hello(1, name, untrained_bundle.id), key)
    assert sorted(fleet.edges) == ["edge/jetson-a", "edge/jetson-b", "gate-1", "x"]
    assert fleet.edges["edge/jetson-a"].key == "edge" and fleet.edges["x"].key == ""


# -- edges and a cloud, end to end -------------------------------------------------------------


def test_signed_update_over_curve_switches_commits_and_loses_no_request(
    untrained_bundle: Bundle, keys: dict[str, Path], tmp_path: Path, clouds: list[Cloud]
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    archive = release_of(v2, tmp_path, "2", keys["sign"])
    cloud = Cloud(untrained_bundle, archive, tmp_path / "cloud-unpacked", keys=keys)
    clouds.append(cloud)
    edge = Edge(
        untrained_bundle, cloud.endpoint, tmp_path / "state", verify=keys["verify"], curve=keys
    )
    edge.node.check_cloud()
    edge.run(lambda: "committed" in results(edge))
    edge.more(5)  # a few more on the new bundle
    edge.close()
    assert results(edge) == ["offered", "switched", "committed"]
    # Every input answered exactly once; those after the switch by the new bundle, in the cloud.
    assert len(edge.outcomes) == edge.inputs
    served = [o.bundle for o in edge.outcomes]
    switch = served.index(v2.id)
    assert set(served[:switch]) == {untrained_bundle.id} and set(served[switch:]) == {v2.id}
    assert {o.finished for o in edge.outcomes} == {"cloud"}
    assert edge.node.bundle.id == v2.id and edge.node.spare is None
    committed = committed_bundle(tmp_path / "state")
    assert committed is not None and committed[0].id == v2.id and committed[1] == "2"
    # The fleet view names the edge by its CURVE key and shows it on the new version.
    time.sleep(0.1)
    edge_row = cloud.fleet.report()["edges"][0]
    assert edge_row["name"] == "gate-1" and edge_row["key"] == "gate-1"
    assert edge_row["version"] == "2" and edge_row["bundle"] == v2.id
    assert cloud.node.counts["fetch"] >= 1 and cloud.node.counts["error_bundle_mismatch"] == 0


def test_switch_with_offloads_in_flight_answers_each_on_the_bundle_it_started_on(
    untrained_bundle: Bundle, keys: dict[str, Path], tmp_path: Path, clouds: list[Cloud]
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    cloud = Cloud(untrained_bundle, release_of(v2, tmp_path, "2", None), tmp_path / "u")
    clouds.append(cloud)
    edge = Edge(untrained_bundle, cloud.endpoint, tmp_path / "state", probation_s=0.3)
    edge.node.config = replace(edge.node.config, pipeline_depth=4)
    edge.node.check_cloud()
    shape = untrained_bundle.manifest.model.input.shape
    rng = np.random.default_rng(1)
    sent = 0

    def inputs() -> Iterator[np.ndarray]:
        nonlocal sent
        deadline = time.monotonic() + 60
        extra = 40
        while extra > 0 and time.monotonic() < deadline:
            extra -= "committed" in results(edge)
            sent += 1
            yield rng.standard_normal((1, *shape), dtype=np.float32)

    outcomes = list(edge.node.stream(inputs()))
    edge.close()
    assert results(edge) == ["offered", "switched", "committed"]
    assert len(outcomes) == sent  # every input answered, in order, once
    served = [o.bundle for o in outcomes]
    switch = served.index(v2.id)
    assert set(served[:switch]) == {untrained_bundle.id} and set(served[switch:]) == {v2.id}
    # The requests in flight at the switch were answered by the old bundle's tails.
    assert {o.finished for o in outcomes} == {"cloud"}
    assert cloud.node.counts["error_bundle_mismatch"] == 0


def test_stopping_a_rollout_sends_edges_back_to_the_stable_bundle_without_a_download(
    untrained_bundle: Bundle, tmp_path: Path, clouds: list[Cloud]
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    cloud = Cloud(untrained_bundle, release_of(v2, tmp_path, "2", None), tmp_path / "u")
    clouds.append(cloud)
    edge = Edge(untrained_bundle, cloud.endpoint, tmp_path / "state", probation_s=0.3)
    edge.node.check_cloud()
    edge.run(lambda: "committed" in results(edge))
    fetched = cloud.node.counts["fetch"]
    cloud.fleet.set_fraction(0.0)
    edge.run(lambda: results(edge).count("committed") == 2)
    edge.more(5)
    edge.close()
    assert results(edge) == ["offered", "switched", "committed"] * 2
    assert edge.node.bundle.id == untrained_bundle.id and edge.updater.version == "1"
    assert cloud.node.counts["fetch"] == fetched  # back from the configured bundle on disk
    assert edge.outcomes[-1].bundle == untrained_bundle.id and len(edge.outcomes) == edge.inputs
    committed = committed_bundle(tmp_path / "state", base=untrained_bundle.id)
    assert committed is not None and committed[0].id == untrained_bundle.id


def test_a_capped_download_keeps_to_its_rate(
    untrained_bundle: Bundle, tmp_path: Path, clouds: list[Cloud]
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    archive = release_of(v2, tmp_path, "2", None)
    cloud = Cloud(untrained_bundle, archive, tmp_path / "u")
    clouds.append(cloud)
    served = cloud.fleet.candidate.archive  # type: ignore[union-attr] - the edge part
    size = served.stat().st_size
    rate = size * 8 / 1.5  # the whole archive in 1.5 s
    cloud.fleet.heartbeat(wire.Hello(1, "edge"), None)  # offered: only then may it fetch
    config = UpdateConfig(state_dir=tmp_path / "s", download_bps=rate)
    downloader = Downloader(config, lambda: CloudClient(cloud.endpoint))
    began = time.perf_counter()
    downloader.chunks(v2.id, tmp_path / "x.tar", size, 256 * 1024)
    elapsed = time.perf_counter() - began
    assert sha256_file(tmp_path / "x.tar") == sha256_file(served)
    assert 1.3 <= elapsed <= 4.0, elapsed


@pytest.mark.parametrize("problem", ["corrupt", "unsigned", "foreign"])
def test_corrupt_or_unsigned_release_is_refused_and_the_old_bundle_keeps_serving(
    problem: str,
    untrained_bundle: Bundle,
    keys: dict[str, Path],
    tmp_path: Path,
    clouds: list[Cloud],
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    sign = {"corrupt": keys["sign"], "unsigned": None, "foreign": keys["other"]}[problem]
    archive = release_of(v2, tmp_path, "2", sign)
    cloud = Cloud(untrained_bundle, archive, tmp_path / "cloud-unpacked")
    clouds.append(cloud)
    if problem == "corrupt":
        # The archive served changes on the cloud's disk after its sha256 was announced.
        served = cloud.fleet.candidate.archive  # type: ignore[union-attr]
        data = bytearray(served.read_bytes())
        data[len(data) // 2] ^= 0xFF
        served.write_bytes(bytes(data))
    edge = Edge(untrained_bundle, cloud.endpoint, tmp_path / "state", verify=keys["verify"])
    edge.node.check_cloud()
    attempts = 3 if problem == "corrupt" else 1
    edge.run(lambda: edge.updater.state == "refused")
    assert results(edge).count("retrying") == attempts - 1
    edge.more(20)
    edge.close()
    note = edge.updater.note
    expected = {
        "corrupt": "does not match the offer",
        "unsigned": "unsigned",
        "foreign": "trusted key",
    }
    assert expected[problem] in note, note
    assert "switched" not in results(edge)
    assert v2.id in edge.updater.refused  # never taken again (corrupt: after 3 tries)
    assert {o.bundle for o in edge.outcomes} == {untrained_bundle.id}
    assert {o.finished for o in edge.outcomes} == {"cloud"}
    assert len(edge.outcomes) == edge.inputs
    assert not (tmp_path / "state" / "bundles" / v2.id).exists()
    assert not (tmp_path / "state" / "current").exists()
    time.sleep(0.1)
    row = cloud.fleet.report()["edges"][0]
    assert row["state"] == "refused" and row["candidate"] == v2.id


@pytest.mark.parametrize("breakage", ["tail", "head"])
def test_a_bundle_that_regresses_is_rolled_back_and_no_request_is_lost(
    breakage: str,
    untrained_bundle: Bundle,
    keys: dict[str, Path],
    tmp_path: Path,
    clouds: list[Cloud],
) -> None:
    edit = swap_tails if breakage == "tail" else swap_heads
    bad = variant(untrained_bundle, tmp_path / "bad", "bad", edit)
    archive = release_of(bad, tmp_path, "2", keys["sign"])
    cloud = Cloud(untrained_bundle, archive, tmp_path / "cloud-unpacked")
    clouds.append(cloud)
    edge = Edge(
        untrained_bundle,
        cloud.endpoint,
        tmp_path / "state",
        verify=keys["verify"],
        probation_s=30.0,
    )
    edge.node.check_cloud()
    edge.run(lambda: len(edge.outcomes) >= 10)  # a baseline on the good bundle
    edge.run(lambda: "rolled_back" in results(edge))
    edge.run(lambda: edge.node.health.up)
    edge.more(10)
    edge.close()
    assert results(edge) == ["offered", "switched", "rolled_back"]
    assert "error rate" in edge.updater.note
    assert edge.node.bundle.id == untrained_bundle.id and edge.node.spare is None
    assert bad.id in edge.updater.refused and not (tmp_path / "state" / "bundles" / bad.id).exists()
    # Every request was answered: on the bad bundle by a local fallback (the old bundle's
    # head when the new one's failed) or, once its failures marked the cloud down, on the
    # edge alone; after the rollback by the cloud again.
    assert len(edge.outcomes) == edge.inputs
    finished = [(o.bundle, o.finished, o.reason) for o in edge.outcomes]
    on_bad = [f for f in finished if f[2] == "head_failed" or f[0] == bad.id]
    assert any(f[1] == "fallback" for f in on_bad)
    assert all(f[1] in ("fallback", "edge") for f in on_bad)
    assert finished[-1] == (untrained_bundle.id, "cloud", None)
    time.sleep(0.1)
    report = cloud.fleet.report()
    assert report["edges"][0]["state"] == "rolled_back"
    assert bad.id in cloud.fleet.refused["gate-1"]
    hello = wire.Hello(1, bundle=untrained_bundle.id)
    assert cloud.fleet.heartbeat(hello, "gate-1").assigned == untrained_bundle.id


def test_download_from_a_url_and_ab_comparison(
    untrained_bundle: Bundle, keys: dict[str, Path], tmp_path: Path, clouds: list[Cloud]
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    archive = release_of(v2, tmp_path / "www", "2", keys["sign"])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # Published there: the edge part that `release` wrote beside the full archive.
        url = f"http://127.0.0.1:{server.server_address[1]}/{edge_release_path(archive).name}"
        cloud = Cloud(untrained_bundle, archive, tmp_path / "cloud-unpacked", fraction=0.5, url=url)
        clouds.append(cloud)
        names = [f"edge-{i}" for i in range(40)]
        taker = next(n for n in names if cloud.fleet.group(n) == "B")
        stayer = next(n for n in names if cloud.fleet.group(n) == "A")
        edges = [
            Edge(
                untrained_bundle, cloud.endpoint, tmp_path / name, name=name, verify=keys["verify"]
            )
            for name in (taker, stayer)
        ]
        for edge in edges:
            edge.node.check_cloud()
        edges[0].run(lambda: "committed" in results(edges[0]))
        edges[1].run(lambda: len(edges[1].outcomes) >= 30)
        for edge in edges:
            edge.more(10)
            edge.close()
    finally:
        server.shutdown()
    assert cloud.node.counts["fetch"] == 0  # the archive came over HTTP
    assert edges[0].node.bundle.id == v2.id and edges[1].node.bundle.id == untrained_bundle.id
    assert results(edges[1]) == []
    time.sleep(0.1)
    report = cloud.fleet.report()
    assert {e["name"]: e["group"] for e in report["edges"]} == {taker: "B", stayer: "A"}
    rows = {r["version"]: r for r in report["comparison"]}
    assert set(rows) == {"1", "2"} and rows["1"]["edges"] == rows["2"]["edges"] == 1
    assert rows["2"]["requests"] > 0 and rows["2"]["error_rate"] == 0.0
    assert rows["1"]["p50_ms"] > 0 and rows["2"]["p50_ms"] > 0


@pytest.mark.slow
def test_cloud_and_fleet_commands_as_processes(
    untrained_bundle: Bundle, keys: dict[str, Path], tmp_path: Path
) -> None:
    from cloud_node.process import start_cloud_process, stop_process

    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    made = subprocess.run(
        [sys.executable, "-m", "edgesplit", "release", str(v2.root), "--version", "2",
         "--out", str(tmp_path / "v2.tar"), "--sign-key", str(keys["sign"])],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "signed by key" in made.stdout
    edge_part = tmp_path / "v2.edge.tar"
    assert "for the edges (what they download" in made.stdout and str(edge_part) in made.stdout
    with tarfile.open(edge_part) as tar:
        names = tar.getnames()
    assert names[:2] == ["release.json", MANIFEST]
    assert all(n.startswith(("edge/", "data/")) for n in names[2:])
    proc, endpoint = start_cloud_process(
        untrained_bundle.root,
        "tcp://127.0.0.1:*",
        tmp_path / "cloud.log",
        extra=["--insecure", "--offer", str(tmp_path / "v2.tar"), "--offer-fraction", "0.3",
               "--stable-version", "1"],
    )  # fmt: skip
    try:
        edge = Edge(untrained_bundle, endpoint, tmp_path / "state", name="gate-9")
        edge.node.check_cloud()
        edge.run(lambda: len(edge.outcomes) >= 20)
        edge.close()

        def fleet(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "edgesplit", "fleet", *args, "--connect", endpoint,
                 "--insecure"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip

        status = fleet("status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["fraction"] == 0.3 and report["candidate"]["version"] == "2"
        assert [e["name"] for e in report["edges"]] == ["gate-9"]
        changed = fleet("rollout", "--fraction", "0.8")
        assert changed.returncode == 0, changed.stderr
        assert "offered to 80% of the edges" in changed.stdout
        table = fleet("status")
        assert "gate-9" in table.stdout and "by version" in table.stdout
        refused = fleet("rollout", "--fraction", "2")
        assert refused.returncode == 1 and "expected 0..1" in refused.stderr
    finally:
        stop_process(proc)
    log = (tmp_path / "cloud.log").read_text()
    assert "offered to 30% of the edges over ZeroMQ" in log


def test_rollout_changes_need_an_admin_key(
    untrained_bundle: Bundle, keys: dict[str, Path], tmp_path: Path, clouds: list[Cloud]
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    cloud = Cloud(
        untrained_bundle, release_of(v2, tmp_path, "2", None), tmp_path / "u", 0.1, keys=keys
    )
    clouds.append(cloud)
    server = load_public_key(keys["root"] / "cloud" / "cloud.key")
    for name, allowed in (("gate-2", False), ("admin", True)):
        own = load_keypair(keys["root"] / "edges" / f"{name}.key_secret")
        with CloudClient(cloud.endpoint, keys=own, server_key=server) as client:
            query = wire.FleetQuery(client.new_id(), op="rollout", fraction=0.9)
            reply, _ = client.call(query, timeout_s=5.0)
        assert reply is not None
        if allowed:
            assert isinstance(reply.message, wire.FleetReport) and cloud.fleet.fraction == 0.9
        else:
            assert isinstance(reply.message, wire.ErrorReply)
            assert reply.message.code == "forbidden" and cloud.fleet.fraction == 0.1


@pytest.mark.slow
def test_edge_process_takes_the_update_stops_cleanly_on_sigterm_and_restarts_on_it(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    import os
    import signal

    from cloud_node.process import start_cloud_process, stop_process

    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    archive = release_of(v2, tmp_path, "2", None)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shape = untrained_bundle.manifest.model.input.shape
    rng = np.random.default_rng(0)
    for i in range(20000):
        np.save(inputs / f"{i:05d}.npy", rng.standard_normal(shape, dtype=np.float32))
    proc, endpoint = start_cloud_process(
        untrained_bundle.root,
        "tcp://127.0.0.1:*",
        tmp_path / "cloud.log",
        extra=["--insecure", "--offer", str(archive), "--offer-fraction", "1"],
    )
    state = tmp_path / "state"
    env = {
        **os.environ,
        "EDGESPLIT_UPDATE_INTERVAL_S": "0.1",
        "EDGESPLIT_UPDATE_PROBATION_S": "1",
        "EDGESPLIT_UPDATE_MIN_REQUESTS": "5",
    }

    def edge(results: Path, *extra: str) -> subprocess.Popen:
        args = [sys.executable, "-m", "edgesplit", "edge", "--bundle", str(untrained_bundle.root),
                "--connect", endpoint, "--insecure", "--policy", "fixed", "--cut", CUT,
                "--threshold", "off", "--codec", "raw", "--state-dir", str(state), "--name",
                "gate-1", "--results", str(results), "--log-level", "info", *extra]  # fmt: skip
        return subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    try:
        first = edge(tmp_path / "r1.jsonl", "--inputs", str(inputs))
        deadline = time.monotonic() + 120
        while not (state / "current").exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no update committed"
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err[-3000:]
        rows = [json.loads(line) for line in (tmp_path / "r1.jsonl").read_text().splitlines()]
        # Stopped early, every request taken answered and written, the switch inside the run.
        assert 0 < len(rows) < 20000 and "stopping" in err
        assert {r["bundle"] for r in rows} == {untrained_bundle.id, v2.id}
        assert {r["finished"] for r in rows} == {"cloud"}
        assert "update committed" in err

        second = edge(tmp_path / "r2.jsonl", "--inputs", "bundle", "--samples", "10")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err[-3000:]
        assert "committed by an update" in out
        rows = [json.loads(line) for line in (tmp_path / "r2.jsonl").read_text().splitlines()]
        assert [r["bundle"] for r in rows] == [v2.id] * 10
    finally:
        stop_process(proc)
    # The edge took the release for edges: no tail in its state dir.
    assert not [p for p in state.rglob("*") if "cloud" in p.relative_to(state).parts]
    # A bundle deployed afresh wins over an update committed on top of another.
    assert committed_bundle(state, base=untrained_bundle.id) is not None
    assert committed_bundle(state, base="0" * 64) is None


def test_fleet_status_needs_an_admin_key_too(
    untrained_bundle: Bundle, keys: dict[str, Path], tmp_path: Path, clouds: list[Cloud]
) -> None:
    from edgesplit.app.cli_fleet import _ask
    from edgesplit.errors import TransportError

    cloud = Cloud(untrained_bundle, None, tmp_path / "u", keys=keys)
    clouds.append(cloud)
    cloud.fleet.heartbeat(wire.Hello(1, "jetson-a", untrained_bundle.id), "gate-2")
    server = keys["root"] / "cloud" / "cloud.key"

    def flags(name: str) -> dict[str, object]:
        return {
            "edge.connect": cloud.endpoint,
            "security.secret_key": keys["root"] / "edges" / f"{name}.key_secret",
            "security.server_key": server,
        }

    for name in ("gate-2", "gate-1"):
        with pytest.raises(TransportError, match="forbidden.*--fleet-admins"):
            _ask(None, flags(name), False, 5.0)
    assert cloud.node.counts["error_forbidden"] == 2 and cloud.node.counts["fleet"] == 0
    report = _ask(None, flags("admin"), False, 5.0)
    assert [e["name"] for e in report["edges"]] == ["gate-2/jetson-a"] and report["total"] == 1
