"""Releases against a hostile client or cloud: tails that never leave, releases never rolled back.

Issue 20. A release has two parts made from one ``release.json``: the full
archive (the cloud's) and the edge part (``release.json``, the manifest and
``edge/``, ``data/``). Only an edge offered a release may fetch it, and only the edge
part: no key, admin or not, obtains a byte of a tail file over the wire, and an
updated edge holds none. Releases carry a signed sequence; an edge refuses one
older than the release it committed, unless its operator allows downgrades.

Every test below runs a real cloud node (ZeroMQ ROUTER, CURVE where keys are
given) and, where an edge takes an update, a real edge node with ONNX Runtime
heads, as in ``test_updates.py``.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
from pathlib import Path

import pytest

import wire
from cloud_node.fleet import Candidate, Fleet
from edge_node.transport import CloudClient
from edge_node.update import UpdateConfig, Updater, committed_bundle, read_sequence
from edgesplit.bundle import MANIFEST, Bundle, load_bundle, sha256_file
from edgesplit.errors import RollbackError, UpdateError
from edgesplit.release import (
    RELEASE,
    Release,
    check_sequence,
    edge_release_path,
    key_id,
    load_signing_key,
    load_verify_key,
    parse_release,
    read_release,
    unpack_release,
    verify_signature,
)
from edgesplit.security import load_keypair, load_public_key
from tests.integration.test_updates import (
    Cloud,
    Edge,
    clouds,  # noqa: F401 - the fixture
    keys,  # noqa: F401 - the fixture
    release_of,
    results,
    variant,
)


def _tails(bundle: Bundle) -> dict[str, bytes]:
    """Every file under ``cloud/`` of a bundle: the tails' weights and configs."""
    return {rel: (bundle.root / rel).read_bytes() for rel in bundle.files_for("cloud")}


def _holds_no_tail(data: bytes, tails: dict[str, bytes]) -> None:
    """No tail file, whole, inside ``data``; no ``cloud/`` member if it is an archive."""
    for rel, body in tails.items():
        assert body not in data, f"{rel} found in the bytes"
    if data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names = tar.getnames()
        assert names[:2] == [RELEASE, MANIFEST], names
        assert all(n.startswith(("edge/", "data/")) for n in names[2:]), names


# -- the two parts -----------------------------------------------------------------------------


