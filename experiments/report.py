"""Tables of simulation results: per (trace, policy), and per family relative to the oracle."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from rich.table import Table

from experiments.simulate import SimResult


def result_table(results: Sequence[SimResult]) -> Table:
    """One row per (trace, policy)."""
    table = Table(title="simulated requests per trace and policy")
    columns = (
        "trace",
        "policy",
        "requests",
        "mean ms",
        "p95 ms",
        "mJ/request",
        "cost/1k",
        "accuracy",
        "SLO miss",
        "offloaded",
        "changes",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("trace", "policy") else "right")
    for r in results:
        table.add_row(
            r.trace,
            r.policy,
            str(r.requests),
            f"{r.mean_latency_s * 1e3:.2f}",
            f"{r.p95_latency_s * 1e3:.2f}",
            f"{r.energy_per_request_j * 1e3:.2f}",
            f"{r.cost_per_1k:.4g}",
            f"{r.accuracy:.4f}",
            f"{r.slo_miss_rate:.1%}",
            f"{r.offload_rate:.1%}",
            str(r.decision_changes),
        )
    return table


def family_ratios(results: Sequence[SimResult]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (family, policy): mean latency, its ratio to the oracle's, energy, SLO misses."""
    by_trace: dict[tuple[str, str], dict[str, SimResult]] = defaultdict(dict)
    for r in results:
        by_trace[(r.family, r.trace)][r.policy] = r
    grouped: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (family, _), policies in by_trace.items():
        oracle = policies.get("oracle")
        for name, r in policies.items():
            g = grouped[(family, name)]
            g["mean_latency_s"].append(r.mean_latency_s)
            g["p95_latency_s"].append(r.p95_latency_s)
            g["energy_per_request_j"].append(r.energy_per_request_j)
            g["cost_per_1k"].append(r.cost_per_1k)
            g["slo_miss_rate"].append(r.slo_miss_rate)
            g["accuracy"].append(r.accuracy)
            if oracle is not None and oracle.mean_latency_s > 0:
                g["vs_oracle"].append(r.mean_latency_s / oracle.mean_latency_s)
    return {
        key: {metric: statistics.fmean(values) for metric, values in metrics.items()}
        for key, metrics in grouped.items()
    }


def summary_table(results: Sequence[SimResult]) -> Table:
    """Per trace family and policy: means over its traces, latency relative to the oracle."""
    table = Table(title="per trace family: means over its traces (latency / oracle's, per trace)")
    for column in (
        "family",
        "policy",
        "mean ms",
        "p95 ms",
        "/ oracle",
        "mJ/request",
        "cost/1k",
        "accuracy",
        "SLO miss",
    ):
        table.add_column(column, justify="left" if column in ("family", "policy") else "right")
    for (family, policy), m in sorted(family_ratios(results).items()):
        table.add_row(
            family,
            policy,
            f"{m['mean_latency_s'] * 1e3:.2f}",
            f"{m['p95_latency_s'] * 1e3:.2f}",
            f"{m['vs_oracle']:.3f}" if "vs_oracle" in m else "-",
            f"{m['energy_per_request_j'] * 1e3:.2f}",
            f"{m['cost_per_1k']:.4g}",
            f"{m['accuracy']:.4f}",
            f"{m['slo_miss_rate']:.1%}",
        )
    return table
