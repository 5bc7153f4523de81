"""The real processes over a real shaped link: `edgesplit cloud` and the edge in two namespaces.

One module-wide :class:`~experiments.netlink.ShapedLink` (2 Mbit/s uplink,
downlink unshaped) joins an edge and a cloud network namespace; `edgesplit
cloud` runs in the cloud one with CURVE keys made by `edgesplit keys`, and
the edge runs in the edge one: `edgesplit edge` for (a) and (b), a paced
driver over the same EdgeNode and CloudClient for (c), which needs the run
to outlast a link cut.

The bundle is the trained built-in model with its edge profile slowed to 8 ms
and the raw codec alone (see ``_slow_edge_bundle``): profiled as is, the
whole model takes 0.05 ms on this machine's edge and the adaptive policy
would never offload it at any bandwidth. The rewrite only changes what the
policy predicts; both processes load the same rewritten bundle.

Figures seen here (2 cores): (a) 4.2 KB raw offloads take a median 18 ms
against 16.9 ms of payload at 2 Mbit/s; (b) from a 100 Mbit/s prior the
estimate lands at 1.9-3.5 Mbit/s after 2-7 offloads of the input, then the
policy keeps the input on the edge (c13, or c11/c12: 649 bytes a request);
(c) the cloud answers again ~0.65 s after the link comes back. The module
takes ~12 s once the bundle is built.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from cloud_node.process import stop_process
from edgesplit.bundle import MANIFEST, Bundle, compute_bundle_id, load_bundle
from experiments.netns import cleanup_stale
from experiments.shaped_link import ShapedLink, netns_support
from experiments.simulate import slower_edge
from offload_policy import Decision, Observation, predict

_REASON = netns_support()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(_REASON is not None, reason=f"no shaped links: {_REASON}"),
]

UPLINK_BPS = 2e6
#: How many times slower than this machine the edge is profiled as (see the module docstring).
EDGE_ONLY_S = 0.008  # the whole model on the slowed edge (exits off)
CLOUD_PORT = 5555
#: The one codec of the rewritten bundle (see ``_slow_edge_bundle``).
CODEC = "raw"
#: tbf carries ~96% of the set rate as TCP payload (experiments/netlink.py).
PAYLOAD_SHARE = 0.96


@dataclass(frozen=True)
class Served:
    """The link, the cloud process in its cloud namespace, and what the edge needs."""

    link: ShapedLink
    bundle: Bundle
    endpoint: str
    keys: Path
    cloud: subprocess.Popen[bytes]
    cloud_log: Path
    work: Path

    def security(self) -> list[str]:
        """The edge's CURVE flags."""
        return [
            "--secret-key",
            str(self.keys / "allowed" / "edge.key_secret"),
            "--server-key",
            str(self.keys / "cloud.key"),
        ]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgesplit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _keys(root: Path) -> Path:
    """A cloud key pair and one allowed edge's, made with `edgesplit keys`."""
    keys = root / "keys"
    for out, name in ((keys, "cloud"), (keys / "allowed", "edge")):
        result = _cli("keys", "--out", str(out), "--name", name)
        assert result.returncode == 0, result.stderr
    return keys


def _slow_edge_bundle(bundle: Bundle, out: Path) -> Bundle:
    """A copy of ``bundle`` profiled as a slower edge (EDGE_ONLY_S) that sends raw floats.

    The files are the same; only manifest.json changes, and with it the bundle id.
    With the raw codec alone the smallest offload is the 4 KB input: more than
    the 1 KB of int8 the policy would pick otherwise, which would leave through
    tbf's 6 KB burst at line rate and measure nothing but the burst.
    """
    shutil.copytree(bundle.root, out)
    # The factor puts the whole model at EDGE_ONLY_S on the edge whatever this machine's
    # profile measured, so the policy's choices do not ride on profiling noise.
    m = bundle.manifest
    whole = predict(m, Decision(m.edge_only.id, None, CODEC), Observation(1e9)).edge_compute_s
    manifest = replace(slower_edge(m, EDGE_ONLY_S / whole), codecs=(CODEC,))
    manifest = replace(manifest, bundle_id=compute_bundle_id(manifest))
    (out / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=1, allow_nan=True))
    return load_bundle(out)


