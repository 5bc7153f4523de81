"""Runtime overhead of one offloaded request, beside the bare ZeroMQ round trip it rides on.

Target (a): the runtime overhead per offloaded request (encode + framing +
ZeroMQ + decode + dispatch, excluding model compute and wire time) at a
200 KB activation is under 0.5 ms median on this machine.

Method. Two kinds of server run in processes of their own on
tcp://127.0.0.1, as the edge and the cloud do in deployment, each started by
this module (``--serve``, not for direct use):

- a real :class:`CloudNode` (ingress, admission queue, one worker) serving a
  real bundle (the untrained built-in model) with a null backend: its tail
  returns a constant output of the right shape, so compute is ~0 and the
  node's reported ``compute_s`` is subtracted anyway;
- a raw ZeroMQ ROUTER that answers each message with frames the size of the
  cloud node's reply, no edgesplit code on either side: the wire-time
  baseline. The client sends it the very frames edgesplit sends (same header
  and payload bytes, encoded once, before timing).

The activation is the real one at the cut whose ``rows x bytes-per-sample``
is closest to 200 KB (fp32), computed by the bundle's head on its test
inputs. For each codec and with CURVE off and on, an edgesplit request
(``CloudClient.request``: encode, send, node, reply, decode) and an echo of
the same bytes are timed, all variants interleaved request by request after
a warm-up. Overhead = median(edgesplit RTT - compute_s) - median(echo RTT).
The encode and decode times of the request message are also measured in
this process, per codec.

Run from the repository root::

    .venv/bin/python -m benchmarks.runtime_overhead [--requests 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import zmq

import wire
from cloud_node.backends import DecodingBackend
from cloud_node.process import stop_process
from cloud_node.server import CloudConfig, CloudNode
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Cut, load_bundle
from edgesplit.security import generate_keys, load_allowed, load_keypair, load_public_key

TARGET_BYTES = 200_000
TARGET_OVERHEAD_S = 0.5e-3
CODECS = ("raw", "int8", "int8+lz4", "fp16")
MAX_ROWS = 16  # the cloud node's default max_batch
_READY_TIMEOUT_S = 60.0


class NullBackend(DecodingBackend):
    """A tail that computes nothing: a constant output of the model's output shape.

    Requests are decoded as with any in-process backend (in the worker thread).
    """

    name = "null"
    provider = "none"

    def __init__(self, output: str, shape: tuple[int, ...], max_rows: int) -> None:
        self._output = output
        self._value = np.zeros((max_rows, *shape), dtype=np.float32)

    def infer(self, cut: Cut, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The constant output, as many rows as the input has."""
        rows = next(iter(inputs.values())).shape[0]
        return {self._output: self._value[:rows]}

    def close(self) -> None:
        """Nothing to release."""


# -- choosing what to send -------------------------------------------------------------------


def choose_cut(cuts: Sequence[Cut], target_bytes: int, max_rows: int) -> tuple[Cut, int]:
    """The cut (with a tail) and rows (at most ``max_rows``) closest to ``target_bytes`` raw.

    Ties go to fewer rows, then to the deeper cut.
    """

    def miss(cut: Cut) -> tuple[int, int, int]:
        rows = min(max_rows, max(1, round(target_bytes / cut.raw_bytes)))
        return abs(rows * cut.raw_bytes - target_bytes), rows, -cut.index

    candidates = [c for c in cuts if c.tail is not None and c.raw_bytes > 0]
    if not candidates:
        raise SystemExit("the bundle has no cut with a tail: nothing to offload")
    best = min(candidates, key=miss)
    return best, miss(best)[1]


def activation(bundle: Bundle, cut: Cut, rows: int) -> np.ndarray:
    """The real activation at ``cut`` for ``rows`` test inputs (the head run, exits off)."""
    from experiments.loadgen import cut_values, sample

    inputs = sample(bundle, rows)
    if inputs.shape[0] < rows:
        inputs = np.resize(inputs, (rows, *inputs.shape[1:]))
    value = cut_values(bundle, [cut], inputs)[cut.id]
    return np.ascontiguousarray(value, dtype=np.dtype(cut.dtype))


