"""Shared plumbing of the commands: build a bundle, run the edge over inputs, show results.

The CLI (``edgesplit.app.cli``) parses flags and calls these; the demo chains
them. The offline side (profiling, partitioning) lives in
:mod:`edgesplit.app.offline`, so the runtime commands never load it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from edge_node.head import HeadRunner
from edge_node.inputs import InputSource, open_inputs
from edge_node.node import EdgeConfig, EdgeNode, Outcome
from edge_node.power import detect_monitor
from edge_node.report import RunSummary, summarize
from edge_node.transport import CloudClient
from edge_node.update import committed_bundle
from edgesplit.app.tables import cut_table, startup_table, summary_table
from edgesplit.bundle import Bundle, Manifest
from edgesplit.config import Config
from edgesplit.errors import ConfigError, TransportError
from edgesplit.progress import progress_bar
from edgesplit.providers import options_by_provider, report_providers, resolve_providers
from edgesplit.security import KeyPair
from offload_policy import (
    AdaptivePolicy,
    Battery,
    Decision,
    FixedPolicy,
    Observation,
    PolicyConfig,
    best_static_decision,
    default_accuracy_floor,
)

log = logging.getLogger(__name__)


def choose_decision(
    manifest: Manifest,
    cut: str,
    codec: str,
    threshold: float | None,
    bandwidth_bps: float,
    rtt_s: float,
) -> Decision:
    """The decision for ``--cut``: a cut id, or ``auto`` for the fastest at the assumed link."""
    if codec not in manifest.codecs:
        raise ConfigError(
            f"--codec {codec}: not measured for this bundle; measured: {', '.join(manifest.codecs)}"
        )
    if threshold is not None and manifest.calibration is not None:
        manifest.calibration.threshold_index(threshold)
    if cut == "auto":
        return best_static_decision(manifest, Observation(bandwidth_bps, rtt_s), codec, threshold)
    if cut == "after-exits":
        return Decision(cut_after_exits(manifest), threshold, codec)
    ids = [c.id for c in manifest.cuts]
    if cut not in ids:
        raise ConfigError(
            f"--cut {cut}: not a cut of this bundle; cuts: auto, after-exits, {', '.join(ids)}"
        )
    return Decision(cut, threshold, codec)


def cut_after_exits(manifest: Manifest) -> str:
    """The cut where the deepest exit branches off: all exits on the edge, the rest offloaded."""
    cuts = [
        c for c in manifest.cuts if c.kind != "output" and len(c.exits) == len(manifest.model.exits)
    ]
    if not manifest.model.exits or not cuts:
        raise ConfigError("--cut after-exits: this model has no early exits")
    return cuts[0].id


@dataclass
class EdgeRun:
    """What ``edgesplit edge`` (and the demo) runs: the config plus what the CLI resolved.

    Attributes:
        cfg: the loaded :class:`edgesplit.config.Config`.
        keys: this edge's CURVE key pair (``None``: plaintext, loopback only).
        server_key: the cloud's CURVE public key.
        security: one line for the start-up report.
        rtt_s: RTT the policy is told (``None``: measured).
        fixed_bandwidth: tell the policy the configured bandwidth throughout.
        inputs: inputs already loaded (``None``: from ``cfg.edge.inputs``).
        bundle: the bundle already loaded (``None``: from ``cfg.edge.bundle``).
        stop: set (by SIGTERM, say) to stop reading inputs; requests in flight are
            still answered and the summary and results are written.
    """

    cfg: Any
    keys: Any = None
    server_key: bytes | None = None
    security: str = ""
    rtt_s: float | None = None
    fixed_bandwidth: bool = False
    inputs: InputSource | None = None
    bundle: Bundle | None = None
    stop: threading.Event | None = None


def run_edge_session(run: EdgeRun, console: Console) -> RunSummary:
    """Set up the edge node from ``run``, pair, classify every input, print and save results.

    A cloud that does not answer at start is marked down: the edge answers
    locally and probes it with backoff.
    """
    from edgesplit.metrics import serve_metrics

    cfg = run.cfg
    e, p = cfg.edge, cfg.policy
    bundle, base, committed = _edge_bundle(run, console)
    inputs = run.inputs or open_inputs(e.inputs, bundle, e.samples)
    m = bundle.manifest
    threshold = p.threshold
    if p.codec not in m.codecs:
        raise ConfigError(
            f"--codec {p.codec}: not measured for this bundle; measured: {', '.join(m.codecs)}"
        )
    providers = resolve_providers(e.providers)
    if e.engine_cache is not None:
        e.engine_cache.mkdir(parents=True, exist_ok=True)
    options = options_by_provider(providers, e.engine_cache, e.fp16)
    runner = HeadRunner(bundle, providers, e.threads, options)
    power = detect_monitor(e.power, simulated=Battery(e.battery_capacity_wh, e.battery_level))
    config = EdgeConfig(
        timeout_s=e.timeout_ms / 1e3,
        backoff_s=e.backoff_ms / 1e3,
        max_backoff_s=e.max_backoff_ms / 1e3,
        bandwidth_bps=p.bandwidth_mbps * 1e6,
        fixed_bandwidth=run.fixed_bandwidth,
        rtt_s=run.rtt_s,
        estimator=p.estimator,
        pipeline_depth=e.pipeline_depth,
        slo_s=None if p.slo_ms is None else p.slo_ms / 1e3,
        accuracy_floor=_accuracy_floor(m, p),
        radio=p.radio,
        device=p.device,
        corrections=p.corrections,
    )
    client = CloudClient(e.connect, keys=run.keys, server_key=run.server_key) if e.connect else None
    metrics_server = None
    try:
        placeholder = FixedPolicy(Decision(m.edge_only.id, threshold, p.codec), m.edge_only.id)
        node = EdgeNode(bundle, placeholder, client, config, runner, power=power)
        backend = _pair(node, console)
        decision = None
        rtt = node.observe(0.0).rtt_s
        policy_config = PolicyConfig(
            radio=p.radio, device=p.device, capacity_wh=e.battery_capacity_wh
        )

        def make_policy(b: Bundle) -> Any:
            manifest = b.manifest
            if p.name == "fixed":
                chosen = choose_decision(
                    manifest, p.cut, p.codec, threshold, config.bandwidth_bps, rtt
                )
                return FixedPolicy(chosen, manifest.edge_only.id)
            return AdaptivePolicy(manifest, policy_config)

        policy = make_policy(bundle)
        node.set_policy(policy)
        if p.name == "fixed":
            decision = policy.decision
            console.print(cut_table(m, p.codec, threshold, config.bandwidth_bps, rtt, decision.cut))
            node.runner.warm([m.cut(decision.cut), m.edge_only])
        else:
            node.runner.warm(m.cuts)
        if client is not None:
            node.updater = _updater(
                run,
                committed,
                base,
                lambda b: HeadRunner(b, providers, e.threads, options),
                make_policy,
            )
        if cfg.metrics.port:
            metrics_server = serve_metrics(
                node.metrics.registry, cfg.metrics.port, cfg.metrics.address
            )
        report = report_providers(providers, next(iter(node.runner.sessions()), None))
        console.print(
            startup_table(
                node,
                inputs,
                report.describe(),
                power.describe(),
                run,
                backend,
                None if metrics_server is None else metrics_server.url,
            )
        )
        outcomes, summary = run_edge(node, inputs, console, run.stop)
    finally:
        if client is not None:
            client.close()
        if metrics_server is not None:
            metrics_server.close()
    rtt = node.measured_rtt_s if run.rtt_s is None else run.rtt_s
    console.print(summary_table(summary, decision, m, config.bandwidth_bps, rtt, node))
    if e.results is not None:
        write_outcomes(e.results, outcomes, inputs.labels)
        console.print(f"per-request results: {e.results}")
    return summary


def _edge_bundle(run: EdgeRun, console: Console) -> tuple[Bundle, str, Any]:
    """The bundle to serve, the configured one's id, and the update committed if served.

    The bundle given, else the one an update committed over the configured one,
    else the configured one.
    """
    from edgesplit.bundle import load_bundle, verify_files

    cfg = run.cfg
    if run.bundle is not None:
        return run.bundle, run.bundle.id, None
    # Its manifest for its id; its files are hashed only if it is the one served (a
    # committed bundle is hashed when it is loaded).
    configured = load_bundle(cfg.edge.bundle, verify="none")
    committed = None
    if cfg.edge.connect and cfg.update.enabled:
        committed = committed_bundle(cfg.update.state_dir.expanduser(), base=configured.id)
    if committed is None:
        verify_files(configured, configured.files_for("edge"))
        return configured, configured.id, None
    console.print(
        f"serving bundle {committed[0].id[:12]} (release {committed[1]}), committed by an "
        f"update in {cfg.update.state_dir}"
    )
    return committed[0], configured.id, committed


def _updater(run: EdgeRun, committed: Any, base: str, make_runner: Any, make_policy: Any) -> Any:
    """The edge's heartbeat and over-the-air updates, from the ``[update]`` config."""
    import socket

    from edge_node.update import UpdateConfig, Updater
    from edgesplit.release import load_verify_key

    cfg = run.cfg
    u = cfg.update
    config = UpdateConfig(
        state_dir=u.state_dir.expanduser(),
        name=u.name or socket.gethostname(),
        interval_s=u.interval_s,
        probation_s=u.probation_s,
        min_requests=u.min_requests,
        max_error_increase=u.max_error_increase,
        max_latency_ratio=u.max_latency_ratio,
        verify_keys=None if u.verify_key is None else (load_verify_key(u.verify_key),),
        accept=u.enabled,
        base=base,
        base_root=cfg.edge.bundle if run.bundle is None else run.bundle.root,
        download_bps=None if u.download_mbps is None else u.download_mbps * 1e6,
        allow_downgrade=u.allow_downgrade,
    )
    version = committed[1] if committed else ""
    return Updater(
        config,
        version,
        lambda: CloudClient(cfg.edge.connect, keys=run.keys, server_key=run.server_key),
        make_runner,
        make_policy,
    )


