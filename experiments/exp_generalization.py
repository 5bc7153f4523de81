"""Experiment ``generalization``: bandwidth prediction on trace families it was not tuned on.

ResNet18 on an edge ten times slower than the cloud (profiled unthrottled
and slowed x10 in the simulator with ``--edge-cpu-quota 0``, as
``edgesplit simulate --edge-slowdown 10`` does; under a CPU limit the
profile is already the slow device's), at bandwidth scales 1, 10 and 30.

Protocol: for each real family of the traces (3G/HSDPA, FCC), every
estimator of a grid (:func:`experiments.prediction_protocol.grid`: the
latest sample, EWMAs and harmonic means, alone, under RobustMPC's bound and
error-tracked with several windows and caps) is scored on that family
alone; the best (worst scale first) is then judged on every other family:
the other real family, both families played 4x faster
(:func:`experiments.trace_families.time_warped`) and a synthetic
Markov-modulated LTE-like family (:data:`experiments.trace_families.LTE_LIKE`).
Beside them: the estimator edgesplit used before (``harmonic``) and the one
it ships (``tracked``). Every figure is the simulator's
(experiments/simulate.py), with the speeds as profiled (the cost
corrections off: only the bandwidth is unknown).

A second comparison holds the policy to a tight SLO (the edge alone x1.1,
so that only a late transfer misses it) and tells it the shipped
estimator's mean, its 10% quantile (:meth:`ErrorTracking.quantile`), or
RobustMPC's bound: mean latency against SLO misses.

Out: ``generalization.csv`` (family, scale, estimator, ratios, prediction
errors), ``tuning.csv`` (every candidate on each training family),
``slo.csv``, ``generalization.png`` and the report with the table it prints.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from experiments.bundles import one_model_run
from experiments.harness import (
    Results,
    Settings,
    default_traces,
    markdown_table,
    progress_bar,
    sized,
)
from offload_policy.cost import default_accuracy_floor

NAME = "generalization"
TITLE = "Bandwidth prediction on trace families it was not tuned on"
MODEL = "resnet18"
FULL_TIME = "about 3.5 minutes once the ResNet18 bundle is cached (1.5 more to profile it)"
SCALES = (1.0, 10.0, 30.0)
#: How much slower than its profile the edge runs when profiled without a CPU limit.
FREE_EDGE_SLOWDOWN = 10.0
#: How many times faster the derived families replay the real ones.
WARP = 4.0
#: The goal: edgesplit's mean latency within this factor of the oracle's.
GOAL = 1.10
#: The estimator edgesplit used before, and the one it ships, by their names.
BEFORE, SHIPPED = "harmonic", "tracked"
REAL, WARPED, SYNTHETIC = "real", f"real, played {WARP:g}x faster", "synthetic"
#: The tight SLO of the SLO comparison: the edge-only latency times this.
SLO_OVER_EDGE = 1.1
#: The quantile told to the policy in the SLO comparison, and the scales compared.
SLO_QUANTILE = 0.1
SLO_SCALES = (10.0, 30.0)


def sizes(settings: Settings) -> dict[str, Any]:
    """Traces per family (0: all) and whether the grid is the quick one."""
    if settings.quick:
        return sized(settings, {"per_family": 6, "quick_grid": True, "duration_s": 0.0})
    return sized(settings, {"per_family": 0, "quick_grid": False, "duration_s": 0.0})


def families(settings: Settings, per_family: int) -> dict[str, tuple[str, list[Any]]]:
    """The families by name, each (kind, traces): the real ones, each played faster, synthetic."""
    from experiments.trace_families import LTE_LIKE, synthesize, time_warped
    from experiments.traces import load_traces

    loaded = load_traces(settings.traces or (default_traces(),))
    rng = np.random.default_rng(settings.seed)
    real: dict[str, list[Any]] = defaultdict(list)
    for trace in loaded:
        real[trace.family].append(trace)
    out: dict[str, tuple[str, list[Any]]] = {}
    for family in sorted(real):
        members = real[family]
        if per_family and len(members) > per_family:
            keep = sorted(int(i) for i in rng.permutation(len(members))[:per_family])
            members = [members[i] for i in keep]
        out[family] = (REAL, members)
    for family in sorted(real):
        warped = time_warped(out[family][1], WARP)
        out[warped[0].family] = (WARPED, warped)
    count = per_family or max(len(v[1]) for v in out.values())
    out[LTE_LIKE.family] = (SYNTHETIC, synthesize(LTE_LIKE, count, settings.seed))
    return out


def run(settings: Settings, console: Console) -> Results:
    """Tune on each real family, judge on the rest; CSV, figure, report, and the table printed."""
    from experiments.prediction_protocol import References, grid, score_family, tune
    from experiments.simulate import SimConfig
    from offload_policy.adaptive import PolicyConfig
    from offload_policy.estimator_registry import ESTIMATORS

    results = Results(NAME, TITLE, settings, console)
    size = sizes(settings)
    model = (settings.models or (MODEL,))[0]
    mr = one_model_run(model, settings, f"{NAME}-bundle", console.print)
    m = mr.bundle.manifest
    floor = default_accuracy_floor(m)
    results.policy_terms(m)
    slowdown = FREE_EDGE_SLOWDOWN if settings.edge_cpu_quota is None else 1.0
    config = SimConfig(
        interval_s=1.0,
        rtt_s=0.04,
        accuracy_floor=floor,
        edge_slowdown=slowdown,
        duration_s=size["duration_s"] or None,
        seed=settings.seed,
        corrections="off",
        policy=PolicyConfig(device=settings.device),
    )
    refs = References(m, config)
    fams = families(settings, size["per_family"])
    candidates = grid(size["quick_grid"])
    real = [f for f, (kind, _) in fams.items() if kind == REAL]
    picks: dict[str, str] = {}
    tuning: list[dict[str, Any]] = []
    evaluated = {"before": ESTIMATORS[BEFORE], "shipped": ESTIMATORS[SHIPPED]}
    total = len(real) * len(candidates) + len(fams) * len(SCALES) * (2 + len(real))
    with progress_bar(console, NAME, total) as step:
        for train in real:

            def note(name: str, train: str = train) -> None:
                step(1, f"{train}: {name}")

            best, scores = tune(refs, train, fams[train][1], SCALES, candidates, note)
            picks[train] = best
            tuning += [{"tuned_on": train, **_fields(s)} for s in scores]
        rows: list[dict[str, Any]] = []
        for family, (kind, traces) in fams.items():
            for scale in SCALES:
                for role, make in evaluated.items():
                    name = BEFORE if role == "before" else SHIPPED
                    s = score_family(refs, family, traces, scale, name, make)
                    rows.append({"role": role, "tuned_on": "", "kind": kind, **_fields(s)})
                    step(1, f"{family} x{scale:g} {name}")
                for train, pick in picks.items():
                    s = score_family(refs, family, traces, scale, pick, candidates[pick])
                    rows.append({"role": "tuned", "tuned_on": train, "kind": kind, **_fields(s)})
                    step(1, f"{family} x{scale:g} tuned on {train}")
    for row in rows:
        row["held_out"] = _held_out(row["family"], row["tuned_on"])
    results.write_csv("generalization.csv", rows)
    results.write_csv("tuning.csv", tuning)
    slo = slo_rows(refs, fams)
    results.write_csv("slo.csv", slo)
    console.print(table(rows))
    _plot(results, rows, list(fams))
    _report(results, rows, picks, fams, mr, slowdown, size)
    _report_slo(results, slo)
    results.finish()
    return results


def slo_rows(refs: Any, fams: dict[str, tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Mean latency and SLO misses with a tight SLO: the mean, a low quantile, RobustMPC's bound.

    The SLO is the edge-only latency x :data:`SLO_OVER_EDGE`: the edge alone
    always meets it, so every miss is a transfer the link made late.
    """
    from experiments.simulate import simulate
    from offload_policy.error_tracking import ErrorTracking, tracked
    from offload_policy.estimator_registry import ESTIMATORS

    m, base = refs.manifest, refs.config
    any_trace = next(iter(fams.values()))[1][0]
    edge = simulate(m, any_trace, "edge-only", replace(base, duration_s=5.0)).mean_latency_s
    slo_s = edge * SLO_OVER_EDGE

    def quantile() -> ErrorTracking:
        return replace(tracked(), q=SLO_QUANTILE)

    estimators = {
        f"{SHIPPED} (mean)": ESTIMATORS[SHIPPED],
        f"{SHIPPED}, quantile q={SLO_QUANTILE:g}": quantile,
        "robust (RobustMPC)": ESTIMATORS["robust"],
    }
    out = []
    for family, (_, traces) in fams.items():
        for scale in SLO_SCALES:
            config = replace(base, bandwidth_scale=scale, slo_s=slo_s)
            runs = {"oracle": [simulate(m, t, "oracle", config) for t in traces]}
            for name, make in estimators.items():
                runs[name] = [
                    simulate(m, t, "edgesplit", config, estimator_factory=make) for t in traces
                ]
            for name, results in runs.items():
                n = sum(r.requests for r in results)
                out.append(
                    {
                        "family": family,
                        "scale": scale,
                        "slo_ms": slo_s * 1e3,
                        "estimator": name,
                        "mean_ms": sum(r.mean_latency_s * r.requests for r in results) / n * 1e3,
                        "slo_miss_rate": sum(r.slo_miss_rate * r.requests for r in results) / n,
                        "requests": n,
                    }
                )
    return out


