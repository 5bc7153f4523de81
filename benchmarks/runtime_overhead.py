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
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zmq

import wire
from benchmarks.runtime_overhead_figures import TARGET_OVERHEAD_S, report, variant
from benchmarks.runtime_overhead_paths import (
    Timed,
    components,
    echo_path,
    echo_socket,
    edgesplit_path,
    measure,
)
from benchmarks.runtime_overhead_servers import reply_sizes, serve_echo, serve_node, start_server
from cloud_node.process import stop_process
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Cut, load_bundle
from edgesplit.security import generate_keys, load_keypair, load_public_key

TARGET_BYTES = 200_000
CODECS = ("raw", "int8", "int8+lz4", "fp16")
MAX_ROWS = 16  # the cloud node's default max_batch


# -- choosing what to send -------------------------------------------------------------------


def choose_cut(cuts: Sequence[Cut], target_bytes: int, max_rows: int) -> tuple[Cut, int]:
    """The cut (with a tail) and rows (at most ``max_rows``) closest to ``target_bytes`` raw.

    Ties go to fewer rows, then to the deeper cut.
    """

    def miss(cut: Cut) -> tuple[int, int, int]:
        rows = min(max_rows, max(1, round(target_bytes / cut.raw_bytes)))
        return abs(rows * cut.raw_bytes - target_bytes), rows, -cut.index

    # One tensor a request: the figures compare paths, not cut shapes (benchmarks.multi_tensor_wire
    # measures what several tensors add).
    candidates = [c for c in cuts if c.tail is not None and c.raw_bytes > 0 and len(c.tensors) == 1]
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
    value = cut_values(bundle, [cut], inputs)[cut.id][cut.name]
    return np.ascontiguousarray(value, dtype=np.dtype(cut.dtype))


# -- the run ---------------------------------------------------------------------------------


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
