"""Experiment ``cloud-scaling``: cloud throughput and p99 vs concurrent edges, 1-2 Ray replicas.

``edgesplit cloud --ray`` (a local Ray cluster started by the node; one CPU
and one ONNX Runtime thread per replica, the count fixed) serves closed-loop
edges (benchmarks/loadgen.py: each edge sends the next request when the
last is answered, and waits the announced delay after ``busy``) sending the
model's cloud-only request (the input). For each edge count the throughput
of results, p50 and p99 latency of results, and the ``busy`` answers are
measured over a fixed window after a warm-up; the single-process node is
measured beside them as the reference.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console

from experiments.bundles import one_model_run
from experiments.harness import Results, Settings, markdown_table, progress_bar, sized

NAME = "cloud-scaling"
TITLE = "Cloud tier throughput and p99 latency vs concurrent edges (Ray, 1 and 2 replicas)"
MODEL = "resnet18"
FULL_TIME = "about 8 minutes"
NODES = ("single-process", "ray, 1 replica", "ray, 2 replicas")


def sizes(settings: Settings) -> dict[str, Any]:
    """Edge counts and seconds per point."""
    if settings.quick:
        return sized(settings, {"edges": (1, 4, 8), "seconds": 4.0, "warmup_s": 1.5})
    return sized(settings, {"edges": (1, 2, 4, 8, 16, 32), "seconds": 15.0, "warmup_s": 3.0})


def run(settings: Settings, console: Console) -> Results:
    """Measure every node at every edge count; CSV, figure, report."""
    from experiments.loadgen import load, node, ray_flags, sample

    results = Results(NAME, TITLE, settings, console)
    size = sizes(settings)
    model = (settings.models or (MODEL,))[0]
    mr = one_model_run(model, settings, f"{NAME}-bundle", console.print)
    bundle = mr.bundle
    cut = bundle.manifest.cuts[0]
    value = sample(bundle, 1)
    work = results.path("work")
    work.mkdir(exist_ok=True)
    flags = {
        "single-process": [],
        "ray, 1 replica": ray_flags(1, 1),
        "ray, 2 replicas": ray_flags(2, 1),
    }
    rows: list[dict[str, Any]] = []
    with progress_bar(console, NAME, len(NODES) * len(size["edges"])) as step:
        for name in NODES:
            step(0, f"{name}: starting")
            with node(
                bundle, work, name.replace(", ", "-").replace(" ", "-"), flags[name]
            ) as endpoint:
                for edges in size["edges"]:
                    f = load(endpoint, bundle, cut, value, edges, size["seconds"], size["warmup_s"])
                    rows.append(
                        {
                            "node": name,
                            "edges": edges,
                            **f,
                            "cores_busy": f["throughput"] * f["compute_ms"] / 1e3,
                        }
                    )
                    step(1, f"{name}, {edges} edges: {f['throughput']:.1f}/s")
    results.write_csv("cloud_scaling.csv", rows)
    _plot(results, rows, model)
    _report(results, rows, size, mr, cut, value)
    results.finish()
    return results


def _report(
    results: Results,
    rows: list[dict[str, Any]],
    size: dict[str, Any],
    mr: Any,
    cut: Any,
    value: Any,
) -> None:
    results.section(
        "Per node and edge count",
        markdown_table(
            [
                "node",
                "edges",
                "results/s",
                "p50 ms",
                "p99 ms",
                "busy",
                "lost",
                "compute ms/request",
                "cores of compute",
            ],
            [
                [
                    r["node"],
                    r["edges"],
                    f"{r['throughput']:.1f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    int(r["busy"]),
                    int(r["lost"] + r["other"]),
                    f"{r['compute_ms']:.1f}",
                    f"{r['cores_busy']:.2f}",
                ]
                for r in rows
            ],
        ),
    )
    peak = {n: max(r["throughput"] for r in rows if r["node"] == n) for n in NODES}
    one, two = peak["ray, 1 replica"], peak["ray, 2 replicas"]
    cores = os.cpu_count() or 1
    results.section(
        "Headline: scaling from 1 to 2 replicas",
        f"Peak throughput: single-process {peak['single-process']:.1f}, Ray 1 replica {one:.1f}, "
        f"Ray 2 replicas {two:.1f} results/s: 2 replicas / 1 = "
        f"{two / one if one else float('nan'):.2f}x "
        f"on {cores} cores. Each replica holds one CPU; the ingress (decoding "
        f"{value.nbytes:,} B requests), Ray's own processes and the load generators share the "
        "same cores, so on a 2-core host the second replica cannot get a whole core "
        "(the 'cores of compute' column: throughput x compute per request).",
    )
    results.headline = {"peak": peak, "scaling_1_to_2": two / one if one else None, "cores": cores}
    results.extra_settings = {
        "model": mr.model,
        "cut": cut.id,
        "request_bytes": int(value.nbytes),
        "edges": list(size["edges"]),
        "seconds_per_point": size["seconds"],
        "warmup_s": size["warmup_s"],
        "replica": "1 CPU, 1 ONNX Runtime thread each",
    }
    results.measured(
        "throughput, p50, p99, busy answers",
        "closed-loop edges (threads in spawned processes, real ZeroMQ DEALERs, loopback) "
        "against a real `edgesplit cloud` process, single-process or with a local Ray cluster "
        "(Ray Serve replicas), over a fixed window after a warm-up",
    )


def _plot(results: Results, rows: list[dict[str, Any]], model: str) -> None:
    with results.figure("cloud_scaling.png", 1, 2, size=(13, 5)) as (fig, axes):
        for name in NODES:
            sub = [r for r in rows if r["node"] == name]
            axes[0][0].plot(
                [r["edges"] for r in sub], [r["throughput"] for r in sub], "o-", label=name
            )
            axes[0][1].plot([r["edges"] for r in sub], [r["p99_ms"] for r in sub], "o-", label=name)
        for ax, label in zip(axes[0], ("results / s", "p99 latency (ms)"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent edges")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{model}, cloud-only requests: throughput and p99 vs edges", fontsize=11)


__all__ = ["NAME", "run"]