def _report_slo(results: Results, slo: list[dict[str, Any]]) -> None:
    names = list(dict.fromkeys(r["estimator"] for r in slo))
    lines = []
    for family, scale in dict.fromkeys((r["family"], r["scale"]) for r in slo):
        at = {r["estimator"]: r for r in slo if r["family"] == family and r["scale"] == scale}
        lines.append(
            [family, f"x{scale:g}"]
            + [f"{at[n]['mean_ms']:.0f} / {at[n]['slo_miss_rate']:.1%}" for n in names]
        )
    results.section(
        f"A tight SLO ({slo[0]['slo_ms']:.0f} ms, the edge alone x{SLO_OVER_EDGE:g}): "
        "mean ms / SLO misses",
        markdown_table(["family", "scale", *names], lines),
    )


def _fields(score: Any) -> dict[str, Any]:
    return dict(score.__dict__)


def _held_out(family: str, tuned_on: str) -> str:
    if not tuned_on:
        return ""
    if family == tuned_on:
        return "tuned here"
    if family.startswith(f"{tuned_on}-warp"):
        return "derived from it"
    return "held out"


def table(rows: list[dict[str, Any]]) -> Table:
    """The headline table: per family and scale, the shipped estimator against the references."""
    out = Table(title="bandwidth prediction per trace family (edgesplit's shipped estimator)")
    columns = (
        "family",
        "scale",
        "edgesplit/oracle",
        "before",
        "neurosurgeon/edgesplit",
        "late oracle/oracle",
        "in outages",
        "pred err p50",
        "pred err p90",
    )
    for c in columns:
        out.add_column(c, justify="left" if c == "family" else "right")
    for row in _headline_rows(rows):
        out.add_row(*row)
    return out


