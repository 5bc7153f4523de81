"""Load: many concurrent simulated edges against one cloud process on loopback.

32 closed-loop edges (threads in 4 processes) against a node with a queue of
8 on ResNet18 (each request a 602 KB input and ~18 ms of compute): the node
is saturated, so it must answer ``busy`` at once rather than queue without
bound, keep its queue within its size, answer every request, and hold its
memory. ``benchmarks/soak.py`` runs the same for as long as one likes.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from pathlib import Path

import pytest

from benchmarks.triton_direct import sample
from cloud_node.process import start_cloud_process, stop_process
from edgesplit.bundle import Bundle
from experiments.loadgen import rss_bytes, run_load, summarize
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EDGES = 32
QUEUE = 8
SECONDS = 8.0


def _gauge(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_a_saturated_node_answers_busy_keeps_its_queue_and_loses_nothing(
    resnet18_bundle: Bundle, tmp_path: Path
) -> None:
    port = free_port()
    proc, endpoint = start_cloud_process(
        resnet18_bundle.root,
        "tcp://127.0.0.1:*",
        tmp_path / "cloud.log",
        extra=["--insecure", "--queue-size", str(QUEUE), "--max-batch", "4", "--threads", "1",
               "--metrics-port", str(port), "--log-level", "error"],
    )  # fmt: skip
    metrics = f"http://127.0.0.1:{port}/metrics"
    depths: list[float] = []
    rss: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            depths.append(_gauge(metrics, "edgesplit_cloud_queue_depth"))
            rss.append(rss_bytes(proc.pid))

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        watcher.start()
        cut = resnet18_bundle.manifest.cuts[0]
        samples, began = run_load(
            endpoint, resnet18_bundle, cut, sample(resnet18_bundle, 1), EDGES, SECONDS, 2.0
        )
    finally:
        stop.set()
        watcher.join()
        assert proc.poll() is None, "the cloud process died under load"
        assert stop_process(proc) == 0
    window = [s for s in samples if s.at >= began]
    figures = summarize(window, SECONDS)
    # Every request was answered: a result, or busy at once; none lost, none refused otherwise.
    assert figures["lost"] == 0 and figures["other"] == 0, figures
    assert figures["busy"] > 0 and figures["throughput"] > 5, figures
    busy_latency = sorted(s.latency_s for s in window if s.kind == "busy")
    assert busy_latency[len(busy_latency) // 2] < 0.1  # refused at once, not after queueing
    assert depths and max(depths) <= QUEUE
    # Memory holds: the second half of the run does not grow over the first.
    half = len(rss) // 2
    assert max(rss[half:]) - max(rss[:half]) < 32 * 1024 * 1024, (min(rss), max(rss))
    print(
        f"load: {EDGES} edges, {figures['throughput']:.1f} results/s, p50 "
        f"{figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms, {figures['busy']} busy "
        f"(median {busy_latency[len(busy_latency) // 2] * 1e3:.1f} ms), lost 0, queue <= "
        f"{max(depths):.0f}/{QUEUE}, RSS {min(rss) / 2**20:.0f}-{max(rss) / 2**20:.0f} MiB"
    )
