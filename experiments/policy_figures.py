"""The policy's goal figures on the shared traces, in one command.

For a bundle: every policy over every trace of ../shared/traces (HSDPA 3G and
FCC), per family the mean latency relative to the oracle and to each
baseline; then the battery-aware mode against latency-only on the same runs
(energy per request and the battery lifetime it gives).

The default scenario is a Jetson-class device: the edge 30x slower than the
machine that profiled the bundle (ResNet18: ~8 ms here, ~240 ms on a Jetson
Nano's CPU) and the traces scaled x10 (a WiFi-class uplink); both are
assumptions of the model, set by flags.

Run: ``python -m experiments.policy_figures --bundle DIR [--edge-slowdown 30]``
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from edgesplit.bundle import load_bundle
from experiments.harness import default_traces
from experiments.report import family_ratios, summary_table
from experiments.simulate import POLICIES, SimConfig, simulate, simulate_all
from experiments.traces import load_traces
from offload_policy.adaptive import PolicyConfig

TRACES = default_traces()
BASELINES = ("neurosurgeon", "edgent", "edge-only", "cloud-only")


def main() -> None:
    """Print the tables and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--traces", type=Path, nargs="*", default=[TRACES])
    parser.add_argument("--edge-slowdown", type=float, default=30.0)
    parser.add_argument("--bandwidth-scale", type=float, default=10.0)
    parser.add_argument("--accuracy-floor", type=float, default=0.0)
    args = parser.parse_args()
    console = Console(width=150)
    manifest = load_bundle(args.bundle, verify="none").manifest
    traces = load_traces(args.traces)
    config = SimConfig(
        edge_slowdown=args.edge_slowdown,
        bandwidth_scale=args.bandwidth_scale,
        accuracy_floor=args.accuracy_floor,
    )
    results = simulate_all(manifest, traces, POLICIES, config)
    console.print(summary_table(results))
    ratios = family_ratios(results)
    for family in sorted({f for f, _ in ratios}):
        ours = ratios[(family, "edgesplit")]["mean_latency_s"]
        parts = [f"ours/oracle {ratios[(family, 'edgesplit')]['vs_oracle']:.3f}"]
        for name in BASELINES:
            parts.append(f"{name}/ours {ratios[(family, name)]['mean_latency_s'] / ours:.2f}x")
        console.print(f"{family}: " + ", ".join(parts))

    for aware in (False, True):
        policy = PolicyConfig(battery_aware=aware)
        run = replace(config, battery_level=0.3, policy=policy)
        rs = [simulate(manifest, t, "edgesplit", run) for t in traces]
        joules = statistics.fmean(r.energy_per_request_j for r in rs)
        latency = statistics.fmean(r.mean_latency_s for r in rs)
        hours = policy.capacity_wh * 3600 * 0.3 / joules / policy.requests_per_s / 3600
        console.print(
            f"battery {'aware' if aware else 'ignored'}: {joules * 1e3:.0f} mJ/request, mean "
            f"latency {latency * 1e3:.1f} ms; 30% of {policy.capacity_wh:g} Wh lasts {hours:.1f} h "
            f"at {policy.requests_per_s:g} request/s"
        )


if __name__ == "__main__":
    main()
