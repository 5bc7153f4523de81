"""A real edge-cloud pair over a shaped link, for the experiments.

:class:`Testbed` opens a :class:`~experiments.netlink.ShapedLink` (two
network namespaces, tbf on the uplink), makes CURVE keys, starts
``edgesplit cloud`` (embedded ONNX Runtime, unthrottled: the cloud machine)
in the cloud namespace, and runs :mod:`experiments.worker` plans in the
edge namespace, inside the edge's CPU cgroup when there is one. Every
process is stopped and the namespaces deleted on exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from edgesplit.bundle import Bundle
from edgesplit.errors import ConfigError
from edgesplit.security import generate_keys
from experiments.cpulimit import CpuCgroup
from experiments.harness import ROOT
from experiments.netlink import ShapedLink, netns_support

CLOUD_PORT = 5555


def require_netns() -> None:
    """A clear error when shaped links cannot be made here."""
    missing = netns_support()
    if missing is not None:
        raise ConfigError(
            f"this experiment shapes a real link with tc in network namespaces: {missing}"
        )


class Testbed:
    """See the module docstring. ``with Testbed(...) as bed: bed.run(plan)``."""

    def __init__(
        self,
        bundle: Bundle,
        work: Path,
        uplink_bps: float,
        cgroup: CpuCgroup | None,
        *,
        name: str = "bed",
    ) -> None:
        self.bundle, self.work, self.cgroup, self.name = bundle, work, cgroup, name
        self.link = ShapedLink(uplink_bps, None)
        self.keys = work / f"{name}-keys"
        self.endpoint = ""
        self._cloud: subprocess.Popen[Any] | None = None

    def __enter__(self) -> Testbed:
        require_netns()
        self.work.mkdir(parents=True, exist_ok=True)
        generate_keys(self.keys, "cloud")
        generate_keys(self.keys / "allowed", "edge")
        self.link.__enter__()
        try:
            self._start_cloud()
        except BaseException:
            self.link.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.link.close()

    def _start_cloud(self) -> None:
        ready = self.work / f"{self.name}-cloud.endpoint"
        ready.unlink(missing_ok=True)
        log = self.work / f"{self.name}-cloud.log"
        argv = [
            sys.executable,
            "-m",
            "edgesplit",
            "cloud",
            "--bundle",
            str(self.bundle.root),
            "--bind",
            f"tcp://{self.link.cloud_ip}:{CLOUD_PORT}",
            "--secret-key",
            str(self.keys / "cloud.key_secret"),
            "--allowed-clients",
            str(self.keys / "allowed"),
            "--ready-file",
            str(ready),
        ]
        with log.open("wb") as out:
            self._cloud = self.link.run_in(
                self.link.cloud_ns, argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        deadline = time.monotonic() + 180
        while not (ready.is_file() and ready.read_text().strip()):
            if self._cloud.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise ConfigError(f"edgesplit cloud did not start in the cloud namespace:\n{tail}")
            time.sleep(0.05)
        self.endpoint = ready.read_text().strip()

    def set_rate(self, uplink_bps: float) -> None:
        """Shape the uplink to ``uplink_bps`` from now on."""
        self.link.set_rate(uplink_bps)

    def plan(self, phases: list[dict[str, Any]], out: Path, **settings: Any) -> dict[str, Any]:
        """A worker plan for this bed: endpoint, keys and bundle filled in."""
        return {
            "bundle": str(self.bundle.root),
            "connect": self.endpoint,
            "secret_key": str(self.keys / "allowed" / "edge.key_secret"),
            "server_key": str(self.keys / "cloud.key"),
            "out": str(out),
            "phases": phases,
            **settings,
        }

    def start(self, plan: dict[str, Any], name: str) -> subprocess.Popen[str]:
        """Start a worker on ``plan`` in the edge namespace (and cgroup); see :meth:`wait`."""
        path = self.work / f"{name}.plan.json"
        path.write_text(json.dumps(plan, indent=1))
        Path(plan["out"]).unlink(missing_ok=True)
        argv = [sys.executable, "-m", "experiments.worker", str(path)]
        kwargs: dict[str, Any] = {
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "stdin": subprocess.DEVNULL,
            "text": True,
            "cwd": ROOT,
            "env": {**os.environ, "PYTHONPATH": str(ROOT)},
        }
        if self.cgroup is None:
            return self.link.run_in(self.link.edge_ns, argv, **kwargs)
        # The cgroup wrapper goes outside `ip netns exec`, which hides /sys/fs/cgroup.
        proc = subprocess.Popen(
            self.cgroup.wrap([*self.link.exec_args(self.link.edge_ns), *argv]), **kwargs
        )
        return proc


def wait(proc: subprocess.Popen[str], timeout_s: float) -> None:
    """Wait for a worker; ConfigError with its output when it fails or overruns."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise ConfigError(f"the edge worker ran past {timeout_s:.0f} s:\n{err[-2000:]}") from None
    if proc.returncode != 0:
        raise ConfigError(
            f"the edge worker failed ({proc.returncode}):\n{out[-1000:]}\n{err[-3000:]}"
        )


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The worker's JSON lines (none yet: empty)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