def _accuracy_floor(manifest: Manifest, p: Any) -> float:
    """The accuracy floor in force: as configured, else the whole model's less one point.

    With no floor the policy would trade accuracy for speed (lower exit
    thresholds, lossy codecs); by default it keeps the model's accuracy within
    a point. ``0`` allows any trade.
    """
    if p.accuracy_floor is not None:
        return float(p.accuracy_floor)
    return default_accuracy_floor(manifest)


def _pair(node: EdgeNode, console: Console) -> str | None:
    """Ping the cloud and check its bundle; a silent cloud is marked down, not fatal."""
    if node.client is None:
        return None
    try:
        backend = node.check_cloud()
    except TransportError as exc:
        node.health.failed(time.monotonic())
        console.print(f"[yellow]warning:[/yellow] {exc}; answering on the edge and probing")
        return None
    console.print(
        f"paired with cloud {node.client.endpoint} (backend {backend}, bundle "
        f"{node.bundle.id[:12]}, ping {node.measured_rtt_s * 1e3:.3f} ms)"
    )
    return backend


def write_outcomes(path: Path, outcomes: Sequence[Outcome], labels: np.ndarray | None) -> None:
    """One JSON object per request: the outcome's fields plus the label when known."""
    with path.open("w", encoding="utf-8") as fh:
        for i, outcome in enumerate(outcomes):
            row = asdict(outcome)
            row["prediction"] = outcome.prediction.tolist()
            row["label"] = None if labels is None else int(labels[i])
            fh.write(json.dumps(row) + "\n")


