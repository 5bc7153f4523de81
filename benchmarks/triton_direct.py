"""Cloud-only requests through edgesplit vs the same model called directly on Triton.

Target: a cloud-only request (the raw model input sent; the tail is the whole
model) through edgesplit — CloudClient -> ZeroMQ -> CloudNode -> TritonBackend
-> Triton — within 10% of the latency of calling the same Triton model
directly with tritonclient over gRPC, against the same server.

One real Triton server (the nvidia-pytriton binary in ``.venv-triton``, as
the tests start it) serves the bundle's python-backend repository. The cloud
node runs as deployed, ``edgesplit cloud --backend triton`` in a process of
its own; ``--in-process`` serves it from a thread of this process instead
(which shares this process's GIL with the client). The two paths are
measured interleaved, alternating which goes first, after a warm-up, one
request in flight at a time, with a payload-free ZeroMQ ping to the node
beside them (the transport's floor). Prints medians, p95 and ratios, per
model (``--model all``: the untrained built-in model and resnet18);
``--csv`` also writes every latency.

Run from the repository root::

    .venv/bin/python -m benchmarks.triton_direct [--model resnet18|all] [--requests 300]
    .venv/bin/python -m benchmarks.triton_direct --bundle path/to/bundle
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import wire
from cloud_node.process import start_cloud_process, stop_process
from cloud_node.server import CloudConfig, CloudNode
from cloud_node.triton_backend import TritonBackend
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Cut, load_bundle
from experiments.loadgen import sample
from partitioner.triton import python_backend_repository
from tests.tritonserver import triton_server

#: What ``--model all`` runs.
ALL_MODELS = ("branchynet-untrained", "resnet18")
# The fixtures' sizes for the untrained model (tests/conftest.py): quick to build.
_SOURCE_SAMPLES = {"branchynet-untrained": {"calibration_samples": 400, "test_samples": 100}}


def build(model: str, out: Path) -> Bundle:
    """Partition ``model`` as the test fixtures do: quick profile, every cut kept."""
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.pruning import PruneConfig
    from partitioner.sources import load_source

    source = load_source(model, out.parent, **_SOURCE_SAMPLES.get(model, {}))  # type: ignore[arg-type]
    config = PartitionConfig(
        profile=ProfileConfig(reps=Repetitions.quick(), size_samples=8),
        prune=PruneConfig(enabled=False),
    )
    return partition(source, out, config)


def direct_call(
    url: str, cut: Cut, output: str
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[], None]]:
    """One tritonclient gRPC infer per call, as a user of Triton writes it; and a closer."""
    import tritonclient.grpc as grpcclient  # here: the other benchmarks reuse build() without it

    client = grpcclient.InferenceServerClient(url)
    model = cut.tail or ""

    def call(value: np.ndarray) -> np.ndarray:
        request = grpcclient.InferInput(cut.name, list(value.shape), "FP32")
        request.set_data_from_numpy(value)
        wanted = [grpcclient.InferRequestedOutput(output)]
        result = client.infer(model, [request], outputs=wanted, client_timeout=30)
        answer = result.as_numpy(output)
        if answer is None:
            raise RuntimeError(f"{model}: no output {output!r}")
        return answer

    return call, client.close


def edgesplit_call(
    client: CloudClient, bundle: Bundle, cut: Cut, output: str, compute_s: list[float]
) -> Callable[[np.ndarray], np.ndarray]:
    """One edgesplit ``infer`` request per call; the node's compute time goes to ``compute_s``."""

    def call(value: np.ndarray) -> np.ndarray:
        tensors = (wire.Tensor(cut.name, value),)
        request = wire.InferRequest(client.new_id(), bundle.id, cut.id, tensors)
        reply, _ = client.call(request, timeout_s=30)
        if reply is None or not isinstance(reply.message, wire.Result):
            raise RuntimeError(f"edgesplit request failed: {reply and reply.message}")
        compute_s.append(reply.message.compute_s)
        return reply.message.arrays()[output]

    return call


