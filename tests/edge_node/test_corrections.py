"""The edge node feeds what it measures back into the policy: head times, tail times, queue."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from itertools import count

import numpy as np

from edge_node.node import EdgeConfig, EdgeNode
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Timing
from experiments.simulate import slower_edge
from offload_policy import Decision, FixedPolicy
from offload_policy.corrections import Corrections


def _inputs(bundle: Bundle, n: int) -> np.ndarray:
    shape = bundle.manifest.model.input.shape
    return np.random.default_rng(0).standard_normal((n, 1, *shape), dtype=np.float32)


def _node(
    bundle: Bundle,
    cut: str,
    client: CloudClient | None,
    clock: Callable[[], float] | None = None,
    **config: object,
) -> EdgeNode:
    policy = FixedPolicy(Decision(cut, None, "int8+lz4"), bundle.manifest.edge_only.id)
    ticks: Iterator[int] = count()
    return EdgeNode(
        bundle,
        policy,
        client,
        EdgeConfig(timeout_s=5.0, rtt_s=0.0, **config),  # type: ignore[arg-type]
        clock=clock or (lambda: float(next(ticks))),
    )


def _faster_cloud_profile(bundle: Bundle, factor: float) -> Bundle:
    cloud = bundle.manifest.profiles["cloud"]
    timings = {
        k: Timing(v.median_s * factor, v.p95_s * factor, v.runs) for k, v in cloud.timings.items()
    }
    profiles = {**bundle.manifest.profiles, "cloud": replace(cloud, timings=timings)}
    return replace(bundle, manifest=replace(bundle.manifest, profiles=profiles))


def test_head_times_are_fed_back_as_measured(untrained_bundle: Bundle) -> None:
    m = untrained_bundle.manifest
    node = _node(untrained_bundle, m.edge_only.id, None)
    profile = m.profiles["edge"]
    predicted = sum(profile.seconds(s) for s in m.edge_only.head)
    replayed = Corrections()
    for x in _inputs(untrained_bundle, 8):
        outcome = node.infer(x)
        # the node's clock ticks once per read; replaying its samples gives the same state
        replayed = replayed.observe_edge(
            node.corrections.edge.updated_s, outcome.edge_compute_s, predicted
        )
    assert node.corrections.edge == replayed.edge
    assert node.corrections.edge.samples == 8


def test_a_device_slower_than_its_profile_is_told_to_the_policy(untrained_bundle: Bundle) -> None:
    # The profile says the head takes a thousandth of what it does: the factor climbs to its
    # bound, 0.2 in log per request at most (ln 10 / 0.2 = 12 requests), and the policy is told.
    fast_profile = replace(untrained_bundle, manifest=slower_edge(untrained_bundle.manifest, 1e-3))
    node = _node(fast_profile, fast_profile.manifest.edge_only.id, None)
    assert node.observe(0.0).edge_factor == 1.0
    for x in _inputs(fast_profile, 20):
        node.infer(x)
    told = node.observe(node.clock())
    assert told.edge_factor > 5.0 and told.cloud_factor == 1.0
    assert node.metrics.correction.labels("edge")._value.get() > 5.0
    # switched off: measured, not told, not learned
    off = _node(fast_profile, fast_profile.manifest.edge_only.id, None, corrections=False)
    for x in _inputs(fast_profile, 5):
        off.infer(x)
    assert off.observe(0.0).edge_factor == 1.0 and off.corrections.edge.samples == 0


def test_tail_times_and_queue_the_cloud_reports_are_fed_back(
    cloud, untrained_bundle: Bundle
) -> None:
    fast_cloud = _faster_cloud_profile(untrained_bundle, 1e-3)
    with CloudClient(cloud.endpoint) as client:
        node = _node(fast_cloud, "c03", client)
        node.check_cloud()
        outcomes = [node.infer(x) for x in _inputs(fast_cloud, 20)]
    assert {o.finished for o in outcomes} == {"cloud"}
    assert node.corrections.cloud.samples == 20
    told = node.observe(node.clock())
    assert told.cloud_factor > 5.0
    # the queue: the smoothed reports (an idle cloud queues for well under a second)
    assert 0.0 <= told.expected_queue_s < 1.0
    assert node.corrections.queue_updated_s is not None


def test_a_new_bundle_starts_the_corrections_afresh(untrained_bundle: Bundle) -> None:
    m = untrained_bundle.manifest
    node = _node(untrained_bundle, m.edge_only.id, None)
    for x in _inputs(untrained_bundle, 3):
        node.infer(x)
    assert node.corrections.edge.samples == 3
    node.switch(untrained_bundle, node.runner, node.policy)
    assert node.corrections == Corrections()


def test_a_cloud_only_cut_probes_a_slow_head_while_the_request_is_in_flight(
    cloud, untrained_bundle: Bundle
) -> None:
    # The profile says the head is a thousand times faster than it runs: a device "slowed".
    slow = replace(untrained_bundle, manifest=slower_edge(untrained_bundle.manifest, 1e-3))
    now = [0.0]
    with CloudClient(cloud.endpoint) as client:
        node = _node(slow, slow.manifest.edge_only.id, client, clock=lambda: now[0])
        node.check_cloud()
        for x in _inputs(slow, 20):  # learned on the edge: 10x (the bound)
            node.infer(x)
        learned = node.corrections.edge.samples
        node.set_policy(FixedPolicy(Decision("c00", None, "int8+lz4"), slow.manifest.edge_only.id))
        outcomes = []
        for x in _inputs(slow, 12):
            now[0] += 0.4  # 2.5 requests a second
            outcomes.append(node.infer(x))
    assert {o.finished for o in outcomes} == {"cloud"}
    assert all(o.edge_compute_s == 0 for o in outcomes)  # the cut runs no head ...
    # ... but the edge term, which says "slow", is measured again once it is a second old:
    # at t=0.4 (the latest sample at t=0), then 1.6, 2.8, 4.0
    assert node.counts["head_probes"] == 4 == node.corrections.edge.samples - learned
    assert node.observe(now[0]).edge_factor > 5.0


def test_a_head_as_fast_as_profiled_is_not_probed(cloud, untrained_bundle: Bundle) -> None:
    # believed as profiled: a cloud-only cut stays the choice whatever a probe would find
    now = [0.0]
    with CloudClient(cloud.endpoint) as client:
        node = _node(untrained_bundle, "c00", client, clock=lambda: now[0])
        node.check_cloud()
        for x in _inputs(untrained_bundle, 6):
            now[0] += 1.0
            node.infer(x)
    assert node.counts["head_probes"] == 0 and node.corrections.edge.samples == 0
