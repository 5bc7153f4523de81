"""The chosen split vs the raw input sent to Triton, over real shaped links.

Target (c) of the runtime issue: at 2 Mbit/s and 10 Mbit/s shaped links (tbf
in network namespaces, experiments/netlink.py), the end-to-end latency of the
split edgesplit chooses against sending the raw input to Triton directly.

One :class:`~experiments.netlink.ShapedLink` joins an edge and a cloud
namespace; its uplink is set to each rate in turn (the downlink is not
shaped). In the cloud namespace run a real Triton server (the nvidia-pytriton
binary of ``.venv-triton``, serving the bundle's python-backend repository,
gRPC on every address) and ``edgesplit cloud --backend triton`` beside it
(CURVE keys from ``edgesplit keys``), which calls Triton on the namespace's
loopback. From the edge namespace, per rate:

- direct: ``tritonclient`` gRPC sends the raw input to the whole-model tail
  (the cloud-only cut's model) across the link; one request at a time;
- adaptive: ``edgesplit edge --policy adaptive`` (prior ``--prior-mbps``);
- fixed: ``edgesplit edge --policy fixed --cut auto --bandwidth-mbps RATE``
  (the fastest cut by the profile at the true rate);
- cloud-only: the same raw input as direct, through the edge, the cloud node
  and Triton (``--cut`` the input, ``--codec raw``, exits off): edgesplit's
  own cost at equal bytes.

Edge runs use pipeline depth 1 (one request at a time, as direct). Printed:
median and p95 latency, where requests finished, bytes per request, the
cuts chosen, and the ratio to direct. ``--json`` writes it all.

On one machine the edge is as fast as the cloud, so the policy keeps every
request on the edge. ``--edge-cpu-quota FRACTION`` makes the edge a slower
device for real (experiments/cpulimit.py): a CPU cgroup limited to FRACTION
of one core holds every edge-side process (``edgesplit edge``, the direct
client: both are the edge device) and the edge's profile, measured there
with ``edgesplit profile --device edge`` (ONNX Runtime ``--edge-threads``,
default 1); the cloud is profiled unthrottled with Triton's threads, and the
bundle is partitioned from the two profiles (every cut kept) under the work
directory, or ``--cache-dir`` to reuse it. Without cgroups it refuses.

Needs root (network namespaces) and ``.venv-triton`` (``make triton-venv``).
Run from the repository root::

    .venv/bin/python -m benchmarks.shaped_link [--model resnet18] [--requests 50] \
        [--edge-cpu-quota 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.shaped_link_bundle import bundle_for, profile_summary, write_inputs
from benchmarks.shaped_link_cloud import start_cloud, triton_in
from benchmarks.shaped_link_edge import DIRECT_CLIENT, direct_client, measure_rate
from benchmarks.shaped_link_figures import report
from edgesplit.errors import ConfigError
from edgesplit.security import generate_keys
from experiments.cpulimit import CpuCgroup, cpu_limit_support, cpu_limited, quota_us
from experiments.shaped_link import ShapedLink, netns_support
from partitioner.triton import python_backend_repository


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Limit the edge's CPU if asked, then measure (see :func:`measure`)."""
    if args.edge_cpu_quota is None:
        return measure(args, work, None)
    name = f"edgesplit-edge-{os.getpid()}"
    with cpu_limited(args.edge_cpu_quota, name, args.edge_cpu_period_us) as cgroup:
        print(f"edge CPU limit: {cgroup.describe()}", flush=True)
        figures = measure(args, work, cgroup)
        figures["edge_cpu"] = {
            "fraction": cgroup.fraction,
            "quota_us": cgroup.quota_us,
            "period_us": cgroup.period_us,
            "cgroup_version": cgroup.version,
            "edge_threads": args.edge_threads,
            "throttled_s": cgroup.throttled_s(),
        }
    return figures


