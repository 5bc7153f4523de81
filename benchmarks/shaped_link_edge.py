"""The shaped-link benchmark's runs from the edge namespace, at one uplink rate.

Direct (``tritonclient`` to Triton, as :func:`direct_client` in a process
of its own: ``python -m benchmarks.shaped_link direct-client``) and
``edgesplit edge`` with each policy, in the edge's CPU cgroup when one is
given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.shaped_link_bundle import ROOT
from benchmarks.shaped_link_figures import edge_figures, latency_figures
from benchmarks.triton_direct import direct_call
from edgesplit.bundle import Bundle, load_bundle
from experiments.cpulimit import CpuCgroup
from experiments.loadgen import sample
from experiments.shaped_link import ShapedLink

DIRECT_CLIENT = "direct-client"


def _run_in_edge(
    link: ShapedLink, argv: list[str], timeout_s: float, cgroup: CpuCgroup | None
) -> str:
    """Run ``argv`` in the edge namespace (and ``cgroup``) to its end; its stdout.

    RuntimeError if it fails. The cgroup wrapper goes outside ``ip netns
    exec``, which hides /sys/fs/cgroup.
    """
    kwargs: dict[str, Any] = {
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "stdin": subprocess.DEVNULL,
        "text": True,
        "cwd": ROOT,
        "env": {**os.environ, "COLUMNS": "200"},
    }
    if cgroup is None:
        proc = link.run_in(link.edge_ns, argv, **kwargs)
    else:
        proc = subprocess.Popen(cgroup.wrap([*link.exec_args(link.edge_ns), *argv]), **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[:5])} ...` failed:\n{out[-2000:]}\n{err[-2000:]}")
    return out


def direct(
    link: ShapedLink,
    bundle: Bundle,
    url: str,
    args: argparse.Namespace,
    cgroup: CpuCgroup | None,
) -> list[float]:
    """Latencies (seconds) of the raw input sent to Triton from the edge namespace."""
    argv = [sys.executable, "-m", "benchmarks.shaped_link", DIRECT_CLIENT, "--bundle",
            str(bundle.root), "--url", url, "--requests", str(args.direct_requests),
            "--warmup", str(args.warmup)]  # fmt: skip
    out = _run_in_edge(link, argv, 3600, cgroup)
    return [float(s) for s in json.loads(out.splitlines()[-1])]


def edge(
    link: ShapedLink,
    bundle: Bundle,
    endpoint: str,
    keys: Path,
    inputs: str,
    results: Path,
    policy: list[str],
    args: argparse.Namespace,
    cgroup: CpuCgroup | None,
) -> list[dict[str, Any]]:
    """``edgesplit edge`` in the edge namespace with ``policy`` flags; its per-request rows."""
    argv = [sys.executable, "-m", "edgesplit", "edge", "--bundle", str(bundle.root),
            "--connect", endpoint, "--secret-key", str(keys / "allowed" / "edge.key_secret"),
            "--server-key", str(keys / "cloud.key"), "--inputs", inputs,
            "--samples", str(args.requests), "--pipeline-depth", "1",
            "--timeout-ms", str(args.timeout_ms), "--results", str(results), *policy]  # fmt: skip
    if cgroup is not None:
        argv += ["--threads", str(args.edge_threads)]
    _run_in_edge(link, argv, 3600, cgroup)
    return [json.loads(line) for line in results.read_text().splitlines()]


def measure_rate(
    link: ShapedLink,
    rate_mbps: float,
    bundle: Bundle,
    triton_url: str,
    endpoint: str,
    keys: Path,
    inputs: str,
    work: Path,
    args: argparse.Namespace,
    cgroup: CpuCgroup | None,
) -> dict[str, Any]:
    """Direct, adaptive and fixed at one uplink rate."""
    link.set_rate(rate_mbps * 1e6)
    throttled = cgroup.throttled_s() if cgroup else 0.0
    raw = direct(link, bundle, triton_url, args, cgroup)
    cut = bundle.manifest.cloud_only
    figures: dict[str, Any] = {
        "rate_mbps": rate_mbps,
        "direct": {
            **latency_figures(raw),
            "requests": len(raw),
            "bytes_per_request": cut.bytes_for("raw"),
        },
    }
    if cgroup is not None:
        figures["direct"]["edge_throttled_s"] = cgroup.throttled_s() - throttled
    policies = {
        "adaptive": ["--policy", "adaptive", "--bandwidth-mbps", str(args.prior_mbps)],
        "fixed": ["--policy", "fixed", "--cut", "auto", "--bandwidth-mbps", str(rate_mbps)],
        "cloud-only": ["--policy", "fixed", "--cut", cut.id, "--codec", "raw",
                       "--threshold", "off"],
    }  # fmt: skip
    for name, flags in policies.items():
        results = work / f"{name}-{rate_mbps:g}.jsonl"
        throttled = cgroup.throttled_s() if cgroup else 0.0
        rows = edge(link, bundle, endpoint, keys, inputs, results, flags, args, cgroup)
        figures[name] = edge_figures(rows)
        if cgroup is not None:
            figures[name]["edge_throttled_s"] = cgroup.throttled_s() - throttled
        figures[name]["ratio_to_direct"] = (
            figures[name]["median_ms"] / figures["direct"]["median_ms"]
        )
    return figures


def direct_client(argv: Sequence[str]) -> int:
    """Runs in the edge namespace: raw inputs to Triton, prints the latencies as JSON."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.shaped_link {DIRECT_CLIENT}")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle, verify="none")
    call, close = direct_call(args.url, bundle.manifest.cloud_only, bundle.manifest.model.output)
    value = sample(bundle, 1)
    seconds = []
    try:
        for i in range(args.warmup + args.requests):
            began = time.perf_counter()
            call(value)
            if i >= args.warmup:
                seconds.append(time.perf_counter() - began)
    finally:
        close()
    print(json.dumps(seconds))
    return 0
