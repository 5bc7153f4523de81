"""Over-the-air update, measured: release size and checks, download speed, requests meanwhile.

One edge (a real EdgeNode with its Updater) serves requests at a steady pace
against a real cloud node (CURVE on loopback) that offers a signed release of
the same model with a new id. Prints:

- the release: archive size, time to pack and sign, time to verify and unpack;
- download speed of the archive over the ZeroMQ channel (256 KiB chunks, CURVE)
  and over HTTP from a local server, median of ``--repeats`` each;
- request latency before the offer, while the release downloads and stages
  (head sessions loaded in the background), in the requests right after the
  switch, and after the commit; requests sent and answered (none may be lost);
- the time from offer to switch and from switch to commit.

    .venv/bin/python -m benchmarks.ota_update                  # ResNet18, partitioned first
    .venv/bin/python -m benchmarks.ota_update --bundle BUNDLE --interval-ms 20
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import wire
from cloud_node.backends import OnnxRuntimeBackend
from cloud_node.fleet import Candidate, Fleet
from cloud_node.server import CloudConfig, CloudNode
from edge_node.config import UpdateConfig
from edge_node.download import Downloader
from edge_node.head import HeadRunner
from edge_node.metrics import EdgeMetrics
from edge_node.node import EdgeConfig, EdgeNode
from edge_node.transport import CloudClient
from edge_node.update import Updater
from edgesplit.bundle import MANIFEST, Bundle, compute_bundle_id, load_bundle, sha256_file
from edgesplit.manifest_json import manifest_from_dict
from edgesplit.release import (
    load_signing_key,
    load_verify_key,
    make_release,
    unpack_release,
    write_signing_keys,
)
from edgesplit.security import generate_keys, load_allowed, load_keypair, load_public_key
from offload_policy import Decision, FixedPolicy


def variant(
    src: Bundle, dest: Path, label: str, edit: Callable[[Path], None] | None = None
) -> Bundle:
    """A copy of ``src`` with a new id (and ``edit`` applied to its files), re-hashed."""
    shutil.copytree(src.root, dest)
    if edit is not None:
        edit(dest)
    path = dest / MANIFEST
    data = json.loads(path.read_text())
    data["created_by"] = f"{data['created_by']} ({label})"
    data["files"] = {rel: sha256_file(dest / rel) for rel in data["files"]}
    data["bundle_id"] = compute_bundle_id(manifest_from_dict(data, path))
    path.write_text(json.dumps(data, indent=1, allow_nan=True))
    return load_bundle(dest)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        """No access log on stderr."""


def _ms(values: Sequence[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1e3:.1f}" if len(values) else "-"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the update once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="model to partition")
    parser.add_argument("--bundle", type=Path, help="use this bundle instead of partitioning")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="pause between requests")
    parser.add_argument("--probation-s", type=float, default=5.0, help="probation window")
    parser.add_argument("--repeats", type=int, default=3, help="downloads timed per channel")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgesplit-ota-") as tmp_name:
        tmp = Path(tmp_name)
        if args.bundle is not None:
            bundle = load_bundle(args.bundle)
        else:
            print(f"partitioning {args.model} (quick profile, cuts pruned)...", flush=True)
            bundle = _partition(args.model, tmp / "v1")
        run(bundle, tmp, args)
    return 0


def _partition(model: str, out: Path) -> Bundle:
    """The bundle a user deploys: cuts that can never win pruned, a quick profile."""
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.sources import load_source

    source = load_source(model, out.parent)
    config = PartitionConfig(profile=ProfileConfig(reps=Repetitions.quick(), size_samples=8))
    return partition(source, out, config)


def run(bundle: Bundle, tmp: Path, args: argparse.Namespace) -> None:
    """Measure one update of ``bundle`` to a relabelled copy of itself."""
    sign, verify = write_signing_keys(tmp / "keys", "release")
    generate_keys(tmp / "keys" / "cloud", "cloud")
    generate_keys(tmp / "keys" / "edges", "edge")
    v2 = variant(bundle, tmp / "v2", "v2")

    began = time.perf_counter()
    archive = make_release(v2, "2", tmp / "v2.tar", load_signing_key(sign))
    packed_s = time.perf_counter() - began
    size = archive.stat().st_size
    began = time.perf_counter()
    unpack_release(archive, tmp / "verify", verify_keys=[load_verify_key(verify)])
    verified_s = time.perf_counter() - began
    print(
        f"release: {size / 1e6:.1f} MB, packed and signed in {packed_s:.2f} s, "
        f"hashed, verified and unpacked in {verified_s:.2f} s"
    )

    _, unpacked = unpack_release(archive, tmp / "cloud-store")
    fleet = Fleet(bundle, "1", Candidate.from_archive(archive, unpacked), 1.0)
    node = CloudNode(
        bundle,
        OnnxRuntimeBackend(bundle),
        CloudConfig(
            bind="tcp://127.0.0.1:*",
            keys=load_keypair(tmp / "keys" / "cloud" / "cloud.key_secret"),
            allowed=load_allowed(tmp / "keys" / "edges"),
        ),
        fleet=fleet,
    )
    node.serve_bundle(unpacked, OnnxRuntimeBackend(unpacked))
    with node:
        thread = threading.Thread(target=node.serve_forever, daemon=True)
        thread.start()
        try:
            endpoint = node.endpoint or ""
            # Only an edge offered the release may fetch it, and what it fetches is the
            # release's edge part (no tail): the candidate's archive.
            fleet.heartbeat(wire.Hello(0, name="edge"), "edge")
            assert fleet.candidate is not None
            _downloads(endpoint, tmp, fleet.candidate.archive, args.repeats, v2.id)
            _update(bundle, endpoint, tmp, verify, args)
        finally:
            node.stop()
            thread.join(timeout=30)


def _client_factory(endpoint: str, tmp: Path) -> Callable[[], CloudClient]:
    def client() -> CloudClient:
        return CloudClient(
            endpoint,
            keys=load_keypair(tmp / "keys" / "edges" / "edge.key_secret"),
            server_key=load_public_key(tmp / "keys" / "cloud" / "cloud.key"),
        )

    return client


def _downloads(endpoint: str, tmp: Path, archive: Path, repeats: int, bundle_id: str) -> None:
    size = archive.stat().st_size
    downloader = Downloader(UpdateConfig(state_dir=tmp / "dl"), _client_factory(endpoint, tmp))
    handler = functools.partial(_QuietHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
    speeds: dict[str, list[float]] = {"zeromq+curve": [], "http": []}
    try:
        for _ in range(repeats):
            for channel in speeds:
                target = tmp / f"dl-{channel}.tar"
                began = time.perf_counter()
                if channel == "http":
                    downloader.from_url(url, target, size)
                else:
                    downloader.chunks(bundle_id, target, size, 256 * 1024)
                speeds[channel].append(size / (time.perf_counter() - began) / 1e6)
                assert sha256_file(target) == sha256_file(archive), channel
    finally:
        server.shutdown()
    print(
        "download, loopback, median of "
        + f"{repeats}: "
        + ", ".join(f"{k} {statistics.median(v):.0f} MB/s" for k, v in speeds.items())
        + f" (ratio {_ratio(speeds['zeromq+curve'], speeds['http']):.2f})"
    )


def _update(
    bundle: Bundle, endpoint: str, tmp: Path, verify: Path, args: argparse.Namespace
) -> None:
    m = bundle.manifest
    cut = next(c for c in m.cuts if c.kind == "inner" and c.tail is not None)

    def policy(b: Bundle) -> FixedPolicy:
        return FixedPolicy(Decision(cut.id, None, "int8+lz4"), b.manifest.edge_only.id)

    client = _client_factory(endpoint, tmp)
    own = client()
    config = EdgeConfig(timeout_s=5.0, rtt_s=0.0)
    runner = HeadRunner(bundle)
    # The first 100 requests on a node without an updater: the baseline. Then the same
    # bundle, sessions and socket on a node with one.
    baseline = EdgeNode(bundle, policy(bundle), own, config, runner)
    metrics = EdgeMetrics()
    updater = Updater(
        UpdateConfig(
            state_dir=tmp / "state",
            name="edge",
            interval_s=1.0,
            probation_s=args.probation_s,
            verify_keys=(load_verify_key(verify),),
        ),
        "1",
        client,
        lambda b: HeadRunner(b),
        policy,
        client=own,
        metrics=metrics,
    )
    updating = EdgeNode(
        bundle, policy(bundle), own, config, runner, metrics=metrics, updater=updater
    )
    runner.warm([cut])
    rng = np.random.default_rng(0)
    shape = m.model.input.shape
    x = rng.standard_normal((1, *shape), dtype=np.float32)
    phases: dict[str, list[float]] = {"before": [], "download": [], "switch": [], "after": []}
    marks: dict[str, float] = {}
    sent = answered = 0
    began = time.perf_counter()
    after_commit = 0
    while after_commit < 100 and time.perf_counter() - began < 600:
        edge = baseline if sent < 100 else updating
        seen = {r for r, _ in updater.events}
        for event in ("offered", "switched", "committed", "rolled_back", "refused"):
            if event in seen and event not in marks:
                marks[event] = time.perf_counter()
        if "rolled_back" in marks or "refused" in marks:
            raise SystemExit(f"update failed: {updater.events}")
        sent += 1
        outcome = edge.infer(x)
        answered += 1
        if "committed" in marks:
            phase = "after"
            after_commit += 1
        elif "switched" in marks:
            phase = "switch" if len(phases["switch"]) < 10 else "after"
        elif "offered" in marks:
            phase = "download"
        else:
            phase = "before"
        phases[phase].append(outcome.latency_s)
        time.sleep(args.interval_ms / 1e3)
    own.close()
    print(
        f"requests: {sent} sent, {answered} answered, {sent - answered} lost; cut {cut.id} int8+lz4"
    )
    for phase, values in phases.items():
        print(
            f"  {phase:9s} n={len(values):4d}  p50 {_ms(values, 50)} ms  p99 {_ms(values, 99)} ms  "
            f"max {_ms(values, 100)} ms"
        )
    if "switched" in marks and "committed" in marks:
        print(
            f"offer -> switch {marks['switched'] - marks['offered']:.2f} s (download, verify, "
            f"load and warm the heads); switch -> commit "
            f"{marks['committed'] - marks['switched']:.2f} s (probation {args.probation_s:g} s)"
        )
    base = statistics.median(phases["before"])
    print(
        "median latency ratios vs before: download "
        f"{statistics.median(phases['download']) / base:.2f}, after commit "
        f"{statistics.median(phases['after']) / base:.2f}"
    )


def _ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(a) / statistics.median(b)


if __name__ == "__main__":
    raise SystemExit(main())