def _start_cloud(link: ShapedLink, bundle: Bundle, keys: Path, work: Path) -> tuple[Any, str]:
    """`edgesplit cloud` in the cloud namespace; returns it once it wrote its ready file."""
    ready = work / "cloud.endpoint"
    log = work / "cloud.log"
    argv = [sys.executable, "-m", "edgesplit", "cloud", "--bundle", str(bundle.root),
            "--bind", f"tcp://{link.cloud_ip}:{CLOUD_PORT}",
            "--secret-key", str(keys / "cloud.key_secret"),
            "--allowed-clients", str(keys / "allowed"), "--ready-file", str(ready)]  # fmt: skip
    with log.open("wb") as out:
        proc = link.run_in(
            link.cloud_ns, argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + 60
    while not (ready.is_file() and ready.read_text().strip()):
        assert proc.poll() is None, f"cloud exited {proc.returncode}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"cloud not ready in 60 s: {log.read_text()[-2000:]}"
        time.sleep(0.05)
    return proc, ready.read_text().strip()


@pytest.fixture(scope="module")
def served(branchynet_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    cleanup_stale()
    work = tmp_path_factory.mktemp("shaped-link")
    bundle = _slow_edge_bundle(branchynet_bundle, work / "bundle")
    assert (bundle.root / "data" / "test.npz").is_file(), "the trained bundle has a test set"
    keys = _keys(work)
    with ShapedLink(UPLINK_BPS, None) as link:
        cloud, endpoint = _start_cloud(link, bundle, keys, work)
        assert endpoint == f"tcp://{link.cloud_ip}:{CLOUD_PORT}"
        yield Served(link, bundle, endpoint, keys, cloud, work / "cloud.log", work)
        assert cloud.poll() is None, "the cloud node died during the tests"
        assert stop_process(cloud) == 0
    assert "auth_allowed" in (work / "cloud.log").read_text()


def _run_edge(served: Served, name: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """`edgesplit edge` in the edge namespace; returns (stdout, rows of its results file)."""
    results = served.work / f"{name}.jsonl"
    argv = [sys.executable, "-m", "edgesplit", "edge", "--bundle", str(served.bundle.root),
            "--connect", served.endpoint, *served.security(), "--pipeline-depth", "1",
            "--results", str(results), *args]  # fmt: skip
    proc = served.link.run_in(
        served.link.edge_ns,
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    out, err = proc.communicate(timeout=120)
    (served.work / f"{name}.stderr").write_text(err)
    (served.work / f"{name}.stdout").write_text(out)
    assert proc.returncode == 0, f"edge exited {proc.returncode}:\n{out[-3000:]}\n{err[-3000:]}"
    assert f"paired with cloud {served.endpoint}" in out
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    return out, rows


def test_offloads_of_the_raw_input_take_the_shaped_links_time(served: Served) -> None:
    samples = 60
    out, rows = _run_edge(
        served, "raw", "--policy", "fixed", "--cut", served.bundle.manifest.cloud_only.id,
        "--codec", CODEC, "--threshold", "off", "--samples", str(samples),
    )  # fmt: skip
    assert len(rows) == samples
    assert {r["finished"] for r in rows} == {"cloud"}, out[-3000:]
    assert {r["cut"] for r in rows} == {served.bundle.manifest.cloud_only.id}
    sent = statistics.median(r["bytes_sent"] for r in rows)
    assert sent >= 4096  # 1x32x32 fp32 plus the header
    wire_s = sent * 8 / UPLINK_BPS  # 4.2 KB -> ~17 ms at 2 Mbit/s
    # The bucket holds 4 frames and refills while the reply comes back, so a request
    # may get a little of its payload through early; the median pays nearly all of it.
    latency = statistics.median(r["latency_s"] for r in rows[5:])
    assert 0.85 * wire_s <= latency <= 3 * wire_s / PAYLOAD_SHARE + 0.02, (latency, wire_s)


_LINK_AT_END = re.compile(r"link at the end\s*│?\s*([0-9.]+) Mbit/s \((\w+), (\d+) samples\)")


def test_adaptive_edge_learns_the_link_and_stops_sending_the_input(served: Served) -> None:
    samples = 150
    m = served.bundle.manifest
    # The slowed profile with a 1 ms RTT: sending the 4 KB input is predicted at 1.4 ms at
    # 100 Mbit/s and 17.4 ms at 2; the edge-only path with its exits at about 5.6 ms whatever
    # the link. So the prior sends the input, and with the policy's 10% hysteresis any
    # estimate below ~5.5 Mbit/s keeps it home (tbf's burst lifts the samples to 2-3.5).
    out, rows = _run_edge(
        served, "adaptive", "--policy", "adaptive", "--bandwidth-mbps", "100",
        "--rtt-ms", "1", "--codec", CODEC, "--samples", str(samples),
        env={"EDGESPLIT_POLICY_ACCURACY_FLOOR": "0.9"},
    )  # fmt: skip
    assert len(rows) == samples
    assert all(r["reason"] is None for r in rows), [r["reason"] for r in rows]
    # The prior's choice first: the input offloaded, answered by the cloud.
    assert rows[0]["cut"] == m.cloud_only.id and rows[0]["finished"] == "cloud"
    first_bytes = rows[0]["bytes_sent"]
    assert first_bytes > 4096  # 1x32x32 fp32 plus the header
    # The input goes only until the estimate came down: a prefix of the run. Then the
    # edge keeps it: edge-only (c13), or the exits on the edge and the last layer's
    # 128 floats offloaded (c12, 649 bytes), depending on where the estimate landed.
    raw = [i for i, r in enumerate(rows) if r["cut"] == m.cloud_only.id]
    assert raw == list(range(len(raw))) and len(raw) <= 10, raw
    later = rows[samples // 2 :]
    assert all(r["bytes_sent"] < first_bytes / 4 for r in later), {r["cut"] for r in later}
    assert statistics.fmean(r["bytes_sent"] for r in later) < first_bytes / 4
    found = _LINK_AT_END.search(out)
    assert found is not None, out[-3000:]
    estimate_mbps, source = float(found[1]), found[2]
    assert source == "measured" and int(found[3]) >= 1, out[-3000:]
    assert 1.0 <= estimate_mbps <= 5.0, out[-3000:]  # from a 100 Mbit/s prior
    print(
        f"adaptive: {len(raw)} raw offloads, then cuts {sorted({r['cut'] for r in later})}; "
        f"estimate {estimate_mbps} Mbit/s"
    )


# Runs in the edge namespace: an EdgeNode (fixed: cloud-only cut, raw) paced one request
# every argv[5] seconds until argv[6] exists (at most 30 s); one JSON line per answer.
DRIVER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from edge_node.node import EdgeConfig, EdgeNode
from edge_node.transport import CloudClient
from edgesplit.bundle import load_bundle
from edgesplit.security import load_keypair, load_public_key
from offload_policy import Decision, FixedPolicy

bundle = load_bundle(sys.argv[1], verify="edge")
m = bundle.manifest
keys = Path(sys.argv[3])
interval, stop = float(sys.argv[5]), Path(sys.argv[6])
with np.load(bundle.root / "data" / "test.npz") as data:
    inputs = data["inputs"]
client = CloudClient(
    sys.argv[2],
    keys=load_keypair(keys / "allowed" / "edge.key_secret"),
    server_key=load_public_key(keys / "cloud.key"),
)
policy = FixedPolicy(Decision(m.cloud_only.id, None, "raw"), m.edge_only.id)
node = EdgeNode(bundle, policy, client, EdgeConfig(timeout_s=float(sys.argv[4])))
node.check_cloud()
print(json.dumps({"ready": True}), flush=True)
start = time.monotonic()
i = 0
while not stop.exists() and time.monotonic() - start < 30:
    time.sleep(max(0.0, start + i * interval - time.monotonic()))
    outcome = node.infer(inputs[i % len(inputs)][None])
    print(json.dumps({"i": i, "t": time.monotonic(), "finished": outcome.finished,
                      "reason": outcome.reason, "latency_s": outcome.latency_s}), flush=True)
    i += 1
print(json.dumps({"requests": i, "stale": client.stale_replies, "recoveries": node.recoveries,
                  "probes": node.counts["cloud_probes"]}), flush=True)
client.close()
"""


def _lines(proc: subprocess.Popen[str], deadline: float) -> Iterator[dict[str, Any]]:
    """Parsed JSON lines of ``proc``'s stdout until it closes; fails past ``deadline``."""
    assert proc.stdout is not None
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "the driver went silent"
        line = proc.stdout.readline()
        if not line:
            return
        yield json.loads(line)


FAULTS = {
    # name: (start, end) on the link
    "down": (lambda link: link.down(), lambda link: link.up()),
    "loss-100%": (lambda link: link.drop(True), lambda link: link.drop(False)),
    # 8 kbit/s: a 4 KB request takes 4 s, far past the deadline; then back to 2 Mbit/s.
    "rate-collapse": (lambda link: link.set_rate(8e3), lambda link: link.set_rate(UPLINK_BPS)),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_cut_link_falls_back_then_recovers(served: Served, fault: str) -> None:
    link = served.link
    start, end = FAULTS[fault]
    script, stop = served.work / "driver.py", served.work / f"driver-{fault}.stop"
    script.write_text(DRIVER)
    timeout_s, down_s = 0.3, 1.5
    proc = link.run_in(
        link.edge_ns,
        [
            sys.executable,
            str(script),
            str(served.bundle.root),
            served.endpoint,
            str(served.keys),
            str(timeout_s),
            "0.02",
            str(stop),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    down_at = up_at = None
    try:
        for row in _lines(proc, time.monotonic() + 60):
            if "i" not in row:
                summary.update(row)
                continue
            rows.append(row)
            if down_at is None and len(rows) == 60:
                start(link)
                down_at = time.monotonic()
            elif up_at is None and down_at is not None and row["t"] > down_at + down_s:
                end(link)
                up_at = time.monotonic()
            elif up_at is not None and not stop.exists():
                back = [r for r in rows if r["t"] > up_at and r["finished"] == "cloud"]
                if len(back) >= 20 or row["t"] > up_at + 15:
                    stop.touch()
        proc.wait(timeout=30)
    finally:
        if down_at is not None and up_at is None:
            end(link)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert summary.get("ready") and down_at is not None and up_at is not None
    # Every request answered exactly once, in order.
    assert summary["requests"] == len(rows)
    assert [r["i"] for r in rows] == list(range(len(rows)))
    before = [r for r in rows if r["t"] < down_at]
    assert {r["finished"] for r in before} == {"cloud"}
    reasons = {r["reason"] for r in rows if r["finished"] == "fallback"}
    assert reasons & {"timeout", "unreachable"}, reasons
    # A fallback waits for the deadline, then runs the rest of the model locally.
    assert max(r["latency_s"] for r in rows if r["finished"] == "fallback") < timeout_s + 0.2
    # A reply already in when the link went down may be printed a moment later.
    during = [r for r in rows if down_at + 0.05 < r["t"] < up_at]
    assert during and all(r["finished"] in ("fallback", "edge") for r in during)
    back = [r for r in rows if r["t"] > up_at and r["finished"] == "cloud"]
    assert len(back) >= 20, f"the cloud did not answer again after up(): {summary}"
    assert summary["recoveries"] >= 1
    recovered_s = back[0]["t"] - up_at
    fallbacks = [r["latency_s"] for r in rows if r["finished"] == "fallback"]
    print(
        f"{fault}: {len(rows)} answered once each, {len(fallbacks)} fallbacks (max "
        f"{max(fallbacks):.3f} s), cloud answered again {recovered_s:.2f} s after the fault "
        f"ended; {summary}"
    )
