"""The edge runtime's config from the typed sections, and the node <-> updater interface.

The updater never sees the node: the node reports ticks and outcomes and carries
out the switch requests it is given. A scripted updater here drives a real node
(ONNX Runtime heads, no cloud) through a switch, a switch back and a commit; and
the real updater, told ticks and outcomes by hand, asks for the same.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_node.bundle_store import read_sequence
from edge_node.config import UpdateConfig, edge_config, update_config
from edge_node.head import HeadRunner
from edge_node.node import EdgeConfig, EdgeNode
from edge_node.records import Outcome
from edge_node.staging import Staged
from edge_node.switch import BundleUpdates, DropSpare, SwitchBack, SwitchRequest, SwitchTo
from edge_node.update import Updater
from edgesplit.bundle import Bundle
from edgesplit.config import EdgeSection, PolicySection, UpdateSection
from offload_policy import Decision, FixedPolicy
from offload_policy.cost import default_accuracy_floor


def test_edge_config_converts_units_once(untrained_bundle: Bundle) -> None:
    m = untrained_bundle.manifest
    edge = EdgeSection(timeout_ms=250.0, backoff_ms=100.0, max_backoff_ms=800.0, pipeline_depth=3)
    policy = PolicySection(bandwidth_mbps=2.5, slo_ms=40.0, accuracy_floor=None, radio="lte")
    config = edge_config(edge, policy, m, rtt_s=0.01, fixed_bandwidth=True)
    assert (config.timeout_s, config.backoff_s, config.max_backoff_s) == (0.25, 0.1, 0.8)
    assert config.bandwidth_bps == 2.5e6 and config.slo_s == 0.04
    assert config.rtt_s == 0.01 and config.fixed_bandwidth and config.pipeline_depth == 3
    assert config.accuracy_floor == default_accuracy_floor(m) and config.radio == "lte"
    floor = edge_config(edge, PolicySection(accuracy_floor=0.5, slo_ms=None), m)
    assert floor.accuracy_floor == 0.5 and floor.slo_s is None


def test_update_config_from_the_section(tmp_path: Path) -> None:
    section = UpdateSection(
        state_dir=Path("~/state"), probation_s=5.0, download_mbps=2.0, enabled=False
    )
    config = update_config(section, base="b" * 64, base_root=tmp_path)
    assert config.state_dir == Path("~/state").expanduser() and config.probation_s == 5.0
    assert config.download_bps == 2e6 and not config.accept and config.verify_keys is None
    assert config.name == socket.gethostname()
    assert (config.base, config.base_root) == ("b" * 64, tmp_path)
    named = update_config(UpdateSection(name="gate-3"), base="", base_root=None)
    assert named.name == "gate-3" and named.download_bps is None


class Scripted:
    """An updater that asks for the switches queued in ``asks``, one at a time, and logs all."""

    def __init__(self, asks: list[SwitchRequest]) -> None:
        self.asks = asks
        self.ticks: list[tuple[float, str, str | None]] = []
        self.done: list[SwitchRequest] = []
        self.declines: list[tuple[SwitchRequest, str]] = []
        self.outcomes: list[Outcome] = []

    def tick(self, now: float, serving: Bundle, spare: Bundle | None) -> None:
        self.ticks.append((now, serving.id, None if spare is None else spare.id))

    def next_switch(self) -> SwitchRequest | None:
        return self.asks[0] if self.asks else None

    def switched(self, request: SwitchRequest, now: float) -> None:
        assert request is self.asks.pop(0)
        self.done.append(request)

    def declined(self, request: SwitchRequest, reason: str) -> None:
        assert request is self.asks.pop(0)
        self.declines.append((request, reason))

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def _policy(bundle: Bundle) -> FixedPolicy:
    m = bundle.manifest
    return FixedPolicy(Decision(m.edge_only.id, None, "raw"), m.edge_only.id)


def test_the_node_carries_out_switch_requests_between_requests(untrained_bundle: Bundle) -> None:
    # The same bundle under another identity: a switch is visible by object, not by files.
    other = replace(
        untrained_bundle, manifest=replace(untrained_bundle.manifest, bundle_id="f" * 64)
    )
    switch_to = SwitchTo(other, EdgeNode(other, _policy(other)).runner, _policy(other))
    back_policy = _policy(untrained_bundle)
    updater = Scripted([switch_to])
    check: BundleUpdates = updater  # the node's view of an updater: a protocol
    clock = iter(float(t) for t in range(100))
    node = EdgeNode(
        untrained_bundle,
        _policy(untrained_bundle),
        None,
        EdgeConfig(rtt_s=0.0),
        updater=check,
        clock=lambda: next(clock),
    )
    x = np.zeros((1, *untrained_bundle.manifest.model.input.shape), dtype=np.float32)
    first_runner = node.runner
    answered = node.infer(x)
    assert answered.bundle == other.id and node.spare == (untrained_bundle, first_runner)
    assert updater.done == [switch_to] and updater.outcomes == [answered]
    assert updater.ticks[0][1:] == (untrained_bundle.id, None)
    updater.asks.append(SwitchBack(untrained_bundle, back_policy))
    assert node.infer(x).bundle == untrained_bundle.id
    assert node.spare is None and node.runner is first_runner and node.policy is back_policy
    assert updater.ticks[1][1:] == (other.id, untrained_bundle.id)
    # A switch back to a bundle not kept is declined, said once: the updater drops it.
    wrong = SwitchBack(other, _policy(other))
    updater.asks.append(wrong)
    assert node.infer(x).bundle == untrained_bundle.id and updater.asks == []
    assert [(r, "kept none" in why) for r, why in updater.declines] == [(wrong, True)]
    assert node.infer(x).bundle == untrained_bundle.id and len(updater.declines) == 1
    updater.asks.append(switch_to)
    node.infer(x)
    updater.asks.append(DropSpare())
    node.infer(x)
    assert node.spare is None and node.bundle is other
    assert [type(r).__name__ for r in updater.done] == [
        "SwitchTo",
        "SwitchBack",
        "SwitchTo",
        "DropSpare",
    ]


def test_an_updater_that_asks_nothing_changes_nothing(untrained_bundle: Bundle) -> None:
    updater = Scripted([])
    node = EdgeNode(untrained_bundle, _policy(untrained_bundle), updater=updater)
    x = np.zeros((2, *untrained_bundle.manifest.model.input.shape), dtype=np.float32)
    outcomes = [node.infer(x) for _ in range(3)]
    assert updater.outcomes == outcomes and not updater.done and node.spare is None
    assert [t[1] for t in updater.ticks] == [untrained_bundle.id] * 3


def _outcome(bundle: Bundle, finished: str = "cloud", latency_s: float = 0.005) -> Outcome:
    return Outcome(np.zeros(1), finished, "c03", latency_s, 0.0, bundle=bundle.id)


def test_the_updater_asks_to_switch_judges_and_asks_to_switch_back(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    old = untrained_bundle
    new = replace(old, manifest=replace(old.manifest, bundle_id="e" * 64))
    config = UpdateConfig(state_dir=tmp_path, min_requests=4, probation_s=10.0)
    updater = Updater(config, "1", None, lambda b: HeadRunner(b), _policy)
    updater.tick(0.0, old, None)
    assert updater.next_switch() is None
    # A bundle staged by the download thread: the next tick asks for it, until carried out.
    updater._staged = Staged(new, "2", HeadRunner(new), _policy(new), sequence=5)
    updater.candidate = new.id
    updater.tick(1.0, old, None)
    ask = updater.next_switch()
    assert isinstance(ask, SwitchTo) and ask.bundle is new and updater.next_switch() is ask
    updater.switched(ask, 1.0)
    assert updater.next_switch() is None
    assert updater.state == "probation" and updater.version == "2"
    # Four requests, all fallbacks on the new bundle: an error rate of 100% rolls it back.
    for _ in range(4):
        updater.record(_outcome(new, "fallback"))
    updater.tick(2.0, new, old)
    back = updater.next_switch()
    assert isinstance(back, SwitchBack) and back.bundle is old
    updater.switched(back, 2.0)
    assert updater.state == "rolled_back" and updater.version == "1"
    assert new.id in updater.refused and [r for r, _ in updater.events] == [
        "switched",
        "rolled_back",
    ]
    # The same again, healthy: probation_s later the spare is let go and the bundle committed.
    newer = replace(old, manifest=replace(old.manifest, bundle_id="d" * 64))
    updater._staged = Staged(newer, "3", HeadRunner(newer), _policy(newer), sequence=6)
    updater.candidate = newer.id
    updater.tick(3.0, old, None)
    ask = updater.next_switch()
    assert ask is not None
    updater.switched(ask, 3.0)
    for _ in range(4):
        updater.record(_outcome(newer))
    updater.tick(4.0, newer, old)
    assert updater.next_switch() is None  # no error: wait for the end of probation
    updater.tick(13.0, newer, old)
    drop = updater.next_switch()
    assert isinstance(drop, DropSpare)
    updater.switched(drop, 13.0)
    assert updater.state == "serving" and updater.committed_sequence == (6, newer.id)
    assert read_sequence(tmp_path) == (6, newer.id)


@pytest.mark.parametrize("key", ["interval_s", "probation_s"])
def test_update_settings_are_checked_once_where_the_config_is_loaded(key: str) -> None:
    from edgesplit.config_load import load_config
    from edgesplit.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        load_config(None, env={}, overrides={f"update.{key}": 0.0})


class SlowNode:
    """Stands in for the node: carries out a request only after ``lag`` ticks asking for it."""

    def __init__(self, updater: Updater, serving: Bundle, lag: int) -> None:
        self.updater, self.serving, self.lag = updater, serving, lag
        self.spare: Bundle | None = None
        self.asked = 0
        self.done: list[SwitchRequest] = []

    def tick(self, now: float) -> SwitchRequest | None:
        self.updater.tick(now, self.serving, self.spare)
        request = self.updater.next_switch()
        if request is None:
            return None
        self.asked += 1
        if self.asked <= self.lag:
            return request
        self.asked = 0
        if isinstance(request, SwitchTo):
            self.serving, self.spare = request.bundle, self.serving
        elif isinstance(request, SwitchBack):
            assert self.spare is not None and self.spare.id == request.bundle.id
            self.serving, self.spare = self.spare, None
        else:
            self.spare = None
        self.updater.switched(request, now)
        self.done.append(request)
        return request


def test_a_bundle_staged_while_a_switch_is_pending_waits_for_it(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    old = untrained_bundle
    new = replace(old, manifest=replace(old.manifest, bundle_id="e" * 64))
    newer = replace(old, manifest=replace(old.manifest, bundle_id="d" * 64))
    config = UpdateConfig(state_dir=tmp_path, min_requests=4, probation_s=10.0)
    updater = Updater(config, "1", None, lambda b: HeadRunner(b), _policy)
    node = SlowNode(updater, old, lag=2)
    updater._staged = Staged(new, "2", HeadRunner(new), _policy(new), sequence=5)
    updater.candidate = new.id
    assert isinstance(node.tick(0.0), SwitchTo) and node.serving is old
    # The next release is staged while the switch to ``new`` is still asked for.
    updater._staged = Staged(newer, "3", HeadRunner(newer), _policy(newer), sequence=6)
    ask = node.tick(1.0)
    assert isinstance(ask, SwitchTo) and ask.bundle is new and node.serving is old
    assert updater._staged is not None and updater._staged.bundle is newer
    assert node.tick(2.0) is ask and node.serving is new  # carried out at last
    # Not lost: asked for at the next tick.
    ask = node.tick(3.0)
    assert isinstance(ask, SwitchTo) and ask.bundle is newer and updater._staged is None


def test_a_switch_back_the_node_declines_leaves_the_bundle_serving_refused(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    old = untrained_bundle
    new = replace(old, manifest=replace(old.manifest, bundle_id="e" * 64))
    config = UpdateConfig(state_dir=tmp_path, min_requests=4, probation_s=10.0)
    updater = Updater(config, "1", None, lambda b: HeadRunner(b), _policy)
    updater._staged = Staged(new, "2", HeadRunner(new), _policy(new), sequence=5)
    updater.candidate = new.id
    updater.tick(0.0, old, None)
    ask = updater.next_switch()
    assert ask is not None
    updater.switched(ask, 0.0)
    for _ in range(4):
        updater.record(_outcome(new, "fallback"))
    updater.tick(1.0, new, old)
    back = updater.next_switch()
    assert isinstance(back, SwitchBack)
    updater.declined(back, "asked to switch back to it, kept none")
    assert updater.next_switch() is None and updater.state == "refused"
    assert updater.candidate == new.id and new.id in updater.refused and updater.version == "2"
    assert "could not roll back" in updater.note and "kept none" in updater.note
    assert [r for r, _ in updater.events] == ["switched", "refused"]
    # Probation is over: more errors, more ticks, no new verdict; nothing committed.
    for t in range(2, 15):
        updater.record(_outcome(new, "fallback"))
        updater.tick(float(t), new, old)
        assert updater.next_switch() is None
    assert updater.committed_sequence is None and len(updater.events) == 2


def test_a_rollback_with_nothing_kept_is_judged_once(
    untrained_bundle: Bundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = untrained_bundle
    new = replace(old, manifest=replace(old.manifest, bundle_id="e" * 64))
    config = UpdateConfig(state_dir=tmp_path, min_requests=4, probation_s=10.0)
    updater = Updater(config, "1", None, lambda b: HeadRunner(b), _policy)
    node = EdgeNode(old, _policy(old), None, EdgeConfig(rtt_s=0.0), updater=updater)
    x = np.zeros((1, *old.manifest.model.input.shape), dtype=np.float32)
    updater._staged = Staged(new, "2", HeadRunner(new), _policy(new), sequence=5)
    updater.candidate = new.id
    assert node.infer(x).bundle == new.id and updater.state == "probation"
    node.spare = None  # the bundle to go back to is lost (say)
    for _ in range(4):
        updater.record(_outcome(new, "fallback"))
    caplog.clear()
    with caplog.at_level("WARNING"):
        for _ in range(5):
            assert node.infer(x).bundle == new.id
    assert updater.next_switch() is None and node.bundle is new
    assert updater.state == "refused" and updater.candidate == new.id
    assert new.id in updater.refused and updater.version == "2"
    assert "could not roll back" in updater.note and "no bundle" in updater.note
    assert [r for r, _ in updater.events] == ["switched", "refused"]
    assert updater.committed_sequence is None  # a restart serves the bundle committed before
    warned = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(warned) == 1 and "refused" in warned[0].getMessage()


def test_a_switch_the_node_declines_is_dropped_and_its_bundle_refused(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    old = untrained_bundle
    new = replace(old, manifest=replace(old.manifest, bundle_id="e" * 64))
    updater = Updater(UpdateConfig(state_dir=tmp_path), "1", None, lambda b: HeadRunner(b), _policy)
    updater._staged = Staged(new, "2", HeadRunner(new), _policy(new), sequence=5)
    updater.tick(0.0, old, None)
    ask = updater.next_switch()
    assert isinstance(ask, SwitchTo)
    updater.declined(SwitchBack(old, _policy(old)), "not asked for")  # ignored
    assert updater.next_switch() is ask
    updater.declined(ask, "no room")
    assert updater.next_switch() is None and updater.state == "refused"
    assert new.id in updater.refused and updater.version == "1"
    updater.tick(1.0, old, None)
    assert updater.next_switch() is None
