"""What ``split-curves`` found: its headline, the optimal cut per network, report and figures.

Takes the rows :mod:`experiments.exp_split_curves` measured (one per cut,
codec and network, and one per policy) and writes ``headline.csv``, the
markdown report's sections and one figure per model.
"""

from __future__ import annotations

from typing import Any

from experiments.bundles import ModelRun
from experiments.harness import NETWORKS, Results, markdown_table


def edge_only_row(curves: list[dict[str, Any]], model: str, network: str) -> dict[str, Any]:
    """The edge-only cut's row (the last cut) of ``model`` on ``network``."""
    rows = [r for r in curves if r["model"] == model and r["network"] == network]
    return [r for r in rows if r["bytes"] == 0][-1]


def optimal(curves: list[dict[str, Any]], model: str, network: str, key: str) -> dict[str, Any]:
    """The measured cut with the lowest ``key`` (``median_ms`` or ``energy_mj``)."""
    rows = [
        r
        for r in curves
        if r["model"] == model and r["network"] == network and r["measured"] and r.get("requests")
    ]
    return min(rows, key=lambda r: r[key])


def headline(curves: list[dict[str, Any]], policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (network, model): edgesplit's speedup and energy reduction vs cloud- and edge-only."""
    out = []
    for p in policies:
        if p["policy"] != "edgesplit":
            continue
        cloud = next(
            q
            for q in policies
            if q["model"] == p["model"]
            and q["network"] == p["network"]
            and q["policy"] == "cloud-only"
        )
        edge = edge_only_row(curves, p["model"], p["network"])
        out.append(
            {
                "network": p["network"],
                "model": p["model"],
                "edgesplit_ms": p["median_ms"],
                "cloud_only_ms": cloud["median_ms"],
                "edge_only_ms": edge["median_ms"],
                "speedup_vs_cloud": cloud["median_ms"] / p["median_ms"],
                "speedup_vs_edge": edge["median_ms"] / p["median_ms"],
                "energy_reduction_vs_cloud": 1 - p["energy_mj"] / cloud["energy_mj"],
                "energy_reduction_vs_edge": 1 - p["energy_mj"] / edge["energy_mj"],
                "edgesplit_cuts": p["cuts"],
            }
        )
    return out


def write_report(
    results: Results,
    runs: list[ModelRun],
    curves: list[dict[str, Any]],
    policies: list[dict[str, Any]],
    size: dict[str, Any],
    notes: list[str],
) -> None:
    """headline.csv, the report's sections, and what was measured or modelled, into ``results``."""
    head = headline(curves, policies)
    results.write_csv("headline.csv", head)
    results.headline = {f"{h['network']}/{h['model']}": h for h in head}
    results.section(
        "Headline: edgesplit vs cloud-only and edge-only, measured side by side",
        markdown_table(
            [
                "network",
                "model",
                "edgesplit ms",
                "cloud-only ms",
                "edge-only ms",
                "speedup vs cloud",
                "speedup vs edge",
                "energy cut vs cloud",
                "energy cut vs edge",
                "edgesplit chose",
            ],
            [
                [
                    h["network"],
                    h["model"],
                    f"{h['edgesplit_ms']:.1f}",
                    f"{h['cloud_only_ms']:.1f}",
                    f"{h['edge_only_ms']:.1f}",
                    f"{h['speedup_vs_cloud']:.2f}x",
                    f"{h['speedup_vs_edge']:.2f}x",
                    f"{h['energy_reduction_vs_cloud']:.1%}",
                    f"{h['energy_reduction_vs_edge']:.1%}",
                    ", ".join(f"{k} x{v}" for k, v in h["edgesplit_cuts"].items()),
                ]
                for h in head
            ],
        )
        + "\n\nPublished anchors (their hardware, their 8 DNNs): Neurosurgeon (ASPLOS 2017) "
        "3.1x average and up to 40.7x latency speedup, 59.5% average and up to 94.7% mobile "
        "energy reduction vs cloud-only; SPINN (MobiCom 2020) up to 2x throughput over earlier "
        "collaborative inference and +20.7% accuracy under latency constraints. The aim is not "
        "to match them on this hardware but to show edgesplit against the same baselines "
        "measured in one run.\n\nLatency and energy are medians per request (the CSVs hold "
        "means and p95 too). edgesplit may pick a lossy codec (int8) where the bundle's "
        "calibration says the accuracy holds; the torchvision models here have random weights "
        "and no calibration, so for them the accuracy of a lossy choice is not known (the "
        "built-in model's is measured: the accuracy column of policies.csv).",
    )
    optimum = []
    for mr in runs:
        for network in NETWORKS:
            lat = optimal(curves, mr.model, network, "median_ms")
            en = optimal(curves, mr.model, network, "energy_mj")
            optimum.append(
                [
                    mr.model,
                    network,
                    f"{lat['cut']}/{lat['codec']} ({lat['median_ms']:.1f} ms)",
                    f"{en['cut']}/{en['codec']} ({en['energy_mj']:.1f} mJ)",
                ]
            )
    results.section(
        "Latency-optimal and energy-optimal cut per network (measured)",
        markdown_table(["model", "network", "latency-optimal", "energy-optimal"], optimum),
    )
    errors = [
        abs(r["median_ms"] - r["predicted_ms"]) / r["median_ms"]
        for r in curves
        if r["measured"] and r.get("requests") and r["median_ms"] > 0
    ]
    if errors:
        import statistics

        results.section(
            "Prediction vs measurement",
            f"Over {len(errors)} measured (cut, codec, network) points the partitioner's "
            f"predicted latency was within {statistics.median(errors):.0%} of the measured median "
            f"(median relative error; worst {max(errors):.0%}). The prediction assumes the nominal "
            "uplink rate; TCP over the shaped link carries about 95.6% of it as payload, and "
            "the round trip of the veth pair (~0.1 ms) is left out.",
        )
    if notes:
        results.section("Not measured", "\n".join(f"- {n}" for n in notes))
    results.extra_settings = {
        "networks_mbps": NETWORKS,
        "requests_per_cut": size["requests"],
        "requests_per_policy": size["policy_requests"],
        "codecs": list(size["codecs"]),
        "cap_s": size["cap_s"],
        "bundles": {
            mr.model: f"{mr.bundle.id[:12]} ({'cached' if mr.reused else 'made now'})"
            for mr in runs
        },
        "edge_limit": runs[0].edge_limit if runs else "",
    }
    results.measured(
        "latency",
        "wall time at the edge worker (a real EdgeNode: ONNX Runtime heads, ZeroMQ with CURVE) "
        "through a tbf-shaped veth link between network namespaces to a real `edgesplit cloud` "
        "(embedded ONNX Runtime); median over the requests after one warm-up",
    )
    results.measured("edge compute time, bytes on the wire, cloud compute and queue", "per request")
    results.modelled(
        "edge energy",
        "device power (offload_policy.energy DEVICES) x measured edge compute + radio power "
        "(Huang et al. MobiSys 2012, the network's coefficients) at the measured throughput x "
        "measured time on the wire + idle power x the cloud's reported time "
        "(experiments/measure.py); no power rail is read on this host; medians per request",
    )
    results.modelled("predicted curves", "the partitioner's cost model from the bundle's profiles")


def plot_model(
    results: Results, model: str, curves: list[dict[str, Any]], policies: list[dict[str, Any]]
) -> None:
    """``split_curves_<model>.png``: measured vs predicted latency and energy of every cut."""
    networks = list(NETWORKS)
    with results.figure(
        f"split_curves_{model}.png", 2, len(networks), size=(6 * len(networks), 8)
    ) as (fig, axes):
        for col, network in enumerate(networks):
            rows = [r for r in curves if r["network"] == network]
            for r, (key, pkey, unit) in enumerate(
                (
                    ("median_ms", "predicted_ms", "latency (ms)"),
                    ("energy_mj", "predicted_energy_mj", "edge energy (mJ)"),
                )
            ):
                ax = axes[r][col]
                for codec in sorted({x["codec"] for x in rows}):
                    sub = [x for x in rows if x["codec"] == codec or x["bytes"] == 0]
                    labels = [x["cut"] for x in sub]
                    pos = range(len(sub))
                    ax.plot(
                        pos, [x[pkey] for x in sub], "--", alpha=0.7, label=f"predicted {codec}"
                    )
                    meas = [
                        (i, x[key])
                        for i, x in zip(pos, sub, strict=True)
                        if x["measured"] and x.get("requests")
                    ]
                    if meas:
                        ax.plot(
                            [i for i, _ in meas],
                            [v for _, v in meas],
                            "o-",
                            label=f"measured {codec}",
                        )
                        best_i, best = min(meas, key=lambda m: m[1])
                        kind = "latency" if r == 0 else "energy"
                        ax.plot([best_i], [best], "*", markersize=16, color="gold",
                                markeredgecolor="black",
                                label=f"{kind}-optimal {codec}: {labels[best_i]}")  # fmt: skip
                    ax.set_xticks(list(pos), labels, rotation=90, fontsize=6)
                for p in policies:
                    if p["network"] == network and p.get("requests"):
                        ax.axhline(
                            p[key],
                            color="green" if p["policy"] == "edgesplit" else "red",
                            linestyle=":",
                            label=f"{p['policy']} (measured)",
                        )
                ax.set_yscale("log")
                ax.set_ylabel(unit)
                ax.set_title(f"{model}, {network} ({NETWORKS[network]} Mbit/s up)", fontsize=9)
                ax.legend(fontsize=6)
        fig.suptitle(f"{model}: every cut, measured over a shaped link vs predicted", fontsize=11)
