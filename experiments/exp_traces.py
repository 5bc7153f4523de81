"""Experiment ``traces``: real bandwidth traces replayed live through the running nodes.

For each trace (3G/HSDPA and FCC from ../shared/traces, each also scaled x10
for a WiFi-class variant; or any file in the same format given with
``--trace``), every policy gets its own shaped link (tbf in its own pair of
network namespaces), its own ``edgesplit cloud`` and its own edge worker
(a real EdgeNode in its own CPU cgroup: each edge is its own device). All
links follow the trace live from the same t0, so the policies meet the same
bandwidth at the same moments, side by side in one run. Requests arrive at a
steady rate; a slot missed while the previous answer was still out is
skipped, not sent late (the count served is part of the result).

Out: per trace a time series (true rate, edgesplit's estimate, the cut each
policy chose, latency) and latency CDFs per policy; per policy the regret
against the oracle (the adaptive policy told the true rate).
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from experiments.bundles import edge_cgroup, one_model_run
from experiments.harness import (
    Results,
    Settings,
    default_traces,
    markdown_table,
    progress_bar,
    sized,
)
from experiments.measure import summary
from experiments.relay import RelayLink
from experiments.shaped_link import MIN_RATE_BPS
from experiments.testbed import RELAY_LINK, TC_LINK, Testbed, read_rows, start_together, wait
from experiments.trace_replay import replay
from offload_policy.cost import default_accuracy_floor

NAME = "traces"
TITLE = "Real bandwidth traces replayed live: time series, latency CDFs and regret"
POLICIES = ("edgesplit", "oracle", "neurosurgeon", "edgent", "edge-only", "cloud-only")
MODEL = "resnet18"
EDGENT_DEADLINE_S = 1.0
FULL_TIME = "30 minutes measured (12 trace runs of 120 s) once the bundle is cached"


def sizes(settings: Settings) -> dict[str, Any]:
    """Traces per family, seconds per trace, request interval."""
    if settings.quick:
        return sized(
            settings,
            {"per_family": 1, "duration_s": 30.0, "interval_s": 0.5, "scales": QUICK_SCALES},
        )
    return sized(
        settings, {"per_family": 3, "duration_s": 120.0, "interval_s": 0.5, "scales": (1.0, 10.0)}
    )


#: The quick size replays the 3G/HSDPA trace as recorded and the FCC one x10 (WiFi-class).
QUICK_SCALES = {"hsdpa": (1.0,), "fcc": (10.0,)}


def scales_for(trace: Any, scales: Any) -> tuple[float, ...]:
    """The scales ``trace`` is replayed at: a tuple for every trace, or one per family."""
    if isinstance(scales, dict):
        return tuple(scales.get(trace.family, (1.0, 10.0)))
    return tuple(scales)


def radio_for_scale(scale: float) -> str:
    """The radio model of a replay: 3G for the traces as recorded, WiFi once scaled up."""
    return "wifi" if scale > 1 else "3g"


def case_label(trace: Any, scale: float) -> str:
    """How a (trace, scale) replay is named in the CSVs and reports."""
    return f"{trace.family}/{trace.name} x{scale:g}"


def pick_traces(settings: Settings, per_family: int) -> list[tuple[Any, Path]]:
    """(trace, file) to replay: ``--trace`` as given, else ``per_family`` of each family, seeded."""
    from experiments.traces import TRACE_GLOB, load_trace

    files: list[Path] = []
    for entry in settings.traces or (default_traces(),):
        path = Path(entry)
        files += (
            sorted(p for p in path.rglob(TRACE_GLOB) if p.is_file()) if path.is_dir() else [path]
        )
    found = [(load_trace(f), f) for f in files]
    if settings.traces:
        return found
    rng = np.random.default_rng(settings.seed)
    chosen = []
    for family in sorted({t.family for t, _ in found}):
        members = [x for x in found if x[0].family == family]
        for i in rng.permutation(len(members))[:per_family]:
            chosen.append(members[int(i)])
    return chosen


def rate_points(trace: Any, scale: float, duration_s: float) -> list[tuple[float, float]]:
    """(t, bits/s) of ``trace`` x ``scale`` over ``duration_s``, wrapped around, floored."""
    points = []
    offset = 0.0
    while offset < duration_s:
        for t, mbps in zip(trace.times.tolist(), trace.mbps.tolist(), strict=True):
            if offset + t >= duration_s:
                break
            points.append((offset + t, max(MIN_RATE_BPS, mbps * 1e6 * scale)))
        offset += trace.duration_s
    return points


def run(settings: Settings, console: Console) -> Results:
    """Replay each trace for every policy at once; CSV, figures, report."""
    results = Results(NAME, TITLE, settings, console)
    size = sizes(settings)
    model = (settings.models or (MODEL,))[0]
    traces = pick_traces(settings, size["per_family"])
    cases = [(t, s) for t, _ in traces for s in scales_for(t, size["scales"])]
    files = {id(t): f for t, f in traces}
    work = results.path("work")
    rows: list[dict[str, Any]] = []
    mr = one_model_run(model, settings, f"{NAME}-bundle", console.print)
    results.policy_terms(mr.bundle.manifest)
    with progress_bar(console, NAME, len(cases)) as step:
        for trace, scale in cases:
            label = case_label(trace, scale)
            step(0, label)
            rows += _replay_case(mr, trace, files[id(trace)], scale, settings, size, work, label)
            step(1, label)
    results.write_csv("requests.csv", rows)
    table = _summaries(rows, settings)
    results.write_csv("summary.csv", table)
    for trace, scale in cases:
        _plot_case(
            results,
            [r for r in rows if r["case"] == case_label(trace, scale)],
            trace,
            scale,
            size["duration_s"],
        )
    for link in sorted({r["link"] for r in rows}):
        results.measured("the links", RELAY_LINK if link == "relay" else TC_LINK)
    _report(results, table, cases, size, mr)
    results.finish()
    return results


def _replay_case(
    mr: Any,
    trace: Any,
    path: Path,
    scale: float,
    settings: Settings,
    size: dict[str, Any],
    work: Path,
    label: str,
) -> list[dict[str, Any]]:
    m = mr.bundle.manifest
    points = rate_points(trace, scale, size["duration_s"])
    mean_mbps = float(np.mean(trace.mbps)) * scale
    stem = f"{trace.family}-{trace.name}-x{scale:g}".replace("/", "_")
    floor = default_accuracy_floor(m)
    workers = []
    links: set[str] = set()
    with ExitStack() as stack:
        beds = {}
        for policy in POLICIES:
            cgroup = stack.enter_context(edge_cgroup(settings, f"{NAME}-{policy}"))
            bed = stack.enter_context(
                Testbed(
                    mr.bundle,
                    work,
                    points[0][1],
                    cgroup,
                    name=f"{stem}-{policy}",
                    shaper=settings.shaper,
                )
            )
            links.add("relay" if isinstance(bed.link, RelayLink) else "tc")
            beds[policy] = bed
        for policy, bed in beds.items():
            phase = {
                "label": policy,
                "policy": policy_spec(policy, mean_mbps),
                "interval_s": size["interval_s"],
                "until_s": size["duration_s"],
                "at_t0": True,
            }
            plan = bed.plan(
                [phase],
                work / f"{stem}-{policy}.jsonl",
                radio=radio_for_scale(scale),
                device=settings.device,
                prior_mbps=points[0][1] / 1e6,
                timeout_s=10.0,
                seed=settings.seed,
                accuracy_floor=floor,
                trace={"path": str(path), "scale": scale},
            )
            workers.append(bed.start(plan, f"{stem}-{policy}"))
        t0 = start_together(workers)
        stop = threading.Event()
        time.sleep(max(0.0, t0 - time.monotonic()))
        replays = [replay(bed.link, points, stop) for bed in beds.values()]
        try:
            for w in workers:
                wait(w.proc, size["duration_s"] + 120)
        finally:
            stop.set()
            for thread in replays:
                thread.join(timeout=5)
    rows = []
    for policy in POLICIES:
        for r in read_rows(work / f"{stem}-{policy}.jsonl"):
            r["case"] = label
            r["radio"] = radio_for_scale(scale)
            r["link"] = "+".join(sorted(links))
            r["true_bps"] = trace.bandwidth_bps(r["t_s"]) * scale
            rows.append(r)
    return rows


def policy_spec(policy: str, mean_mbps: float) -> dict[str, Any]:
    """The worker's policy spec: Neurosurgeon plans for the trace's mean, Edgent has 1 s."""
    spec: dict[str, Any] = {"kind": policy}
    if policy == "neurosurgeon":
        spec["mean_mbps"] = mean_mbps
    if policy == "edgent":
        spec["deadline_s"] = EDGENT_DEADLINE_S
    return spec


def _summaries(rows: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    out = []
    prices = (settings.price_cloud_s, settings.price_gb)
    for case in dict.fromkeys(r["case"] for r in rows):
        radio = next(r["radio"] for r in rows if r["case"] == case)
        oracle = summary(
            [r for r in rows if r["case"] == case and r["policy"] == "oracle"],
            radio,
            settings.device,
            prices,
        )
        for policy in POLICIES:
            s = summary(
                [r for r in rows if r["case"] == case and r["policy"] == policy],
                radio,
                settings.device,
                prices,
            )
            if not s.get("requests"):
                continue
            out.append(
                {
                    "case": case,
                    "policy": policy,
                    "requests": s["requests"],
                    "mean_ms": s["mean_ms"],
                    "median_ms": s["median_ms"],
                    "p95_ms": s["p95_ms"],
                    "p99_ms": s["p99_ms"],
                    "energy_mj": s["energy_mj"],
                    "cost_per_1k": s["cost_per_1k"],
                    "regret": s["mean_ms"] / oracle["mean_ms"] - 1
                    if oracle.get("requests")
                    else math.nan,
                    "extra_ms_vs_oracle": s["mean_ms"] - oracle.get("mean_ms", math.nan),
                    "fallbacks": s["fallbacks"],
                    "finished": s["finished"],
                    "cuts": s["cuts"],
                }
            )
    return out


def _report(
    results: Results,
    table: list[dict[str, Any]],
    cases: list[Any],
    size: dict[str, Any],
    mr: Any,
) -> None:
    results.section(
        "Per trace and policy",
        markdown_table(
            [
                "trace",
                "policy",
                "served",
                "mean ms",
                "p95 ms",
                "mJ/request",
                "cost/1k",
                "regret vs oracle",
                "fallbacks",
            ],
            [
                [
                    r["case"],
                    r["policy"],
                    r["requests"],
                    f"{r['mean_ms']:.1f}",
                    f"{r['p95_ms']:.1f}",
                    f"{r['energy_mj']:.0f}",
                    f"{r['cost_per_1k']:.4g}",
                    f"{r['regret']:+.1%}",
                    r["fallbacks"],
                ]
                for r in table
            ],
        ),
    )
    regret = []
    for policy in POLICIES:
        values = [
            r["regret"] for r in table if r["policy"] == policy and not math.isnan(r["regret"])
        ]
        if values:
            regret.append(
                [policy, f"{np.mean(values):+.1%}", f"{np.max(values):+.1%}", len(values)]
            )
    results.section(
        "Headline: regret vs the oracle on the traces (mean latency / oracle's - 1)",
        markdown_table(["policy", "mean regret", "worst", "traces"], regret)
        + "\n\nThe oracle is edgesplit's adaptive policy told the true rate of the trace at "
        "each request; edgesplit itself sees only its own transfers and probes. Regret is "
        "measured: every policy ran on its own link following the same trace at the same time.",
    )
    results.headline = {r[0]: r[1] for r in regret}
    results.extra_settings = {
        "model": mr.model,
        "bundle": mr.bundle.id[:12],
        "traces": [f"{t.family}/{t.name} x{s:g}" for t, s in cases],
        "trace_folder": str(default_traces()) if not results.settings.traces else "--trace",
        "seconds_per_trace": size["duration_s"],
        "request_interval_s": size["interval_s"],
        "edge_timeout_s": 10.0,
        "edgent_deadline_s": EDGENT_DEADLINE_S,
    }
    results.measured(
        "latency, cuts chosen, bandwidth estimates, requests served",
        "each policy's real edge worker (own CPU cgroup) over its own tbf-shaped link whose rate "
        "follows the trace live (experiments/trace_replay.replay) to its own `edgesplit cloud`",
    )
    results.modelled(
        "energy per request",
        "power models x measured times (experiments/measure.py); radio 3g for the traces as "
        "recorded, wifi for the x10 variants",
    )


def _plot_case(
    results: Results, rows: list[dict[str, Any]], trace: Any, scale: float, duration: float
) -> None:
    if not rows:
        return
    stem = f"{trace.family}_{trace.name}_x{scale:g}"
    with results.figure(f"timeseries_{stem}.png", 3, 1, size=(12, 10)) as (fig, axes):
        t = np.linspace(0, duration, 600)
        ax = axes[0][0]
        ax.step(
            t,
            [trace.bandwidth_bps(x) * scale / 1e6 for x in t],
            where="post",
            color="black",
            label="trace (set on the link)",
        )
        for policy in ("edgesplit",):
            sub = [r for r in rows if r["policy"] == policy]
            ax.plot(
                [r["t_s"] for r in sub],
                [r["estimate_bps"] / 1e6 for r in sub],
                ".-",
                label=f"{policy}'s estimate",
            )
        ax.set_ylabel("uplink Mbit/s")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.set_title(f"{trace.family}/{trace.name} x{scale:g}", fontsize=10)
        ax = axes[1][0]
        # The decision is the cut and its codec; policies on the same one are drawn a little
        # apart so that none hides another.
        decisions = sorted({f"{r['cut']}/{r['codec']}" for r in rows})
        for k, policy in enumerate(POLICIES):
            sub = [r for r in rows if r["policy"] == policy]
            ax.step(
                [r["t_s"] for r in sub],
                [decisions.index(f"{r['cut']}/{r['codec']}") + 0.05 * (k - 2.5) for r in sub],
                where="post",
                label=policy,
                alpha=0.8,
            )
        ax.set_yticks(range(len(decisions)), decisions, fontsize=6)
        ax.set_ylabel("cut/codec chosen")
        ax.legend(fontsize=7, ncol=3)
        ax = axes[2][0]
        for policy in POLICIES:
            sub = [r for r in rows if r["policy"] == policy]
            ax.plot([r["t_s"] for r in sub], [r["latency_s"] * 1e3 for r in sub], ".", label=policy)
        ax.set_yscale("log")
        ax.set_xlabel("seconds since t0")
        ax.set_ylabel("latency (ms)")
        ax.legend(fontsize=7, ncol=3)
    with results.figure(f"cdf_{stem}.png", size=(8, 5)) as (fig, axes):
        ax = axes[0][0]
        for policy in POLICIES:
            values = sorted(r["latency_s"] * 1e3 for r in rows if r["policy"] == policy)
            if values:
                ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=policy)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"latency CDF, {trace.family}/{trace.name} x{scale:g}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
