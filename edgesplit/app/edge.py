"""The edge node, assembled from a typed config and run over its inputs.

``edgesplit edge`` and the demo describe a run (:class:`EdgeRun`: the config and
what the command resolved, such as keys) and call :func:`run_edge_session`: it
loads the bundle (or the one an update committed), the head runner on the
resolved execution providers, the power monitor, the policy and the updater,
pairs with the cloud, answers every input and prints the start-up table and
the summary. The runtime configs come from the settings through
``edge_node.config`` (``edge_config``, ``update_config``), once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console

from edge_node.bundle_store import committed_bundle
from edge_node.cloud_watch import Pairing, pair
from edge_node.config import UpdateConfig, edge_config, update_config
from edge_node.head import HeadRunner
from edge_node.inputs import InputSource, open_inputs
from edge_node.metrics import EdgeMetrics
from edge_node.node import EdgeNode, Outcome, Policy
from edge_node.power import detect_monitor
from edge_node.report import RunSummary, summarize
from edge_node.transport import CloudClient
from edge_node.update import Updater
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

    cfg: Config
    keys: KeyPair | None = None
    server_key: bytes | None = None
    security: str = ""
    rtt_s: float | None = None
    fixed_bandwidth: bool = False
    inputs: InputSource | None = None
    bundle: Bundle | None = None
    stop: threading.Event | None = None


@dataclass
class EdgeAssembly:
    """An edge node ready to run, and what the start-up and summary tables show.

    Attributes:
        node: the node, built with its real policy, updater and pairing.
        inputs: what it answers.
        client: its cloud connection (``None``: edge only); close it after the run.
        decision: the fixed policy's decision (``None``: the adaptive policy).
        providers: the execution providers the head sessions really got, described.
        backend: the cloud's backend as pairing read it (``None``: not answering).
        updates: the updater's config (``None``: no updates).
        power: the power monitor, described.
    """

    node: EdgeNode
    inputs: InputSource
    client: CloudClient | None
    decision: Decision | None
    providers: str
    backend: str | None
    updates: UpdateConfig | None
    power: str


def build_edge(run: EdgeRun, console: Console) -> EdgeAssembly:
    """The edge node ``run`` describes: bundle, heads, power monitor, policy, updater, pairing.

    A cloud that does not answer at start is marked down: the edge answers
    locally and probes it with backoff. ``console`` shows the pairing and, for a
    fixed policy, the cut table.
    """
    cfg = run.cfg
    e, p = cfg.edge, cfg.policy
    bundle, base, committed = _edge_bundle(run, console)
    inputs = run.inputs or open_inputs(e.inputs, bundle, e.samples)
    m = bundle.manifest
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
    config = edge_config(e, p, m, rtt_s=run.rtt_s, fixed_bandwidth=run.fixed_bandwidth)
    client = CloudClient(e.connect, keys=run.keys, server_key=run.server_key) if e.connect else None
    try:
        pairing = _pair(client, bundle, console)
        # The RTT the policy is told: as configured, else the one pairing measured.
        rtt = run.rtt_s if run.rtt_s is not None else (pairing.rtt_s if pairing else 0.0)
        policy_config = PolicyConfig(
            radio=p.radio, device=p.device, capacity_wh=e.battery_capacity_wh
        )

        def make_policy(b: Bundle) -> FixedPolicy | AdaptivePolicy:
            manifest = b.manifest
            if p.name == "fixed":
                chosen = choose_decision(
                    manifest, p.cut, p.codec, p.threshold, config.bandwidth_bps, rtt
                )
                return FixedPolicy(chosen, manifest.edge_only.id)
            return AdaptivePolicy(manifest, policy_config)

        policy = make_policy(bundle)
        decision = None
        if isinstance(policy, FixedPolicy):
            decision = policy.decision
            console.print(
                cut_table(m, p.codec, p.threshold, config.bandwidth_bps, rtt, decision.cut)
            )
            runner.warm([m.cut(decision.cut), m.edge_only])
        else:
            runner.warm(m.cuts)
        metrics = EdgeMetrics()
        updater = None
        if client is not None:
            updater = _updater(
                run,
                committed,
                base,
                client,
                metrics,
                lambda b: HeadRunner(b, providers, e.threads, options),
                make_policy,
            )
        node = EdgeNode(
            bundle,
            policy,
            client,
            config,
            runner,
            power=power,
            metrics=metrics,
            updater=updater,
            pairing=pairing,
        )
        if client is not None and pairing is None:
            node.health.failed(node.clock())  # silent: answer on the edge, probe with backoff
        report = report_providers(providers, next(iter(node.runner.sessions()), None))
    except BaseException:
        if client is not None:
            client.close()
        raise
    return EdgeAssembly(
        node,
        inputs,
        client,
        decision,
        report.describe(),
        None if pairing is None else pairing.backend,
        None if updater is None else updater.config,
        power.describe(),
    )


def run_edge_session(run: EdgeRun, console: Console) -> RunSummary:
    """Build the edge node from ``run``, classify every input, print and save results."""
    from edgesplit.metrics import serve_metrics

    cfg = run.cfg
    edge = build_edge(run, console)
    node, inputs, m = edge.node, edge.inputs, edge.node.bundle.manifest
    metrics_server = None
    try:
        if cfg.metrics.port:
            metrics_server = serve_metrics(
                node.metrics.registry, cfg.metrics.port, cfg.metrics.address
            )
        console.print(
            startup_table(
                node,
                inputs,
                edge.providers,
                edge.power,
                run.security,
                cfg.policy.accuracy_floor is None,
                edge.backend,
                None if metrics_server is None else metrics_server.url,
                updates=edge.updates,
            )
        )
        outcomes, summary = run_edge(node, inputs, console, run.stop)
    finally:
        if edge.client is not None:
            edge.client.close()
        if metrics_server is not None:
            metrics_server.close()
    rtt = node.measured_rtt_s if run.rtt_s is None else run.rtt_s
    console.print(
        summary_table(summary, edge.decision, m, node.config.bandwidth_bps, rtt, node)
    )
    if cfg.edge.results is not None:
        write_outcomes(cfg.edge.results, outcomes, inputs.labels)
        console.print(f"per-request results: {cfg.edge.results}")
    return summary


def _edge_bundle(run: EdgeRun, console: Console) -> tuple[Bundle, str, tuple[Bundle, str] | None]:
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
    configured = load_bundle(bundle_dir(cfg), verify="none")
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


def _updater(
    run: EdgeRun,
    committed: tuple[Bundle, str] | None,
    base: str,
    client: CloudClient,
    metrics: EdgeMetrics,
    make_runner: Callable[[Bundle], HeadRunner],
    make_policy: Callable[[Bundle], Policy],
) -> Updater:
    """The edge's heartbeat and over-the-air updates, from the ``[update]`` config."""
    cfg = run.cfg
    base_root = cfg.edge.bundle if run.bundle is None else run.bundle.root
    endpoint = client.endpoint
    return Updater(
        update_config(cfg.update, base=base, base_root=base_root),
        committed[1] if committed else "",
        lambda: CloudClient(endpoint, keys=run.keys, server_key=run.server_key),
        make_runner,
        make_policy,
        client=client,
        metrics=metrics,
    )


