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
   against the single-process node and the Ray tier with each of
   ``--replicas`` (1 and 2); requests/s served, p50/p99 latency, ``busy``
   answers. Target: 2 replicas >= 1.7x of 1, measured so that each replica
   has a core of its own: ``--pin`` pins replica k to core k, the ingress to
   the next core, and Ray's own processes, the load generators and this
   script to the rest (on by default where there are enough cores). Each
   part's CPU use over the window (from /proc) is printed as "cores each part
   got", with the scaling and the throughput per replica-core.

Requests are cloud-only (the raw input is sent; the tail is the whole model)
unless ``--cut`` says otherwise. Run from the repository root::

    .venv/bin/python -m benchmarks.ray_tier [--model resnet18] [--edges 16] [--seconds 15]
    .venv/bin/python -m benchmarks.ray_tier --pin --replicas 1,2 --seconds 10
    .venv/bin/python -m benchmarks.ray_tier --bundle path/to/bundle --csv ray.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import wire
from benchmarks.cores import (
    CpuSampler,
    Share,
    cloud_node_pid,
    describe,
    pin_parts,
    plan,
    process_table,
    ray_parts,
)
from benchmarks.triton_direct import build, measure, p95
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Cut, load_bundle
from experiments.loadgen import in_window, node, ray_flags, run_load, sample, summarize

SINGLE = "single-process"
#: Cores busy outside the measured parts above which a run is called disturbed.
OTHERS_NOTED = 0.25


def call(client: CloudClient, bundle: Bundle, cut: Cut):  # noqa: ANN201 - a closure
    """One ``infer`` request per call; raises unless the reply is a result."""

    def one(value: np.ndarray) -> np.ndarray:
        tensors = (wire.Tensor(cut.name, value),)
        request = wire.InferRequest(client.new_id(), bundle.id, cut.id, tensors)
        reply, _ = client.call(request, timeout_s=30)
        if reply is None or not isinstance(reply.message, wire.Result):
            raise RuntimeError(f"request failed: {reply and reply.message}")
        return reply.message.arrays()[bundle.manifest.model.output]

    return one


@dataclass(frozen=True)
class Workload:
    """What every run sends: ``edges`` closed-loop edges, ``seconds`` measured."""

    bundle: Bundle
    cut: Cut
    value: np.ndarray
    edges: int
    seconds: float


@dataclass(frozen=True)
class Run:
    """One throughput run: its figures, the CPU each part got, where each part was pinned."""

    name: str
    replicas: int  # 0: the single-process node
    figures: dict[str, float]
    share: Share
    cores_of: Callable[[str], frozenset[int] | None]


def _name(replicas: int) -> str:
    return f"ray, {replicas} replica" + ("s" if replicas > 1 else "")


def _unpinned(_: str) -> None:
    return None


@contextmanager
def _this_thread_on(cores: frozenset[int] | None) -> Iterator[None]:
    """Run the block with this thread on ``cores``: what it starts inherits them."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _throughput(
    endpoint: str,
    work: Workload,
    name: str,
    replicas: int,
    cores_of: Callable[[str], frozenset[int] | None] | None,
    others: frozenset[int] | None,
) -> Run:
    """Load the node at ``endpoint`` (pinned by ``cores_of`` unless None); figures and CPU."""
    me = os.getpid()
    ingress = cloud_node_pid(process_table(), me)

    def find() -> dict[str, list[int]]:
        return ray_parts(ingress, me)

    if cores_of is not None:
        pin_parts(find(), cores_of)  # the node is up: its replicas run
    # The load generators start from this thread, so they inherit its cores; the
    # sampler pins again as it samples (threads and processes started since).
    with _this_thread_on(others), CpuSampler(find, cores_of) as sampler:
        samples, began = run_load(
            endpoint, work.bundle, work.cut, work.value, work.edges, work.seconds
        )
    figures = summarize(in_window(samples, began, work.seconds), work.seconds)
    share = sampler.share(began, began + work.seconds)
    found = sum(1 for part in share.parts if part.startswith("replica "))
    if found != replicas:
        print(f"  note: {found} replica process(es) found in /proc, {replicas} expected")
    return Run(name, replicas, figures, share, cores_of or _unpinned)


def _low_load(
    single: str, work: Workload, requests: int, tmp: Path, rows: list[dict[str, object]]
) -> None:
    """One request at a time, the two nodes interleaved: medians, p95, the Ray path's cost."""
    bundle, cut, cores = work.bundle, work.cut, os.cpu_count() or 1
    print("1. low load: one request at a time, interleaved", flush=True)
    # One replica holding every core, as the single-process node's ONNX Runtime does.
    with node(bundle, tmp, "ray-low", ray_flags(1, cores), note=print) as ray_low:
        with CloudClient(single) as a, CloudClient(ray_low) as b:
            seconds = measure(
                {"single": call(a, bundle, cut), "ray": call(b, bundle, cut)},
                work.value,
                requests,
                warmup=30,
            )
    print(f"{'path':>8} {'median ms':>10} {'p95 ms':>8}")
    for name, values in seconds.items():
        median, tail = statistics.median(values) * 1e3, p95(values) * 1e3
        print(f"{name:>8} {median:10.3f} {tail:8.3f}")
        rows.append({"test": "low-load", "path": name, "median_ms": median, "p95_ms": tail})
    added = (statistics.median(seconds["ray"]) - statistics.median(seconds["single"])) * 1e3
    print(f"Ray path adds {added:+.3f} ms median (target: within 1 ms)", flush=True)


