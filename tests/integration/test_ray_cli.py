"""``edgesplit cloud --ray`` as a process: joins a real Ray cluster, serves an edge, restarts.

A Ray head started with ``ray start --head`` (as an operator would) outlives
the ingress: the ingress is SIGKILLed and started again, joins the Serve app
it left running without redeploying it, and serves the edge again with the
same answers as the embedded single-process node.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_node.process import start_cloud_process, stop_process
from edgesplit.bundle import Bundle
from tests.conftest import edge_cli_rows, free_port

pytest.importorskip("ray", reason="Ray is installed with the test extra")
pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLES = 30


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.is_file() else shutil.which("ray") or "ray"


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    """A 2-CPU Ray head on a free port (``ray start --head``); stopped after the test."""
    port = free_port()
    temp = Path("/tmp") / f"rayt{os.getpid()}"  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(
        [
            _ray_cli(),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        timeout=120,
        env=env,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(temp, ignore_errors=True)


def _edge(bundle: Bundle, endpoint: str, out: Path) -> list[dict]:
    return edge_cli_rows(bundle, endpoint, out, SAMPLES)


def test_ray_ingress_serves_restarts_and_answers_like_the_embedded_node(
    untrained_bundle: Bundle, ray_head: str, tmp_path: Path
) -> None:
    bind = f"tcp://127.0.0.1:{free_port()}"
    extra = ["--insecure", "--ray", ray_head, "--replica-cpus", "0.5"]
    proc, endpoint = start_cloud_process(
        untrained_bundle.root, bind, tmp_path / "first.log", ready_timeout_s=180, extra=extra
    )
    try:
        first = _edge(untrained_bundle, endpoint, tmp_path / "first.jsonl")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    log = (tmp_path / "first.log").read_text()
    assert "Ray Serve app edgesplit" in log and "deploying tail" in log
    # The ingress comes back on the same port and joins the app it left running.
    began = time.monotonic()
    proc, endpoint = start_cloud_process(
        untrained_bundle.root, bind, tmp_path / "again.log", ready_timeout_s=180, extra=extra
    )
    restart_s = time.monotonic() - began
    try:
        again = _edge(untrained_bundle, endpoint, tmp_path / "again.jsonl")
    finally:
        assert stop_process(proc) == 0
    log = (tmp_path / "again.log").read_text()
    assert "joining the running Serve app edgesplit" in log and "deploying tail" not in log
    embedded, endpoint = start_cloud_process(
        untrained_bundle.root,
        "tcp://127.0.0.1:*",
        tmp_path / "embedded.log",
        extra=["--insecure"],
    )
    try:
        reference = _edge(untrained_bundle, endpoint, tmp_path / "embedded.jsonl")
    finally:
        assert stop_process(embedded) == 0
    for rows in (first, again, reference):
        assert [r["finished"] for r in rows] == ["cloud"] * SAMPLES
    predictions = [r["prediction"] for r in reference]
    assert [r["prediction"] for r in first] == predictions
    assert [r["prediction"] for r in again] == predictions
    print(f"ingress restart joined the running app in {restart_s:.1f} s")


def test_an_unreachable_ray_address_fails_fast_with_the_address(
    untrained_bundle: Bundle,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    began = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgesplit",
            "cloud",
            "--bundle",
            str(untrained_bundle.root),
            "--insecure",
            "--bind",
            "tcp://127.0.0.1:*",
            "--ray",
            address,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert f"cannot reach the Ray cluster at {address}" in result.stderr
    assert time.monotonic() - began < 30
