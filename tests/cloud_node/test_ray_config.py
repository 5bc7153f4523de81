"""The Ray tier's settings and start-up checks that need no cluster."""

from __future__ import annotations

import socket
import time

import pytest

from cloud_node.ray_tier import RayTierConfig, check_reachable
from edgesplit.app.cli import _bare_ray_flag
from edgesplit.config_load import load_config
from edgesplit.errors import ConfigError


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["cloud", "--ray"], ["cloud", "--ray", "local"]),
        (["cloud", "--ray", "--insecure"], ["cloud", "--ray", "local", "--insecure"]),
        (["cloud", "--ray", "auto"], ["cloud", "--ray", "auto"]),
        (["cloud", "--ray", "10.0.0.5:6379", "-h"], ["cloud", "--ray", "10.0.0.5:6379", "-h"]),
        (["edge", "--ray"], ["edge", "--ray"]),
    ],
)
def test_a_bare_ray_flag_means_a_local_cluster(argv: list[str], expected: list[str]) -> None:
    assert _bare_ray_flag(argv) == expected


def test_config_section_and_env() -> None:
    cfg = load_config(
        None,
        env={"EDGESPLIT_RAY_ENABLED": "true", "EDGESPLIT_RAY_MAX_REPLICAS": "4"},
        overrides={"ray.address": "auto"},
    )
    assert cfg.ray.enabled and cfg.ray.max_replicas == 4 and cfg.ray.address == "auto"
    assert cfg.source_of("ray", "max_replicas") == "env EDGESPLIT_RAY_MAX_REPLICAS"
    with pytest.raises(ConfigError, match="max_replicas"):
        load_config(None, env={}, overrides={"ray.min_replicas": 3, "ray.max_replicas": 2})


def test_tier_config_checks_and_derived_values() -> None:
    tier = RayTierConfig(min_replicas=1, max_replicas=3, max_ongoing_requests=2, replica_cpus=2)
    assert tier.autoscaling and tier.dispatchers == 6 and tier.replica_threads == 2
    assert RayTierConfig(replica_cpus=0.5).replica_threads == 1
    assert RayTierConfig(threads=3).replica_threads == 3
    assert not RayTierConfig().autoscaling
    for bad, message in (
        ({"min_replicas": 0}, "min_replicas"),
        ({"min_replicas": 2, "max_replicas": 1}, "below min_replicas"),
        ({"replica_cpus": 0, "replica_gpus": 0}, "reserve something"),
        ({"backend": "tensorflow"}, "onnxruntime or triton"),
        ({"max_ongoing_requests": 0}, "max_ongoing_requests"),
    ):
        with pytest.raises(ConfigError, match=message):
            RayTierConfig(**bad)  # type: ignore[arg-type]


def test_an_unreachable_head_is_named_within_the_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    began = time.monotonic()
    with pytest.raises(ConfigError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}", timeout_s=2.0)
    assert time.monotonic() - began < 3.0
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        check_reachable("head:notaport")


def test_a_listening_head_passes_the_check() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}", timeout_s=2.0)
        check_reachable(f"ray://127.0.0.1:{server.getsockname()[1]}", timeout_s=2.0)
    check_reachable("auto")  # resolved by Ray itself