def ping_call(client: CloudClient) -> Callable[[np.ndarray], np.ndarray]:
    """A ``ping`` to the node, no payload: the ZeroMQ round trip edgesplit adds, at least."""

    def call(value: np.ndarray) -> np.ndarray:
        if client.ping(timeout_s=30) is None:
            raise RuntimeError("the cloud node did not answer a ping")
        return value

    return call


def measure(
    paths: dict[str, Callable[[np.ndarray], np.ndarray]],
    value: np.ndarray,
    requests: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Latencies (seconds) of each path, interleaved request by request, the order alternating."""
    names = list(paths)
    for _ in range(warmup):
        for name in names:
            paths[name](value)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for i in range(requests):
        for name in names if i % 2 == 0 else reversed(names):
            began = time.perf_counter()
            paths[name](value)
            seconds[name].append(time.perf_counter() - began)
    return seconds


def p95(values: Sequence[float]) -> float:
    """95th percentile (inclusive method)."""
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def report(
    seconds: dict[str, list[float]], compute_s: list[float], tolerance: float
) -> dict[str, float]:
    """Print the table and the ratios; return the headline figures."""
    print(f"{'path':>10} {'median ms':>10} {'p95 ms':>8} {'mean ms':>8} {'min ms':>8}")
    for name, values in seconds.items():
        print(
            f"{name:>10} {statistics.median(values) * 1e3:10.3f} {p95(values) * 1e3:8.3f} "
            f"{statistics.fmean(values) * 1e3:8.3f} {min(values) * 1e3:8.3f}"
        )
    direct, ours = seconds["direct"], seconds["edgesplit"]
    median_ratio = statistics.median(ours) / statistics.median(direct)
    p95_ratio = p95(ours) / p95(direct)
    overhead_ms = (statistics.median(ours) - statistics.median(direct)) * 1e3
    print(
        f"ratio edgesplit/direct: median {median_ratio:.3f}, p95 {p95_ratio:.3f}; "
        f"median overhead {overhead_ms:+.3f} ms"
    )
    print(
        f"inside the cloud node, the Triton call (compute_s): median "
        f"{statistics.median(compute_s) * 1e3:.3f} ms"
    )
    verdict = "within" if median_ratio <= 1 + tolerance else "NOT within"
    print(f"target: median {verdict} {tolerance:.0%} of direct")
    return {
        "median_ratio": median_ratio,
        "p95_ratio": p95_ratio,
        "overhead_ms": overhead_ms,
        "direct_median_ms": statistics.median(direct) * 1e3,
        "edgesplit_median_ms": statistics.median(ours) * 1e3,
    }


@contextmanager
def cloud_node(
    bundle: Bundle, grpc_url: str, work: Path, in_process: bool
) -> Iterator[tuple[str, str]]:
    """A cloud node with the Triton backend: (its endpoint, where it runs); stopped after.

    By default ``edgesplit cloud --backend triton`` in a process of its own, as
    deployed; ``in_process`` serves it from a thread of this process instead.
    """
    if not in_process:
        proc, endpoint = start_cloud_process(
            bundle.root,
            "tcp://127.0.0.1:*",
            work / "cloud.log",
            extra=["--insecure", "--backend", "triton", "--triton-url", grpc_url],
        )
        try:
            yield endpoint, f"process {proc.pid}"
        finally:
            stop_process(proc)
        return
    node = CloudNode(bundle, TritonBackend(bundle, grpc_url), CloudConfig(bind="tcp://127.0.0.1:*"))
    with node:
        thread = threading.Thread(target=node.serve_forever, daemon=True)
        thread.start()
        try:
            yield node.endpoint or "", "thread of this process"
        finally:
            node.stop()
            thread.join(timeout=10)


def run(args: argparse.Namespace, model: str, work: Path) -> dict[str, float]:
    """Build or load the bundle, start Triton and the node, measure both paths."""
    began = time.perf_counter()
    bundle = (
        load_bundle(args.bundle, verify="cloud") if args.bundle else build(model, work / "bundle")
    )
    cut = bundle.manifest.cloud_only
    if cut.kind != "input" or cut.tail is None:
        raise SystemExit(
            f"{bundle.root}: first cut {cut.id} is not the cloud-only one (kind={cut.kind})"
        )
    output = bundle.manifest.model.output
    python_backend_repository(bundle, work / "repository", threads=args.threads)
    print(
        f"\n== {bundle.manifest.model.name}: bundle {bundle.id[:12]} ready in "
        f"{time.perf_counter() - began:.1f} s; cut {cut.id} -> model {cut.tail}, "
        f"batch {args.batch}, input {cut.shape}, {args.requests} requests a path "
        f"after {args.warmup} warm-up, Triton model threads {args.threads or 'default'}"
    )
    value = sample(bundle, args.batch)
    with triton_server(work / "repository", work / "server") as server:
        print(f"Triton ready in {server.ready_s:.1f} s, gRPC {server.grpc_url}")
        with cloud_node(bundle, server.grpc_url, work, args.in_process) as (endpoint, where):
            print(f"cloud node ({where}) at {endpoint}")
            direct, close_direct = direct_call(server.grpc_url, cut, output)
            compute_s: list[float] = []
            try:
                with CloudClient(endpoint) as client:
                    client.measure_rtt(timeout_s=30)
                    ours = edgesplit_call(client, bundle, cut, output, compute_s)
                    same = np.allclose(direct(value), ours(value), rtol=1e-5, atol=1e-5)
                    print(f"outputs of the two paths equal (1e-5): {same}")
                    paths = {"direct": direct, "edgesplit": ours, "ping": ping_call(client)}
                    load_before = os.getloadavg()[0]
                    seconds = measure(paths, value, args.requests, args.warmup)
                    print(
                        f"1-min load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} "
                        "(other work on this machine shows here)"
                    )
            finally:
                close_direct()
    figures = report(seconds, compute_s[-args.requests :], args.tolerance)
    if args.csv:
        new = not args.csv.exists() or args.csv.stat().st_size == 0
        with args.csv.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["model", "request", "path", "seconds"])
            for name, values in seconds.items():
                writer.writerows((model, i, name, s) for i, s in enumerate(values))
        print(f"latencies appended to {args.csv}")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and run the benchmark for each model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="branchynet-untrained",
        help=f"model to partition (default: the untrained built-in one); resnet18 too; "
        f"all: {', '.join(ALL_MODELS)}",
    )
    parser.add_argument("--bundle", type=Path, help="an existing bundle instead of --model")
    parser.add_argument("--requests", type=int, default=300, help="timed requests a path")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests a path first")
    parser.add_argument("--batch", type=int, default=1, help="samples a request")
    parser.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime threads in Triton (0: default)"
    )
    parser.add_argument("--tolerance", type=float, default=0.10, help="target ratio - 1")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="serve the cloud node from a thread of this process, not `edgesplit cloud`",
    )
    parser.add_argument("--csv", type=Path, help="write every latency to this CSV file")
    args = parser.parse_args(argv)
    if args.bundle is not None:
        models = [str(args.bundle)]
    else:
        models = list(ALL_MODELS) if args.model == "all" else [args.model]
    if args.csv:
        args.csv.write_text("")
    results = {}
    for model in models:
        with tempfile.TemporaryDirectory(prefix="edgesplit-triton-direct-") as work:
            results[model] = run(args, model, Path(work))
    if len(results) > 1:
        print(f"\n{'model':<22} {'direct ms':>9} {'edgesplit ms':>12} {'ratio':>6} {'target':>7}")
        for model, f in results.items():
            ok = "ok" if f["median_ratio"] <= 1 + args.tolerance else "MISSED"
            print(
                f"{model:<22} {f['direct_median_ms']:9.3f} {f['edgesplit_median_ms']:12.3f} "
                f"{f['median_ratio']:6.3f} {ok:>7}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
