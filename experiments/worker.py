"""The edge side of the real-link experiments: a real EdgeNode driven by a plan.

Run inside the edge network namespace (and the edge's CPU cgroup) as
``python -m experiments.worker PLAN.json``. The plan (written by
:mod:`experiments.testbed`) names the bundle, the cloud endpoint and keys,
and a list of phases; each phase sets a policy and sends requests at a
steady interval (the next request starts at its slot, or at once when the
previous answer came late) for a number of requests or seconds. One JSON
line per answered request goes to the plan's ``out`` file as it happens:
when, which phase and policy, what the policy was told (the bandwidth
estimate; the true rate for trace runs), what it chose, and what was
measured (latency, edge compute, bytes, cloud compute and queue, where it
finished).

A phase with ``fresh_link`` starts its bandwidth estimate from the prior.

Policies: ``fixed`` (``cut``, ``codec``, ``threshold``), ``edgesplit`` (the
adaptive policy on the live estimate), ``oracle`` (the adaptive policy told
the true rate of the trace being replayed on the link), ``neurosurgeon``
(``mean_mbps``), ``edgent`` (``deadline_s``), ``edge-only``, ``cloud-only``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgesplit.errors import ConfigError


class Told:
    """Wraps a policy: keeps what it was told; optionally tells it the true rate instead."""

    def __init__(self, policy: Any, truth: Any = None) -> None:
        self.policy = policy
        self.truth = truth
        self.name = getattr(policy, "name", "policy")
        self.last_bps = float("nan")

    def initial_state(self) -> Any:
        """The wrapped policy's initial state."""
        return self.policy.initial_state()

    def decide(self, observation: Any, state: Any, now: float) -> tuple[Any, Any]:
        """The wrapped policy's decision, on the true rate when ``truth`` is set."""
        if self.truth is not None:
            observation = replace(observation, bandwidth_bps=self.truth(now))
        self.last_bps = observation.bandwidth_bps
        return self.policy.decide(observation, state, now)


def make_policy(spec: dict[str, Any], plan: dict[str, Any], bundle: Any) -> Told:
    """The policy a phase names, wrapped in :class:`Told` (the simulator's, for the named ones)."""
    from experiments.policies import named_policy
    from offload_policy import FixedPolicy
    from offload_policy.adaptive import PolicyConfig
    from offload_policy.types import Decision

    m = bundle.manifest
    kind = spec["kind"]
    if kind == "fixed":
        decision = Decision(spec["cut"], spec.get("threshold"), spec["codec"])
        return Told(FixedPolicy(decision, m.edge_only.id))
    mean_mbps = spec.get("mean_mbps")
    policy = named_policy(
        kind,
        m,
        PolicyConfig(radio=plan["radio"], device=plan["device"]),
        mean_bandwidth_bps=None if mean_mbps is None else mean_mbps * 1e6,
        rtt_s=plan.get("rtt_s") or 0.0,
        deadline_s=spec.get("deadline_s"),
    )
    return Told(policy, truth=_truth(plan) if kind == "oracle" else None)


def _truth(plan: dict[str, Any]) -> Any:
    """Now -> the true uplink rate of the trace on the link (bits/s)."""
    from experiments.traces import load_trace

    spec = plan.get("trace")
    if not spec:
        raise ConfigError("plan: the oracle needs the trace being replayed (plan['trace'])")
    trace = load_trace(Path(spec["path"]))
    scale, start = float(spec["scale"]), float(spec.get("start_s", 0.0))
    # plan["t0"] is read at each call: it is set once every worker is ready (see _go).
    return lambda now: trace.bandwidth_bps(start + now - float(plan["t0"])) * scale


def _inputs(bundle: Any, count: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    if (bundle.root / "data" / "test.npz").is_file():
        from edge_node.inputs import load_inputs

        found = load_inputs("bundle", bundle, count)
        return found.inputs, found.labels
    shape = tuple(bundle.manifest.model.input.shape)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, *shape), dtype=np.float32), None


def _go(plan: dict[str, Any]) -> float:
    """Time zero: now, or (with ``ready_file``/``go_file``) the t0 the parent writes.

    Several workers (one per policy, each on its own link) start together
    this way: each says it is ready, the parent writes one t0 for all.
    """
    ready, go = plan.get("ready_file"), plan.get("go_file")
    if not ready or not go:
        return float(plan.get("t0") or time.monotonic())
    Path(ready).write_text("ready\n")
    deadline = time.monotonic() + float(plan.get("go_timeout_s", 600.0))
    while time.monotonic() < deadline:
        text = Path(go).read_text().strip() if Path(go).is_file() else ""
        if text:
            plan["t0"] = float(text)
            return plan["t0"]
        time.sleep(0.02)
    raise ConfigError(f"plan: no start time in {go} within the go timeout")


