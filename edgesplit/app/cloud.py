"""The cloud tier, assembled from a typed config: ``edgesplit cloud`` builds it here.

:func:`build_cloud` loads and checks the bundle, the keys, the tail backend (the
embedded ONNX Runtime, a Triton server, or Ray Serve replicas running either),
the fleet view and a release on offer, and returns the node ready to serve;
:func:`cloud_config` and :func:`ray_tier_config` are the one place each
runtime's frozen config is made from the settings.
"""

from __future__ import annotations

import contextlib
import tempfile
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

import wire
from cloud_node.backends import TailBackend
from cloud_node.fleet import Candidate, Fleet
from cloud_node.guard import GuardLimits
from cloud_node.ray_config import RayTierConfig
from cloud_node.server import CloudConfig, CloudNode
from edgesplit.bundle import Bundle, load_bundle
from edgesplit.config import Config
from edgesplit.config_load import check_security
from edgesplit.errors import ConfigError, UpdateError
from edgesplit.security import KeyPair, load_allowed, load_keypair


@dataclass
class CloudTier:
    """A cloud node ready to serve, and what it was built from.

    Attributes:
        node: the node (enter it, then ``serve_forever``).
        bundle: the stable bundle it serves.
        backend: what runs the stable bundle's tails.
        fleet: the fleet view (and the rollout, if a release is on offer).
        candidate: the release on offer, or None.
        staging: where the offered release is unpacked; close it after the node.
        security: one line on CURVE for the start-up message.
        workers: the threads running backend calls.
    """

    node: CloudNode
    bundle: Bundle
    backend: TailBackend
    fleet: Fleet
    candidate: Candidate | None
    staging: AbstractContextManager[object]
    security: str
    workers: int


def build_cloud(cfg: Config, console: Console) -> CloudTier:
    """The cloud node ``cfg`` describes; ``console`` shows the slow steps (a Ray start-up)."""
    c = cfg.cloud
    if c.bundle is None:
        raise ConfigError("no bundle: give --bundle DIR (or [cloud] bundle in the config)")
    bundle = load_bundle(c.bundle, verify="cloud")
    keys, allowed, security = _security(cfg, c.bind)
    backend = _backend(bundle, cfg, console)
    fleet, candidate, candidate_backend, staging = _fleet(bundle, cfg, console)
    workers = c.workers
    if cfg.ray.enabled and cfg.source_of("cloud", "workers") == "default":
        # One dispatcher per request the replicas can hold, so Serve sees the real load.
        workers = ray_tier_config(cfg).dispatchers
    node = CloudNode(
        bundle,
        backend,
        cloud_config(cfg, keys, allowed, workers),
        fleet=fleet,
        admins=frozenset(cfg.fleet.admins) if cfg.security.curve else None,
    )
    if candidate is not None and candidate_backend is not None:
        node.serve_bundle(candidate.bundle, candidate_backend)
    return CloudTier(node, bundle, backend, fleet, candidate, staging, security, workers)


def cloud_config(
    cfg: Config, keys: KeyPair | None, allowed: dict[bytes, str] | None, workers: int
) -> CloudConfig:
    """The node's frozen config from ``[cloud]`` (units converted here, once)."""
    c = cfg.cloud
    max_bytes = int(c.max_message_mb * 1e6)
    return CloudConfig(
        bind=c.bind,
        limits=wire.Limits(max_tensor_bytes=max_bytes, max_total_bytes=max_bytes),
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
    )


def _security(cfg: Config, bind: str) -> tuple[KeyPair | None, dict[bytes, str] | None, str]:
    """(key pair, allowed keys, description) for the cloud; CURVE unless explicitly off."""
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


def _fleet(
    bundle: Bundle, cfg: Config, console: Console
) -> tuple[Fleet, Candidate | None, TailBackend | None, AbstractContextManager[object]]:
    """The fleet view, and the release on offer: its unpacked bundle and tail backend.

    The full release is unpacked with every file checked; the release for edges
    (no tail) is derived from it in the staging directory, the very bytes
    ``edgesplit release`` wrote beside it, and is all that edges are offered.
    The release's tails run in the embedded ONNX Runtime backend whatever serves
    the stable bundle (a Triton repository or a Ray deployment holds one bundle's
    tails under fixed names); a promoted release becomes the stable bundle of the
    next deployment.
    """
    from cloud_node.backends import OnnxRuntimeBackend
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


def _backend(bundle: Bundle, cfg: Config, console: Console) -> TailBackend:
    c = cfg.cloud
    if cfg.ray.enabled:
        return _ray_backend(bundle, cfg, console)
    from cloud_node.backends import make_backend

    return make_backend(
        bundle, c.backend, c.providers, c.threads, c.triton_url, c.triton_timeout_ms / 1e3
    )


def ray_tier_config(cfg: Config) -> RayTierConfig:
    """The Ray tier's frozen config from ``[ray]`` and ``[cloud]`` (units converted once)."""
    c, r = cfg.cloud, cfg.ray
    return RayTierConfig(
        address=None if r.address == "local" else r.address,
        num_cpus=r.num_cpus,
        app=r.app,
        replica_cpus=r.replica_cpus,
        replica_gpus=r.replica_gpus,
        min_replicas=r.min_replicas,
        max_replicas=r.max_replicas,
        target_ongoing_requests=r.target_ongoing_requests,
        max_ongoing_requests=r.max_ongoing_requests,
        upscale_delay_s=r.upscale_delay_s,
        downscale_delay_s=r.downscale_delay_s,
        backend=c.backend,
        providers=tuple(c.providers),
        threads=c.threads,
        triton_url=c.triton_url,
        triton_timeout_s=c.triton_timeout_ms / 1e3,
        bundle_path=r.bundle_path,
        start_timeout_s=r.start_timeout_s,
        request_timeout_s=r.request_timeout_s,
    )


def _ray_backend(bundle: Bundle, cfg: Config, console: Console) -> TailBackend:
    from cloud_node.ray_tier import RayBackend

    r = cfg.ray
    where = r.address if r.address != "local" else "a new local cluster"
    with console.status(f"starting the tail deployment on Ray ({where})..."):
        return RayBackend(bundle, ray_tier_config(cfg))


def describe_backend(backend: TailBackend) -> str:
    """The backend's name, with what runs its tails (an execution provider, a server)."""
    return f"{backend.name} ({backend.provider})" if backend.provider else backend.name


