"""Experiment ``drift``: a device that slows 2x at 30 s and recovers at 90 s.

The bundle's edge profile is right until t = 30 s; then the device runs
2x slower (thermal throttling, a DVFS mode, a background process) until
t = 90 s, then as profiled again. Requests arrive every 0.25 s on real
bandwidth traces (two of each family of ../shared/traces, as recorded and
x3: links where the best split depends on the device's speed; at x10 and
above ResNet18's best is cloud-only whatever the edge does), with a 10%
lognormal spread on every head and tail time. Policies:

- edgesplit, corrected: the adaptive policy fed the closed-loop corrections
  it learns from the head and tail times it measures
  (offload_policy/corrections.py), as the edge node does;
- edgesplit, profile trusted: the same policy with the corrections off;
- speed oracle: edgesplit told the true speed factors (its bandwidth
  estimate is its own): the bound for the corrections alone;
- oracle: told the true speed factors and the true bandwidth.

Out: latency over time per policy, the factor edgesplit learned against the
truth, and per phase (before, during, after the slowdown; each measured
after its first 20 requests) the mean latency relative to the oracles.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from typing import Any

from rich.console import Console

from experiments.bundles import one_model_run
from experiments.exp_traces import case_label, pick_traces, scales_for
from experiments.harness import Results, Settings, markdown_table, progress_bar, sized
from offload_policy.cost import default_accuracy_floor

NAME = "drift"
TITLE = "A device that slows 2x and recovers: closed-loop corrections vs trusting the profile"
MODEL = "resnet18"
FULL_TIME = "under a minute once the bundle is cached"
#: (label, simulator policy, what edgesplit is told of the speeds)
POLICIES = (
    ("edgesplit (corrected)", "edgesplit", "learn"),
    ("edgesplit (profile trusted)", "edgesplit", "off"),
    ("speed oracle", "edgesplit", "told"),
    ("oracle", "oracle", "told"),
)
CORRECTED, TRUSTED, SPEED_ORACLE, ORACLE = (p[0] for p in POLICIES)
#: Requests of each phase left out of its figures: the corrections' time to follow.
SKIP = 20
#: The goal: the corrected policy within this of the oracle in every phase.
GOAL = 1.10
#: The quick size: one trace of each family, the 3G one as recorded, the FCC one x3.
QUICK_SCALES = {"hsdpa": (1.0,), "fcc": (3.0,)}


def sizes(settings: Settings) -> dict[str, Any]:
    """The schedule, the replay and the traces."""
    base = {
        "edge_drift": "30:2,90:1",
        "duration_s": 150.0,
        "interval_s": 0.25,
        "jitter": 0.1,
        "rtt_s": 0.02,
        "per_family": 1 if settings.quick else 2,
        "scales": QUICK_SCALES if settings.quick else (1.0, 3.0),
    }
    return sized(settings, base)


def run(settings: Settings, console: Console) -> Results:
    """Replay the drift for every policy on every (trace, scale); CSV, figures, report."""
    from experiments.drift import drift_from_flags
    from experiments.simulate import SimConfig, simulate
    from offload_policy.adaptive import PolicyConfig

    results = Results(NAME, TITLE, settings, console)
    size = sizes(settings)
    model = (settings.models or (MODEL,))[0]
    mr = one_model_run(model, settings, f"{NAME}-bundle", console.print)
    m = mr.bundle.manifest
    schedule = drift_from_flags(size["edge_drift"], None)
    assert schedule is not None
    floor = default_accuracy_floor(m)
    results.policy_terms(m)
    traces = pick_traces(settings, size["per_family"])
    cases = [(t, s) for t, _ in traces for s in scales_for(t, size["scales"])]
    rows: list[dict[str, Any]] = []
    phases: list[dict[str, Any]] = []
    with progress_bar(console, NAME, len(cases) * len(POLICIES)) as step:
        for trace, scale in cases:
            label = case_label(trace, scale)
            base = SimConfig(
                interval_s=size["interval_s"],
                rtt_s=size["rtt_s"],
                accuracy_floor=floor,
                bandwidth_scale=scale,
                duration_s=size["duration_s"],
                seed=settings.seed,
                drift=schedule,
                compute_jitter=size["jitter"],
                policy=PolicyConfig(radio="wifi" if scale > 1 else "3g", device=settings.device),
            )
            runs = {}
            for name, policy, told in POLICIES:
                runs[name] = simulate(m, trace, policy, replace(base, corrections=told))
                step(1, f"{label}: {name}")
            rows += _request_rows(label, runs, schedule)
            phases += _phase_rows(label, runs, schedule, size["duration_s"])
    results.write_csv("requests.csv", rows)
    results.write_csv("phases.csv", phases)
    for trace, scale in cases:
        label = case_label(trace, scale)
        _plot(results, [r for r in rows if r["case"] == label], label, schedule)
    _report(results, phases, cases, size, mr, schedule)
    results.finish()
    return results


def _request_rows(label: str, runs: dict[str, Any], schedule: Any) -> list[dict[str, Any]]:
    out = []
    for name, r in runs.items():
        for x in r.requests_log:
            out.append(
                {
                    "case": label,
                    "policy": name,
                    "t_s": x.t_s,
                    "latency_ms": x.latency_s * 1e3,
                    "cut": x.decision.cut,
                    "threshold": x.decision.exit_threshold,
                    "codec": x.decision.codec,
                    "edge_factor_told": x.edge_factor,
                    "edge_factor_true": schedule.edge_factor(x.t_s),
                }
            )
    return out


def phase_bounds(schedule: Any, duration_s: float) -> list[tuple[float, float]]:
    """[start, end) of each phase: between the schedule's changes, over the replay."""
    edges = [0.0, *(t for t in schedule.changes() if 0 < t < duration_s), duration_s]
    return list(zip(edges, edges[1:], strict=False))