def _print_throughput(runs: Sequence[Run], rows: list[dict[str, object]]) -> None:
    print(
        f"{'node':>16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'busy':>6} {'lost':>6} "
        f"{'compute ms':>10} {'cores busy':>10}"
    )
    for run in runs:
        f = run.figures
        print(
            f"{run.name:>16} {f['throughput']:8.1f} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} "
            f"{f['busy']:6.0f} {f['lost'] + f['other']:6.0f} {f['compute_ms']:10.2f} "
            f"{f['throughput'] * f['compute_ms'] / 1e3:10.2f}"
        )
        rows.append({"test": "throughput", "path": run.name, **f})
    print(
        "compute ms: the tail's median compute time per request as measured where it ran "
        "(a batch's time divided among its requests); cores busy: req/s x compute, the "
        "compute the replicas got."
    )


def _print_cores(runs: Sequence[Run], seconds: float, rows: list[dict[str, object]]) -> None:
    """The table "cores each part got": cores busy and the cores each part was pinned to."""
    parts = sorted({p for r in runs for p in r.share.parts if p.startswith("replica ")})
    parts += ["ingress", "Ray processes", "load generators"]
    print(
        f"cores each part got: CPU-seconds / wall-seconds over the {seconds:g} s window "
        "(utime+stime from /proc), and the cores it was pinned to"
    )
    print(f"{'part':>16} " + " ".join(f"{r.name:>22}" for r in runs))
    for part in parts:
        cells = []
        for run in runs:
            busy = run.share.parts.get(part)
            if busy is None or (part == "Ray processes" and run.replicas == 0):
                cells.append(f"{'-':>22}")
                continue
            where = describe(run.cores_of(part))
            cells.append(f"{busy:5.2f} {where:>16}")
            rows.append(
                {"test": "cores", "path": run.name, "part": part, "cores_busy": busy, "pin": where}
            )
        print(f"{part:>16} " + " ".join(cells))
    for run in runs:
        per_core = " ".join(f"{c}:{v:.2f}" for c, v in sorted(run.share.cores.items()))
        ours, every = sum(run.share.parts.values()), sum(run.share.cores.values())
        print(
            f"{run.name:>16} per core busy: {per_core}; all {every:.2f}, "
            f"of which these parts {ours:.2f} (the rest: other processes on this machine)"
        )
        if every - ours > OTHERS_NOTED:
            print(
                f"{'':>16} note: other processes took {every - ours:.2f} cores in this window: "
                "its figures are disturbed; rerun on a quiet machine"
            )
        for c, v in run.share.cores.items():
            rows.append({"test": "core", "path": run.name, "core": c, "cores_busy": v})
    print(
        "ingress: the `edgesplit cloud` process (for the single-process node: the whole node, "
        "tails included; pinned, it gets the replicas' and the ingress's cores, its ONNX "
        "Runtime threads sized at start for all cores); Ray processes: the ingress's local "
        "cluster other than the replicas (GCS, raylet, agents, Serve controller); load "
        "generators: the edge processes and this script."
    )


def _print_scaling(runs: Sequence[Run], placement: str, rows: list[dict[str, object]]) -> None:
    """throughput(R) / throughput(first R), measured and per busy replica-core."""
    ray = [r for r in runs if r.replicas]
    per_core = {}
    for run in ray:
        busy = sum(v for p, v in run.share.parts.items() if p.startswith("replica "))
        per_core[run.replicas] = run.figures["throughput"] / busy if busy else float("nan")
        print(
            f"per replica-core, {run.name}: {run.figures['throughput']:.1f} req/s / "
            f"{busy:.2f} replica cores busy = {per_core[run.replicas]:.1f} req/s"
        )
    base = ray[0]
    for run in ray[1:]:
        measured = run.figures["throughput"] / base.figures["throughput"]
        full = (per_core[run.replicas] * run.replicas) / (per_core[base.replicas] * base.replicas)
        target = " (target >= 1.7x)" if (base.replicas, run.replicas) == (1, 2) else ""
        print(
            f"scaling {base.replicas} -> {run.replicas} replicas: {measured:.2f}x measured"
            f"{target}; {full:.2f}x at a full core per replica (req/s per replica-core x "
            "replicas: what each replica having its own core gives)"
        )
        rows.append(
            {
                "test": "scaling",
                "path": f"{base.replicas}->{run.replicas}",
                "measured": measured,
                "per_replica_core": full,
            }
        )
    single = next((r for r in runs if not r.replicas), None)
    if single is not None:
        top = ray[-1]
        ratio = top.figures["throughput"] / single.figures["throughput"]
        print(f"{top.name} vs single-process: {ratio:.2f}x")
    print(f"placement: {placement}")


