"""``edgesplit edge``: classify inputs on the device, offloading tails when it pays.

The flags of the settings come from their declaration (:mod:`edgesplit.app.flags`);
the node is assembled and run by :mod:`edgesplit.app.edge`.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from edgesplit.app.common import ConfigOption, InsecureOption, console, load
from edgesplit.app.flags import Overrides, with_settings

app = typer.Typer()


@app.command()
@with_settings("edge")
def edge(
    config: ConfigOption = None,
    fixed_bandwidth: Annotated[
        bool,
        typer.Option(
            "--fixed-bandwidth",
            help="Tell the policy --bandwidth-mbps throughout instead of the live estimate.",
        ),
    ] = False,
    rtt_ms: Annotated[
        float | None,
        typer.Option(help="Round-trip time the policy assumes, ms (default: measured)."),
    ] = None,
    insecure: InsecureOption = False,
    *,
    overrides: Overrides,
) -> None:
    """Classify inputs on the edge, offloading tails to a cloud node when it pays.

    Every request gets an answer: when the cloud is slow, busy, unreachable or
    refuses, the edge finishes the request locally and probes the cloud with
    exponential backoff. Prints what each monitor reads at start and a
    summary at the end. With a cloud, the edge reports to its fleet view and
    takes the bundle it assigns: verified, switched between requests, watched
    on probation and rolled back if its error rate or latency regress.
    """
    from edgesplit.app.edge import EdgeRun, bundle_dir, edge_security, run_edge_session

    cfg = load(config, overrides, insecure)
    bundle_dir(cfg)  # the missing bundle is said before the missing keys
    keys, server, security = (
        edge_security(cfg, cfg.edge.connect) if cfg.edge.connect else (None, None, "no cloud")
    )
    # SIGTERM (systemctl stop, a pod's deletion) and SIGINT stop reading inputs; the
    # requests taken are answered and the summary and results written before exit.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_edge_session(
        EdgeRun(
            cfg,
            keys=keys,
            server_key=server,
            security=security,
            rtt_s=None if rtt_ms is None else rtt_ms / 1e3,
            fixed_bandwidth=fixed_bandwidth,
            stop=stop,
        ),
        console,
    )
