"""``edgesplit demo``: the whole system on one machine, end to end."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from edgesplit import __version__
from edgesplit.app.common import (
    BANDWIDTH_HELP,
    CODEC_HELP,
    CUT_HELP,
    THRESHOLD_HELP,
    console,
    positive,
)
from edgesplit.errors import EdgesplitError

app = typer.Typer()


@app.command()
def demo(
    samples: Annotated[int, typer.Option(help="Test-set inputs to classify.")] = 2000,
    cut: Annotated[str, typer.Option(help=CUT_HELP)] = "after-exits",
    threshold: Annotated[str, typer.Option(help=THRESHOLD_HELP)] = "0.9",
    codec: Annotated[str, typer.Option(help=CODEC_HELP)] = "int8+lz4",
    bandwidth_mbps: Annotated[float, typer.Option(help=BANDWIDTH_HELP)] = 2.0,
    bundle: Annotated[
        Path | None, typer.Option(help="Where to keep the demo bundle (default: in the cache).")
    ] = None,
    rebuild: Annotated[
        bool, typer.Option(help="Partition again even if the bundle exists.")
    ] = False,
    results: Annotated[
        Path | None, typer.Option(help="Write one JSON line per request to this file.")
    ] = None,
) -> None:
    """Train, partition, start a cloud node process, and classify the test set end to end.

    Everything runs on this machine with the embedded ONNX Runtime backend on
    loopback. By default the model is split where its deepest exit branches off,
    so the exits answer easy inputs on the edge and the rest is offloaded; the
    table shows what the profile predicts for every cut at --bandwidth-mbps.
    """
    from cloud_node.process import start_cloud_process, stop_process
    from edge_node.inputs import load_inputs
    from edgesplit.app.edge import EdgeRun, run_edge_session
    from edgesplit.bundle import FORMAT_VERSION, load_bundle
    from edgesplit.config_load import load_config
    from edgesplit.security import generate_keys, load_keypair, load_public_key
    from partitioner.build import build_bundle
    from partitioner.partition import PartitionConfig
    from partitioner.pruning import PruneConfig
    from partitioner.training import DEFAULT_EPOCHS, TrainConfig, default_cache_dir

    started = time.perf_counter()
    key = TrainConfig(epochs=DEFAULT_EPOCHS).cache_key()
    path = (
        bundle
        or default_cache_dir() / "bundles" / f"branchynet-{key}-v{__version__}-f{FORMAT_VERSION}"
    )
    console.rule("1/3 bundle")
    loaded = None
    if not rebuild and (path / "manifest.json").is_file():
        try:
            loaded = load_bundle(path)
            console.print(
                f"reusing bundle {path} (id {loaded.id[:12]}; --rebuild to partition again)"
            )
        except EdgesplitError as exc:
            console.print(f"rebuilding bundle: {exc}")
    if loaded is None:
        # Pruning is off: on one machine the edge is as fast as the cloud, and
        # pruning would keep only edge-only and cloud-only, leaving no split.
        config = PartitionConfig(prune=PruneConfig(enabled=False))
        loaded = build_bundle("branchynet", path, config=config, console=console)
    console.rule("2/3 cloud node")
    with tempfile.TemporaryDirectory(prefix="edgesplit-demo-") as tmp:
        # The channel is encrypted and authenticated even here: fresh CURVE keys per run.
        keydir = Path(tmp) / "keys"
        generate_keys(keydir / "allowed", "edge")
        generate_keys(keydir, "cloud")
        log_path = Path(tmp) / "cloud.log"
        proc, endpoint = start_cloud_process(
            path,
            "tcp://127.0.0.1:*",
            log_path,
            extra=[
                "--secret-key",
                str(keydir / "cloud.key_secret"),
                "--allowed-clients",
                str(keydir / "allowed"),
            ],
        )
        console.print(
            f"cloud node pid {proc.pid} listening on {endpoint} (embedded ONNX Runtime, CURVE on)"
        )
        try:
            console.rule("3/3 edge node")
            cfg = load_config(
                None,
                overrides={
                    "edge.connect": endpoint,
                    "edge.providers": ("cpu",),
                    "edge.pipeline_depth": 1,
                    "edge.results": results,
                    "policy.name": "fixed",
                    "policy.cut": cut,
                    "policy.threshold": threshold,
                    "policy.codec": codec,
                    "policy.bandwidth_mbps": positive("--bandwidth-mbps", bandwidth_mbps),
                    "logging.level": "warning",
                },
            )
            run_edge_session(
                EdgeRun(
                    cfg,
                    keys=load_keypair(keydir / "allowed" / "edge.key_secret"),
                    server_key=load_public_key(keydir / "cloud.key"),
                    security="CURVE on (keys made for this demo)",
                    fixed_bandwidth=True,
                    inputs=load_inputs("bundle", loaded, samples),
                    bundle=loaded,
                ),
                console,
            )
        finally:
            code = stop_process(proc)
            console.print(f"cloud node stopped (exit code {code})")
    console.print(f"demo wall time {time.perf_counter() - started:.1f} s")