def _phase_rows(
    label: str, runs: dict[str, Any], schedule: Any, duration_s: float
) -> list[dict[str, Any]]:
    out = []
    for k, (a, b) in enumerate(phase_bounds(schedule, duration_s)):
        means = {}
        counts = {}
        for name, r in runs.items():
            inside = [x.latency_s for x in r.requests_log if a <= x.t_s < b][SKIP:]
            counts[name] = len(inside)
            means[name] = statistics.fmean(inside) if inside else math.nan
        for name in runs:
            out.append(
                {
                    "case": label,
                    "phase": k + 1,
                    "from_s": a,
                    "to_s": b,
                    "edge_factor": schedule.edge_factor(a),
                    "policy": name,
                    "requests": counts[name],
                    "mean_ms": means[name] * 1e3,
                    "vs_oracle": means[name] / means[ORACLE],
                    "vs_speed_oracle": means[name] / means[SPEED_ORACLE],
                }
            )
    return out


def _report(
    results: Results,
    phases: list[dict[str, Any]],
    cases: list[Any],
    size: dict[str, Any],
    mr: Any,
    schedule: Any,
) -> None:
    bounds = sorted({(r["phase"], r["from_s"], r["to_s"], r["edge_factor"]) for r in phases})
    head = []
    worst: dict[str, float] = {}
    for phase, a, b, factor in bounds:
        cells = [f"{phase}: {a:g}-{b:g} s, edge {factor:g}x"]
        for name in (CORRECTED, TRUSTED, SPEED_ORACLE):
            ratios = [r["vs_oracle"] for r in phases if r["phase"] == phase and r["policy"] == name]
            cells.append(f"{statistics.fmean(ratios):.3f} (worst {max(ratios):.3f})")
            if name == CORRECTED:
                worst[f"phase {phase}"] = max(ratios)
        head.append(cells)
    met = all(v <= GOAL for v in worst.values())
    results.section(
        "Headline: mean latency / the oracle's, per phase (each after its first "
        f"{SKIP} requests; mean over {len(cases)} trace cases)",
        markdown_table(["phase", CORRECTED, TRUSTED, SPEED_ORACLE], head)
        + f"\n\nGoal: the corrected policy within {GOAL:.2f}x of the oracle in every phase: "
        + ("**met**" if met else "**missed**")
        + f" (worst {max(worst.values()):.3f}). The oracle knows the true speed factors and the "
        "true bandwidth; the speed oracle knows the true speed factors and estimates the "
        "bandwidth as edgesplit does, so corrected / speed oracle isolates the corrections "
        "from the bandwidth estimator.",
    )
    results.section(
        "Per trace case and phase",
        markdown_table(
            ["case", "phase", "policy", "requests", "mean ms", "/ oracle", "/ speed oracle"],
            [
                [
                    r["case"],
                    r["phase"],
                    r["policy"],
                    r["requests"],
                    f"{r['mean_ms']:.1f}",
                    f"{r['vs_oracle']:.3f}",
                    f"{r['vs_speed_oracle']:.3f}",
                ]
                for r in phases
            ],
        ),
    )
    results.section(
        "Scenario",
        f"Edge drift {schedule.describe()} (`--edge-drift {size['edge_drift']}` in "
        f"`edgesplit simulate`); a request every {size['interval_s']:g} s for "
        f"{size['duration_s']:g} s; RTT {size['rtt_s'] * 1e3:g} ms; every head and tail time "
        f"x a lognormal spread of sigma {size['jitter']:g}. Corrections: EWMA of "
        "median-of-3 log-ratios, alpha 0.15, step <= 0.2, half-life "
        "300 s (offload_policy/corrections.py).",
    )
    results.headline = {k: round(v, 3) for k, v in worst.items()} | {"goal_met": met}
    results.extra_settings = {
        "model": mr.model,
        "bundle": mr.bundle.id[:12],
        "edge_limit": mr.edge_limit,
        "cases": [case_label(t, s) for t, s in cases],
        "edge_drift": size["edge_drift"],
        "request_interval_s": size["interval_s"],
        "duration_s": size["duration_s"],
        "compute_jitter": size["jitter"],
        "skip_requests": SKIP,
    }
    results.modelled(
        "everything in this experiment",
        "experiments/simulate.py: the trace's throughput integrated for each transfer, the "
        f"bundle's measured profiles (edge {mr.edge_limit}) x the drift schedule x a lognormal "
        "spread, codec sizes and exit calibration; the corrections are the edge node's own "
        "(offload_policy/corrections.py), fed the simulated times",
    )


