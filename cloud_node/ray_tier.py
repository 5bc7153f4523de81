"""The cloud tier on a Ray cluster: tails in Ray Serve replicas behind the ZeroMQ ingress.

The ingress stays the :class:`~cloud_node.server.CloudNode` (validation,
admission, batching, CURVE, metrics); only its backend changes. Its workers
hand each decoded batch to a Ray Serve deployment through a
``DeploymentHandle``; each replica (:class:`TailReplica`) holds the tails
either in-process with ONNX Runtime or as a Triton client, and answers with
the outputs and its own compute time, so the reply's queue time is the real
wait (ingress queue + Serve's queue), not a guess.

The tensors travel to the replica as the edge sent them (quantized,
compressed: ``wire.EncodedTensor``) and are decoded there: the ingress only
checks headers and routes, and the bytes that cross machines between the
ingress and a replica are the wire's, not the decoded activation's. Payloads
are numpy ``uint8`` views, which Ray serializes as out-of-band buffers (large
ones go through the object store without a copy into the call).

Replicas come and go under Ray: Serve's autoscaler adds them on load and
replaces dead ones. A request whose replica died is retried once on another
(or the replacement); if that fails too, it is answered ``busy`` so the edge
runs it itself. Every admitted request is answered exactly once by the
ingress, whatever happened to the replica.

Bounded waits everywhere: an unreachable cluster, a deployment that cannot be
placed (not enough CPUs/GPUs) or whose replicas fail to start (a bundle
missing on a worker) is reported with Ray's own message within
``start_timeout_s``, never a hang.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import wire
from cloud_node.ray_config import REPLICA_ENV, RayTierConfig
from cloud_node.ray_replica import TailReplica
from cloud_node.tail import BatchResult, Request
from edgesplit.bundle import Bundle, Cut
from edgesplit.errors import BackendBusy, BackendError, ConfigError

log = logging.getLogger(__name__)

DEPLOYMENT = "EdgesplitTail"
_STATUS_TTL_S = 1.0
INLINE_BYTES = 8 * 1024 * 1024


def _import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ConfigError(
            f"the Ray tier needs Ray Serve ({exc}); install it with `pip install 'edgesplit[ray]'`"
        ) from exc
    return ray, serve


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with the address in the message, when a Ray head cannot be reached."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, sep, port_text = target.rpartition(":")
    if not sep or not host:
        host, port_text = target, "10001" if address.startswith("ray://") else "6379"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"ray address {address!r}: expected HOST:PORT, auto, or none") from None
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}) within "
            f"{timeout_s:.0f} s: is `ray start --head` running there, and is the port open?"
        ) from exc


def _use_cluster_token() -> None:
    """Send the cluster's auth token when joining by address, as ``auto`` does.

    Ray (2.5x and later) protects a ``ray start`` cluster with a token kept in
    ``~/.ray/auth_token``; a driver given an explicit address only sends it
    when ``RAY_AUTH_MODE=token``. An explicit ``RAY_AUTH_MODE`` is left alone.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        log.info("Ray token found, joining with token authentication")