def run(plan: dict[str, Any]) -> int:
    """Every phase of ``plan``; returns the number of requests answered."""
    from edge_node.head import HeadRunner
    from edge_node.node import EdgeConfig, EdgeNode
    from edge_node.transport import CloudClient
    from edgesplit.bundle import load_bundle
    from edgesplit.security import load_keypair, load_public_key

    bundle = load_bundle(Path(plan["bundle"]), verify="none")
    inputs, labels = _inputs(bundle, int(plan.get("inputs", 64)), int(plan.get("seed", 0)))
    client = CloudClient(
        plan["connect"],
        keys=load_keypair(Path(plan["secret_key"])),
        server_key=load_public_key(Path(plan["server_key"])),
    )
    config = EdgeConfig(
        timeout_s=float(plan.get("timeout_s", 10.0)),
        bandwidth_bps=float(plan.get("prior_mbps", 10.0)) * 1e6,
        rtt_s=plan.get("rtt_s"),
        slo_s=plan.get("slo_s"),
        accuracy_floor=float(plan.get("accuracy_floor", 0.0)),
        radio=plan["radio"],
        device=plan["device"],
        corrections=bool(plan.get("corrections", True)),
    )
    runner = HeadRunner(bundle, ["CPUExecutionProvider"], int(plan.get("threads", 1)))
    policies = [make_policy(phase["policy"], plan, bundle) for phase in plan["phases"]]
    node = EdgeNode(bundle, policies[0], client, config, runner)
    node.runner.warm(bundle.manifest.cuts)
    node.check_cloud()
    t0 = _go(plan)
    answered = 0
    with Path(plan["out"]).open("a", encoding="utf-8") as out:
        for phase, told in zip(plan["phases"], policies, strict=True):
            node.set_policy(told)
            if phase.get("fresh_link"):
                # The fixed-cut phases' samples are the experiment's traffic, not the policy's.
                node.link.forget_bandwidth()
            answered += _phase(node, told, phase, inputs, labels, t0, out)
    client.close()
    return answered


def _phase(
    node: Any,
    told: Told,
    phase: dict[str, Any],
    inputs: np.ndarray,
    labels: np.ndarray | None,
    t0: float,
    out: Any,
) -> int:
    interval = float(phase.get("interval_s", 0.0))
    requests = phase.get("requests")
    warmup = int(phase.get("warmup", 0))
    at_t0 = bool(phase.get("at_t0"))
    start = t0 if at_t0 else time.monotonic()
    end = None if phase.get("duration_s") is None else start + float(phase["duration_s"])
    until = None if phase.get("until_s") is None else t0 + float(phase["until_s"])
    i = 0
    while True:
        if requests is not None and i >= int(requests) + warmup:
            break
        slot = start + i * interval
        if at_t0 and interval > 0 and slot < time.monotonic() - interval:
            # A slot missed while the previous request was out: skipped, not sent late.
            i = max(i + 1, int((time.monotonic() - start) / interval))
            continue
        if (end is not None and slot >= end) or (until is not None and slot >= until):
            break
        pause = slot - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        k = i % len(inputs)
        now = time.monotonic()
        outcome = node.infer(inputs[k : k + 1], now)
        truth = told.truth(now) if told.truth is not None else None
        row = {
            "phase": phase["label"],
            "policy": phase["policy"]["kind"],
            "i": i,
            "warmup": i < warmup,
            "t_s": now - t0,
            "latency_s": outcome.latency_s,
            "finished": outcome.finished,
            "reason": outcome.reason,
            "cut": outcome.cut,
            "codec": outcome.codec,
            "threshold": outcome.threshold,
            "bytes_sent": outcome.bytes_sent,
            "edge_compute_s": outcome.edge_compute_s,
            "cloud_compute_s": outcome.cloud_compute_s,
            "cloud_queue_s": outcome.cloud_queue_s,
            "estimate_bps": told.last_bps,
            "true_bps": truth,
            "correct": None if labels is None else bool(outcome.prediction[0] == labels[k]),
        }
        out.write(json.dumps(row) + "\n")
        out.flush()
        i += 1
    return i


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.worker PLAN.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m experiments.worker PLAN.json\n")
        return 2
    try:
        plan = json.loads(Path(args[0]).read_text())
        answered = run(plan)
    except (OSError, ValueError, KeyError, ConfigError) as exc:
        sys.stderr.write(f"worker: {type(exc).__name__}: {exc}\n")
        return 1
    sys.stdout.write(f"answered {answered}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
