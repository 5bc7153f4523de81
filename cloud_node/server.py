"""The cloud node: a ZeroMQ ROUTER that validates, runs tails and answers.

Each request is a wire message of kind ``infer`` whose meta names the bundle
id and the cut; the reply is ``result`` (the outputs, plus the node's queue
and compute time) or ``error`` (a stable code and a message). A malformed
frame gets an ``error`` reply and a counted error; the node keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq

import wire
from cloud_node.backends import TailBackend
from edgesplit.bundle import Bundle, Cut
from edgesplit.errors import BackendError, BundleError, TransportError, WireError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CloudConfig:
    """How the cloud node listens and what it accepts.

    Attributes:
        bind: ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5555``.
        limits: wire limits applied to every incoming message.
        max_batch: largest batch one request may carry.
        poll_interval_s: how often the loop checks for a stop request.
    """

    bind: str = "tcp://127.0.0.1:5555"
    limits: wire.Limits = field(default_factory=wire.Limits)
    max_batch: int = 64
    poll_interval_s: float = 0.1


class RequestRejected(Exception):
    """A request that is well-formed on the wire but cannot be served."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class CloudNode:
    """Serves a bundle's tails over ZeroMQ; use as a context manager.

    ``with CloudNode(bundle, backend, config) as node: node.serve_forever()``
    binds on enter and closes the socket (and the backend) on exit.
    """

    def __init__(self, bundle: Bundle, backend: TailBackend, config: CloudConfig | None = None):
        self.bundle = bundle
        self.backend = backend
        self.config = config or CloudConfig()
        self.counts: Counter[str] = Counter()
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._stop = threading.Event()
        self.endpoint: str | None = None

    def __enter__(self) -> CloudNode:
        self._context = zmq.Context()
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        try:
            sock.bind(self.config.bind)
        except zmq.ZMQError as exc:
            sock.close()
            self._context.term()
            hint = (
                "; pick another --bind port or stop the process using it"
                if exc.errno == zmq.EADDRINUSE
                else ""
            )
            raise TransportError(f"cannot bind {self.config.bind}: {exc.strerror}{hint}") from exc
        self._socket = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info(
            "cloud node listening endpoint=%s bundle=%s backend=%s",
            self.endpoint,
            self.bundle.id[:12],
            self.backend.name,
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
        if self._context is not None:
            self._context.term()
        self.backend.close()

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return (from another thread or a signal handler)."""
        self._stop.set()

    def serve_forever(self, max_requests: int | None = None) -> None:
        """Answer requests until :meth:`stop` (or ``max_requests`` handled)."""
        if self._socket is None:
            raise TransportError("CloudNode.serve_forever() called outside its `with` block")
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        handled = 0
        timeout_ms = int(self.config.poll_interval_s * 1000)
        while not self._stop.is_set() and (max_requests is None or handled < max_requests):
            if not poller.poll(timeout_ms):
                continue
            frames = self._socket.recv_multipart(copy=False)
            received = time.perf_counter()
            identity, body = frames[0].bytes, frames[1:]
            reply = self.handle(body, received)
            self._socket.send_multipart([identity, *reply], copy=False)
            handled += 1

    def handle(self, frames: Sequence[zmq.Frame | bytes], received: float) -> list:
        """One request's frames in, the reply's frames out; never raises for bad input."""
        try:
            message, arrays = wire.decode_message(frames, self.config.limits)
        except WireError as exc:
            code = wire.error_code(exc)
            self.counts[f"error_{code}"] += 1
            log.warning("rejected frame code=%s error=%s", code, exc)
            return wire.encode_message("error", 0, meta={"code": code, "message": str(exc)[:900]})
        if message.kind == "ping":
            self.counts["ping"] += 1
            return wire.encode_message(
                "pong",
                message.request_id,
                meta={"bundle": self.bundle.id, "backend": self.backend.name},
            )
        try:
            if message.kind != "infer":
                raise RequestRejected(
                    "kind", f"kind={message.kind!r}: the cloud node serves infer and ping"
                )
            cut = self._check(message, arrays)
            started = time.perf_counter()
            outputs = self.backend.infer(cut, arrays)
            finished = time.perf_counter()
        except RequestRejected as exc:
            self.counts[f"error_{exc.code}"] += 1
            log.warning(
                "rejected request id=%d code=%s error=%s", message.request_id, exc.code, exc
            )
            return wire.encode_message(
                "error", message.request_id, meta={"code": exc.code, "message": str(exc)[:900]}
            )
        except BackendError as exc:
            self.counts["error_backend"] += 1
            log.error("backend failed id=%d error=%s", message.request_id, exc)
            return wire.encode_message(
                "error", message.request_id, meta={"code": "backend", "message": str(exc)[:900]}
            )
        self.counts["ok"] += 1
        return wire.encode_message(
            "result",
            message.request_id,
            outputs,
            codec="raw",
            meta={"queue_s": started - received, "compute_s": finished - started, "cut": cut.id},
        )

    def _check(self, message: wire.Message, arrays: dict[str, np.ndarray]) -> Cut:
        """The cut a request asks for, after checking it against the bundle."""
        bundle_id = message.meta.get("bundle")
        if bundle_id != self.bundle.id:
            raise RequestRejected(
                "bundle_mismatch",
                f"request for bundle={str(bundle_id)[:12]} but this node serves "
                f"bundle={self.bundle.id[:12]}; deploy the same bundle on both sides",
            )
        cut_id = message.meta.get("cut")
        try:
            cut = self.bundle.manifest.cut(str(cut_id))
        except BundleError as exc:
            raise RequestRejected("unknown_cut", str(exc)) from exc
        if cut.tail is None:
            raise RequestRejected(
                "unknown_cut", f"cut {cut.id} is edge-only: the cloud has no tail for it"
            )
        if set(arrays) != {cut.name}:
            raise RequestRejected(
                "shape", f"cut {cut.id} takes one tensor named {cut.name!r}, got {sorted(arrays)}"
            )
        value = arrays[cut.name]
        if value.ndim != len(cut.shape) + 1 or tuple(value.shape[1:]) != cut.shape:
            raise RequestRejected(
                "shape",
                f"cut {cut.id}: tensor shape {value.shape} does not match (batch, *{cut.shape})",
            )
        if not 1 <= value.shape[0] <= self.config.max_batch:
            raise RequestRejected(
                "shape", f"batch={value.shape[0]} outside 1..{self.config.max_batch}"
            )
        if value.dtype != np.dtype(cut.dtype):
            raise RequestRejected(
                "shape", f"cut {cut.id}: dtype {value.dtype}, expected {cut.dtype}"
            )
        return cut