def output_shape(bundle: Bundle) -> tuple[int, ...]:
    """Per-sample shape of the model's output (the bundle's output cut)."""
    for cut in bundle.manifest.cuts:
        if cut.kind == "output":
            return cut.shape
    raise SystemExit(f"{bundle.root}: no output cut in the manifest")


# -- the servers (run in their own processes) ------------------------------------------------


def serve_node(args: argparse.Namespace) -> None:
    """A cloud node with the null backend, until SIGTERM; its endpoint goes to the ready file."""
    bundle = load_bundle(args.bundle, verify="cloud")
    backend = NullBackend(bundle.manifest.model.output, output_shape(bundle), args.rows)
    keys = allowed = None
    if args.secret_key is not None:
        keys, allowed = load_keypair(args.secret_key), load_allowed(args.allowed_clients)
    config = CloudConfig(bind="tcp://127.0.0.1:*", max_batch=args.rows, keys=keys, allowed=allowed)
    with CloudNode(bundle, backend, config) as node:
        signal.signal(signal.SIGTERM, lambda *_: node.stop())
        _ready(args.ready_file, node.endpoint or "")
        node.serve_forever()


def serve_echo(args: argparse.Namespace) -> None:
    """A bare ROUTER answering every message with frames of ``--reply-bytes``, until killed."""
    header_bytes, payload_bytes = (int(n) for n in args.reply_bytes.split(","))
    reply = [b"\x00" * header_bytes, b"\x00" * payload_bytes]
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    if args.secret_key is not None:
        public, secret = zmq.auth.load_certificate(str(args.secret_key))
        sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True
    sock.bind("tcp://127.0.0.1:*")
    _ready(args.ready_file, sock.getsockopt_string(zmq.LAST_ENDPOINT))
    while True:
        identity = sock.recv_multipart(copy=False)[0]
        sock.send_multipart([identity, *reply], copy=False)


