"""The runtime-overhead benchmark's two servers, each in a process of its own.

A real :class:`CloudNode` with a :class:`NullBackend` (compute ~0), and a
bare ZeroMQ ROUTER answering with frames the size of the node's reply: the
wire-time baseline. :func:`start_server` starts either as
``python -m benchmarks.runtime_overhead --serve ROLE`` and waits for the
endpoint it writes to its ready file.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import zmq

import wire
from cloud_node.backends import DecodingBackend
from cloud_node.process import stop_process
from cloud_node.server import CloudConfig, CloudNode
from edgesplit.bundle import Bundle, Cut, load_bundle
from edgesplit.security import load_allowed, load_keypair

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


def output_shape(bundle: Bundle) -> tuple[int, ...]:
    """Per-sample shape of the model's output (the bundle's output cut)."""
    for cut in bundle.manifest.cuts:
        if cut.kind == "output":
            return cut.shape
    raise SystemExit(f"{bundle.root}: no output cut in the manifest")


def reply_sizes(bundle: Bundle, cut: Cut, rows: int) -> tuple[int, int]:
    """Bytes of the header and payload frames of the node's reply to one request."""
    output = np.zeros((rows, *output_shape(bundle)), dtype=np.float32)
    tensors = (wire.Tensor(bundle.manifest.model.output, output),)
    frames = wire.encode(wire.Result(1000, tensors, 1e-5, 1e-5, cut.id, 1))
    return len(bytes(frames[0])), memoryview(frames[1]).nbytes


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
