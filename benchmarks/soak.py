"""Soak: many simulated edges against one cloud process for long; is anything lost or leaking?

Starts ``edgesplit cloud`` (embedded ONNX Runtime, plaintext on loopback)
and drives it with ``--edges`` closed-loop edges, window after window, for
``--minutes``. Each window prints results/s, p50/p99 latency, ``busy``
answers, lost requests and the node's resident memory; the end prints the
totals and the memory trend (a least-squares slope over the windows, MiB per
hour). The CI test (tests/integration/test_load.py) is the short version.

    .venv/bin/python -m benchmarks.soak --minutes 30 [--edges 32] [--model resnet18]
    .venv/bin/python -m benchmarks.soak --bundle path/to/bundle --queue-size 16 --csv soak.csv
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.triton_direct import build
from cloud_node.process import start_cloud_process, stop_process
from edgesplit.bundle import load_bundle
from experiments.loadgen import rss_bytes, run_load, sample, summarize


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak and print a line per window and the totals."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="branchynet-untrained", help="model to partition")
    parser.add_argument("--bundle", type=Path, help="use this bundle instead of partitioning")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run")
    parser.add_argument("--window-s", type=float, default=30.0, help="seconds per window")
    parser.add_argument("--edges", type=int, default=32, help="concurrent simulated edges")
    parser.add_argument("--queue-size", type=int, default=16, help="the node's --queue-size")
    parser.add_argument("--csv", type=Path, help="also write one row per window here")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.window_s < 5 or args.edges < 1 or args.queue_size < 1:
        parser.error("--minutes > 0, --window-s >= 5, --edges >= 1, --queue-size >= 1")

    with tempfile.TemporaryDirectory(prefix="edgesplit-soak-") as tmp:
        work = Path(tmp)
        bundle = load_bundle(args.bundle) if args.bundle else build(args.model, work / "bundle")
        cut = bundle.manifest.cuts[0]
        value = sample(bundle, 1)
        proc, endpoint = start_cloud_process(
            bundle.root,
            "tcp://127.0.0.1:*",
            work / "cloud.log",
            extra=["--insecure", "--queue-size", str(args.queue_size), "--log-level", "error"],
        )
        print(
            f"soak: {bundle.manifest.model.name}, {args.edges} edges, {args.minutes:g} min in "
            f"{args.window_s:g} s windows, queue {args.queue_size}, node pid {proc.pid}",
            flush=True,
        )
        print(f"{'t min':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'busy':>7} "
              f"{'lost':>5} {'other':>5} {'RSS MiB':>8}")  # fmt: skip
        rows: list[dict[str, float]] = []
        began = time.monotonic()
        try:
            while time.monotonic() - began < args.minutes * 60:
                samples, start = run_load(endpoint, bundle, cut, value, args.edges,
                                          args.window_s, warmup_s=0.0)  # fmt: skip
                figures = summarize([s for s in samples if s.at >= start], args.window_s)
                if proc.poll() is not None:
                    print(f"the cloud node exited with {proc.returncode}")
                    return 1
                figures["minutes"] = (time.monotonic() - began) / 60
                figures["rss_mib"] = rss_bytes(proc.pid) / 2**20
                rows.append(figures)
                print(
                    f"{figures['minutes']:6.1f} {figures['throughput']:8.1f} "
                    f"{figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f} {figures['busy']:7.0f} "
                    f"{figures['lost']:5.0f} {figures['other']:5.0f} {figures['rss_mib']:8.1f}",
                    flush=True,
                )
        finally:
            stop_process(proc)
    if not rows:
        return 1
    minutes = np.array([r["minutes"] for r in rows])
    rss = np.array([r["rss_mib"] for r in rows])
    slope = float(np.polyfit(minutes, rss, 1)[0] * 60) if len(rows) > 2 else float("nan")
    lost = sum(r["lost"] + r["other"] for r in rows)
    print(
        f"total: {sum(r['throughput'] * args.window_s for r in rows):.0f} results, "
        f"{sum(r['busy'] for r in rows):.0f} busy, {lost:.0f} lost; RSS {rss.min():.1f}-"
        f"{rss.max():.1f} MiB, trend {slope:+.1f} MiB/hour"
    )
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
