"""Experiment ``cloud-scaling``: many edges, one SLO; throughput, p99 and SLO attainment vs edges.

In the spirit of SPINN (Laskaridis et al., MobiCom 2020): N closed-loop edges
(experiments/loadgen.py: each sends its next request when the last is
answered, and waits the announced delay after ``busy``) share one cloud.
Each edge is given a cut from a mix (the cloud-only cut and the inner cuts
cheapest to send) and sends that cut's activation with the default codec, as
a real edge would, so requests differ in size and tail cost, and the cloud
batches requests of the same cut from different edges (``--batch-window-ms``
on every node). Measured for each edge count over a fixed window after a
warm-up: results/s, p50 and p99 latency of results, the share of requests
answered with a result within the SLO, and the mean batch the cloud formed
(the replies' ``batch``). Nodes: the single-process node, and ``edgesplit
cloud --ray`` (a local Ray cluster started by the node; one CPU and one ONNX
Runtime thread per replica, the count fixed) with 1 and 2 replicas; on 2
replicas the same edges also send the cloud-only request (the input,
losslessly compressed: the whole model in the cloud) at the same load.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any

from rich.console import Console

from experiments.bundles import one_model_run
from experiments.cloud_scaling_plan import (
    CLOUD_ONLY,
    MIXED,
    SERIES,
    SLO_FACTOR,
    Plan,
    chosen_mix,
    options,
)
from experiments.harness import (
    ExperimentError,
    Results,
    Settings,
    markdown_table,
    progress_bar,
    sized,
)
from experiments.loadgen import EdgeLoad
from wire import DEFAULT_CODEC

NAME = "cloud-scaling"
TITLE = "Many edges, one SLO: cloud throughput, p99 and SLO attainment vs edges (Ray, 1-2 replicas)"
MODEL = "resnet18"
FULL_TIME = "about 7 minutes"
NODES = ("single-process", "ray, 1 replica", "ray, 2 replicas")


def sizes(settings: Settings) -> dict[str, Any]:
    """Edge counts, seconds per point, warm-up, and the SLO's measurement."""
    if settings.quick:
        base = {"edges": (1, 8, 32), "seconds": 3.0, "warmup_s": 1.0, "calibrate_s": 2.0}
    else:
        base = {"edges": (1, 8, 32, 64), "seconds": 15.0, "warmup_s": 3.0, "calibrate_s": 5.0}
    return sized(settings, base)


def run(settings: Settings, console: Console) -> Results:
    """Measure every series at every edge count; CSV, figure, report."""
    from experiments.loadgen import cut_values, node, ray_flags, sample
    from offload_policy.baselines import cloud_only

    results = Results(NAME, TITLE, settings, console)
    size, opts = sizes(settings), options(settings)
    model = (settings.models or (MODEL,))[0]
    mr = one_model_run(model, settings, f"{NAME}-bundle", console.print)
    manifest = mr.bundle.manifest
    mix = chosen_mix(manifest.cuts, opts)
    x = sample(mr.bundle, 1)
    values = cut_values(mr.bundle, mix, x)
    plan = Plan(
        mr.bundle,
        opts,
        size,
        settings.seed,
        mix,
        {c.id: EdgeLoad(c, values[c.id], DEFAULT_CODEC) for c in mix},
        EdgeLoad(
            manifest.cloud_only, {manifest.model.input.name: x}, cloud_only(manifest).decision.codec
        ),
    )
    work = results.path("work")
    work.mkdir(exist_ok=True)
    flags = {"single-process": [], "ray, 1 replica": ray_flags(1, 1)}
    flags["ray, 2 replicas"] = ray_flags(2, 1)
    slo_s = None if opts.slo_ms is None else opts.slo_ms / 1e3
    calibration: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    cut_rows: list[dict[str, Any]] = []
    with progress_bar(console, NAME, len(SERIES) * len(size["edges"]) + (slo_s is None)) as step:
        for name in NODES:
            step(0, f"{name}: starting")
            slug = name.replace(", ", "-").replace(" ", "-")
            extra = [*flags[name], "--batch-window-ms", f"{opts.batch_window_ms:g}"]
            with node(mr.bundle, work, slug, extra) as endpoint:
                if slo_s is None:
                    calibration = _point(endpoint, plan, [plan.whole], size["calibrate_s"], None)[0]
                    if math.isnan(calibration["p50_ms"]):
                        raise ExperimentError(
                            f"{name}: no cloud-only result; see {work}/{slug}.log"
                        )
                    slo_s = math.ceil(SLO_FACTOR * calibration["p50_ms"]) / 1e3
                    step(1, f"SLO {slo_s * 1e3:.0f} ms")
                for load in (what for n, what in SERIES if n == name):
                    for edges in size["edges"]:
                        loads = plan.loads(load, edges)
                        f, per_cut = _point(endpoint, plan, loads, size["seconds"], slo_s)
                        key = {"node": name, "load": load, "edges": edges, "slo_ms": slo_s * 1e3}
                        rows.append({**key, **f})
                        cut_rows += [{**key, **c} for c in per_cut]
                        note = f"{f['throughput']:.1f}/s, SLO met {f['slo_attainment']:.0%}"
                        step(1, f"{name}, {load}, {edges} edges: {note}")
    assert slo_s is not None
    results.write_csv("cloud_scaling.csv", rows)
    results.write_csv("cloud_scaling_cuts.csv", cut_rows)
    _plot(results, rows, model, slo_s)
    _report(results, rows, cut_rows, plan, mr.model, slo_s, calibration)
    results.finish()
    return results