def test_the_edge_part_has_no_tail_and_the_cloud_derives_the_same_bytes(
    untrained_bundle: Bundle,
    keys: dict[str, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    full = release_of(v2, tmp_path / "out", "2", keys["sign"])
    edge = edge_release_path(full)
    assert edge == tmp_path / "out" / "v2.edge.tar"
    tails = _tails(v2)
    assert tails and all(t in full.read_bytes() for t in tails.values())  # the cloud's copy
    _holds_no_tail(edge.read_bytes(), tails)
    assert read_release(edge) == read_release(full)  # one release.json, one signature
    # The cloud unpacks the full release (every file checked) and derives the edge part:
    # byte for byte the one `edgesplit release` wrote, so it may be published at a URL.
    _, unpacked = unpack_release(full, tmp_path / "cloud")
    assert sorted(unpacked.files_for("cloud")) == sorted(tails)
    candidate = Candidate.from_archive(full, unpacked)
    assert candidate.archive != full and candidate.sha256 == sha256_file(edge)
    assert candidate.size == edge.stat().st_size < full.stat().st_size
    # An edge takes the edge part, checked against the manifest's hashes of its files; the
    # bundle id still covers the tails (the manifest lists them).
    trusted = [load_verify_key(keys["verify"])]
    release, bundle = unpack_release(edge, tmp_path / "edge", verify_keys=trusted, role="edge")
    assert bundle.id == v2.id == release.bundle_id
    assert sorted(p.name for p in bundle.root.iterdir()) == ["data", "edge", MANIFEST, RELEASE]
    assert load_bundle(bundle.root, verify="edge").id == v2.id
    # An edge refuses the full release (a tail in it), the cloud refuses the edge part.
    with pytest.raises(UpdateError, match=r"member 'cloud/.*' is not for an edge"):
        unpack_release(full, tmp_path / "edge2", verify_keys=trusted, role="edge")
    with pytest.raises(UpdateError, match="cloud/.* is missing"):
        unpack_release(edge, tmp_path / "cloud2")
    for store in ("edge2", "cloud2"):
        assert not [p for p in (tmp_path / store).iterdir()], store


def test_an_edge_refuses_a_smuggled_tail_even_one_the_manifest_lists(
    untrained_bundle: Bundle,
    keys: dict[str, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # A cloud that serves tails to edges anyway: the edge part with a tail added back.
    full = release_of(untrained_bundle, tmp_path, "2", keys["sign"])
    edge = edge_release_path(full)
    tail = untrained_bundle.files_for("cloud")[0]
    body = (untrained_bundle.root / tail).read_bytes()
    smuggled = tmp_path / "smuggled.tar"
    with tarfile.open(edge) as src, tarfile.open(smuggled, "w") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member))
        info = tarfile.TarInfo(tail)
        info.size = len(body)
        dst.addfile(info, io.BytesIO(body))
    trusted = [load_verify_key(keys["verify"])]
    with pytest.raises(UpdateError, match="tails stay in the cloud"):
        unpack_release(smuggled, tmp_path / "store", verify_keys=trusted, role="edge")
    assert not list((tmp_path / "store").iterdir())


def test_an_edge_strips_tails_left_in_its_store_by_an_older_version(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    # Bundles taken before the edge part existed were unpacked whole, tails included.
    full = release_of(untrained_bundle, tmp_path, "2", None)
    state = tmp_path / "state"
    _, kept = unpack_release(full, state / "bundles")
    assert (kept.root / "cloud").is_dir()
    Updater(UpdateConfig(state_dir=state), "1", None, lambda b: None, lambda b: None)  # type: ignore[arg-type,return-value]
    assert sorted(p.name for p in kept.root.iterdir()) == ["data", "edge", MANIFEST, RELEASE]
    assert load_bundle(kept.root, verify="edge").id == untrained_bundle.id


# -- over the wire -----------------------------------------------------------------------------


def _fetch(
    endpoint: str, curve: dict[str, Path], key: str, meta: dict[str, str], size: int
) -> tuple[bytes, list[wire.ErrorReply]]:
    """Fetch ``size`` bytes in 256 KiB chunks with CURVE key ``key``; the bytes and refusals.

    ``meta``: the ``wire.Fetch`` fields besides the range (``bundle``, ``name``).
    """
    own = load_keypair(curve["root"] / "edges" / f"{key}.key_secret")
    server = load_public_key(curve["root"] / "cloud" / "cloud.key")
    data, refusals = b"", []
    with CloudClient(endpoint, keys=own, server_key=server) as client:
        offset = 0
        while offset < size:
            length = min(256 * 1024, size - offset)
            ask = wire.Fetch(client.new_id(), offset=offset, length=length, **meta)
            reply, _ = client.call(ask, timeout_s=5.0)
            assert reply is not None
            if isinstance(reply.message, wire.Chunk):
                data += reply.message.data
            else:
                assert isinstance(reply.message, wire.ErrorReply), reply.message
                refusals.append(reply.message)
            offset += length
    return data, refusals


def test_no_key_admin_or_not_fetches_a_tail_and_an_updated_edge_holds_none(
    untrained_bundle: Bundle,
    keys: dict[str, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    clouds: list[Cloud],  # noqa: F811 - the fixture
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    full = release_of(v2, tmp_path, "2", keys["sign"])
    cloud = Cloud(untrained_bundle, full, tmp_path / "cloud-unpacked", fraction=1.0, keys=keys)
    clouds.append(cloud)
    candidate = cloud.fleet.candidate
    assert candidate is not None
    tails = _tails(v2) | _tails(untrained_bundle)
    # gate-1, a real edge offered the release, takes it over CURVE.
    state = tmp_path / "state"
    edge = Edge(untrained_bundle, cloud.endpoint, state, verify=keys["verify"], curve=keys)
    edge.node.check_cloud()
    edge.run(lambda: "committed" in results(edge))
    edge.close()
    assert edge.node.bundle.id == v2.id
    # Its state dir holds no tail: no cloud/ anywhere, no file with a tail's bytes.
    files = [p for p in state.rglob("*") if p.is_file()]
    assert not [p for p in files if "cloud" in p.relative_to(state).parts]
    tail_hashes = {sha256_file(v2.root / rel) for rel in v2.files_for("cloud")}
    assert not [p for p in files if sha256_file(p) in tail_hashes]
    # Offered, gate-1 downloads the whole archive again: the edge part, no tail in it.
    whole, refused = _fetch(cloud.endpoint, keys, "gate-1", {"bundle": v2.id}, candidate.size)
    assert refused == [] and sha256_file(candidate.archive) == candidate.sha256
    assert whole == candidate.archive.read_bytes()
    _holds_no_tail(whole, tails)
    # The rollout stops; then every other key says hello and fetches: refused, admin too,
    # as is gate-1's key declaring another edge's name and any range of the stable bundle.
    cloud.fleet.set_fraction(0.0)
    before = cloud.node.counts["error_fetch"]
    attempts = [
        ("gate-2", {"bundle": v2.id, "name": "gate-2"}),
        ("admin", {"bundle": v2.id, "name": "admin"}),
        ("admin", {"bundle": v2.id, "name": "gate-1"}),  # admin/gate-1, never offered
        ("gate-2", {"bundle": untrained_bundle.id, "name": "gate-2"}),
        ("gate-1", {"bundle": untrained_bundle.id}),
    ]
    for key, meta in attempts:
        server = load_public_key(keys["root"] / "cloud" / "cloud.key")
        own = load_keypair(keys["root"] / "edges" / f"{key}.key_secret")
        with CloudClient(cloud.endpoint, keys=own, server_key=server) as client:
            hello = wire.Hello(client.new_id(), meta.get("name", key), untrained_bundle.id)
            welcome, _ = client.call(hello, timeout_s=5.0)
            assert welcome is not None and isinstance(welcome.message, wire.Welcome)
            assert welcome.message.assigned == untrained_bundle.id
        got, refused = _fetch(cloud.endpoint, keys, key, meta, candidate.size)
        assert got == b"" and len(refused) == -(-candidate.size // (256 * 1024)), (key, meta)
        codes = {r.code for r in refused}
        assert codes == ({"forbidden"} if meta["bundle"] == v2.id else {"fetch"}), (key, codes)
    assert cloud.node.counts["error_fetch"] - before == sum(
        -(-candidate.size // (256 * 1024)) for _ in attempts
    )
    # gate-1, offered before the rollout stopped, may still finish its download.
    again, refused = _fetch(cloud.endpoint, keys, "gate-1", {"bundle": v2.id}, 1024)
    assert refused == [] and again == whole[:1024]


def test_a_fleet_serves_only_the_edges_it_offered_named_as_hello_names_them(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    full = release_of(v2, tmp_path, "2", None)
    _, unpacked = unpack_release(full, tmp_path / "u")
    fleet = Fleet(untrained_bundle, "1", Candidate.from_archive(full, unpacked), 1.0)
    fleet.heartbeat(wire.Hello(1, name="jetson-a"), "shared")  # a DaemonSet's key, by name
    assert fleet.chunk(v2.id, 0, 10, "jetson-a", "shared")
    # (Without CURVE a name is only a claim: there, "shared/jetson-a" with no key would pass.)
    for name, key in (("jetson-b", "shared"), ("jetson-a", "other"), (None, "shared")):
        with pytest.raises(PermissionError, match="was not offered"):
            fleet.chunk(v2.id, 0, 10, name, key)


# -- no rollback -------------------------------------------------------------------------------


def test_the_sequence_is_signed_and_a_release_without_one_still_verifies(
    untrained_bundle: Bundle,
    keys: dict[str, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    sign = load_signing_key(keys["sign"])
    trusted = [load_verify_key(keys["verify"])]
    full = release_of(untrained_bundle, tmp_path, "7", keys["sign"])
    release = read_release(full)
    assert release.sequence == 7 and b'"sequence": 7' in release.signed_bytes()
    verify_signature(release, trusted)
    # Changing the sequence, or removing it, breaks the signature.
    raw = json.loads(release.to_json())
    for change in ({"sequence": 99}, {"sequence": None}):
        forged = {**raw, **change}
        if forged["sequence"] is None:
            del forged["sequence"]
        with pytest.raises(UpdateError, match="does not verify"):
            verify_signature(parse_release(json.dumps(forged).encode(), full), trusted)
    # A release made before sequences (no field, the old signed bytes) verifies as before.
    old = Release(untrained_bundle.id, "1", "m", "2026-01-01T00:00:00Z")
    value = base64.b64encode(sign.sign(old.signed_bytes())).decode()
    text = Release(
        **old._fields(),
        signature={"alg": "ed25519", "key": key_id(sign.public_key()), "value": value},
    ).to_json()
    assert "sequence" not in text
    parsed = parse_release(text.encode(), tmp_path)
    assert parsed.sequence == 0 and verify_signature(parsed, trusted)
    for bad in (0, -1, True, "3", 2**63, 1.5):
        with pytest.raises(UpdateError, match="sequence"):
            parse_release(json.dumps({**raw, "sequence": bad}).encode(), full)
    # The default: the release time in seconds since the epoch.
    from edgesplit.release import make_release

    dated = make_release(untrained_bundle, "x", tmp_path / "d.tar", created="2026-11-30T00:00:00Z")
    assert read_release(dated).sequence == 1795996800


def test_check_sequence_refuses_older_and_same_sequence_other_bundle() -> None:
    a, b = "a" * 64, "b" * 64

    def release(sequence: int, bundle: str = a) -> Release:
        return Release(bundle, str(sequence), "m", "2026-01-01T00:00:00Z", sequence=sequence)

    check_sequence(release(1), None, "x")  # nothing committed: anything goes
    check_sequence(release(5), (5, a), "x")  # the committed release itself
    check_sequence(release(6, b), (5, a), "x")  # newer
    for older, match in ((release(4, b), "older than"), (release(5, b), "the same as")):
        with pytest.raises(RollbackError, match=match):
            check_sequence(older, (5, a), "x")
    with pytest.raises(RollbackError, match="no sequence"):
        check_sequence(release(0, b), (1, a), "x")


def test_an_older_release_is_refused_reported_and_taken_only_when_allowed(
    untrained_bundle: Bundle,
    keys: dict[str, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    clouds: list[Cloud],  # noqa: F811 - the fixture
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    v3 = variant(untrained_bundle, tmp_path / "v3", "v3")
    old = release_of(v2, tmp_path, "2", keys["sign"])  # sequence 2
    new = release_of(v3, tmp_path, "3", keys["sign"])  # sequence 3
    state = tmp_path / "state"
    # The edge takes and commits release 3.
    first = Cloud(untrained_bundle, new, tmp_path / "c1", fraction=1.0)
    clouds.append(first)
    edge = Edge(untrained_bundle, first.endpoint, state, verify=keys["verify"])
    edge.node.check_cloud()
    edge.run(lambda: "committed" in results(edge))
    edge.close()
    assert read_sequence(state) == (3, v3.id)
    committed = committed_bundle(state, base=untrained_bundle.id)
    assert committed is not None and committed[0].id == v3.id

    def restarted(cloud: Cloud, allow_downgrade: bool = False) -> Edge:
        # The edge restarted: it serves its committed bundle, configured with the first.
        served = committed_bundle(state, base=untrained_bundle.id)
        assert served is not None
        edge = Edge(
            served[0],
            cloud.endpoint,
            state,
            verify=keys["verify"],
            base=untrained_bundle,
            allow_downgrade=allow_downgrade,
        )
        edge.node.check_cloud()
        return edge

    # A cloud (compromised, say) re-offers release 2, validly signed: refused as a rollback.
    second = Cloud(v3, old, tmp_path / "c2", fraction=1.0)
    clouds.append(second)
    edge = restarted(second)
    edge.run(lambda: edge.updater.state == "refused")
    edge.more(10)
    edge.close()
    assert "rollback refused" in edge.updater.note and "sequence 2" in edge.updater.note
    assert results(edge) == ["offered", "refused"]
    assert {o.bundle for o in edge.outcomes} == {v3.id}  # the committed bundle kept serving
    assert {o.finished for o in edge.outcomes} == {"cloud"} and len(edge.outcomes) == edge.inputs
    assert read_sequence(state) == (3, v3.id) and not (state / "bundles" / v2.id).exists()
    time.sleep(0.1)
    row = second.fleet.report()["edges"][0]
    assert row["state"] == "refused" and row["candidate"] == v2.id
    assert "rollback refused" in row["note"]
    assert v2.id in second.fleet.refused["gate-1"]  # not offered again
    # The operator forces it locally: the same release is taken, and its sequence recorded.
    third = Cloud(v3, old, tmp_path / "c3", fraction=1.0)
    clouds.append(third)
    edge = restarted(third, allow_downgrade=True)
    edge.run(lambda: "committed" in results(edge))
    edge.close()
    assert edge.node.bundle.id == v2.id and read_sequence(state) == (2, v2.id)
    assert len(edge.outcomes) == edge.inputs


def test_a_kept_bundle_assigned_again_is_checked_for_rollback_too(
    untrained_bundle: Bundle,
    keys: dict[str, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # The store keeps the previous release; a cloud assigning it again needs no download.
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    state = tmp_path / "state"
    edge_part = edge_release_path(release_of(v2, tmp_path, "2", keys["sign"]))
    unpack_release(edge_part, state / "bundles", role="edge")
    (state / "sequence.json").write_text(json.dumps({"sequence": 3, "bundle": "c" * 64}))
    for allow, refused in ((False, True), (True, False)):
        updater = Updater(
            UpdateConfig(state_dir=state, allow_downgrade=allow, base_root=untrained_bundle.root),
            "1",
            None,
            lambda b: None,  # type: ignore[arg-type,return-value]
            lambda b: None,
        )
        assert updater.committed_sequence == (3, "c" * 64)
        if refused:
            with pytest.raises(RollbackError, match="older than"):
                updater._reuse(state / "bundles" / v2.id, v2.id)
        else:
            assert updater._reuse(state / "bundles" / v2.id, v2.id)[1] == 2
    # The configured bundle is the operator's choice: never a rollback.
    updater = Updater(
        UpdateConfig(state_dir=state, base_root=untrained_bundle.root),
        "1",
        None,
        lambda b: None,  # type: ignore[arg-type,return-value]
        lambda b: None,
    )
    assert updater._reuse(untrained_bundle.root, untrained_bundle.id)[1] == 0