def _ready(path: Path, endpoint: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(endpoint)
    tmp.replace(path)


def start_server(role: str, flags: Sequence[str], work: Path) -> tuple[subprocess.Popen, str]:
    """Start ``--serve role`` in a process of its own; return it and its endpoint."""
    ready = work / f"{role}-{len(list(work.glob('*.log')))}.endpoint"
    log_path = ready.with_suffix(".log")
    cmd = [sys.executable, "-m", "benchmarks.runtime_overhead", "--serve", role]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [*cmd, "--ready-file", str(ready), *flags],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise SystemExit(f"{role} server did not start: {tail} (log: {log_path})")
        time.sleep(0.02)
    return proc, ready.read_text().strip()


# -- the two request paths -------------------------------------------------------------------

#: One timed request: (round trip seconds, compute seconds reported by the server).
Timed = Callable[[], tuple[float, float]]


def edgesplit_path(
    client: CloudClient, bundle: Bundle, cut: Cut, value: np.ndarray, codec: str
) -> Timed:
    """One ``infer`` through :class:`CloudClient` per call: encode, send, wait, decode."""
    tensors = (wire.Tensor(cut.name, value),)

    def call() -> tuple[float, float]:
        began = time.perf_counter()
        request = wire.InferRequest(client.new_id(), bundle.id, cut.id, tensors)
        reply, _ = client.call(request, codec=codec, timeout_s=10)
        elapsed = time.perf_counter() - began
        if reply is None or not isinstance(reply.message, wire.Result):
            raise SystemExit(f"edgesplit request failed: {reply and reply.message}")
        return elapsed, reply.message.compute_s

    return call


def echo_path(sock: zmq.Socket, frames: Sequence[bytes | memoryview]) -> Timed:
    """Send pre-encoded ``frames``, receive the reply: ZeroMQ alone."""

    def call() -> tuple[float, float]:
        began = time.perf_counter()
        sock.send_multipart(frames, copy=False)
        sock.recv_multipart(copy=False)
        return time.perf_counter() - began, 0.0

    return call


def echo_socket(
    context: zmq.Context, endpoint: str, curve: tuple[bytes, bytes, bytes] | None
) -> zmq.Socket:
    """A DEALER like the edge's (LINGER 0, IMMEDIATE), CURVE client when ``curve`` is given."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve
    sock.connect(endpoint)
    return sock


def measure(paths: dict[str, Timed], requests: int, warmup: int) -> dict[str, np.ndarray]:
    """(RTT, compute) seconds of each path, interleaved request by request, order alternating."""
    names = list(paths)
    for _ in range(warmup):
        for name in names:
            paths[name]()
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for i in range(requests):
        for name in names if i % 2 == 0 else reversed(names):
            seconds[name].append(paths[name]())
    return {name: np.array(values) for name, values in seconds.items()}


# -- in-process components -------------------------------------------------------------------


def median_s(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``fn()`` in seconds, after a few warm-up calls."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


@dataclass(frozen=True)
class Components:
    """In-process cost of one request's message, per codec (seconds; bytes as sent)."""

    codec: str
    header_bytes: int
    payload_bytes: int
    encode_s: float
    decode_s: float


def components(cut: Cut, value: np.ndarray, codec: str, bundle_id: str, runs: int) -> Components:
    """Encode and decode time of the request message for ``codec``."""
    request = wire.InferRequest(1, bundle_id, cut.id, (wire.Tensor(cut.name, value),))
    frames = wire.encode(request, codec)
    received = [bytes(f) for f in frames]  # what the node gets from the socket
    encode = median_s(lambda: wire.encode(request, codec), runs)
    decode = median_s(lambda: wire.decode(received), runs)
    return Components(codec, len(received[0]), len(received[1]), encode, decode)


# -- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """Figures of one codec with CURVE off or on (seconds)."""

    codec: str
    curve: bool
    request_bytes: int
    edgesplit_median_s: float
    edgesplit_p95_s: float
    compute_median_s: float
    net_median_s: float
    net_p95_s: float
    echo_median_s: float
    echo_p95_s: float
    overhead_s: float
    passed: bool


def variant(codec: str, curve: bool, size: int, ours: np.ndarray, echo: np.ndarray) -> Variant:
    """Summarize the (RTT, compute) rows of the edgesplit and echo paths of one variant."""
    net = ours[:, 0] - ours[:, 1]
    overhead = float(np.median(net) - np.median(echo[:, 0]))
    return Variant(
        codec=codec,
        curve=curve,
        request_bytes=size,
        edgesplit_median_s=float(np.median(ours[:, 0])),
        edgesplit_p95_s=float(np.percentile(ours[:, 0], 95)),
        compute_median_s=float(np.median(ours[:, 1])),
        net_median_s=float(np.median(net)),
        net_p95_s=float(np.percentile(net, 95)),
        echo_median_s=float(np.median(echo[:, 0])),
        echo_p95_s=float(np.percentile(echo[:, 0], 95)),
        overhead_s=overhead,
        passed=overhead < TARGET_OVERHEAD_S,
    )


def reply_sizes(bundle: Bundle, cut: Cut, rows: int) -> tuple[int, int]:
    """Bytes of the header and payload frames of the node's reply to one request."""
    output = np.zeros((rows, *output_shape(bundle)), dtype=np.float32)
    tensors = (wire.Tensor(bundle.manifest.model.output, output),)
    frames = wire.encode(wire.Result(1000, tensors, 1e-5, 1e-5, cut.id, 1))
    return len(bytes(frames[0])), memoryview(frames[1]).nbytes


def make_keys(work: Path) -> dict[str, Path]:
    """A cloud key pair and one allowed edge key pair, as `edgesplit keys` writes them."""
    generate_keys(work / "cloud", "cloud")
    generate_keys(work / "allowed", "edge")
    return {
        "cloud_secret": work / "cloud" / "cloud.key_secret",
        "cloud_public": work / "cloud" / "cloud.key",
        "allowed": work / "allowed",
        "edge_secret": work / "allowed" / "edge.key_secret",
    }


def run(args: argparse.Namespace, work: Path) -> dict:
    """Build the bundle, start the servers, measure every variant; return the figures."""
    from benchmarks.triton_direct import build

    bundle = (
        load_bundle(args.bundle, verify="cloud")
        if args.bundle
        else build(args.model, work / "bundle")
    )
    m = bundle.manifest
    if args.cut:
        cut, rows = m.cut(args.cut), args.rows or 1
    else:
        cut, rows = choose_cut(m.cuts, args.bytes, args.rows or MAX_ROWS)
    value = activation(bundle, cut, rows)
    print(
        f"bundle {bundle.id[:12]} ({m.model.name}); cut {cut.id} {cut.shape} x {rows} rows = "
        f"{value.nbytes:,} B fp32 ({np.mean(value == 0):.0%} zeros); {args.requests} requests "
        f"a path after {args.warmup} warm-up; servers in their own processes on 127.0.0.1; "
        f"{os.cpu_count()} CPUs"
    )
    keys = make_keys(work)
    edge_keys = load_keypair(keys["edge_secret"])
    server_key = load_public_key(keys["cloud_public"])
    reply = reply_sizes(bundle, cut, rows)
    node_flags = ["--bundle", str(bundle.root), "--rows", str(rows)]
    curve_flags = ["--secret-key", str(keys["cloud_secret"])]
    allowed_flags = ["--allowed-clients", str(keys["allowed"])]
    echo_flags = ["--reply-bytes", f"{reply[0]},{reply[1]}"]
    servers: list[subprocess.Popen] = []
    context = zmq.Context()
    clients: list[CloudClient] = []
    sockets: list[zmq.Socket] = []
    try:
        endpoints = {}
        for name, role, flags in (
            ("node", "node", node_flags),
            ("node+curve", "node", [*node_flags, *curve_flags, *allowed_flags]),
            ("echo", "echo", echo_flags),
            ("echo+curve", "echo", [*echo_flags, *curve_flags]),
        ):
            proc, endpoints[name] = start_server(role, flags, work)
            servers.append(proc)
        curve_client = (edge_keys.public, edge_keys.secret, server_key)
        plain = CloudClient(endpoints["node"])
        secure = CloudClient(endpoints["node+curve"], keys=edge_keys, server_key=server_key)
        clients += [plain, secure]
        for client in clients:
            client.measure_rtt(timeout_s=10)
        sockets += [
            echo_socket(context, endpoints["echo"], None),
            echo_socket(context, endpoints["echo+curve"], curve_client),
        ]
        paths: dict[str, Timed] = {}
        sizes: dict[str, int] = {}
        for codec in args.codecs:
            request = wire.InferRequest(1000, bundle.id, cut.id, (wire.Tensor(cut.name, value),))
            frames = wire.encode(request, codec)
            for curve, client, sock in ((False, plain, sockets[0]), (True, secure, sockets[1])):
                key = f"{codec}|{curve}"
                paths[f"edgesplit|{key}"] = edgesplit_path(client, bundle, cut, value, codec)
                paths[f"echo|{key}"] = echo_path(sock, frames)
                sizes[key] = sum(memoryview(f).nbytes for f in frames)
        began, load_before = time.perf_counter(), os.getloadavg()[0]
        seconds = measure(paths, args.requests, args.warmup)
        measured_s, load_after = time.perf_counter() - began, os.getloadavg()[0]
    finally:
        for client in clients:
            client.close()
        for sock in sockets:
            sock.close(linger=0)
        context.term()
        for proc in servers:
            stop_process(proc)
    variants = [
        variant(
            codec,
            curve,
            sizes[f"{codec}|{curve}"],
            seconds[f"edgesplit|{codec}|{curve}"],
            seconds[f"echo|{codec}|{curve}"],
        )
        for curve in (False, True)
        for codec in args.codecs
    ]
    parts = [components(cut, value, codec, bundle.id, args.component_runs) for codec in args.codecs]
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "zmq": zmq.zmq_version(),
            "pyzmq": zmq.__version__,
        },
        "bundle": bundle.id,
        "model": m.model.name,
        "cut": cut.id,
        "rows": rows,
        "raw_bytes": int(value.nbytes),
        "reply_bytes": sum(reply),
        "requests": args.requests,
        "warmup": args.warmup,
        "servers": "processes",
        "measured_s": measured_s,
        "loadavg_1m": [load_before, load_after],
        "target_overhead_s": TARGET_OVERHEAD_S,
        "variants": [asdict(v) for v in variants],
        "components": [asdict(p) for p in parts],
    }


