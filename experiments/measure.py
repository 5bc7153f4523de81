"""Figures from the edge worker's rows: energy from measured times, per-group summaries.

Energy of one request from what was measured for it (the edge device's
power is not measurable on this host; see offload_policy/energy.py):

    compute power x edge compute time
    + radio power(throughput on the wire) x time on the wire
    + idle power x time the cloud spent (its tail and queue, as it reported)

where time on the wire = latency - edge compute - cloud compute - cloud
queue (the uplink transfer, the round trip and the framing), and the
throughput is the bytes sent over that time.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from offload_policy.energy import device_power, radio
from offload_policy.types import Decision


def energy_j(row: dict[str, Any], radio_name: str, device_name: str) -> float:
    """Joules of one request; see the module docstring."""
    device = device_power(device_name)
    energy = device.compute_w * row["edge_compute_s"]
    if row["bytes_sent"] and row["finished"] == "cloud":
        cloud = row["cloud_compute_s"] + row["cloud_queue_s"]
        wire = max(1e-6, row["latency_s"] - row["edge_compute_s"] - cloud)
        throughput = row["bytes_sent"] * 8.0 / wire
        energy += radio(radio_name).uplink_power_w(throughput) * wire
        energy += device.idle_w * cloud
    return energy


def cost(row: dict[str, Any], price_cloud_s: float, price_gb: float) -> float:
    """Cloud cost of one request: the tail's compute-seconds and the bytes the cloud received."""
    if not row.get("bytes_sent"):
        return 0.0
    compute = row.get("cloud_compute_s") or 0.0
    return compute * price_cloud_s + row["bytes_sent"] / 1e9 * price_gb


def summary(
    rows: Sequence[dict[str, Any]],
    radio_name: str,
    device_name: str,
    prices: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    """Latency (median, mean, p95, p99), energy (median, mean), where requests finished.

    ``prices`` (per compute-second, per GB received) give the cloud cost per
    1,000 requests. Warm-up rows are left out.
    """
    kept = [r for r in rows if not r.get("warmup")]
    if not kept:
        return {"requests": 0}
    latencies = sorted(r["latency_s"] for r in kept)
    energies = [energy_j(r, radio_name, device_name) for r in kept]
    correct = [r["correct"] for r in kept if r.get("correct") is not None]
    finished: dict[str, int] = {}
    for r in kept:
        finished[r["finished"]] = finished.get(r["finished"], 0) + 1
    cuts: dict[str, int] = {}
    for r in kept:
        key = f"{r['cut']}/{r['codec']}"
        cuts[key] = cuts.get(key, 0) + 1
    return {
        "requests": len(kept),
        "median_ms": statistics.median(latencies) * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3,
        "p95_ms": _pct(latencies, 95) * 1e3,
        "p99_ms": _pct(latencies, 99) * 1e3,
        # The median, as for latency: a 0.1-core edge is now and then held a whole CFS
        # period, and one such request in a handful would make the mean.
        "energy_mj": statistics.median(energies) * 1e3,
        "energy_mean_mj": statistics.fmean(energies) * 1e3,
        "cost_per_1k": 1000 * statistics.fmean(cost(r, *prices) for r in kept),
        "bytes": statistics.fmean(r["bytes_sent"] for r in kept),
        "accuracy": statistics.fmean(correct) if correct else float("nan"),
        "finished": finished,
        "cuts": cuts,
        "fallbacks": sum(1 for r in kept if r.get("reason")),
    }


def _pct(sorted_values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(sorted_values, q))


def predicted(
    manifest: Any,
    decision: Decision,
    bandwidth_bps: float,
    rtt_s: float,
    radio_name: str,
    device_name: str,
) -> tuple[float, float]:
    """The partitioner's prediction for ``decision``: (latency s, energy J)."""
    from offload_policy.cost import decision_terms
    from offload_policy.energy import inference_energy_j

    terms = decision_terms(manifest, decision)
    wait = rtt_s + terms.cloud_s
    energy = inference_energy_j(
        terms.edge_s,
        terms.p_offload,
        terms.bytes,
        wait,
        bandwidth_bps,
        radio(radio_name),
        device_power(device_name),
    )
    return terms.latency_s(bandwidth_bps, rtt_s), energy


def groups(rows: Iterable[dict[str, Any]], key: str = "phase") -> dict[str, list[dict[str, Any]]]:
    """Rows by ``key``, in first-seen order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out
