"""``edgesplit cloud``: serve a bundle's tails until SIGINT or SIGTERM.

The flags of the settings come from their declaration (:mod:`edgesplit.app.flags`);
the node is assembled by :func:`edgesplit.app.cloud.build_cloud`.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from edgesplit.app.common import ConfigOption, InsecureOption, console, load
from edgesplit.app.flags import Overrides, with_settings

app = typer.Typer()


@app.command()
@with_settings("cloud")
def cloud(
    config: ConfigOption = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Run the tails as Ray Serve replicas: --ray alone starts a local Ray cluster; "
            "--ray auto joins the one on this machine; --ray HOST:PORT joins a remote head. "
            "--backend then says what each replica runs; the config's ray section has the rest.",
        ),
    ] = None,
    insecure: InsecureOption = False,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write the bound endpoint to this file once listening.")
    ] = None,
    *,
    overrides: Overrides,
) -> None:
    """Serve a bundle's tails over ZeroMQ until SIGINT or SIGTERM.

    Requests queue up to --queue-size; beyond that the node answers `busy` at
    once with its expected delay, and the edge runs the request itself.
    Concurrent requests for the same cut are batched into one backend call.
    Edges report to the fleet view (`edgesplit fleet status`) with every
    heartbeat; with --offer, a share of them is offered a new release, which
    they download, verify, try on probation and keep or roll back.
    """
    from edgesplit.app.cloud import build_cloud, describe_backend
    from edgesplit.metrics import serve_metrics

    given = dict(overrides)
    if ray is not None:
        given["ray.enabled"] = True
        given["ray.address"] = ray
    cfg = load(config, given, insecure)
    tier = build_cloud(cfg, console)
    node, candidate, c, served = tier.node, tier.candidate, cfg.cloud, tier.bundle
    metrics = None
    with node, tier.staging:
        signal.signal(signal.SIGTERM, lambda *_: node.stop())
        signal.signal(signal.SIGINT, lambda *_: node.stop())
        if cfg.metrics.port:
            metrics = serve_metrics(node.metrics.registry, cfg.metrics.port, cfg.metrics.address)
        console.print(
            f"cloud node: bundle {served.id[:12]} ({served.manifest.model.name}), backend "
            f"{describe_backend(tier.backend)}, listening on {node.endpoint}, {tier.security}, "
            f"queue {c.queue_size}, batch <= {c.max_batch} rows, {tier.workers} worker(s)"
            + (f", metrics {metrics.url}" if metrics else "")
        )
        if candidate is not None:
            console.print(
                f"rollout: release {candidate.release.version} (bundle "
                f"{candidate.bundle.id[:12]}, {candidate.size / 1e6:.1f} MB"
                f"{', signed' if candidate.release.signature else ', unsigned'}) offered to "
                f"{tier.fleet.fraction:.0%} of the edges"
                + (f" from {candidate.url}" if candidate.url else " over ZeroMQ")
            )
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(node.endpoint or "")
            tmp.replace(ready_file)
        try:
            node.serve_forever()
        finally:
            if metrics is not None:
                metrics.close()
    console.print(f"cloud node stopped: {dict(sorted(node.counts.items()))}")