def report(figures: dict) -> None:
    """Print the round-trip table and the in-process components."""
    us = 1e6
    print(
        f"\nround trips, µs ({figures['requests']} each, interleaved, "
        f"{figures['measured_s']:.1f} s, 1-min load {figures['loadavg_1m'][0]:.2f} -> "
        f"{figures['loadavg_1m'][1]:.2f}); net = RTT - compute_s; "
        "overhead = median(net) - median(echo)"
    )
    head = (
        "codec",
        "curve",
        "req bytes",
        "RTT p50",
        "RTT p95",
        "compute",
        "net p50",
        "net p95",
        "echo p50",
        "echo p95",
        "overhead",
        "< 500 µs",
    )
    print("{:<9} {:>5} {:>9} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}  {}".format(*head))
    for v in figures["variants"]:
        print(
            f"{v['codec']:<9} {'on' if v['curve'] else 'off':>5} {v['request_bytes']:>9,} "
            f"{v['edgesplit_median_s'] * us:8.0f} {v['edgesplit_p95_s'] * us:8.0f} "
            f"{v['compute_median_s'] * us:7.1f} {v['net_median_s'] * us:8.0f} "
            f"{v['net_p95_s'] * us:8.0f} {v['echo_median_s'] * us:8.0f} "
            f"{v['echo_p95_s'] * us:8.0f} {v['overhead_s'] * us:8.0f}  "
            f"{'PASS' if v['passed'] else 'FAIL'}"
        )
    plain = {v["codec"]: v for v in figures["variants"] if not v["curve"]}
    print("\nin-process, request message, median µs (rest = overhead, CURVE off, - enc - dec)")
    print(f"{'codec':<9} {'header B':>8} {'payload B':>9} {'encode':>7} {'decode':>7} {'rest':>7}")
    for p in figures["components"]:
        rest = plain[p["codec"]]["overhead_s"] - p["encode_s"] - p["decode_s"]
        print(
            f"{p['codec']:<9} {p['header_bytes']:>8} {p['payload_bytes']:>9,} "
            f"{p['encode_s'] * us:7.1f} {p['decode_s'] * us:7.1f} {rest * us:7.0f}"
        )
    verdict = all(v["passed"] for v in figures["variants"])
    verdict_text = "PASS" if verdict else "FAIL"
    print(f"\ntarget (a): overhead < 500 µs median in every variant: {verdict_text}")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="timed requests a path")
    p.add_argument("--warmup", type=int, default=200, help="untimed requests a path first")
    p.add_argument(
        "--model", default="branchynet-untrained", help="model to partition (default untrained)"
    )
    p.add_argument("--bundle", type=Path, help="an existing bundle instead of --model")
    p.add_argument("--bytes", type=int, default=TARGET_BYTES, help="fp32 activation size aimed at")
    p.add_argument("--cut", help="send this cut's tensor instead of the one closest to --bytes")
    p.add_argument(
        "--rows",
        type=int,
        help=f"rows a request: with --cut exactly (default 1), else at most (default {MAX_ROWS})",
    )
    p.add_argument(
        "--codecs",
        type=lambda s: tuple(s.split(",")),
        default=CODECS,
        help=f"comma-separated codecs (default {','.join(CODECS)})",
    )
    p.add_argument("--component-runs", type=int, default=500, help="runs of each in-process timing")
    p.add_argument("--json", type=Path, help="write the figures to this JSON file")
    # The servers' side, started by this module in processes of their own.
    p.add_argument("--serve", choices=("node", "echo"), help=argparse.SUPPRESS)
    p.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--secret-key", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--allowed-clients", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--reply-bytes", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags; measure and print, or serve one side."""
    args = parser().parse_args(argv)
    if args.serve == "node":
        serve_node(args)
        return 0
    if args.serve == "echo":
        serve_echo(args)
        return 0
    unknown = sorted(set(args.codecs) - set(wire.SUPPORTED_CODECS))
    if unknown:
        raise SystemExit(f"--codecs: unknown {unknown}; supported: {wire.SUPPORTED_CODECS}")
    with tempfile.TemporaryDirectory(prefix="edgesplit-runtime-overhead-") as work:
        figures = run(args, Path(work))
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
