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
device for real (benchmarks/edge_cpu.py): a CPU cgroup limited to FRACTION
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.triton_direct import direct_call, p95
from edgesplit.bundle import Bundle, load_bundle
from edgesplit.errors import ConfigError
from edgesplit.security import generate_keys
from experiments.cpulimit import CpuCgroup, cpu_limit_support, cpu_limited, quota_us
from experiments.loadgen import sample
from experiments.shaped_link import ShapedLink, netns_support
from partitioner.triton import python_backend_repository
from tests.tritonserver import (
    _backend_directory,
    _stop,
    _tail,
    find_triton,
    launch,
    server_command,
)

CLOUD_PORT = 5555
TRITON_GRPC_PORT = 8001
TRITON_HTTP_PORT = 8000
ROOT = Path(__file__).resolve().parents[1]
_DIRECT = "direct-client"
#: The edge runs, in the order printed.
PATHS = ("adaptive", "fixed", "cloud-only")


def build(model: str, out: Path) -> Bundle:
    """Partition ``model`` as the test fixtures do: quick profile, every cut kept."""
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.pruning import PruneConfig
    from partitioner.sources import load_source

    source = load_source(model, out.parent)
    config = PartitionConfig(
        profile=ProfileConfig(reps=Repetitions.quick(), size_samples=8),
        prune=PruneConfig(enabled=False),
    )
    return partition(source, out, config)


def build_for_slow_edge(
    model: str, out: Path, cgroup: CpuCgroup, args: argparse.Namespace
) -> Bundle:
    """``model``'s bundle from an edge profile measured inside ``cgroup`` and a free cloud's.

    The profiles and the bundle stay in ``out`` (``profiles/``, ``bundle/``);
    those already there are reused.
    """
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.pruning import PruneConfig
    from partitioner.sources import load_source

    if (out / "bundle" / "manifest.json").is_file():
        print(f"reusing the slow-edge bundle {out / 'bundle'}", flush=True)
        return load_bundle(out / "bundle", verify="none")
    profiles = out / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    sides = (("edge", args.edge_threads, cgroup), ("cloud", args.threads, None))
    for role, threads, limit in sides:
        if (profiles / f"{role}.json").is_file():
            print(f"reusing the {role} profile {profiles / f'{role}.json'}", flush=True)
            continue
        argv = [sys.executable, "-m", "edgesplit", "profile", "--device", role, "--model", model,
                "--quick", "--no-layers", "--threads", str(threads),
                "--out", str(profiles / f"{role}.json")]  # fmt: skip
        began = time.perf_counter()
        done = subprocess.run(
            limit.wrap(argv) if limit else argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"`edgesplit profile --device {role}` failed:\n{done.stderr[-3000:]}"
            )
        where = f"under {limit.describe()}" if limit else "unthrottled"
        print(
            f"{role} profile ({threads or 'default'} threads, {where}) in "
            f"{time.perf_counter() - began:.1f} s",
            flush=True,
        )
    config = PartitionConfig(
        profile=ProfileConfig(reps=Repetitions.quick(), size_samples=8),
        edge_profile=profiles / "edge.json",
        cloud_profile=profiles / "cloud.json",
        prune=PruneConfig(enabled=False),
    )
    return partition(load_source(model, out), out / "bundle", config)


def profile_summary(bundle: Bundle) -> str:
    """Each side's whole-model median from the bundle's profiles, ms."""
    from partitioner.profile import load_profile

    parts = []
    for role in ("edge", "cloud"):
        p = load_profile(bundle.root / "profiles" / f"{role}.json")
        whole = f"{p.whole_model.median_s * 1e3:.2f} ms" if p.whole_model else "-"
        parts.append(f"{role} whole model {whole} ({p.threads or 'default'} threads)")
    return "profiles: " + ", ".join(parts)


def write_inputs(bundle: Bundle, out: Path, count: int) -> str:
    """``--inputs`` for the edge: the bundle's test set, else seeded random ``.npy`` files."""
    if (bundle.root / "data" / "test.npz").is_file():
        return "bundle"
    out.mkdir(parents=True, exist_ok=True)
    shape = bundle.manifest.model.input.shape
    rng = np.random.default_rng(0)
    for i in range(count):
        np.save(out / f"{i:05d}.npy", rng.standard_normal(shape, dtype=np.float32))
    return str(out)


@contextmanager
def triton_in(link: ShapedLink, repository: Path, work: Path) -> Iterator[str]:
    """Triton in the cloud namespace, gRPC on all its addresses; yields ``ip:port``.

    tests/tritonserver.py's ``triton_server()`` binds 127.0.0.1 and polls
    readiness from this process's namespace, so the same command runs here
    under ``ip netns exec``; ready is the log's "Started GRPCInferenceService"
    (Triton starts its services once every model loaded).
    """
    install = find_triton()
    backends = _backend_directory(install, work / "backends")
    log = work / "tritonserver.log"
    shm_prefix = f"edgesplit-shaped-{os.getpid()}-"
    command = server_command(
        install, repository, backends, shm_prefix,
        http_port=TRITON_HTTP_PORT, grpc_port=TRITON_GRPC_PORT, grpc_address="0.0.0.0",
    )  # fmt: skip
    process = launch([*link.exec_args(link.cloud_ns), *command], install, log)
    try:
        deadline = time.monotonic() + 300
        while "Started GRPCInferenceService" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tritonserver did not start; log {log}:\n{_tail(log)}")
            time.sleep(0.1)
        yield f"{link.cloud_ip}:{TRITON_GRPC_PORT}"
    finally:
        _stop(process, shm_prefix)


