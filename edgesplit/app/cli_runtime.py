"""The runtime commands: ``edgesplit cloud``, ``edgesplit edge``, ``edgesplit keys``, ``config``.

Every setting comes from one place (:mod:`edgesplit.config`): defaults, then
a TOML file (``--config``), then ``EDGESPLIT_<SECTION>_<KEY>`` environment
variables, then the flags given here. Flags left out do not override.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from edgesplit.app.cli import BUNDLE_HELP, CODEC_HELP, app, console
from edgesplit.errors import ConfigError

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (see `edgesplit config --default`); flags override it.",
    ),
]
MetricsPortOption = Annotated[
    int | None, typer.Option(help="Serve Prometheus metrics on this port (0: off).")
]
LogLevelOption = Annotated[
    str | None, typer.Option(help="Log level: debug, info, warning or error.")
]
LogFormatOption = Annotated[
    str | None, typer.Option(help="Log lines as `text` or `json` (structured).")
]
SecretKeyOption = Annotated[
    Path | None,
    typer.Option(help="This node's CURVE key pair file (NAME.key_secret from `edgesplit keys`)."),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Turn CURVE encryption off; refused unless the endpoint is loopback.",
    ),
]
ProvidersOption = Annotated[
    str | None,
    typer.Option(
        help="ONNX Runtime execution providers in order of preference, comma-separated "
        "(tensorrt, cuda, openvino, cpu); unavailable ones are skipped."
    ),
]


def _load(path: Path | None, overrides: dict[str, Any], insecure: bool) -> Any:
    """The config from file, environment and flags (``None`` flags do not override)."""
    from edgesplit.config import load_config

    if insecure:
        overrides["security.curve"] = False
        overrides["security.insecure"] = True
    return load_config(path, overrides={k: v for k, v in overrides.items() if v is not None})


def _providers(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise ConfigError("--providers: give at least one provider, e.g. cpu")
    return names


def _logging(cfg: Any) -> None:
    from edgesplit.logs import configure_logging

    configure_logging(cfg.logging.level, cfg.logging.format)


def _cloud_security(cfg: Any, bind: str) -> tuple[Any, dict[bytes, str] | None, str]:
    """(key pair, allowed keys, description) for the cloud; CURVE unless explicitly off."""
    from edgesplit.config import check_security
    from edgesplit.security import load_allowed, load_keypair

    sec = cfg.security
    check_security(bind, sec)
    if not sec.curve:
        return None, None, "CURVE off (--insecure, loopback only)"
    if sec.secret_key is None or sec.allowed_clients is None:
        raise ConfigError(
            "CURVE is on: give --secret-key (the cloud's NAME.key_secret) and --allowed-clients "
            "(a directory of the edges' NAME.key files), create them with `edgesplit keys`, "
            "or pass --insecure on a loopback endpoint"
        )
    keys = load_keypair(sec.secret_key)
    allowed = load_allowed(sec.allowed_clients)
    return keys, allowed, f"CURVE on, {len(allowed)} allowed client key(s)"


def _edge_security(cfg: Any, connect: str) -> tuple[Any, bytes | None, str]:
    """(key pair, server public key, description) for the edge."""
    from edgesplit.config import check_security
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


@app.command()
def cloud(
    config: ConfigOption = None,
    bundle: Annotated[Path | None, typer.Option(help=BUNDLE_HELP)] = None,
    bind: Annotated[
        str | None,
        typer.Option(help="ZeroMQ endpoint to bind; tcp://127.0.0.1:* picks a free port."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Tail backend: onnxruntime (embedded, default) or triton (a Triton server "
            "serving the bundle's model repository, see --triton-url)."
        ),
    ] = None,
    triton_url: Annotated[
        str | None, typer.Option(help="Triton gRPC address host:port (with --backend triton).")
    ] = None,
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
    min_replicas: Annotated[
        int | None, typer.Option(help="With --ray: replicas kept when idle.")
    ] = None,
    max_replicas: Annotated[
        int | None,
        typer.Option(help="With --ray: most replicas; above --min-replicas, Serve autoscales."),
    ] = None,
    replica_cpus: Annotated[
        float | None, typer.Option(help="With --ray: CPUs reserved by each replica.")
    ] = None,
    replica_gpus: Annotated[
        float | None, typer.Option(help="With --ray: GPUs reserved by each replica.")
    ] = None,
    providers: ProvidersOption = None,
    threads: Annotated[
        int | None, typer.Option(help="ONNX Runtime intra-op threads (0: its default).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Threads running backend calls.")] = None,
    queue_size: Annotated[
        int | None, typer.Option(help="Requests admitted and waiting; beyond it: busy.")
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option(help="Most rows merged into one backend call.")
    ] = None,
    batch_window_ms: Annotated[
        float | None,
        typer.Option(help="Wait this long for more same-cut requests to batch (0: no wait)."),
    ] = None,
    secret_key: SecretKeyOption = None,
    allowed_clients: Annotated[
        Path | None,
        typer.Option(help="Directory of the allowed edges' public key files (NAME.key)."),
    ] = None,
    insecure: InsecureOption = False,
    metrics_port: MetricsPortOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write the bound endpoint to this file once listening.")
    ] = None,
    offer: Annotated[
        Path | None,
        typer.Option(
            help="Roll this release out to --offer-fraction of the edges: the full archive from "
            "`edgesplit release` (not its .edge.tar); its tails are served beside the stable "
            "bundle's, and edges download the part without them."
        ),
    ] = None,
    offer_fraction: Annotated[
        float | None, typer.Option(help="Share of the edges offered the release, 0..1.")
    ] = None,
    offer_url: Annotated[
        str | None,
        typer.Option(help="Edges download the release from this URL instead of over ZeroMQ."),
    ] = None,
    stable_version: Annotated[
        str | None, typer.Option(help="Label of the stable bundle in the fleet view.")
    ] = None,
    fleet_admins: Annotated[
        str | None,
        typer.Option(help="Comma-separated CURVE key names allowed to change the rollout."),
    ] = None,
) -> None:
    """Serve a bundle's tails over ZeroMQ until SIGINT or SIGTERM.

    Requests queue up to --queue-size; beyond that the node answers `busy` at
    once with its expected delay, and the edge runs the request itself.
    Concurrent requests for the same cut are batched into one backend call.
    Edges report to the fleet view (`edgesplit fleet status`) with every
    heartbeat; with --offer, a share of them is offered a new release, which
    they download, verify, try on probation and keep or roll back.
    """
    import wire
    from cloud_node.guard import GuardLimits
    from cloud_node.server import CloudConfig, CloudNode
    from edgesplit.bundle import load_bundle
    from edgesplit.metrics import serve_metrics

    cfg = _load(
        config,
        {
            "cloud.bundle": bundle,
            "cloud.bind": bind,
            "cloud.backend": backend,
            "cloud.triton_url": triton_url,
            "cloud.providers": _providers(providers),
            "cloud.threads": threads,
            "cloud.workers": workers,
            "cloud.queue_size": queue_size,
            "cloud.max_batch": max_batch,
            "cloud.batch_window_ms": batch_window_ms,
            "ray.enabled": True if ray is not None else None,
            "ray.address": ray,
            "ray.min_replicas": min_replicas,
            "ray.max_replicas": max_replicas,
            "ray.replica_cpus": replica_cpus,
            "ray.replica_gpus": replica_gpus,
            "security.secret_key": secret_key,
            "security.allowed_clients": allowed_clients,
            "fleet.offer": offer,
            "fleet.fraction": offer_fraction,
            "fleet.url": offer_url,
            "fleet.stable_version": stable_version,
            "fleet.admins": None if fleet_admins is None else _names(fleet_admins),
            "metrics.port": metrics_port,
            "logging.level": log_level,
            "logging.format": log_format,
        },
        insecure,
    )
    _logging(cfg)
    c = cfg.cloud
    if c.bundle is None:
        raise ConfigError("no bundle: give --bundle DIR (or [cloud] bundle in the config)")
    b = load_bundle(c.bundle, verify="cloud")
    keys, allowed, security = _cloud_security(cfg, c.bind)
    tail_backend = _backend(b, cfg)
    fleet, candidate, candidate_backend, staging = _fleet(b, cfg)
    workers = c.workers
    if cfg.ray.enabled and cfg.source_of("cloud", "workers") == "default":
        # One dispatcher per request the replicas can hold, so Serve sees the real load.
        workers = tail_backend.config.dispatchers
    max_bytes = int(c.max_message_mb * 1e6)
    limits = wire.Limits(max_tensor_bytes=max_bytes, max_total_bytes=max_bytes)
    node = CloudNode(
        b,
        tail_backend,
        CloudConfig(
            bind=c.bind,
            limits=limits,
            max_batch=c.max_batch,
            queue_size=c.queue_size,
            batch_window_s=c.batch_window_ms / 1e3,
            workers=workers,
            keys=keys,
            allowed=allowed,
            memory=GuardLimits(
                client_bytes=int(min(c.client_budget_mb, c.memory_budget_mb) * 1e6),
                total_bytes=int(c.memory_budget_mb * 1e6),
            ),
        ),
        fleet=fleet,
        admins=frozenset(cfg.fleet.admins) if cfg.security.curve else None,
    )
    if candidate is not None:
        node.serve_bundle(candidate.bundle, candidate_backend)
    metrics = None
    with node, staging:
        signal.signal(signal.SIGTERM, lambda *_: node.stop())
        signal.signal(signal.SIGINT, lambda *_: node.stop())
        if cfg.metrics.port:
            metrics = serve_metrics(node.metrics.registry, cfg.metrics.port, cfg.metrics.address)
        console.print(
            f"cloud node: bundle {b.id[:12]} ({b.manifest.model.name}), backend "
            f"{_describe_backend(tail_backend)}, listening on {node.endpoint}, {security}, "
            f"queue {c.queue_size}, batch <= {c.max_batch} rows, {workers} worker(s)"
            + (f", metrics {metrics.url}" if metrics else "")
        )
        if candidate is not None:
            console.print(
                f"rollout: release {candidate.release.version} (bundle "
                f"{candidate.bundle.id[:12]}, {candidate.size / 1e6:.1f} MB"
                f"{', signed' if candidate.release.signature else ', unsigned'}) offered to "
                f"{fleet.fraction:.0%} of the edges"
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


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _fleet(bundle: Any, cfg: Any) -> tuple[Any, Any, Any, Any]:
    """The fleet view, and the release on offer: its unpacked bundle and tail backend.

    The full release is unpacked with every file checked; the release for edges
    (no tail) is derived from it in the staging directory, the very bytes
    ``edgesplit release`` wrote beside it, and is all that edges are offered.
    The release's tails run in the embedded ONNX Runtime backend whatever serves
    the stable bundle (a Triton repository or a Ray deployment holds one bundle's
    tails under fixed names); a promoted release becomes the stable bundle of the
    next deployment.
    """
    import contextlib
    import tempfile

    from rich.markup import escape

    from cloud_node.backends import OnnxRuntimeBackend
    from cloud_node.fleet import Candidate, Fleet
    from edgesplit.errors import UpdateError
    from edgesplit.providers import resolve_providers
    from edgesplit.release import unpack_release

    f = cfg.fleet
    version = f.stable_version or bundle.id[:12]
    if f.offer is None:
        if cfg.source_of("fleet", "fraction") != "default" or f.url is not None:
            raise ConfigError("--offer-fraction and --offer-url need --offer RELEASE.tar")
        return Fleet(bundle, version), None, None, contextlib.nullcontext()
    if not f.offer.is_file():
        raise ConfigError(f"--offer {f.offer}: no such release archive (see `edgesplit release`)")
    staging = tempfile.TemporaryDirectory(prefix="edgesplit-offer-")
    try:
        try:
            release, unpacked = unpack_release(f.offer, Path(staging.name))
        except UpdateError as exc:
            if not f.offer.name.endswith(".edge.tar"):
                raise
            raise ConfigError(
                f"--offer {f.offer}: the edges' part holds no tail; give the full archive "
                f"from `edgesplit release` ({exc})"
            ) from exc
        if release.bundle_id == bundle.id:
            raise ConfigError(f"--offer {f.offer}: it holds the bundle already served")
        candidate = Candidate.from_archive(
            f.offer, unpacked, f.url, Path(staging.name) / f"{release.bundle_id}.edge.tar"
        )
        if f.url is not None:
            console.print(
                escape(
                    f"rollout: edges download {f.url}: it must be the edge part, sha256 "
                    f"{candidate.sha256}, {candidate.size} bytes (`edgesplit release` wrote it "
                    f"beside {f.offer.name})"
                ),
                soft_wrap=True,
            )
        backend = OnnxRuntimeBackend(
            unpacked, resolve_providers(tuple(cfg.cloud.providers)), cfg.cloud.threads
        )
    except BaseException:
        staging.cleanup()
        raise
    return Fleet(bundle, version, candidate, f.fraction), candidate, backend, staging


def _backend(bundle: Any, cfg: Any) -> Any:
    c = cfg.cloud
    if cfg.ray.enabled:
        return _ray_backend(bundle, cfg)
    from cloud_node.backends import make_backend

    return make_backend(
        bundle, c.backend, c.providers, c.threads, c.triton_url, c.triton_timeout_ms / 1e3
    )


def _ray_backend(bundle: Any, cfg: Any) -> Any:
    import dataclasses

    from cloud_node.ray_tier import RayBackend, RayTierConfig

    c, r = cfg.cloud, cfg.ray
    # [ray] keys named like the tier's fields carry over as they are; the rest is [cloud]'s.
    shared = {f.name for f in dataclasses.fields(RayTierConfig)} & {
        f.name for f in dataclasses.fields(r)
    }
    tier = RayTierConfig(
        **{name: getattr(r, name) for name in shared - {"address"}},
        address=None if r.address == "local" else r.address,
        backend=c.backend,
        providers=tuple(c.providers),
        threads=c.threads,
        triton_url=c.triton_url,
        triton_timeout_s=c.triton_timeout_ms / 1e3,
    )
    where = r.address if r.address != "local" else "a new local cluster"
    with console.status(f"starting the tail deployment on Ray ({where})..."):
        return RayBackend(bundle, tier)


def _describe_backend(backend: Any) -> str:
    extra = getattr(backend, "provider", None) or getattr(backend, "url", None)
    return f"{backend.name} ({extra})" if extra else backend.name


@app.command()
def edge(
    config: ConfigOption = None,
    bundle: Annotated[Path | None, typer.Option(help=BUNDLE_HELP)] = None,
    connect: Annotated[
        str | None,
        typer.Option(
            help="Cloud node endpoint, e.g. tcp://127.0.0.1:5555; omit to run on the edge alone."
        ),
    ] = None,
    inputs: Annotated[
        str | None,
        typer.Option(
            help="`bundle` (the bundle's test set), a directory of .npy or image files, a video "
            "file, or camera:N (video and camera need edgesplit[video])."
        ),
    ] = None,
    samples: Annotated[int | None, typer.Option(help="Classify at most this many inputs.")] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            help="adaptive (re-decides cut, threshold and codec from the live link and battery) "
            "or fixed (--cut, --threshold and --codec throughout)."
        ),
    ] = None,
    cut: Annotated[
        str | None,
        typer.Option(
            help="With --policy fixed: a cut id (see `edgesplit show`), auto (the fastest at "
            "--bandwidth-mbps by the profile) or after-exits."
        ),
    ] = None,
    threshold: Annotated[
        str | None,
        typer.Option(help="With --policy fixed: early-exit confidence, or `off`."),
    ] = None,
    codec: Annotated[str | None, typer.Option(help=CODEC_HELP)] = None,
    bandwidth_mbps: Annotated[
        float | None,
        typer.Option(help="Uplink bandwidth assumed until one is measured, Mbit/s."),
    ] = None,
    fixed_bandwidth: Annotated[
        bool,
        typer.Option(
            "--fixed-bandwidth",
            help="Tell the policy --bandwidth-mbps throughout instead of the live estimate.",
        ),
    ] = False,
    estimator: Annotated[
        str | None,
        typer.Option(
            help="Bandwidth estimator: tracked (default), harmonic, ewma, last or robust."
        ),
    ] = None,
    corrections: Annotated[
        bool | None,
        typer.Option(
            "--corrections/--no-corrections",
            help="Feed measured head and tail times back into the policy (default: on).",
        ),
    ] = None,
    rtt_ms: Annotated[
        float | None,
        typer.Option(help="Round-trip time the policy assumes, ms (default: measured)."),
    ] = None,
    slo_ms: Annotated[float | None, typer.Option(help="Latency objective, ms.")] = None,
    accuracy_floor: Annotated[
        float | None,
        typer.Option(
            help="Lowest predicted accuracy the adaptive policy may choose, 0..1 (default: "
            "the whole model's accuracy less one point; 0 allows any trade)."
        ),
    ] = None,
    timeout_ms: Annotated[
        float | None,
        typer.Option(help="Deadline for the cloud's reply, ms; then the edge finishes locally."),
    ] = None,
    pipeline_depth: Annotated[
        int | None,
        typer.Option(help="Offloads in flight at once (the next head runs meanwhile)."),
    ] = None,
    providers: ProvidersOption = None,
    threads: Annotated[
        int | None, typer.Option(help="ONNX Runtime intra-op threads (0: its default).")
    ] = None,
    power: Annotated[
        str | None,
        typer.Option(
            help="Battery and power source: auto, jetson (INA3221 rails), power_supply, rapl "
            "or simulated."
        ),
    ] = None,
    battery_level: Annotated[
        float | None, typer.Option(help="Starting charge of a simulated battery, 0..1.")
    ] = None,
    secret_key: SecretKeyOption = None,
    server_key: Annotated[
        Path | None, typer.Option(help="The cloud's public key file (NAME.key).")
    ] = None,
    insecure: InsecureOption = False,
    metrics_port: MetricsPortOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
    results: Annotated[
        Path | None, typer.Option(help="Write one JSON line per request to this file.")
    ] = None,
    updates: Annotated[
        bool | None,
        typer.Option(
            "--updates/--no-updates",
            help="Take the bundle the cloud assigns (download, verify, switch, probation, "
            "automatic rollback); --no-updates still reports to the fleet view.",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Where updates are downloaded, staged and committed."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="This edge's name in the fleet view (default: host name).")
    ] = None,
    verify_key: Annotated[
        Path | None,
        typer.Option(
            help="Take only releases signed with this key (NAME.verify_key from "
            "`edgesplit keys --signing`)."
        ),
    ] = None,
    probation_s: Annotated[
        float | None,
        typer.Option(help="Seconds a new bundle is watched, the old one kept, before commit."),
    ] = None,
    download_mbps: Annotated[
        float | None,
        typer.Option(help="Most Mbit/s an update's download may take (default: no cap)."),
    ] = None,
    allow_downgrade: Annotated[
        bool | None,
        typer.Option(
            "--allow-downgrade/--no-allow-downgrade",
            help="Take a signed release older than the one committed (a rollback the "
            "operator wants; refused by default).",
        ),
    ] = None,
    fp16: Annotated[
        bool | None,
        typer.Option("--fp16/--no-fp16", help="Let TensorRT run the heads in FP16."),
    ] = None,
    engine_cache: Annotated[
        Path | None,
        typer.Option(help="TensorRT/OpenVINO engine cache directory (built once, reused)."),
    ] = None,
) -> None:
    """Classify inputs on the edge, offloading tails to a cloud node when it pays.

    Every request gets an answer: when the cloud is slow, busy, unreachable or
    refuses, the edge finishes the request locally and probes the cloud with
    exponential backoff. Prints what each monitor reads at start and a
    summary at the end. With a cloud, the edge reports to its fleet view and
    takes the bundle it assigns: verified, switched between requests, watched
    on probation and rolled back if its error rate or latency regress.
    """
    from edgesplit.app.runs import EdgeRun, run_edge_session

    overrides = {
        "edge.bundle": bundle,
        "edge.connect": connect,
        "edge.inputs": inputs,
        "edge.samples": samples,
        "edge.timeout_ms": timeout_ms,
        "edge.pipeline_depth": pipeline_depth,
        "edge.providers": _providers(providers),
        "edge.threads": threads,
        "edge.power": power,
        "edge.battery_level": battery_level,
        "edge.results": results,
        "update.enabled": updates,
        "update.state_dir": state_dir,
        "update.name": name,
        "update.verify_key": verify_key,
        "update.probation_s": probation_s,
        "update.download_mbps": download_mbps,
        "update.allow_downgrade": allow_downgrade,
        "edge.fp16": fp16,
        "edge.engine_cache": engine_cache,
        "policy.name": policy,
        "policy.cut": cut,
        "policy.threshold": threshold,
        "policy.codec": codec,
        "policy.bandwidth_mbps": bandwidth_mbps,
        "policy.estimator": estimator,
        "policy.corrections": corrections,
        "policy.slo_ms": slo_ms,
        "policy.accuracy_floor": accuracy_floor,
        "security.secret_key": secret_key,
        "security.server_key": server_key,
        "metrics.port": metrics_port,
        "logging.level": log_level,
        "logging.format": log_format,
    }
    cfg = _load(config, overrides, insecure)
    _logging(cfg)
    if cfg.edge.bundle is None:
        raise ConfigError("no bundle: give --bundle DIR (or [edge] bundle in the config)")
    keys, server, security = (
        _edge_security(cfg, cfg.edge.connect) if cfg.edge.connect else (None, None, "no cloud")
    )
    import threading

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


@app.command()
def keys(
    out: Annotated[Path, typer.Option(help="Directory to write the key files into.")],
    name: Annotated[
        str, typer.Option(help="Key name: writes NAME.key (public) and NAME.key_secret.")
    ],
    signing: Annotated[
        bool,
        typer.Option(
            "--signing",
            help="An Ed25519 release-signing pair instead: NAME.sign_key (for "
            "`edgesplit release --sign-key`) and NAME.verify_key (for the edges' --verify-key).",
        ),
    ] = False,
) -> None:
    """Create a CURVE key pair for a cloud or an edge node, or a release-signing pair.

    The cloud gets its NAME.key_secret and a directory holding each allowed
    edge's public NAME.key; each edge gets its own NAME.key_secret and the
    cloud's public NAME.key. Secret files are written 0600 and never
    overwritten.
    """
    if signing:
        from edgesplit.release import write_signing_keys

        secret_path, public_path = write_signing_keys(out, name)
        console.print(
            f"signing key {secret_path} (keep it where releases are made)\n"
            f"verify key {public_path} (give it to every edge: --verify-key)"
        )
        return
    from edgesplit.security import generate_keys

    public, secret = generate_keys(out, name)
    console.print(f"public key {public} (share it)\nsecret key {secret} (keep it on this node)")


@app.command("config")
def config_command(
    default: Annotated[
        bool, typer.Option("--default", help="Print the fully commented default config file.")
    ] = False,
    check: Annotated[
        Path | None, typer.Option(help="Validate this config file and print the result.")
    ] = None,
) -> None:
    """Print the default config file, or check one (with the environment applied)."""
    from edgesplit.config import load_config, render_default_config

    if check is not None:
        cfg = load_config(check)
        console.print(cfg.to_toml(), highlight=False, markup=False)
        console.print(f"{check}: valid", style="green")
    elif default:
        print(render_default_config(), end="")  # noqa: T201 - the file itself, for a redirect
    else:
        raise ConfigError("give --default (print the default file) or --check FILE")