def run_edge(
    node: EdgeNode, inputs: InputSource, console: Console, stop: threading.Event | None = None
) -> tuple[list[Outcome], RunSummary]:
    """Answer every input with a live progress bar; return outcomes and their summary.

    A stream (a video, a camera) is consumed as it is read. Once ``stop`` is set
    no more inputs are read; those already taken are answered.
    """
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    total = inputs.count

    def batches() -> Iterator[np.ndarray]:
        for batch in inputs.batches():
            if stop is not None and stop.is_set():
                log.warning("stopping: no more inputs read; answering those in flight")
                return
            yield batch

    with progress_bar(console) as bar:
        task = bar.add_task("classify", total=total, status="")
        for i, outcome in enumerate(node.stream(batches())):
            outcomes.append(outcome)
            if i % 25 == 0 or (total is not None and i == total - 1):
                counts = " ".join(f"{k}={v}" for k, v in sorted(node.counts.items()))
                bar.update(task, completed=i + 1, status=counts)
    return outcomes, summarize(outcomes, inputs.labels, time.perf_counter() - started)


def edge_security(cfg: Config, connect: str) -> tuple[KeyPair | None, bytes | None, str]:
    """(key pair, server public key, description) for the edge."""
    from edgesplit.config_load import check_security
    from edgesplit.security import load_keypair, load_public_key

    sec = cfg.security
    check_security(connect, sec)
    if not sec.curve:
        return None, None, "CURVE off (--insecure, loopback only)"
    if sec.secret_key is None or sec.server_key is None:
        raise ConfigError(
            "CURVE is on: give --secret-key (this edge's NAME.key_secret) and --server-key "
            "(the cloud's NAME.key), create them with `edgesplit keys`, or pass --insecure "
            "on a loopback endpoint"
        )
    return load_keypair(sec.secret_key), load_public_key(sec.server_key), "CURVE on"