def _point(
    endpoint: str, plan: Plan, loads: list[EdgeLoad], seconds: float, slo_s: float | None
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """One point: the figures of all requests, and per cut (with how many edges sent it)."""
    from experiments.loadgen import run_edges, summarize, summarize_by_cut

    warmup_s = plan.size["warmup_s"]
    done = run_edges(endpoint, plan.bundle.id, loads, seconds, warmup_s)
    measured = done.window()
    figures = summarize(measured, seconds, slo_s)
    figures["cores_busy"] = figures["throughput"] * figures["compute_ms"] / 1e3
    figures["loadgen_cores"] = done.cpu_s / (warmup_s + seconds)
    edges_on = Counter(load.cut.id for load in loads)
    by_cut = summarize_by_cut(measured, seconds, slo_s)
    per_cut = [{"cut": c, "edges_on_cut": edges_on[c], **f} for c, f in by_cut.items()]
    return figures, per_cut


def _label(node: str, load: str) -> str:
    return f"{node}, {load}"


def _table(columns: tuple[tuple[str, str], ...], rows: list[dict[str, Any]]) -> str:
    """A markdown table of ``rows``: one column per (header, format string of the row)."""
    return markdown_table(
        [h for h, _ in columns], [[f.format(**r) for _, f in columns] for r in rows]
    )


_POINT = (("node", "{node}"), ("load", "{load}"), ("edges", "{edges}"))
_FIGURES = (
    ("results/s", "{throughput:.1f}"),
    ("p50 ms", "{p50_ms:.1f}"),
    ("p99 ms", "{p99_ms:.1f}"),
    ("SLO met", "{slo_attainment:.1%}"),
    ("mean batch", "{batch_mean:.2f}"),
)
_FAILURES = (("busy", "{busy:.0f}"), ("lost", "{lost:.0f}"), ("errors", "{other:.0f}"))
_COMPUTE = (("compute ms/request", "{compute_ms:.2f}"), ("cores of compute", "{cores_busy:.2f}"))


def _report(
    results: Results,
    rows: list[dict[str, Any]],
    cut_rows: list[dict[str, Any]],
    plan: Plan,
    model: str,
    slo_s: float,
    calibration: dict[str, float],
) -> None:
    from experiments.loadgen import request_bytes

    opts, size = plan.opts, plan.size
    cloud = plan.bundle.manifest.profiles.get("cloud")
    biggest = max(size["edges"])
    at_biggest = Counter(load.cut.id for load in plan.loads(MIXED, biggest))
    sent = {c: request_bytes(plan.bundle.id, load) for c, load in plan.mixed.items()}
    mix = [
        {
            "cut": c.id,
            "kind": c.kind,
            "shape": "x".join(str(d) for d in c.shape),
            "bytes": sent[c.id],
            "tail_ms": cloud.seconds(c.tail) * 1e3
            if cloud and c.tail is not None and c.tail in cloud.timings
            else float("nan"),
            "edges": at_biggest[c.id],
        }
        for c in plan.mix
    ]
    whole_bytes = request_bytes(plan.bundle.id, plan.whole)
    how = (
        f"set with `--slo-ms {opts.slo_ms:g}`"
        if opts.slo_ms is not None
        else f"{SLO_FACTOR:g}x the median latency ({calibration['p50_ms']:.1f} ms) of the "
        "cloud-only request from one edge alone on the single-process node, measured first "
        f"({size['calibrate_s']:g} s), rounded up to a ms"
    )
    results.section(
        "The load",
        f"{', '.join(str(e) for e in size['edges'])} closed-loop edges, each sending its next "
        f"request as soon as the last is answered; {size['warmup_s']:g} s warm-up, then "
        f"{size['seconds']:g} s measured per point. Mixed cuts: each edge is given a cut of the "
        f"mix below ({opts.assign}; `--cuts`, `--cut-assign`) and sends that cut's tensor with "
        f"{DEFAULT_CODEC}, the default codec, as a real edge would. Cloud-only: every edge sends "
        f"the input with {plan.whole.codec} (the cloud-only baseline's lossless codec), "
        f"{whole_bytes:,} B a request, to the Ray tier with 2 replicas. Every node batches "
        f"requests of the same cut from any edge within {opts.batch_window_ms:g} ms "
        "(`--batch-window-ms`), up to 16 rows.\n\n"
        + _table(
            (
                ("cut", "{cut}"),
                ("kind", "{kind}"),
                ("shape", "{shape}"),
                ("bytes a request", "{bytes:,}"),
                ("tail ms (cloud profile, 1 row)", "{tail_ms:.2f}"),
                (f"edges of {biggest}", "{edges}"),
            ),
            mix,
        )  # fmt: skip
        + f"\n\nSLO: {slo_s * 1e3:.0f} ms a request, {how}. SLO attainment is the share of all "
        "requests sent in the window that were answered with a result within the SLO: a "
        "`busy` answer, an error or a loss (no answer in 30 s) counts as a miss, since the "
        "edge then runs the rest of the model itself (and an edge told `busy` keeps its "
        "requests local for the delay the cloud announced, so fewer requests are sent).",
    )
    busiest = max(rows, key=lambda r: r["loadgen_cores"])
    results.section(
        "Per node, load and edge count",
        _table(_POINT + _FIGURES + _FAILURES + _COMPUTE, rows)
        + f"\n\nThe load generators took {busiest['loadgen_cores']:.2f} cores at most "
        f"({busiest['edges']} edges, {_label(busiest['node'], busiest['load'])}; CPU time over "
        "the point's warm-up and window, `loadgen_cores` in the CSV); the rest of the host's "
        "cores were left to the cloud.",
    )
    results.section(
        f"Per cut at {biggest} edges",
        "The cloud batches only requests of the same cut: a cut sent by more edges forms "
        "larger batches.\n\n"
        + _table(
            (*_POINT[:2], ("cut", "{cut}"), ("edges", "{edges_on_cut}"), *_FIGURES),
            [r for r in cut_rows if r["edges"] == biggest],
        ),
    )
    _headline(results, rows, biggest, slo_s)
    results.extra_settings = {
        "model": model,
        "mix": [c.id for c in plan.mix],
        "assign": opts.assign,
        "codec": DEFAULT_CODEC,
        "cloud_only_codec": plan.whole.codec,
        "request_bytes": sent | {CLOUD_ONLY: whole_bytes},
        "slo_ms": slo_s * 1e3,
        "slo_measured": opts.slo_ms is None,
        "batch_window_ms": opts.batch_window_ms,
        "edges": list(size["edges"]),
        "seconds_per_point": size["seconds"],
        "warmup_s": size["warmup_s"],
        "replica": "1 CPU, 1 ONNX Runtime thread each",
    }
    results.measured(
        "throughput, p50, p99, SLO attainment, busy answers, mean batch (the replies' `batch`)",
        "closed-loop edges (one ZeroMQ DEALER each, polled by one thread per spawned process, "
        "each edge's request encoded once), loopback, against a real `edgesplit cloud` "
        "process, single-process or with a local Ray cluster (Ray Serve replicas), over a "
        "fixed window after a warm-up",
    )
    results.measured("the cut tensors", "the bundle's heads on ONNX Runtime, from its input")


def _headline(results: Results, rows: list[dict[str, Any]], biggest: int, slo_s: float) -> None:
    at = {(r["node"], r["load"]): r | {"series": _label(r["node"], r["load"])}
          for r in rows if r["edges"] == biggest}  # fmt: skip
    two, one = at[("ray, 2 replicas", MIXED)], at[("ray, 1 replica", MIXED)]
    whole = at[("ray, 2 replicas", CLOUD_ONLY)]
    ratio = two["throughput"] / whole["throughput"] if whole["throughput"] else float("nan")
    scaling = two["throughput"] / one["throughput"] if one["throughput"] else float("nan")
    cores = os.cpu_count() or 1
    results.section(
        f"Headline: {biggest} edges, one SLO of {slo_s * 1e3:.0f} ms",
        _table((("node, load", "{series}"), *_FIGURES), [at[s] for s in SERIES])
        + f"\n\nOn 2 Ray replicas at {biggest} edges, mixed cuts give {ratio:.2f}x the "
        f"results/s of cloud-only and meet the SLO for {two['slo_attainment']:.0%} of requests "
        f"(cloud-only: {whole['slo_attainment']:.0%}). Mixed cuts, 2 replicas / 1: "
        f"{scaling:.2f}x on {cores} cores; each replica holds one CPU, and the ingress, Ray's "
        "own processes and the load generators share the same cores, so on a 2-core host the "
        "second replica cannot get a whole core (the 'cores of compute' column: results/s x "
        "compute per request).",
    )
    keys = ("throughput", "p50_ms", "p99_ms", "slo_attainment", "batch_mean")
    results.headline = {
        "edges": biggest,
        "slo_ms": slo_s * 1e3,
        "series": {_label(*s): {k: at[s][k] for k in keys} for s in SERIES},
        "mixed_vs_cloud_only": ratio,
        "scaling_1_to_2": scaling,
        "cores": cores,
    }


def _plot(results: Results, rows: list[dict[str, Any]], model: str, slo_s: float) -> None:
    panels = (
        ("throughput", "results / s"),
        ("p99_ms", "p99 latency of results (ms)"),
        ("slo_attainment", "SLO attainment"),
    )
    with results.figure("cloud_scaling.png", 1, 3, size=(16, 5)) as (fig, axes):
        for series in SERIES:
            sub = [r for r in rows if (r["node"], r["load"]) == series]
            style = "s--" if series[1] == CLOUD_ONLY else "o-"
            for ax, (key, _) in zip(axes[0], panels, strict=True):
                ax.plot([r["edges"] for r in sub], [r[key] for r in sub], style,
                        label=_label(*series))  # fmt: skip
        axes[0][1].axhline(slo_s * 1e3, color="red", linestyle=":", label="SLO")
        axes[0][1].set_yscale("log")
        axes[0][2].set_ylim(-0.02, 1.02)
        for ax, (_, label) in zip(axes[0], panels, strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent edges")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
        axes[0][0].legend(fontsize=8)
        axes[0][1].legend(fontsize=8, handles=axes[0][1].get_lines()[-1:])
        fig.suptitle(
            f"{model}: N closed-loop edges, mixed cuts vs cloud-only, SLO {slo_s * 1e3:.0f} ms",
            fontsize=11,
        )


__all__ = ["NAME", "SERIES", "options", "run"]
