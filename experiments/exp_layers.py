"""Experiment ``layers``: per-layer latency on the edge and per-layer output size.

Neurosurgeon's Figures 2-3 for AlexNet, VGG16, ResNet18, MobileNetV2 and the
built-in early-exit model: each kernel's latency as ONNX Runtime runs it on
the edge target (this host's CPU limited to ``--edge-cpu-quota`` of one core
by a cgroup, one thread), and the size of what each layer outputs. Where the
data shrinks early and the compute comes late, a split pays.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from experiments.bundles import BUILTIN, edge_cgroup, layer_profile
from experiments.harness import Results, Settings, markdown_table, progress_bar

NAME = "layers"
TITLE = "Per-layer latency on the edge and per-layer output size"
MODELS = (BUILTIN, "alexnet", "vgg16", "resnet18", "mobilenet_v2")
QUICK_MODELS = MODELS
#: Expected time of the full size from a cold cache on a 2-core host (quota 0.1).
FULL_TIME = (
    "about 5 minutes from a cold cache (training the built-in model included), seconds after"
)


def run(settings: Settings, console: Console) -> Results:
    """Profile each model's layers on the edge; CSV, figure, report."""
    results = Results(NAME, TITLE, settings, console)
    models = settings.models or (QUICK_MODELS if settings.quick else MODELS)
    rows: list[dict[str, Any]] = []
    summary: list[list[Any]] = []
    loaded = []
    took: dict[str, float] = {}
    with edge_cgroup(settings, NAME) as cgroup, progress_bar(console, NAME, len(models)) as step:
        for model in models:
            began = time.perf_counter()
            profile, reused = layer_profile(model, settings, cgroup, lambda text: step(0, text))
            took[model] = time.perf_counter() - began
            loaded.append((model, profile, reused))
            step(1, model)
    for model, profile, reused in loaded:
        input_bytes = 4
        for d in profile.input_shape:
            input_bytes *= d
        total = sum(layer.median_s for layer in profile.layers)
        smaller = None
        for i, layer in enumerate(profile.layers):
            rows.append(
                {
                    "model": model,
                    "index": i,
                    "layer": layer.name,
                    "op": layer.op,
                    "output_shape": "x".join(str(d) for d in layer.output_shape),
                    "output_kib": layer.output_bytes / 1024,
                    "latency_ms": layer.median_s * 1e3,
                    "latency_p95_ms": layer.p95_s * 1e3,
                    "latency_share": layer.median_s / total if total else 0.0,
                }
            )
            if smaller is None and layer.output_bytes < input_bytes:
                smaller = i
        after = sum(x.median_s for x in profile.layers[smaller:]) if smaller is not None else 0.0
        biggest = max(profile.layers, key=lambda x: x.output_bytes)
        summary.append(
            [
                model,
                len(profile.layers),
                f"{profile.whole_model_s * 1e3:.1f}",
                f"{total * 1e3:.1f}",
                f"{input_bytes / 1024:.0f}",
                f"{biggest.output_bytes / 1024:.0f} ({biggest.op})",
                "-" if smaller is None else str(smaller),
                f"{after / total:.0%}" if total else "-",
                "cached" if reused else f"measured now, {took[model]:.0f} s",
            ]
        )
    results.write_csv("layers.csv", rows)
    _plot(results, loaded)
    limit = "unlimited" if settings.edge_cpu_quota is None else f"{settings.edge_cpu_quota:g} core"
    results.section(
        "Per model",
        markdown_table(
            [
                "model",
                "kernels",
                "whole model ms",
                "sum of kernels ms",
                "input KiB",
                "largest output KiB",
                "first layer whose output < input",
                "latency from there on",
                "profile",
            ],
            summary,
        )
        + "\n\nWhole model vs sum of kernels: under the CPU limit the kernel throttles the edge "
        "in 10 ms periods; time held between two kernels counts in the whole model's latency "
        "but in no kernel's. A model of many short kernels (MobileNetV2) shows the gap most; "
        "its per-layer bars give each layer's share of the work, not of the wall time."
        + "\n\nReading it as Neurosurgeon did: a model whose outputs fall below the input's "
        "size early while most of its latency comes after (the last two columns) gains from a "
        "split at that layer; a model whose data stays large until the end (the convolutions "
        "of VGG16) only gains at the last layers.",
    )
    results.measured(
        "per-layer latency",
        f"ONNX Runtime node profiling (kernels of the optimized graph, median of the profile's "
        f"timed runs) on this host's CPU limited to {limit} by a cgroup, 1 thread, batch 1",
    )
    results.measured("per-layer output size", "the bytes of each kernel's outputs, float32")
    results.headline = {m: {"kernels": r[1], "whole_ms": r[2]} for m, *_ in summary for r in [_]}
    results.finish()
    return results


def _plot(results: Results, loaded: list[Any]) -> None:
    n = len(loaded)
    with results.figure("layers.png", n, 2, size=(16, 2.6 * n + 0.5)) as (fig, axes):
        for row, (model, profile, _) in enumerate(loaded):
            layers = profile.layers
            x = list(range(len(layers)))
            labels = [layer.op for layer in layers]
            ax = axes[row][0]
            ax.bar(x, [layer.median_s * 1e3 for layer in layers], color="tab:blue")
            ax.set_ylabel("latency (ms)")
            ax.set_title(f"{model}: per-layer latency on the edge", fontsize=9)
            ax = axes[row][1]
            ax.bar(x, [layer.output_bytes / 1024 for layer in layers], color="tab:orange")
            ax.set_yscale("log")
            ax.set_ylabel("output (KiB)")
            ax.set_title(f"{model}: per-layer output size", fontsize=9)
            for ax in axes[row]:
                step = max(1, len(layers) // 40)
                ax.set_xticks(x[::step], labels[::step], rotation=90, fontsize=6)
        fig.suptitle("Per-layer latency (edge) and output size", fontsize=11)
