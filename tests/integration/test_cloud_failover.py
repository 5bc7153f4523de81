"""A cloud process killed mid-stream: every request is answered, fallback and recovery observed.

Real processes and sockets: ``edgesplit cloud`` in a subprocess on a fixed
loopback port, SIGKILLed while the edge streams paced requests, then started
again on the same port. The edge runs in this process so the test can watch
each request.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cloud_node.process import start_cloud_process, stop_process
from edge_node.node import EdgeConfig, EdgeNode, Outcome
from edge_node.transport import RECONNECT_MAX_MS, CloudClient
from edgesplit.bundle import Bundle
from offload_policy import Decision, FixedPolicy
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT_S = 0.3
REQUESTS = 240
PACE_S = 0.01


def _edge(bundle: Bundle, policy: FixedPolicy, client: CloudClient) -> EdgeNode:
    """An edge node with a short deadline and a probe backoff capped at 0.8 s."""
    config = EdgeConfig(timeout_s=TIMEOUT_S, backoff_s=0.2, max_backoff_s=0.8, rtt_s=0.0)
    return EdgeNode(bundle, policy, client, config)


def test_cloud_killed_and_restarted_mid_stream(untrained_bundle: Bundle, tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    shape = untrained_bundle.manifest.model.input.shape
    xs = np.random.default_rng(5).standard_normal((REQUESTS, 1, *shape), dtype=np.float32)
    policy = FixedPolicy(Decision("c03", None, "int8+lz4"), untrained_bundle.manifest.edge_only.id)
    proc, _ = start_cloud_process(
        untrained_bundle.root, endpoint, tmp_path / "a.log", extra=["--insecure"]
    )
    events: dict[str, float] = {}
    restarted: list = []

    def chaos() -> None:
        time.sleep(0.8)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        events["killed"] = time.monotonic()
        time.sleep(1.0)
        again, _ = start_cloud_process(
            untrained_bundle.root, endpoint, tmp_path / "b.log", extra=["--insecure"]
        )
        restarted.append(again)
        events["restarted"] = time.monotonic()

    outcomes: list[tuple[float, Outcome]] = []
    with CloudClient(endpoint) as client:
        node = _edge(untrained_bundle, policy, client)
        node.check_cloud()
        killer = threading.Thread(target=chaos)
        killer.start()
        try:
            for x in xs:
                outcomes.append((time.monotonic(), node.infer(x)))
                time.sleep(PACE_S)
            # Keep going (paced) until the restarted cloud is back, at most 20 s more.
            deadline = time.monotonic() + 20
            while node.recoveries == 0 and time.monotonic() < deadline:
                outcomes.append((time.monotonic(), node.infer(xs[0])))
                time.sleep(PACE_S)
            tail = [node.infer(x) for x in xs[:20]]
        finally:
            killer.join()
            for p in restarted:
                stop_process(p)
    answered = [o for _, o in outcomes]
    # Every request got exactly one answer, and the counters agree.
    assert len(answered) >= REQUESTS
    assert sum(node.counts[k] for k in ("cloud", "edge", "fallback")) == len(answered) + len(tail)
    before = [o for t, o in outcomes if t < events["killed"] - 0.05]
    during = [o for t, o in outcomes if events["killed"] <= t < events["restarted"]]
    assert before and all(o.finished == "cloud" for o in before)
    # Fallback observed: the requests in flight or sent at the kill finished locally, and within
    # the deadline plus one local run; afterwards the edge stayed local without waiting.
    fallbacks = [o for o in answered if o.finished == "fallback"]
    assert fallbacks and {o.reason for o in fallbacks} <= {"timeout", "unreachable"}
    assert max(o.latency_s for o in fallbacks) < TIMEOUT_S + 0.2
    assert during and all(o.finished in ("edge", "fallback") for o in during)
    assert max(o.latency_s for o in during) < TIMEOUT_S + 0.2
    # Recovery observed: the probe found the restarted cloud and offloading resumed.
    assert node.recoveries >= 1
    assert [o.finished for o in tail] == ["cloud"] * 20
    back = next(t for t, o in outcomes if t > events["restarted"] and o.finished == "cloud")
    recovery_s = back - events["restarted"]
    # Found again within ZeroMQ's reconnection interval plus the probe backoff (0.8 s cap).
    assert recovery_s < RECONNECT_MAX_MS / 1e3 + 0.8 + 0.5
    print(
        f"failover: {len(fallbacks)} fallbacks (max {max(o.latency_s for o in fallbacks):.3f} s),"
        f" {len(during)} local while down, recovered {recovery_s:.3f} s after the restart"
    )
    assert proc.returncode == -signal.SIGKILL


def test_cloud_paused_and_resumed_mid_stream(untrained_bundle: Bundle, tmp_path: Path) -> None:
    """SIGSTOP: the connection stays up but nothing answers; SIGCONT: it answers again.

    What the paused cloud answers late (the requests it held) reaches the edge
    after their deadline: dropped as stale, never counted twice.
    """
    shape = untrained_bundle.manifest.model.input.shape
    xs = np.random.default_rng(6).standard_normal((REQUESTS, 1, *shape), dtype=np.float32)
    policy = FixedPolicy(Decision("c03", None, "int8+lz4"), untrained_bundle.manifest.edge_only.id)
    proc, endpoint = start_cloud_process(
        untrained_bundle.root, "tcp://127.0.0.1:*", tmp_path / "cloud.log", extra=["--insecure"]
    )
    events: dict[str, float] = {}

    def pause() -> None:
        time.sleep(0.8)
        proc.send_signal(signal.SIGSTOP)
        events["paused"] = time.monotonic()
        time.sleep(1.5)
        proc.send_signal(signal.SIGCONT)
        events["resumed"] = time.monotonic()

    outcomes: list[tuple[float, Outcome]] = []
    try:
        with CloudClient(endpoint) as client:
            node = _edge(untrained_bundle, policy, client)
            node.check_cloud()
            pauser = threading.Thread(target=pause)
            pauser.start()
            try:
                for x in xs:
                    outcomes.append((time.monotonic(), node.infer(x)))
                    time.sleep(PACE_S)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not (
                    "resumed" in events
                    and any(t > events["resumed"] and o.finished == "cloud" for t, o in outcomes)
                ):
                    outcomes.append((time.monotonic(), node.infer(xs[0])))
                    time.sleep(PACE_S)
            finally:
                pauser.join()
            stale = client.stale_replies
    finally:
        proc.send_signal(signal.SIGCONT)
        assert stop_process(proc) == 0
    answered = [o for _, o in outcomes]
    assert sum(node.counts[k] for k in ("cloud", "edge", "fallback")) == len(answered)
    during = [o for t, o in outcomes if events["paused"] + 0.05 < t < events["resumed"]]
    assert during and all(o.finished in ("edge", "fallback") for o in during)
    fallbacks = [o for o in answered if o.finished == "fallback"]
    assert fallbacks and {o.reason for o in fallbacks} <= {"timeout"}
    assert max(o.latency_s for o in answered) < TIMEOUT_S + 0.2
    back = next(t for t, o in outcomes if t > events["resumed"] and o.finished == "cloud")
    recovery_s = back - events["resumed"]
    assert recovery_s < 0.8 + 0.5  # the probe backoff cap, and a margin
    assert stale >= 1  # the late answers of the paused cloud arrived and were dropped
    print(
        f"pause: {len(fallbacks)} fallbacks (max {max(o.latency_s for o in fallbacks):.3f} s), "
        f"{len(during)} local while paused, {stale} late answers dropped, "
        f"recovered {recovery_s:.3f} s after SIGCONT"
    )
