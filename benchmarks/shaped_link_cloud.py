"""The shaped-link benchmark's cloud side: Triton and ``edgesplit cloud`` in the cloud namespace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgesplit.bundle import Bundle
from experiments.shaped_link import ShapedLink
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