class RayBackend:
    """A tail backend whose calls go to Ray Serve replicas through a DeploymentHandle.

    Construction connects to (or starts) the cluster, deploys or reuses the
    tail application, and waits, bounded, until its replicas are running.
    ``clock`` (monotonic seconds) bounds that wait and ages the replica count.
    """

    name = "ray"

    def __init__(
        self,
        bundle: Bundle,
        config: RayTierConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bundle = bundle
        self.config = config
        self._clock = clock
        self.retries = 0  # requests retried after their replica died
        self.lost = 0  # requests answered busy: replica lost twice, or no answer in time
        self._count_lock = threading.Lock()
        if config.address not in (None, "auto"):
            _use_cluster_token()  # before Ray is imported: it reads the mode once
        self._ray, self._serve = _import_ray()
        self._initialized_here = False
        self._status_lock = threading.Lock()
        self._status_at = -math.inf
        self._running = config.min_replicas
        self._connect()
        try:
            self._handle = self._deploy()
        except BaseException:
            self._disconnect()
            raise
        self.provider = self._describe()

    # -- start --------------------------------------------------------------------------------

    def _connect(self) -> None:
        ray, cfg = self._ray, self.config
        if ray.is_initialized():
            return
        if cfg.address is not None:
            check_reachable(cfg.address)
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if cfg.address is None:
            options["num_cpus"] = cfg.num_cpus
            # Activations up to 8 MiB travel inside the call instead of through the
            # object store: 600 KB measured ~1.5 ms faster a request here.
            options["_system_config"] = {"max_direct_call_object_size": INLINE_BYTES}
            if cfg.temp_dir is not None:
                options["_temp_dir"] = cfg.temp_dir
        try:
            ray.init(address=cfg.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = cfg.address or "a new local cluster"
            # Ray's cause is a whole traceback as text: its last line says what happened.
            last = str(exc.__cause__).strip().splitlines()[-1:] if exc.__cause__ else []
            cause = f" ({last[0][:400]})" if last else ""
            hint = (
                "; the cluster uses token authentication: put its token in ~/.ray/auth_token "
                "or RAY_AUTH_TOKEN"
                if "token" in cause.lower()
                else ""
            )
            raise ConfigError(
                f"cannot connect to the Ray cluster at {where}: {exc}{cause}{hint}"
            ) from exc
        self._initialized_here = True

    def _check_resources(self) -> None:
        cfg = self.config
        total = self._ray.cluster_resources()
        for resource, each in (("CPU", cfg.replica_cpus), ("GPU", cfg.replica_gpus)):
            need = each * cfg.min_replicas
            have = float(total.get(resource, 0.0))
            if need > have + 1e-9:
                raise ConfigError(
                    f"the Ray cluster has {have:g} {resource}(s) in all but {cfg.min_replicas} "
                    f"replica(s) x {each:g} {resource} need {need:g}: lower [ray] min_replicas "
                    f"or replica_{resource.lower()}s, or add nodes"
                )
            if each * cfg.max_replicas > have + 1e-9:
                log.warning(
                    "the cluster's %g %s(s) hold at most %d of max_replicas=%d replicas; "
                    "more run only if the cluster grows",
                    have,
                    resource,
                    int(have // each),
                    cfg.max_replicas,
                )

    def _deploy(self) -> Any:
        serve, cfg = self._serve, self.config
        self._check_resources()
        path = Path(cfg.bundle_path or self.bundle.root).resolve()
        options: dict[str, Any] = {
            "name": DEPLOYMENT,
            "ray_actor_options": {
                "num_cpus": cfg.replica_cpus,
                "num_gpus": cfg.replica_gpus,
                "runtime_env": {"env_vars": dict(cfg.replica_env)},
            },
            "max_ongoing_requests": cfg.max_ongoing_requests,
            "health_check_period_s": 2.0,
            "health_check_timeout_s": 10.0,
        }
        if cfg.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": cfg.min_replicas,
                "initial_replicas": cfg.min_replicas,
                "max_replicas": cfg.max_replicas,
                "target_ongoing_requests": cfg.target_ongoing_requests,
                "upscale_delay_s": cfg.upscale_delay_s,
                "downscale_delay_s": cfg.downscale_delay_s,
            }
        else:
            options["num_replicas"] = cfg.min_replicas
        args = (
            str(path),
            self.bundle.id,
            cfg.backend,
            tuple(cfg.providers),
            cfg.replica_threads,
            cfg.triton_url,
            cfg.triton_timeout_s,
        )
        fingerprint = hashlib.sha256(repr((args, sorted(options.items()))).encode()).hexdigest()
        existing = self._existing_handle(fingerprint)
        if existing is not None:
            return existing
        app = serve.deployment(TailReplica, **options).bind(fingerprint, *args)
        serve.start(proxy_location="Disabled")
        log.info(
            "deploying tail app=%s replicas=%d..%d cpus=%g gpus=%g backend=%s",
            cfg.app,
            cfg.min_replicas,
            cfg.max_replicas,
            cfg.replica_cpus,
            cfg.replica_gpus,
            cfg.backend,
        )
        serve._run(app, name=cfg.app, route_prefix=None, _blocking=False)
        self._wait_running()
        return serve.get_deployment_handle(DEPLOYMENT, app_name=cfg.app)

    def _existing_handle(self, fingerprint: str) -> Any | None:
        """The running app's handle when it serves this bundle with these settings.

        Another ingress (or this one before a restart) deployed it: join it
        instead of restarting its replicas.
        """
        serve, cfg = self._serve, self.config
        try:
            apps = serve.status().applications
        except Exception:  # noqa: BLE001 - Serve not started on this cluster yet
            return None
        app = apps.get(cfg.app)
        if app is None or app.status != "RUNNING":
            return None
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=cfg.app)
        try:
            running = handle.describe_deployment.remote().result(timeout_s=cfg.start_timeout_s)
        except Exception:  # noqa: BLE001 - an app of something else: redeploy
            return None
        if running != fingerprint:
            log.info("Serve app %s runs other settings or another bundle: redeploying", cfg.app)
            return None
        log.info("joining the running Serve app %s", cfg.app)
        return handle

    def _wait_running(self) -> None:
        serve, cfg = self._serve, self.config
        deadline = self._clock() + cfg.start_timeout_s
        last = ""
        while self._clock() < deadline:
            app = serve.status().applications.get(cfg.app)
            if app is not None:
                last = _status_message(app)
                if app.status == "RUNNING":
                    return
                if app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                    self._delete_app()
                    raise ConfigError(f"the tail deployment on Ray failed: {last}")
            time.sleep(0.2)
        self._delete_app()
        raise ConfigError(
            f"the tail deployment on Ray was not running after {cfg.start_timeout_s:.0f} s "
            f"(raise [ray] start_timeout_s if the cluster is only slow): {last or 'no status'}"
        )

    def _delete_app(self) -> None:
        try:
            self._serve.delete(self.config.app, _blocking=False)
        except Exception as exc:  # noqa: BLE001 - best effort while reporting the real error
            log.warning("could not delete the Serve app error=%s", exc)

    def _describe(self) -> str:
        cfg = self.config
        try:
            info = self._handle.describe.remote().result(timeout_s=cfg.start_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a description is not worth failing for
            return f"app {cfg.app}, ? ({exc})"
        scale = (
            f"{cfg.min_replicas}..{cfg.max_replicas} replicas (autoscaling)"
            if cfg.autoscaling
            else f"{cfg.min_replicas} replica(s)"
        )
        return f"Ray Serve app {cfg.app}, {scale}, {info['backend']} ({info['provider']})"

    # -- requests -----------------------------------------------------------------------------

    def infer(self, cut: Cut, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the tail of ``cut`` on decoded ``inputs``, on a replica (sent ``raw``)."""
        request = [wire.EncodedTensor.from_array(name, value) for name, value in inputs.items()]
        result = self.run_batch(cut, [request], wire.Limits())
        if result.failed:
            code, message = result.failed[0]
            raise BackendError(f"cut {cut.id}: {code}: {message}")
        return result.outputs

    def run_batch(self, cut: Cut, requests: Sequence[Request], limits: wire.Limits) -> BatchResult:
        """Send ``requests``, still encoded, to a replica, which decodes and runs them.

        The result's ``compute_s`` is the tail's, measured in the replica (its
        decoding is ``decode_s``): the rest of the wall time, decoding
        included, counts as the request's queueing.

        Raises:
            BackendBusy: the replica died and the one retry failed too, or no
                replica answered within ``request_timeout_s``.
            BackendError: the tail itself failed (bad input reaching the model).
        """
        ray = self._ray
        payload = [list(tensors) for tensors in requests]
        for attempt in (1, 2):
            response = self._handle.run_batch.remote(cut.id, payload, limits)
            try:
                result: BatchResult = response.result(timeout_s=self.config.request_timeout_s)
                return result
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause or exc
                raise BackendError(f"cut {cut.id}: {cause}") from exc
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                if attempt == 1:
                    with self._count_lock:
                        self.retries += 1
                    log.warning(
                        "replica lost, retrying once cut=%s error=%s", cut.id, type(exc).__name__
                    )
                    continue
                with self._count_lock:
                    self.lost += 1
                raise BackendBusy(f"replica lost twice ({type(exc).__name__})") from exc
            except (TimeoutError, ray.exceptions.GetTimeoutError) as exc:
                response.cancel()  # its answer would come too late for anyone
                with self._count_lock:
                    self.lost += 1
                raise BackendBusy(
                    f"no replica answered within {self.config.request_timeout_s:g} s"
                ) from exc
            except self._serve.exceptions.BackPressureError as exc:
                raise BackendBusy(f"replicas saturated: {exc}") from exc
        raise AssertionError("unreachable")

    def parallelism(self) -> int:
        """Replicas running now (cached for a second): the divisor of the queue estimate."""
        now = self._clock()
        with self._status_lock:
            if now - self._status_at < _STATUS_TTL_S:
                return self._running
            self._status_at = now
        try:
            self._running = max(1, self.replica_counts().get("RUNNING", 0))
        except Exception as exc:  # noqa: BLE001 - keep the last figure
            log.debug("serve status failed error=%s", exc)
        return self._running

    def replica_counts(self) -> dict[str, int]:
        """The tail deployment's replicas by state (RUNNING, STARTING, ...)."""
        app = self._serve.status().applications.get(self.config.app)
        if app is None:
            return {}
        deployment = app.deployments.get(DEPLOYMENT)
        if deployment is None:
            return {}
        return {str(k): int(v) for k, v in deployment.replica_states.items()}

    # -- stop ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Leave the cluster; a local cluster this backend started is shut down with its app.

        On a cluster it joined, the app keeps running for the other ingresses
        (``serve delete APP`` removes it).
        """
        self._disconnect()

    def _disconnect(self) -> None:
        ray = self._ray
        if not self._initialized_here or not ray.is_initialized():
            return
        if self.config.address is None:  # the local cluster this backend started
            try:
                self._serve.shutdown()
            except Exception as exc:  # noqa: BLE001 - shutting down anyway
                log.warning("serve shutdown failed error=%s", exc)
        ray.shutdown()


def _status_message(app: Any) -> str:
    parts = [app.message] if app.message else []
    for name, deployment in app.deployments.items():
        if deployment.message:
            parts.append(f"{name}: {deployment.message}")
    return " | ".join(parts)


__all__ = [
    "DEPLOYMENT",
    "REPLICA_ENV",
    "RayBackend",
    "RayTierConfig",
    "TailReplica",
    "check_reachable",
]