def _headline_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    shipped = [r for r in rows if r["role"] == "shipped"]
    before = {(r["family"], r["scale"]): r for r in rows if r["role"] == "before"}
    lines = []
    for r in shipped:
        b = before[(r["family"], r["scale"])]
        lines.append(
            [
                r["family"],
                f"x{r['scale']:g}",
                f"{r['vs_oracle']:.3f}",
                f"{b['vs_oracle']:.3f}",
                f"{r['neurosurgeon_vs_edgesplit']:.2f}",
                f"{r['late_oracle_vs_oracle']:.3f}",
                f"{r['outage_excess']:.3f}",
                f"{r['error_p50']:.0%}",
                f"{r['error_p90']:.0%}",
            ]
        )
    return lines


def _report(
    results: Results,
    rows: list[dict[str, Any]],
    picks: dict[str, str],
    fams: dict[str, tuple[str, list[Any]]],
    mr: Any,
    slowdown: float,
    size: dict[str, Any],
) -> None:
    from experiments.trace_families import LTE_LIKE

    headers = [
        "family",
        "scale",
        "edgesplit/oracle (shipped)",
        "before (harmonic)",
        "neurosurgeon/edgesplit",
        "late oracle/oracle",
        "excess in outages",
        "prediction error p50",
        "p90",
    ]
    results.section(
        "Headline: edgesplit's mean latency over the oracle's, per trace family",
        markdown_table(headers, _headline_rows(rows))
        + f"\n\nGoal: within {GOAL:.2f}x of the oracle. *Late oracle*: the oracle told the "
        "true rate one request (1 s) late: a perfect measurement one request old (a "
        "predictor may beat it by smoothing). *Excess in outages*: the part of edgesplit's "
        "excess over the oracle (ratio - 1, pooled) spent on requests that arrived while the "
        "link carried nothing, which no past sample foretells. Prediction error: "
        "`|told - true| / true` of the bandwidth the policy was told at each request "
        "(true > 0).",
    )
    tuned = []
    for train, pick in picks.items():
        for family in fams:
            mine = [r for r in rows if r["tuned_on"] == train and r["family"] == family]
            tuned.append(
                [
                    train,
                    pick,
                    family,
                    mine[0]["held_out"],
                    " / ".join(f"{r['vs_oracle']:.3f}" for r in mine),
                ]
            )
    results.section(
        "Tune on one family, judge on the others",
        markdown_table(
            ["tuned on", "chosen", "judged on", "", "edgesplit/oracle at x1 / x10 / x30"], tuned
        ),
    )
    kinds = "\n".join(f"- `{f}`: {kind}, {len(tr)} traces" for f, (kind, tr) in fams.items())
    results.section(
        "The families",
        kinds + f"\n\nThe synthetic family's parameters: {LTE_LIKE.describe()}.",
    )
    worst = max(r["vs_oracle"] for r in rows if r["role"] == "shipped")
    results.headline = {
        "worst_shipped_vs_oracle": round(worst, 4),
        "picks": picks,
    }
    results.extra_settings = {
        "model": mr.model,
        "edge_slowdown": slowdown,
        "scales": list(SCALES),
        "per_family": size["per_family"] or "all",
        "grid": "quick" if size["quick_grid"] else "full",
        "bundle": str(mr.bundle.root),
    }
    results.modelled(
        "everything in this experiment",
        "experiments/simulate.py: the traces' throughput integrated for each transfer, the "
        "bundle's measured profiles (the edge's x"
        f"{slowdown:g}) and codec sizes; the synthetic and time-warped families are made "
        "here (experiments/trace_families.py), not measured",
    )


