"""Experiment ``battery``: drain a simulated battery under each policy on a trace.

A battery of ``--battery-wh`` starts full; a request arrives every second
on a real bandwidth trace (an HSDPA log scaled x10, a WiFi-class link, the
radio model WiFi's); each request's energy (compute, radio while sending,
idle while waiting: offload_policy.energy, from the bundle's measured
profiles and codec sizes) drains it, until it is empty. Policies: edge-only,
cloud-only, Neurosurgeon, Edgent, edgesplit on latency alone, edgesplit
battery-aware (below half charge it spends no more per request than lets
the battery last ``--battery-hours``) and the oracle. Out: battery level
over time and the inferences served until empty, with their mean latency.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rich.console import Console

from experiments.bundles import one_model_run
from experiments.exp_traces import pick_traces
from experiments.harness import Results, Settings, markdown_table, progress_bar
from offload_policy.cost import default_accuracy_floor

NAME = "battery"
TITLE = "Battery level over time and inferences served until empty, per policy"
MODEL = "resnet18"
FULL_TIME = "under a minute once the bundle is cached"
#: (label, simulator policy, battery-aware)
POLICIES = (
    ("edge-only", "edge-only", False),
    ("cloud-only", "cloud-only", False),
    ("neurosurgeon", "neurosurgeon", False),
    ("edgent", "edgent", False),
    ("edgesplit (latency)", "edgesplit", False),
    ("edgesplit (battery-aware)", "edgesplit", True),
    ("oracle", "oracle", False),
)
SCALE = 10.0
INTERVAL_S = 1.0


def run(settings: Settings, console: Console) -> Results:
    """Drain the battery under each policy; CSV, figure, report."""
    from experiments.simulate import SimConfig, simulate
    from offload_policy.adaptive import PolicyConfig

    results = Results(NAME, TITLE, settings, console)
    model = (settings.models or (MODEL,))[0]
    mr = one_model_run(model, settings, f"{NAME}-bundle", console.print)
    m = mr.bundle.manifest
    picked = pick_traces(settings, 1)
    trace, trace_file = next(((t, f) for t, f in picked if t.family == "hsdpa"), picked[0])
    capacity, hours = settings.battery_wh, settings.battery_hours
    results.policy_terms(m)
    base = SimConfig(
        interval_s=INTERVAL_S,
        rtt_s=0.02,
        bandwidth_scale=SCALE,
        accuracy_floor=default_accuracy_floor(m),
        battery_level=1.0,
        duration_s=14 * 24 * 3600.0,
        seed=settings.seed,
        policy=PolicyConfig(
            radio="wifi",
            device=settings.device,
            capacity_wh=capacity,
            target_lifetime_s=hours * 3600,
            requests_per_s=1 / INTERVAL_S,
            price_cloud_s=settings.price_cloud_s,
            price_gb=settings.price_gb,
        ),
    )
    levels: list[dict[str, Any]] = []
    served: list[dict[str, Any]] = []
    with progress_bar(console, NAME, len(POLICIES)) as step:
        for label, name, aware in POLICIES:
            config = replace(base, policy=replace(base.policy, battery_aware=aware))
            r = simulate(m, trace, name, config)
            timeline = r.battery_timeline
            stride = max(1, len(timeline) // 400)
            levels += [
                {"policy": label, "t_h": t / 3600, "level": lvl}
                for t, lvl in timeline[::stride] + timeline[-1:]
            ]
            served.append(
                {
                    "policy": label,
                    "inferences": r.requests,
                    "hours": r.requests * INTERVAL_S / 3600,
                    "mean_ms": r.mean_latency_s * 1e3,
                    "p95_ms": r.p95_latency_s * 1e3,
                    "mj_per_request": r.energy_per_request_j * 1e3,
                    "accuracy": r.accuracy if m.calibration else float("nan"),
                    "offload_rate": r.offload_rate,
                    "empty": (r.battery_level or 0.0) <= 1e-9,
                }
            )
            step(1, f"{label}: {r.requests} inferences")
    results.write_csv("battery_levels.csv", levels)
    results.write_csv("served.csv", served)
    _plot(results, levels, served, model, capacity)
    best = max(served, key=lambda s: s["inferences"])
    edge = next(s for s in served if s["policy"] == "edge-only")
    aware = next(s for s in served if s["policy"] == "edgesplit (battery-aware)")
    results.section(
        "Headline: inferences served until the battery is empty",
        markdown_table(
            [
                "policy",
                "inferences",
                "hours at 1/s",
                "mean ms",
                "p95 ms",
                "mJ/request",
                "accuracy",
                "offloaded",
            ],
            [
                [
                    s["policy"],
                    s["inferences"],
                    f"{s['hours']:.2f}",
                    f"{s['mean_ms']:.1f}",
                    f"{s['p95_ms']:.1f}",
                    f"{s['mj_per_request']:.0f}",
                    "n/a (no calibration)"
                    if s["accuracy"] != s["accuracy"]
                    else f"{s['accuracy']:.3f}",
                    f"{s['offload_rate']:.0%}",
                ]
                for s in served
            ],
        )
        + f"\n\nMost inferences: {best['policy']} ({best['inferences']}). edgesplit "
        f"battery-aware served {aware['inferences'] / edge['inferences']:.2f}x the inferences of "
        "edge-only on the same battery.",
    )
    results.headline = {s["policy"]: s["inferences"] for s in served}
    results.extra_settings = {
        "model": model,
        "trace": f"{trace.family}/{trace.name} x{SCALE:g} (wrapped around)",
        "trace_file": str(trace_file),
        "battery_wh": capacity,
        "battery_hours_target": hours,
        "request_interval_s": INTERVAL_S,
        "radio": "wifi",
    }
    results.modelled(
        "everything in this experiment",
        "experiments/simulate.py: the trace's throughput integrated for each transfer, the "
        "bundle's measured profiles (edge under its CPU limit), codec sizes and exit "
        "calibration, energy from offload_policy.energy (Huang et al. radio model, nominal "
        "device power), the battery a Coulomb counter of that energy; the live edge node's "
        "`--power simulated` battery uses the same model",
    )
    results.finish()
    return results


def _plot(
    results: Results,
    levels: list[dict[str, Any]],
    served: list[dict[str, Any]],
    model: str,
    wh: float,
) -> None:
    with results.figure("battery.png", 1, 2, size=(14, 5)) as (fig, axes):
        ax = axes[0][0]
        for label, _, _ in POLICIES:
            sub = [x for x in levels if x["policy"] == label]
            ax.plot([x["t_h"] for x in sub], [x["level"] * 100 for x in sub], label=label)
        ax.set_xlabel("hours (one request a second)")
        ax.set_ylabel("battery (%)")
        ax.set_title(f"{model}, {wh:g} Wh battery", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[0][1]
        ax.barh([s["policy"] for s in served], [s["inferences"] for s in served], color="tab:green")
        ax.set_xlabel("inferences until empty")
        ax.invert_yaxis()
        for i, s in enumerate(served):
            ax.text(s["inferences"], i, f" {s['inferences']:,}", va="center", fontsize=7)
        fig.suptitle("Battery drain per policy (modelled from measured profiles)", fontsize=11)
