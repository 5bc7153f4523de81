"""Experiment ``split-curves``: latency and edge energy of every cut on 3G, LTE and WiFi.

For each model and each of Neurosurgeon's three networks (mobile uplink
1.1, 5.85 and 18.88 Mbit/s), the real edge worker sends requests through a
real shaped link (tbf in network namespaces) to a real ``edgesplit cloud``
once per cut, with exits off and the tensors raw as Neurosurgeon sent them
(the full size adds int8+zstd), then runs edgesplit's adaptive policy,
cloud-only (the input, losslessly compressed) and edge-only the same way.
Each measured curve is drawn over the partitioner's prediction from the
bundle's profiles; the latency-optimal and energy-optimal cut per network
are marked. Cuts whose predicted latency exceeds a cap (a 3 MB activation
takes 23 s at 3G) are predicted only, and the report says which.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from experiments.bundles import BUILTIN, ModelRun, edge_cgroup, model_run
from experiments.harness import (
    NETWORK_RADIO,
    NETWORKS,
    Results,
    Settings,
    progress_bar,
    sized,
)
from experiments.measure import groups, predicted, summary
from experiments.split_curves_report import plot_model, write_report
from experiments.testbed import Testbed, read_rows, start_together, wait
from offload_policy.cost import default_accuracy_floor
from offload_policy.types import Decision

NAME = "split-curves"
TITLE = "End-to-end latency and edge energy of every cut on 3G, LTE and WiFi"
MODELS = (BUILTIN, "resnet18", "alexnet", "mobilenet_v2", "vgg16")
QUICK_MODELS = (BUILTIN, "resnet18")
FULL_TIME = "1-2 hours on a 2-core host (printed per model from the predictions before measuring)"
#: Policies measured beside the cuts (edge-only is the last cut).
POLICIES = ("edgesplit", "cloud-only")


def sizes(settings: Settings) -> dict[str, Any]:
    """Requests per cut, codecs, and the predicted-latency cap, by size."""
    if settings.quick:
        return sized(
            settings, {"requests": 2, "policy_requests": 6, "codecs": ("raw",), "cap_s": 3.0}
        )
    return sized(
        settings,
        {"requests": 5, "policy_requests": 20, "codecs": ("raw", "int8+zstd"), "cap_s": 8.0},
    )


def run(settings: Settings, console: Console) -> Results:
    """Measure every cut, the policies and the predictions; CSV, figures, report."""
    results = Results(NAME, TITLE, settings, console)
    size = sizes(settings)
    models = settings.models or (QUICK_MODELS if settings.quick else MODELS)
    curves: list[dict[str, Any]] = []
    policies: list[dict[str, Any]] = []
    notes: list[str] = []
    links: set[str] = set()
    work = results.path("work")
    with edge_cgroup(settings, NAME) as cgroup:
        runs = []
        with progress_bar(console, f"{NAME}: bundles", len(models)) as step:
            for model in models:
                runs.append(model_run(model, settings, cgroup, lambda text: step(0, text)))
                step(1, model)
        for mr in runs:
            results.policy_terms(mr.bundle.manifest, mr.model)
            c, p, link = _measure_model(mr, settings, size, work, cgroup, console, notes)
            curves += c
            policies += p
            links.add(link)
    results.write_csv("split_curves.csv", curves)
    results.write_csv("policies.csv", policies)
    for mr in runs:
        plot_model(
            results,
            mr.model,
            [r for r in curves if r["model"] == mr.model],
            [r for r in policies if r["model"] == mr.model],
        )
    for link in sorted(links):
        results.measured("the link", link)
    write_report(results, runs, curves, policies, size, notes)
    results.finish()
    return results


def _measure_model(
    mr: ModelRun,
    settings: Settings,
    size: dict[str, Any],
    work: Path,
    cgroup: Any,
    console: Console,
    notes: list[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Every planned point of one model on one testbed; its curves, policies and link."""
    m = mr.bundle.manifest
    floor = default_accuracy_floor(m)
    prices = (settings.price_cloud_s, settings.price_gb)
    curves: list[dict[str, Any]] = []
    policies: list[dict[str, Any]] = []
    plans: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    total = 0
    expected_s = 0.0
    for network, mbps in NETWORKS.items():
        rows, phases = [], []
        for cut in m.cuts:
            for codec in size["codecs"] if cut.tail is not None else ("raw",):
                decision = Decision(cut.id, None, codec)
                lat, energy = predicted(
                    m, decision, mbps * 1e6, 0.0, NETWORK_RADIO[network], settings.device
                )
                row = {
                    "model": mr.model,
                    "network": network,
                    "uplink_mbps": mbps,
                    "cut": cut.id,
                    "codec": codec,
                    "bytes": cut.bytes_for(codec) if cut.tail else 0,
                    "predicted_ms": lat * 1e3,
                    "predicted_energy_mj": energy * 1e3,
                    "measured": lat <= size["cap_s"],
                }
                rows.append(row)
                if row["measured"]:
                    phases.append(
                        {
                            "label": f"{cut.id}/{codec}",
                            "requests": size["requests"],
                            "warmup": 1,
                            "policy": {
                                "kind": "fixed",
                                "cut": cut.id,
                                "codec": codec,
                                "threshold": None,
                            },
                        }
                    )
        for name in POLICIES:
            phases.append(
                {
                    "label": name,
                    "policy": {"kind": name},
                    "requests": size["policy_requests"],
                    "warmup": 2,
                    "fresh_link": True,
                }
            )
        total += sum(p["requests"] + p["warmup"] for p in phases)
        expected_s += (
            sum(
                (r["predicted_ms"] / 1e3 + 0.05) * (size["requests"] + 1)
                for r in rows
                if r["measured"]
            )
            + 2 * (size["policy_requests"] + 2) * max(r["predicted_ms"] for r in rows) / 1e3
        )
        plans[network] = (rows, phases)
    console.print(
        f"{mr.model}: {total} requests over {len(NETWORKS)} networks, about "
        f"{expected_s / 60:.0f} min by the profile's predictions (at most; edgesplit is faster)"
    )
    first = next(iter(NETWORKS.values()))
    with Testbed(
        mr.bundle, work, first * 1e6, cgroup, name=mr.model, shaper=settings.shaper
    ) as bed:
        link = bed.shaped_by
        with progress_bar(console, f"{NAME}: {mr.model}", total) as step:
            for network, (rows, phases) in plans.items():
                mbps = NETWORKS[network]
                bed.set_rate(mbps * 1e6)
                out = work / f"{mr.model}-{network}.jsonl"
                plan = bed.plan(
                    phases,
                    out,
                    radio=NETWORK_RADIO[network],
                    device=settings.device,
                    prior_mbps=mbps,
                    timeout_s=max(30.0, 4 * size["cap_s"]),
                    seed=settings.seed,
                    accuracy_floor=floor,
                )
                worker = bed.start(plan, f"{mr.model}-{network}")
                start_together([worker])
                seen = 0
                while worker.proc.poll() is None:
                    time.sleep(0.5)
                    now = len(read_rows(out))
                    step(now - seen, network)
                    seen = now
                wait(worker.proc, 60)
                answered = read_rows(out)
                step(len(answered) - seen, network)
                by_phase = groups(answered)
                for row in rows:
                    label = f"{row['cut']}/{row['codec']}"
                    s = summary(
                        by_phase.get(label, []), NETWORK_RADIO[network], settings.device, prices
                    )
                    row.update(_figures(s))
                    curves.append(row)
                for name in POLICIES:
                    s = summary(
                        by_phase.get(name, []), NETWORK_RADIO[network], settings.device, prices
                    )
                    policies.append(
                        {
                            "model": mr.model,
                            "network": network,
                            "uplink_mbps": mbps,
                            "policy": name,
                            **_figures(s),
                            "cuts": s.get("cuts", {}),
                            "finished": s.get("finished", {}),
                        }
                    )
    skipped = [f"{r['network']} {r['cut']}/{r['codec']}" for r in curves if not r["measured"]]
    if skipped:
        notes.append(
            f"{mr.model}: predicted only (predicted latency over the {size['cap_s']:g} s cap): "
            + ", ".join(skipped)
        )
    return curves, policies, link


def _figures(s: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "requests",
        "median_ms",
        "p95_ms",
        "energy_mj",
        "energy_mean_mj",
        "cost_per_1k",
        "accuracy",
        "fallbacks",
    )
    return {k: s.get(k, float("nan")) for k in keys}