def _plot(results: Results, rows: list[dict[str, Any]], families_: list[str]) -> None:
    n = len(families_)
    with results.figure("generalization.png", 1, n, size=(3.2 * n, 3.6)) as (fig, axes):
        for i, family in enumerate(families_):
            ax = axes[0][i]
            mine = [r for r in rows if r["family"] == family]
            series: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in mine:
                label = {"before": f"before ({BEFORE})", "shipped": f"shipped ({SHIPPED})"}.get(
                    r["role"], f"tuned on {r['tuned_on']}"
                )
                series[label].append(r)
            for label, sub in series.items():
                ax.plot([f"x{r['scale']:g}" for r in sub], [r["vs_oracle"] for r in sub],
                        marker="o", label=label)  # fmt: skip
            late = series[f"shipped ({SHIPPED})"]
            ax.plot([f"x{r['scale']:g}" for r in late], [r["late_oracle_vs_oracle"] for r in late],
                    linestyle=":", color="black", label="oracle told 1 s late")  # fmt: skip
            ax.axhline(GOAL, color="red", linewidth=0.8, linestyle="--")
            ax.set_title(family, fontsize=9)
            ax.set_xlabel("bandwidth scale")
            if i == 0:
                ax.set_ylabel("mean latency / oracle's")
            ax.grid(True, alpha=0.3)
        axes[0][0].legend(fontsize=6)
        fig.suptitle("edgesplit vs the oracle on families it was not tuned on", fontsize=10)
