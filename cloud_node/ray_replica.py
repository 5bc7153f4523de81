"""One Ray Serve replica of the cloud tier: a bundle's tails, on a Ray node.

Built by Serve from :class:`~cloud_node.ray_tier.RayBackend`'s deployment on
whichever node the cluster places it; it decodes the requests it is handed
(they travel as the edge sent them) and runs the tail, in-process with ONNX
Runtime or as a Triton client.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

import wire
from cloud_node.backends import make_backend
from cloud_node.tail import BatchResult, Request
from edgesplit.bundle import load_bundle
from edgesplit.errors import BackendError, BundleError


class TailReplica:
    """One Ray Serve replica: the bundle's tails on ONNX Runtime or behind Triton.

    Built by Serve on a Ray node; the bundle must be readable there at
    ``bundle_path`` with the same id as the ingress's (hashes checked).
    """

    def __init__(
        self,
        fingerprint: str,
        bundle_path: str,
        bundle_id: str,
        backend: str,
        providers: Sequence[str],
        threads: int,
        triton_url: str,
        triton_timeout_s: float,
    ) -> None:
        host = socket.gethostname()
        path = Path(bundle_path)
        if not (path / "manifest.json").is_file():
            raise BundleError(
                f"bundle {path} is not on Ray node {host}: copy the bundle to that path on "
                "every worker node (or mount it) or set [ray] bundle_path to where it is"
            )
        bundle = load_bundle(path, verify="cloud")
        if bundle.id != bundle_id:
            raise BundleError(
                f"bundle {path} on Ray node {host} is version {bundle.id[:12]}, the ingress "
                f"serves {bundle_id[:12]}: deploy the same bundle everywhere"
            )
        self._cuts = {c.id: c for c in bundle.manifest.cuts}
        self.fingerprint = fingerprint
        self.backend = make_backend(
            bundle, backend, providers, threads, triton_url, triton_timeout_s
        )
        self.replica = f"{host}:{os.getpid()}"

    async def run_batch(
        self, cut_id: str, requests: Sequence[Request], limits: wire.Limits
    ) -> BatchResult:
        """Decode ``requests`` here (they travel as sent) and run the tail of ``cut_id``."""
        cut = self._cuts.get(cut_id)
        if cut is None:
            raise BackendError(f"cut {cut_id!r} is not in this replica's bundle")
        return self.backend.run_batch(cut, requests, limits)

    def describe_deployment(self) -> str:
        """The fingerprint of the bundle and settings this replica was deployed with."""
        return self.fingerprint

    def describe(self) -> dict[str, str]:
        """Which replica, backend and provider this is."""
        import ray

        return {
            "replica": self.replica,
            "actor": ray.get_runtime_context().get_actor_name() or "",
            "backend": self.backend.name,
            "provider": self.backend.provider,
        }


__all__ = ["TailReplica"]