def _pair(client: CloudClient | None, bundle: Bundle, console: Console) -> Pairing | None:
    """Ping the cloud and check its bundle; a silent cloud is not fatal (``None``)."""
    if client is None:
        return None
    try:
        pairing = pair(client, bundle.id)
    except TransportError as exc:
        console.print(f"[yellow]warning:[/yellow] {exc}; answering on the edge and probing")
        return None
    console.print(
        f"paired with cloud {client.endpoint} (backend {pairing.backend}, bundle "
        f"{bundle.id[:12]}, ping {pairing.rtt_s * 1e3:.3f} ms)"
    )
    return pairing


def describe_output(value: np.ndarray) -> dict[str, object]:
    """One output of one answer, for the results file: its values if small, else a summary."""
    array = np.asarray(value)
    described: dict[str, object] = {"shape": list(array.shape), "dtype": array.dtype.name}
    if array.size <= 64:
        described["values"] = array.tolist()
    elif array.size:
        described.update(min=float(array.min()), max=float(array.max()), mean=float(array.mean()))
    return described


def write_outcomes(path: Path, outcomes: Sequence[Outcome], labels: np.ndarray | None) -> None:
    """One JSON object per request: the outcome's fields plus the label when known."""
    with path.open("w", encoding="utf-8") as fh:
        for i, outcome in enumerate(outcomes):
            row = asdict(replace(outcome, outputs={}))
            row["prediction"] = outcome.prediction.tolist()
            row["outputs"] = {name: describe_output(v) for name, v in outcome.outputs.items()}
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

    def batches() -> Iterator[np.ndarray | dict[str, np.ndarray]]:
        for batch in inputs.batches():
            if stop is not None and stop.is_set():
                log.warning("stopping: no more inputs read; answering those in flight")
                return
            yield batch

    with progress_bar(console) as bar:
        task = bar.add_task("answer", total=total, status="")
        for i, outcome in enumerate(node.stream(batches())):
            outcomes.append(outcome)
            if i % 25 == 0 or (total is not None and i == total - 1):
                counts = " ".join(f"{k}={v}" for k, v in sorted(node.counts.items()))
                bar.update(task, completed=i + 1, status=counts)
    return outcomes, summarize(outcomes, inputs.labels, time.perf_counter() - started)


def bundle_dir(cfg: Config) -> Path:
    """The configured bundle directory; ConfigError when there is none."""
    if cfg.edge.bundle is None:
        raise ConfigError("no bundle: give --bundle DIR (or [edge] bundle in the config)")
    return cfg.edge.bundle


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
