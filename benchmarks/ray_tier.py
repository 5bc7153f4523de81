"""The cloud tier on Ray vs the single-process cloud node: latency at low load, throughput.

Both run as deployed, ``edgesplit cloud`` processes on loopback: the
single-process node (embedded ONNX Runtime) and the Ray tier
(``edgesplit cloud --ray``: its own local Ray cluster, the tails in Ray Serve
replicas, one CPU each).

1. Low load: one edge, one request at a time, the two nodes interleaved
   request by request (order alternating) after a warm-up; medians, p95 and
   the Ray path's added latency. Target: within 1 ms median.
2. Throughput: ``--edges`` simulated edges (threads spread over a few
   processes, each sending one request after another for ``--seconds``)
   against the single-process node, the Ray tier with 1 replica, and with 2;
   requests/s served, p50/p99 latency, ``busy`` answers. Target: 2 replicas
   >= 1.7x of 1 where cores allow: the figures say how many cores this
   machine has and what else shares them (the ingress, Ray's own processes
   and the load generators).

Requests are cloud-only (the raw input is sent; the tail is the whole model)
unless ``--cut`` says otherwise. Run from the repository root::

    .venv/bin/python -m benchmarks.ray_tier [--model resnet18] [--edges 16] [--seconds 15]
    .venv/bin/python -m benchmarks.ray_tier --bundle path/to/bundle --csv ray.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.triton_direct import build, measure, p95
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Cut, load_bundle
from experiments.loadgen import load, node, ray_flags, sample


def call(client: CloudClient, bundle: Bundle, cut: Cut):  # noqa: ANN201 - a closure
    """One ``infer`` request per call; raises unless the reply is a result."""
    meta = {"bundle": bundle.id, "cut": cut.id}

    def one(value: np.ndarray) -> np.ndarray:
        reply, _ = client.request("infer", {cut.name: value}, meta=meta, timeout_s=30)
        if reply is None or reply.message.kind != "result":
            raise RuntimeError(f"request failed: {reply and reply.message.meta}")
        return reply.arrays[bundle.manifest.model.output]

    return one


def main(argv: Sequence[str] | None = None) -> int:
    """Run both measurements and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="model to partition (default resnet18)")
    parser.add_argument("--bundle", type=Path, help="use this bundle instead of partitioning")
    parser.add_argument("--cut", help="cut to request (default: the input cut, cloud-only)")
    parser.add_argument("--requests", type=int, default=300, help="low-load requests per path")
    parser.add_argument("--edges", type=int, default=8, help="concurrent simulated edges")
    parser.add_argument("--seconds", type=float, default=15.0, help="throughput window, s")
    parser.add_argument("--csv", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.requests < 20 or args.edges < 1 or args.seconds <= 0:
        parser.error("--requests >= 20, --edges >= 1 and --seconds > 0")

    with tempfile.TemporaryDirectory(prefix="edgesplit-ray-bench-") as tmp:
        work = Path(tmp)
        bundle = load_bundle(args.bundle) if args.bundle else build(args.model, work / "bundle")
        cut = bundle.manifest.cut(args.cut) if args.cut else bundle.manifest.cuts[0]
        value = sample(bundle, 1)
        if cut.id != bundle.manifest.cuts[0].id:
            value = np.random.default_rng(0).standard_normal((1, *cut.shape), dtype=np.float32)
        cores = os.cpu_count() or 1
        print(
            f"model {bundle.manifest.model.name}, cut {cut.id} ({value.nbytes:,} B a request), "
            f"{cores} cores; nodes: single-process (embedded ORT, its default threads) and --ray",
            flush=True,
        )
        rows: list[dict[str, object]] = []

        print("1. low load: one request at a time, interleaved", flush=True)
        # One replica holding every core, as the single-process node's ONNX Runtime does.
        with node(bundle, work, "single", [], note=print) as single:
            with node(bundle, work, "ray-low", ray_flags(1, cores), note=print) as ray_low:
                with CloudClient(single) as a, CloudClient(ray_low) as b:
                    seconds = measure(
                        {"single": call(a, bundle, cut), "ray": call(b, bundle, cut)},
                        value,
                        args.requests,
                        warmup=30,
                    )
            print(f"{'path':>8} {'median ms':>10} {'p95 ms':>8}")
            for name, values in seconds.items():
                median, tail = statistics.median(values) * 1e3, p95(values) * 1e3
                print(f"{name:>8} {median:10.3f} {tail:8.3f}")
                rows.append({"test": "low-load", "path": name, "median_ms": median, "p95_ms": tail})
            added = (statistics.median(seconds["ray"]) - statistics.median(seconds["single"])) * 1e3
            print(f"Ray path adds {added:+.3f} ms median (target: within 1 ms)", flush=True)

            print(f"2. throughput: {args.edges} edges, {args.seconds:g} s each", flush=True)
            figures = {"single-process": load(single, bundle, cut, value, args.edges, args.seconds)}
        for replicas in (1, 2):
            name = f"ray, {replicas} replica" + ("s" if replicas > 1 else "")
            with node(
                bundle, work, f"ray-{replicas}", ray_flags(replicas, 1), note=print
            ) as endpoint:
                figures[name] = load(endpoint, bundle, cut, value, args.edges, args.seconds)
        print(
            f"{'node':>16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'busy':>6} {'lost':>6} "
            f"{'compute ms':>10} {'cores busy':>10}"
        )
        for name in ("single-process", "ray, 1 replica", "ray, 2 replicas"):
            f = figures[name]
            print(
                f"{name:>16} {f['throughput']:8.1f} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} "
                f"{f['busy']:6.0f} {f['lost'] + f['other']:6.0f} {f['compute_ms']:10.2f} "
                f"{f['throughput'] * f['compute_ms'] / 1e3:10.2f}"
            )
            rows.append({"test": "throughput", "path": name, **f})
        two, one = figures["ray, 2 replicas"]["throughput"], figures["ray, 1 replica"]["throughput"]
        if not one or not figures["single-process"]["throughput"]:
            print("no request succeeded on a node: see the 'lost' column and the node logs")
            return 1
        scaling = two / one
        vs_single = two / figures["single-process"]["throughput"]
        print(
            f"scaling 1 -> 2 replicas: {scaling:.2f}x (target >= 1.7x where cores allow; "
            f"{cores} cores here); 2 replicas vs single-process: {vs_single:.2f}x"
        )
        print(
            "compute ms: the tail's median compute time per request as measured where it ran "
            "(a batch's time divided among its requests); cores busy: req/s x compute, the "
            "compute the replicas got. Where it stays below the replica count, the replicas "
            "waited for CPU held by the ingress, Ray's processes and the load generators."
        )
        if args.csv:
            keys = sorted({k for r in rows for k in r})
            with args.csv.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)
            print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