def measure(args: argparse.Namespace, work: Path, cgroup: CpuCgroup | None) -> dict[str, Any]:
    """Build the bundle, open the link, start Triton and the cloud node, measure every rate."""
    began = time.perf_counter()
    bundle = bundle_for(args, work, cgroup)
    inputs = write_inputs(bundle, work / "inputs", args.requests)
    python_backend_repository(bundle, work / "repository", threads=args.threads)
    keys = work / "keys"
    generate_keys(keys, "cloud")
    generate_keys(keys / "allowed", "edge")
    print(
        f"bundle {bundle.id[:12]} ({bundle.manifest.model.name}, {len(bundle.manifest.cuts)} "
        f"cuts, input {bundle.manifest.cloud_only.shape}) ready in "
        f"{time.perf_counter() - began:.1f} s; inputs {inputs}; {profile_summary(bundle)}",
        flush=True,
    )
    rates = []
    with ShapedLink(args.rates[0] * 1e6, None) as link:
        with triton_in(link, work / "repository", work) as triton_url:
            endpoint = start_cloud(link, bundle, keys, work)
            print(f"Triton {triton_url} and cloud {endpoint} up in the cloud namespace", flush=True)
            for rate in args.rates:
                rates.append(
                    measure_rate(
                        link, rate, bundle, triton_url, endpoint, keys, inputs, work, args, cgroup
                    )
                )
                print(f"{rate:g} Mbit/s measured", flush=True)
    report(bundle.manifest.model.name, rates)
    return {
        "model": bundle.manifest.model.name,
        "bundle": bundle.id,
        "requests": args.requests,
        "direct_requests": args.direct_requests,
        "prior_mbps": args.prior_mbps,
        "rates": rates,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and run the benchmark."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [DIRECT_CLIENT]:
        return direct_client(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="branchynet", help="branchynet (trained) or resnet18")
    parser.add_argument("--bundle", type=Path, help="an existing bundle instead of --model")
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[2.0, 10.0],
        help="uplink rates, Mbit/s, comma-separated (default 2,10)",
    )
    parser.add_argument("--requests", type=int, default=50, help="edge requests a run")
    parser.add_argument(
        "--direct-requests", type=int, help="raw requests to Triton a rate (default --requests)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed direct requests first")
    parser.add_argument(
        "--prior-mbps", type=float, default=10.0, help="the adaptive edge's bandwidth prior"
    )
    parser.add_argument(
        "--timeout-ms", type=float, default=60000.0, help="the edge's reply deadline, ms"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime threads in Triton (0: default)"
    )
    parser.add_argument(
        "--edge-cpu-quota",
        type=float,
        metavar="FRACTION",
        help="run the edge side in a CPU cgroup limited to FRACTION of one core (e.g. 0.1); "
        "default: no limit",
    )
    parser.add_argument(
        "--edge-cpu-period-ms",
        type=float,
        default=100.0,
        help="the cgroup's CPU period, ms (quota = FRACTION x period; default 100)",
    )
    parser.add_argument(
        "--edge-threads",
        type=int,
        default=1,
        help="ONNX Runtime threads of the CPU-limited edge, profile and runs (default 1)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="keep and reuse the CPU-limited edge's profiles and bundle here "
        "(default: the temporary work directory)",
    )
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.direct_requests is None:
        args.direct_requests = args.requests
    args.edge_cpu_period_us = round(args.edge_cpu_period_ms * 1e3)
    if args.edge_cpu_quota is not None:
        try:
            quota_us(args.edge_cpu_quota, args.edge_cpu_period_us)
        except ConfigError as exc:
            parser.error(str(exc))
        reason = cpu_limit_support()
        if reason is not None:
            parser.error(f"--edge-cpu-quota: cannot limit the edge's CPU here: {reason}")
    reason = netns_support()
    if reason is not None:
        parser.error(f"no shaped links here: {reason}")
    with tempfile.TemporaryDirectory(prefix="edgesplit-shaped-link-") as work:
        figures = run(args, Path(work))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