def _parse(argv: Sequence[str] | None, cores: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="model to partition (default resnet18)")
    parser.add_argument("--bundle", type=Path, help="use this bundle instead of partitioning")
    parser.add_argument("--cut", help="cut to request (default: the input cut, cloud-only)")
    parser.add_argument("--requests", type=int, default=300, help="low-load requests per path")
    parser.add_argument("--edges", type=int, default=8, help="concurrent simulated edges")
    parser.add_argument("--seconds", type=float, default=15.0, help="throughput window, s")
    parser.add_argument(
        "--replicas",
        default="1,2",
        help="Ray replica counts of the throughput runs, comma-separated, ascending "
        "(default 1,2); the scaling is against the first",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pin (os.sched_setaffinity on every thread, again as the run goes) replica k to "
        "core k, the ingress to the next core, and Ray's own processes, the load generators "
        "and this script to the remaining ones, so that each replica has a core of its own and "
        "the load's cost stays off the measured cores; the single-process node gets the "
        "replicas' and the ingress's cores. Default: on when this process may use at least "
        f"max(replicas) + 2 cores (here {cores}). --pin with fewer pins the replicas (and the "
        "ingress when one core is left) and says what shares what; --no-pin leaves placement "
        "to the kernel. Either way 'cores each part got' shows what each part used",
    )
    parser.add_argument("--csv", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.requests < 20 or args.edges < 1 or args.seconds <= 0:
        parser.error("--requests >= 20, --edges >= 1 and --seconds > 0")
    try:
        args.replicas = [int(r) for r in args.replicas.split(",")]
    except ValueError:
        parser.error(f"--replicas {args.replicas}: expected counts like 1,2")
    if args.replicas != sorted(set(args.replicas)) or args.replicas[0] < 1:
        parser.error("--replicas: distinct counts >= 1, ascending")
    if args.replicas[-1] > (os.cpu_count() or 1):
        parser.error(f"--replicas {args.replicas[-1]}: more than the {os.cpu_count()} CPUs")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run both measurements and print the tables."""
    available = sorted(os.sched_getaffinity(0))
    args = _parse(argv, len(available))
    layout = plan(available, args.replicas[-1])
    pinning = layout.isolated if args.pin is None else args.pin
    with tempfile.TemporaryDirectory(prefix="edgesplit-ray-bench-") as tmp:
        bundle = (
            load_bundle(args.bundle) if args.bundle else build(args.model, Path(tmp) / "bundle")
        )
        cut = bundle.manifest.cut(args.cut) if args.cut else bundle.manifest.cuts[0]
        value = sample(bundle, 1)
        if cut.id != bundle.manifest.cuts[0].id:
            value = np.random.default_rng(0).standard_normal((1, *cut.shape), dtype=np.float32)
        work = Workload(bundle, cut, value, args.edges, args.seconds)
        print(
            f"model {bundle.manifest.model.name}, cut {cut.id} ({value.nbytes:,} B a request), "
            f"{len(available)} cores ({describe(frozenset(available))}); nodes: single-process "
            "(embedded ORT, its default threads) and --ray",
            flush=True,
        )
        print(f"pinning: {'on: ' + layout.note if pinning else 'off'}", flush=True)
        rows: list[dict[str, object]] = []
        others = layout.others if pinning else None

        def single_cores(part: str) -> frozenset[int] | None:
            return layout.server() if part == "ingress" else layout.others

        with node(bundle, Path(tmp), "single", [], note=print) as single:
            _low_load(single, work, args.requests, Path(tmp), rows)
            print(f"2. throughput: {args.edges} edges, {args.seconds:g} s each", flush=True)
            runs = [_throughput(single, work, SINGLE, 0, single_cores if pinning else None, others)]
        for replicas in args.replicas:
            flags = ray_flags(replicas, 1)
            with node(bundle, Path(tmp), f"ray-{replicas}", flags, note=print) as endpoint:
                cores_of = layout.cores_of if pinning else None
                runs.append(
                    _throughput(endpoint, work, _name(replicas), replicas, cores_of, others)
                )
        _print_throughput(runs, rows)
        if not all(r.figures["throughput"] for r in runs):
            print("no request succeeded on a node: see the 'lost' column and the node logs")
            return 1
        _print_cores(runs, args.seconds, rows)
        _print_scaling(
            runs,
            layout.note
            if pinning
            else f"unpinned: the replicas, the ingress, Ray's processes and the load generators "
            f"share the {len(available)} cores as the kernel places them",
            rows,
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
