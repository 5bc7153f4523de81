"""Fixtures shared across the suite: bundles partitioned once, real cloud nodes on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import wire
from cloud_node.backends import OnnxRuntimeBackend, TailBackend
from cloud_node.server import CloudConfig, CloudNode
from edgesplit.bundle import Bundle


def _partition(model: str, out: Path, **kwargs: object) -> Bundle:
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.pruning import PruneConfig
    from partitioner.sources import load_source

    source = load_source(model, out.parent, **kwargs)  # type: ignore[arg-type]
    # Every cut kept: the suite exercises all of them (pruning has its own tests).
    config = PartitionConfig(
        profile=ProfileConfig(reps=Repetitions.quick(), size_samples=8),
        prune=PruneConfig(enabled=False),
    )
    return partition(source, out, config)


@pytest.fixture(scope="session")
def untrained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The early-exit architecture with random weights: fast, no training."""
    root = tmp_path_factory.mktemp("untrained")
    return _partition(
        "branchynet-untrained", root / "bundle", calibration_samples=400, test_samples=100
    )


@pytest.fixture(scope="session")
def branchynet_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The built-in trained early-exit model (trains once into the user cache if needed)."""
    root = tmp_path_factory.mktemp("branchynet")
    return _partition("branchynet", root / "bundle", calibration_samples=1000, test_samples=400)


@pytest.fixture(scope="session")
def resnet18_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """ResNet18 (random weights), every cut extracted and profiled quickly."""
    root = tmp_path_factory.mktemp("resnet18")
    return _partition("resnet18", root / "bundle")


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The zoo's text encoder (``input_ids`` and ``attention_mask``): cuts of several tensors."""
    from partitioner.byom_zoo import write_zoo_model
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.pruning import PruneConfig
    from partitioner.sources import onnx_source

    root = tmp_path_factory.mktemp("text")
    path = write_zoo_model("text_encoder", root / "text_encoder.onnx")
    config = PartitionConfig(
        profile=ProfileConfig(reps=Repetitions(1, 2), layers=False, size_samples=4),
        prune=PruneConfig(enabled=False),
    )
    return partition(onnx_source(path), root / "bundle", config)


class RunningCloud:
    """A cloud node serving in a background thread of the test process."""

    def __init__(
        self,
        bundle: Bundle,
        bind: str = "tcp://127.0.0.1:*",
        *,
        backend: TailBackend | None = None,
        config: CloudConfig | None = None,
        **node_options: Any,
    ) -> None:
        backend = backend or OnnxRuntimeBackend(bundle, threads=1)
        self.node = CloudNode(bundle, backend, config or CloudConfig(bind=bind), **node_options)
        self._start()

    def _start(self) -> None:
        self.node.__enter__()
        self.endpoint = self.node.endpoint or ""
        self._thread = threading.Thread(target=self.node.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.node.stop()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "cloud node thread did not stop"
        self.node.__exit__(None, None, None)


@pytest.fixture
def cloud(untrained_bundle: Bundle) -> Iterator[RunningCloud]:
    """A real cloud node on a random loopback TCP port, stopped after the test."""
    running = RunningCloud(untrained_bundle)
    yield running
    running.stop()


def edge_cli_rows(bundle: Bundle, endpoint: str, out: Path, samples: int) -> list[dict]:
    """``edgesplit edge`` as a process, every request sent to ``endpoint`` at cut c03 (raw,
    no exit, plaintext on loopback); its per-request result rows."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgesplit",
            "edge",
            "--bundle",
            str(bundle.root),
            "--connect",
            endpoint,
            "--insecure",
            "--policy",
            "fixed",
            "--cut",
            "c03",
            "--threshold",
            "off",
            "--codec",
            "raw",
            "--samples",
            str(samples),
            "--results",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def ask_cloud(endpoint: str, request: wire.AnyMessage, timeout_ms: int = 30_000) -> wire.AnyMessage:
    """Send one message to a cloud node over a plain DEALER socket and decode its answer."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.connect(endpoint)
    try:
        sock.send_multipart(wire.encode(request))
        assert sock.poll(timeout_ms), f"no answer within {timeout_ms} ms"
        return wire.decode(sock.recv_multipart())
    finally:
        sock.close(linger=0)
        context.term()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