def start_cloud(link: ShapedLink, bundle: Bundle, keys: Path, work: Path) -> str:
    """``edgesplit cloud --backend triton`` in the cloud namespace; its endpoint once ready."""
    ready = work / "cloud.endpoint"
    log = work / "cloud.log"
    argv = [sys.executable, "-m", "edgesplit", "cloud", "--bundle", str(bundle.root),
            "--bind", f"tcp://{link.cloud_ip}:{CLOUD_PORT}", "--backend", "triton",
            "--triton-url", f"127.0.0.1:{TRITON_GRPC_PORT}",
            "--secret-key", str(keys / "cloud.key_secret"),
            "--allowed-clients", str(keys / "allowed"), "--ready-file", str(ready)]  # fmt: skip
    with log.open("wb") as out:
        proc = link.run_in(link.cloud_ns, argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (ready.is_file() and ready.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"edgesplit cloud did not start; log {log}:\n{_tail(log)}")
        time.sleep(0.05)
    return ready.read_text().strip()


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
    argv = [sys.executable, "-m", "benchmarks.shaped_link", _DIRECT, "--bundle",
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


def latency_figures(seconds: Sequence[float]) -> dict[str, float]:
    """Median and p95, milliseconds."""
    return {
        "median_ms": statistics.median(seconds) * 1e3,
        "p95_ms": p95(seconds) * 1e3 if len(seconds) > 1 else seconds[0] * 1e3,
    }


def edge_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Latency, where requests finished, bytes per request and the cuts of one edge run."""
    return {
        **latency_figures([r["latency_s"] for r in rows]),
        "requests": len(rows),
        "finished": dict(Counter(r["finished"] for r in rows)),
        "bytes_per_request": statistics.fmean(r["bytes_sent"] for r in rows),
        "cuts": dict(Counter(f"{r['cut']}/{r['codec']}" for r in rows)),
        "fallbacks": dict(Counter(r["reason"] for r in rows if r["reason"])),
    }


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


def report(model: str, rates: Sequence[dict[str, Any]]) -> None:
    """Print one row per rate and path, then the ratios."""
    print(
        f"{'model':>10} {'Mbit/s':>6} {'path':>9} {'median ms':>10} {'p95 ms':>9} "
        f"{'bytes/req':>10} {'x direct':>8}  where finished; cuts"
    )
    for r in rates:
        d = r["direct"]
        print(
            f"{model:>10} {r['rate_mbps']:>6g} {'direct':>9} {d['median_ms']:10.2f} "
            f"{d['p95_ms']:9.2f} {d['bytes_per_request']:10,.0f} {1:8.3f}  "
            f"Triton ({d['requests']} requests, raw input)"
        )
        for name in PATHS:
            e = r[name]
            where = " ".join(f"{k}={v}" for k, v in sorted(e["finished"].items()))
            cuts = " ".join(f"{k}={v}" for k, v in sorted(e["cuts"].items()))
            falls = f"; fallbacks {e['fallbacks']}" if e["fallbacks"] else ""
            print(
                f"{model:>10} {r['rate_mbps']:>6g} {name:>9} {e['median_ms']:10.2f} "
                f"{e['p95_ms']:9.2f} {e['bytes_per_request']:10,.0f} "
                f"{e['ratio_to_direct']:8.3f}  {where}; {cuts}{falls}"
            )
    for r in rates:
        print(
            f"at {r['rate_mbps']:g} Mbit/s: edgesplit adaptive / direct median "
            f"{r['adaptive']['ratio_to_direct']:.4f}, fixed best cut / direct "
            f"{r['fixed']['ratio_to_direct']:.4f}, cloud-only through edgesplit / direct "
            f"{r['cloud-only']['ratio_to_direct']:.4f}"
        )


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


def _bundle(args: argparse.Namespace, work: Path, cgroup: CpuCgroup | None) -> Bundle:
    if args.bundle:
        return load_bundle(args.bundle, verify="none")
    if cgroup is None:
        return build(args.model, work / "b")
    name = f"{args.model}-cpu{cgroup.fraction:g}-t{args.edge_threads}"
    return build_for_slow_edge(args.model, (args.cache_dir or work) / name, cgroup, args)


def measure(args: argparse.Namespace, work: Path, cgroup: CpuCgroup | None) -> dict[str, Any]:
    """Build the bundle, open the link, start Triton and the cloud node, measure every rate."""
    began = time.perf_counter()
    bundle = _bundle(args, work, cgroup)
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


def direct_client(argv: Sequence[str]) -> int:
    """Runs in the edge namespace: raw inputs to Triton, prints the latencies as JSON."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.shaped_link {_DIRECT}")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and run the benchmark."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_DIRECT]:
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