def _plot(results: Results, rows: list[dict[str, Any]], label: str, schedule: Any) -> None:
    import numpy as np

    stem = label.replace("/", "_").replace(" ", "_")
    with results.figure(f"drift_{stem}.png", 3, 1, size=(12, 10)) as (fig, axes):
        ax = axes[0][0]
        for name, _, _ in POLICIES:
            sub = [r for r in rows if r["policy"] == name]
            t = np.array([r["t_s"] for r in sub])
            y = np.array([r["latency_ms"] for r in sub])
            window = max(1, min(SKIP, len(y)))
            # a trailing mean: each point is the last ``window`` requests up to its time
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            ax.plot(t[window - 1 :], smooth, label=f"{name} (mean of the last {window})")
        ax.set_ylabel("latency (ms)")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=7)
        ax = axes[1][0]
        sub = [r for r in rows if r["policy"] == CORRECTED]
        ax.plot([r["t_s"] for r in sub], [r["edge_factor_told"] for r in sub], label="learned")
        ax.step(
            [r["t_s"] for r in sub],
            [r["edge_factor_true"] for r in sub],
            where="post",
            color="black",
            label="true",
        )
        ax.set_ylabel("edge speed factor")
        ax.legend(fontsize=7)
        ax = axes[2][0]
        cuts = sorted({r["cut"] for r in rows})
        for k, (name, _, _) in enumerate(POLICIES):
            sub = [r for r in rows if r["policy"] == name]
            ax.step(
                [r["t_s"] for r in sub],
                [cuts.index(r["cut"]) + 0.06 * (k - 1.5) for r in sub],
                where="post",
                label=name,
                alpha=0.8,
            )
        ax.set_yticks(range(len(cuts)), cuts, fontsize=6)
        ax.set_ylim(-0.5, len(cuts) - 0.5)
        ax.set_ylabel("cut chosen")
        ax.set_xlabel("seconds")
        ax.legend(fontsize=7, ncol=2)
        for row in axes:
            for t in schedule.changes():
                row[0].axvline(t, color="grey", linestyle=":")
