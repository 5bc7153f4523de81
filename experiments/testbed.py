"""A real edge-cloud pair over a shaped link, for the experiments.

:class:`Testbed` opens a :class:`~experiments.shaped_link.ShapedLink` (two
network namespaces, tbf on the uplink), makes CURVE keys, starts
``edgesplit cloud`` (embedded ONNX Runtime, unthrottled: the cloud machine)
in the cloud namespace, and runs :mod:`experiments.worker` plans in the
edge namespace, inside the edge's CPU cgroup when there is one. Every
process is stopped and the namespaces deleted on exit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from edgesplit.bundle import Bundle
from edgesplit.errors import ConfigError
from edgesplit.security import generate_keys
from experiments.cpulimit import CpuCgroup
from experiments.harness import ROOT, ExperimentError
from experiments.relay import RelayLink
from experiments.shaped_link import ShapedLink, netns_support

CLOUD_PORT = 5555


SHAPERS = ("auto", "tc", "relay")


def make_link(uplink_bps: float, shaper: str) -> tuple[ShapedLink | RelayLink, str]:
    """The link for ``shaper`` and how it is shaped, in words for the report.

    ``auto``: tc (tbf) in network namespaces, or, where they cannot be made,
    the in-process token bucket; ``tc``: namespaces or a clear error;
    ``relay``: the in-process token bucket.
    """
    if shaper not in SHAPERS:
        raise ConfigError(f"--shaper {shaper}: expected one of {', '.join(SHAPERS)}")
    if shaper == "relay":
        return RelayLink(uplink_bps), f"{RELAY_LINK} (--shaper relay)"
    missing = netns_support()
    if missing is None:
        return ShapedLink(uplink_bps, None), TC_LINK
    if shaper == "tc":
        raise ConfigError(f"--shaper tc: tc in network namespaces is refused here: {missing}")
    return RelayLink(uplink_bps), f"{RELAY_LINK} (tc in network namespaces: {missing})"


#: How each kind of link is shaped, for the reports.
TC_LINK = "tc tbf on a veth pair between network namespaces (kernel-shaped)"
RELAY_LINK = "in-process token-bucket relay on loopback (user-space pacing, not the kernel's)"


class Testbed:
    """See the module docstring.

    ``with Testbed(...) as bed: start_together([bed.start(bed.plan(phases, out), name)])``.
    """

    def __init__(
        self,
        bundle: Bundle,
        work: Path,
        uplink_bps: float,
        cgroup: CpuCgroup | None,
        *,
        name: str = "bed",
        shaper: str = "auto",
    ) -> None:
        self.bundle, self.work, self.cgroup, self.name = bundle, work, cgroup, name
        self.link, self.shaped_by = make_link(uplink_bps, shaper)
        self.keys = work / f"{name}-keys"
        self.endpoint = ""
        self._cloud: subprocess.Popen[Any] | None = None

    def __enter__(self) -> Testbed:
        self.work.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.keys, ignore_errors=True)  # keys of an earlier run: made afresh
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
        relayed = isinstance(self.link, RelayLink)
        port = "*" if relayed else str(CLOUD_PORT)  # beds side by side share loopback
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
            f"tcp://{self.link.cloud_ip}:{port}",
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
                raise ExperimentError(f"edgesplit cloud did not start:\n{tail}")
            time.sleep(0.05)
        self.endpoint = ready.read_text().strip()
        if relayed:
            host, _, cloud_port = self.endpoint.removeprefix("tcp://").rpartition(":")
            relay_host, relay_port = self.link.relay_to(host, int(cloud_port))
            self.endpoint = f"tcp://{relay_host}:{relay_port}"

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

    def start(self, plan: dict[str, Any], name: str) -> Worker:
        """Start a worker on ``plan`` in the edge namespace; see :func:`start_together`.

        It imports, loads its sessions and pairs with the cloud unthrottled,
        says it is ready, and waits: :func:`start_together` moves it into the
        edge's cgroup and gives it t0. (Under a 0.1-core limit the imports
        alone took 10-20 s.)
        """
        path = self.work / f"{name}.plan.json"
        ready, go = self.work / f"{name}.ready", self.work / f"{name}.go"
        for stale in (ready, go, Path(plan["out"])):
            stale.unlink(missing_ok=True)
        path.write_text(
            json.dumps({**plan, "ready_file": str(ready), "go_file": str(go)}, indent=1)
        )
        argv = [sys.executable, "-m", "experiments.worker", str(path)]
        proc = self.link.run_in(
            self.link.edge_ns,
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return Worker(name, proc, ready, go, self.cgroup)


@dataclass
class Worker:
    """A started edge worker: its process, its ready and go files, its cgroup."""

    name: str
    proc: subprocess.Popen[str]
    ready: Path
    go: Path
    cgroup: CpuCgroup | None


def start_together(workers: list[Worker], timeout_s: float = 300.0) -> float:
    """Once every worker is ready: each into its cgroup, then one t0 for all; returns t0.

    ``ip netns exec`` execs the command in place, so a worker's pid is its
    Popen's pid.
    """
    deadline = time.monotonic() + timeout_s
    while not all(w.ready.is_file() for w in workers):
        for w in workers:
            if w.proc.poll() is not None:
                wait(w.proc, 1)
                raise ExperimentError(f"the edge worker {w.name} stopped before it was ready")
        if time.monotonic() > deadline:
            raise ExperimentError(f"the edge workers were not ready within {timeout_s:.0f} s")
        time.sleep(0.05)
    for w in workers:
        if w.cgroup is not None:
            w.cgroup.add(w.proc.pid)
    t0 = time.monotonic() + 0.2
    for w in workers:
        w.go.write_text(f"{t0!r}\n")
    return t0


def wait(proc: subprocess.Popen[str], timeout_s: float) -> None:
    """Wait for a worker; ExperimentError with its output when it fails or overruns."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise ExperimentError(
            f"the edge worker ran past {timeout_s:.0f} s:\n{err[-2000:]}"
        ) from None
    if proc.returncode != 0:
        raise ExperimentError(
            f"the edge worker failed ({proc.returncode}):\n{out[-1000:]}\n{err[-3000:]}"
        )


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The worker's JSON lines (none yet: empty)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
