"""Updates against a hostile or broken cloud, disk or bundle: the edge serves on, nothing leaks.

Each test here pins a defect found in review: an assignment used as a path, a
rollback deleting the configured bundle, a broken fallback chain losing a
request, an oversize or file:// offer, a promotion refused for good, a missing
archive on the cloud, unbounded fleet state, markup in the fleet view, a
smuggled archive member, a stale bundle-info gauge.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import msgpack
import numpy as np
import pytest

import wire
from cloud_node.fleet import Fleet
from edge_node.config import UpdateConfig
from edge_node.node import EdgeConfig, EdgeNode
from edge_node.staging import Failure
from edge_node.update import Updater
from edgesplit.bundle import MANIFEST, Bundle
from edgesplit.errors import UpdateError
from edgesplit.release import MAX_RELEASE_BYTES, unpack_release
from offload_policy import Decision, FixedPolicy
from tests.integration.test_updates import (
    CUT,
    Cloud,
    Edge,
    clouds,  # noqa: F401 - the fixture
    keys,  # noqa: F401 - the fixture
    release_of,
    results,
    swap_tails,
    variant,
)


def _updater(bundle: Bundle, state: Path, **config: object) -> tuple[Updater, EdgeNode]:
    """An updater without a cloud, on a node without one, told of the bundle served."""
    updater = Updater(
        UpdateConfig(state_dir=state, **config),  # type: ignore[arg-type]
        "1",
        None,
        lambda b: None,  # type: ignore[arg-type,return-value]
        lambda b: None,  # type: ignore[arg-type,return-value]
    )
    node = EdgeNode(
        bundle,
        FixedPolicy(Decision(CUT, None, "raw"), bundle.manifest.edge_only.id),
        None,
        EdgeConfig(rtt_s=0.0),
        metrics=updater.metrics,
        updater=updater,
    )
    updater.tick(0.0, bundle, None)
    return updater, node


def _welcome(updater: Updater, assigned: str, **offer: object) -> None:
    """The updater reads a ``welcome`` assigning ``assigned`` (with ``offer``'s fields)."""
    updater._welcome(wire.Welcome(1, assigned, **offer))  # type: ignore[arg-type]


def test_an_assignment_is_never_used_as_a_path(untrained_bundle: Bundle, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "backup.tar").write_bytes(b"keep me")
    updater, _ = _updater(untrained_bundle, tmp_path / "state")
    for assigned in ("../../victim/backup", str(victim / "backup"), "a" * 63, "A" * 64):
        _welcome(updater, assigned, sha256="0" * 64, size=10)
        assert updater.state == "serving" and updater._worker is None, assigned
        assert "not a bundle id" in updater.note
    assert (victim / "backup.tar").read_bytes() == b"keep me"


def test_offers_without_a_source_or_too_big_or_file_urls_are_not_downloaded(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    updater, _ = _updater(untrained_bundle, tmp_path / "state")
    other = "b" * 64
    # A promotion: the new stable bundle is assigned with nothing to download it from.
    _welcome(updater, other, version="2", group="A")
    assert updater.state == "serving" and "not on this edge and not offered" in updater.note
    assert other not in updater.refused  # not refused: a later offer may bring it
    _welcome(updater, other, sha256="c" * 64, size=MAX_RELEASE_BYTES + 1)
    assert updater.wait_idle(10)
    updater.tick(0.0, untrained_bundle, None)
    assert updater.state == "refused" and "over the limit" in updater.note
    third = "d" * 64
    _welcome(updater, third, sha256="c" * 64, size=100, url="file:///etc/hostname")
    assert updater.wait_idle(10)
    updater.tick(0.0, untrained_bundle, None)
    assert updater.state == "refused" and "expected http:// or https://" in updater.note
    assert not list((tmp_path / "state" / "downloads").glob("*.tar"))


def test_a_state_dir_that_cannot_be_written_costs_no_request(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    updater, node = _updater(untrained_bundle, tmp_path / "state")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "refused.tmp").mkdir()  # the atomic write's temp path is taken
    updater._failure = Failure("e" * 64, "refused for the test", permanent=True)
    x = np.zeros((1, *untrained_bundle.manifest.model.input.shape), dtype=np.float32)
    outcome = node.infer(x)
    assert outcome.prediction.shape == (1,) and outcome.finished == "edge"  # no cloud: edge-only
    assert "update step failed" in updater.note


def test_rolling_back_from_the_configured_bundle_keeps_its_directory(
    untrained_bundle: Bundle,
    tmp_path: Path,
    clouds: list[Cloud],  # noqa: F811
) -> None:
    # The edge serves a committed v2; the rollout stops and it goes back to its configured
    # bundle, which regresses (its tails fail at the cloud): it must roll back to v2
    # without deleting the operator's bundle directory.
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    base = variant(untrained_bundle, tmp_path / "configured", "configured", swap_tails)
    cloud = Cloud(base, release_of(v2, tmp_path, "2", None), tmp_path / "u", fraction=0.0)
    clouds.append(cloud)
    edge = Edge(v2, cloud.endpoint, tmp_path / "state", probation_s=30.0, base=base)
    edge.node.check_cloud()
    edge.run(lambda: len(edge.outcomes) >= 10)
    edge.run(lambda: "rolled_back" in results(edge))
    edge.more(5)
    edge.close()
    assert edge.node.bundle.id == v2.id
    assert (base.root / MANIFEST).is_file()  # still there
    assert len(edge.outcomes) == edge.inputs


def test_a_broken_fallback_chain_is_answered_by_the_old_bundle(
    untrained_bundle: Bundle,
    tmp_path: Path,
    clouds: list[Cloud],  # noqa: F811
) -> None:
    head_segments = set(untrained_bundle.manifest.cut(CUT).head)

    def break_after_cut(root: Path) -> None:
        swap_tails(root)
        files = {
            s.id: root / s.file
            for s in untrained_bundle.manifest.segments.values()
            if s.id not in head_segments
        }
        for path in files.values():
            path.write_bytes(
                (
                    root / untrained_bundle.manifest.segments[sorted(head_segments)[0]].file
                ).read_bytes()
            )

    bad = variant(untrained_bundle, tmp_path / "bad", "bad", break_after_cut)
    cloud = Cloud(untrained_bundle, release_of(bad, tmp_path, "2", None), tmp_path / "u")
    clouds.append(cloud)
    edge = Edge(untrained_bundle, cloud.endpoint, tmp_path / "state", probation_s=30.0)
    edge.node.check_cloud()
    edge.run(lambda: len(edge.outcomes) >= 10)
    edge.run(lambda: "rolled_back" in results(edge))
    edge.more(5)
    edge.close()
    assert len(edge.outcomes) == edge.inputs
    rescued = [o for o in edge.outcomes if o.reason == "head_failed"]
    assert rescued and all(o.bundle == untrained_bundle.id for o in rescued)
    # The rollback zeroed the bad bundle's info gauge, under the version it was set with.
    samples = {
        (s.labels["bundle"], s.labels["version"]): s.value
        for metric in edge.node.metrics.registry.collect()
        if metric.name == "edgesplit_edge_bundle_info"
        for s in metric.samples
    }
    assert samples[(bad.id[:12], "2")] == 0.0 and samples[(untrained_bundle.id[:12], "1")] == 1.0


def test_a_missing_archive_on_the_cloud_is_an_error_reply_not_a_crash(
    untrained_bundle: Bundle,
    tmp_path: Path,
    clouds: list[Cloud],  # noqa: F811
) -> None:
    v2 = variant(untrained_bundle, tmp_path / "v2", "v2")
    archive = release_of(v2, tmp_path, "2", None)
    cloud = Cloud(untrained_bundle, archive, tmp_path / "u")
    clouds.append(cloud)
    cloud.fleet.heartbeat(wire.Hello(0, name="gate-1"), None)  # offered the release
    cloud.fleet.candidate.archive.unlink()  # type: ignore[union-attr] - the part served
    hostile = [  # fields of the wrong type or range: a typed sender cannot build them
        [msgpack.packb({"v": 1, "k": "fetch", "id": 7, "m": meta, "t": []})]
        for meta in (
            {"bundle": v2.id, "offset": True, "length": 10},
            {"bundle": v2.id, "offset": -1, "length": 10},
        )
    ]
    for frames in (
        wire.encode(wire.Fetch(7, v2.id, 0, 10, "gate-1")),
        *hostile,
        wire.encode(wire.FleetQuery(7, "x" * 1000)),
    ):
        reply = cloud.node.handle(frames, 0.0)
        assert reply is not None
        message = wire.decode(reply)
        assert isinstance(message, wire.ErrorReply), frames[0]
    assert cloud.node.handle(wire.encode(wire.Ping(1)), 0.0) is not None


def test_fleet_state_stays_bounded_and_markup_is_shown_as_text(
    untrained_bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = Fleet(untrained_bundle, "1")
    for i in range(200):
        fleet.heartbeat(
            wire.Hello(0, state="refused", candidate=f"c{i}", version=f"v{i}"), "gate-1"
        )
    assert fleet.refused == {}
    assert set(fleet.states()) == {("other", "refused")}
    with pytest.raises(Exception, match="fraction"):
        fleet.set_fraction(True)  # type: ignore[arg-type]
    fleet.heartbeat(wire.Hello(0, name="[/bold]", version="[red]x", note="[/]"), None)
    from edgesplit.app.cli_fleet import _nulls, show_report

    report = fleet.report()
    show_report(report)
    assert "[/bold]" in capsys.readouterr().out
    assert json.dumps(_nulls(report), allow_nan=False)
    assert math.isnan(report["edges"][0]["error_rate"])


def test_an_archive_with_a_member_twice_is_refused(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    archive = release_of(untrained_bundle, tmp_path, "2", None)
    smuggled = tmp_path / "smuggled.tar"
    with tarfile.open(archive) as src, tarfile.open(smuggled, "w") as dst:
        members = [(m, src.extractfile(m).read()) for m in src]  # type: ignore[union-attr]
        decoy = json.loads(dict((m.name, d) for m, d in members)[MANIFEST])
        decoy["files"]["edge/evil.so"] = "0" * 64
        for member, data in members:
            if member.name == MANIFEST:
                for name, body in ((MANIFEST, json.dumps(decoy).encode()), ("edge/evil.so", b"x")):
                    info = tarfile.TarInfo(name)
                    info.size = len(body)
                    dst.addfile(info, io.BytesIO(body))
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    with pytest.raises(UpdateError, match="appears twice"):
        unpack_release(smuggled, tmp_path / "store")
    assert not any((tmp_path / "store").iterdir())
