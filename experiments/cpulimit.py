"""A slower edge device for real: a CPU quota on the edge's processes, by cgroup.

The edge and the cloud share this machine's cores, so unthrottled the edge is
as fast as the cloud and the policy keeps everything on the edge. A CPU
cgroup with ``quota/period`` = FRACTION of one core (``cpu.max`` on cgroup
v2, ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` on v1's cpu controller) makes
the kernel throttle every process in it: the edge's profile and its runs
both see the same slow CPU.

A process joins by a tiny ``sh`` wrapper that writes its own pid to
``cgroup.procs`` and then execs the command; children inherit the
cgroup. The wrapper must run *outside* ``ip netns exec``, which remounts
``/sys`` and so hides ``/sys/fs/cgroup``; membership survives its exec.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgesplit.errors import ConfigError, EdgesplitError

#: CFS period, microseconds (the kernel's default).
DEFAULT_PERIOD_US = 100_000
#: The kernel refuses quotas below 1 ms a period.
MIN_QUOTA_US = 1_000
_MOUNTS = Path("/proc/self/mounts")


@dataclass(frozen=True)
class CpuController:
    """Where the cpu controller is mounted: ``root`` of a v1 ``cpu`` or a v2 hierarchy."""

    root: Path
    version: int


@dataclass(frozen=True)
class CpuCgroup:
    """A cgroup holding at most ``quota_us`` of CPU time per ``period_us``, over all cores."""

    path: Path
    version: int
    quota_us: int
    period_us: int

    @property
    def fraction(self) -> float:
        """The limit as a fraction of one core."""
        return self.quota_us / self.period_us

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` started inside this cgroup (put it before any ``ip netns exec``)."""
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv]

    def add(self, pid: int) -> None:
        """Move the running process ``pid``, every thread of it, into this cgroup."""
        move_to(self.path, pid)

    def throttled_s(self) -> float:
        """Seconds the kernel has held this cgroup's processes back so far."""
        stat = dict(
            line.split(maxsplit=1)
            for line in (self.path / "cpu.stat").read_text().splitlines()
            if " " in line
        )
        if self.version == 2:
            return int(stat.get("throttled_usec", 0)) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def describe(self) -> str:
        """One line: the limit, and where it is set."""
        files = "cpu.max" if self.version == 2 else "cpu.cfs_quota_us/cpu.cfs_period_us"
        return (
            f"{self.fraction:g} of one core ({self.quota_us} us per {self.period_us} us, "
            f"cgroup v{self.version} {self.path} {files})"
        )


def move_to(cgroup: Path, pid: int) -> None:
    """Move the running process ``pid``, every thread of it, into the cgroup folder ``cgroup``."""
    (cgroup / "cgroup.procs").write_text(f"{pid}\n")


def find_cpu_controller(mounts: str | None = None) -> CpuController | str:
    """The cpu controller's hierarchy here, else why none can be used, in one line.

    Prefers cgroup v2 when its root lists ``cpu`` in ``cgroup.controllers``;
    on a hybrid host (v2 mounted beside v1 without the cpu controller) it
    takes v1's ``cpu`` hierarchy.
    """
    if os.geteuid() != 0:
        return f"not root (euid={os.geteuid()}): cgroups need root"
    text = _MOUNTS.read_text() if mounts is None else mounts
    v1: Path | None = None
    seen = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point, kind, options = Path(fields[1]), fields[2], fields[3].split(",")
        if kind == "cgroup2":
            controllers = (point / "cgroup.controllers").read_text().split()
            seen.append(f"cgroup2 at {point} (controllers: {' '.join(controllers) or 'none'})")
            if "cpu" in controllers:
                return CpuController(point, 2)
        elif kind == "cgroup" and "cpu" in options and v1 is None:
            v1 = point
    if v1 is not None:
        return CpuController(v1, 1)
    return "no cgroup hierarchy with the cpu controller: " + ("; ".join(seen) or "none mounted")


def cpu_limit_support() -> str | None:
    """None when a CPU-limited cgroup can be made and removed here, else why not."""
    found = find_cpu_controller()
    if isinstance(found, str):
        return found
    try:
        with cpu_limited(0.5, f"edgesplit-probe-{os.getpid()}"):
            pass
    except (EdgesplitError, OSError) as exc:
        return f"cgroup v{found.version} at {found.root} refuses: {exc}"
    return None


def quota_us(fraction: float, period_us: int = DEFAULT_PERIOD_US) -> int:
    """Microseconds of CPU a period for ``fraction`` of one core (ConfigError when too small)."""
    if not fraction > 0:
        raise ConfigError(f"--edge-cpu-quota {fraction}: expected a fraction of a core above 0")
    quota = round(fraction * period_us)
    if quota < MIN_QUOTA_US:
        raise ConfigError(
            f"--edge-cpu-quota {fraction}: {quota} us per {period_us} us period is below the "
            f"kernel's {MIN_QUOTA_US} us minimum"
        )
    return quota


@contextmanager
def cpu_limited(
    fraction: float, name: str, period_us: int = DEFAULT_PERIOD_US
) -> Iterator[CpuCgroup]:
    """A new cgroup ``name`` limited to ``fraction`` of one core; removed on exit.

    Processes still in it on exit are moved back to the parent cgroup first.
    """
    found = find_cpu_controller()
    if isinstance(found, str):
        raise ConfigError(f"no CPU limit possible: {found}")
    quota = quota_us(fraction, period_us)
    path = found.root / name
    if found.version == 2:
        _enable_cpu(found.root)
    path.mkdir()
    try:
        if found.version == 2:
            (path / "cpu.max").write_text(f"{quota} {period_us}")
        else:
            (path / "cpu.cfs_period_us").write_text(str(period_us))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        yield CpuCgroup(path, found.version, quota, period_us)
    finally:
        _remove(path, found.root)


def _enable_cpu(root: Path) -> None:
    """Let children of the v2 ``root`` use the cpu controller (``+cpu`` in subtree_control)."""
    control = root / "cgroup.subtree_control"
    if "cpu" in control.read_text().split():
        return
    try:
        control.write_text("+cpu")
    except OSError as exc:
        raise ConfigError(f"{control}: cannot enable the cpu controller ({exc})") from exc


def _remove(path: Path, parent: Path) -> None:
    """Empty ``path`` into ``parent`` and remove it (rmdir, retried while the kernel lets go)."""
    deadline = time.monotonic() + 5.0
    while True:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (parent / "cgroup.procs").write_text(pid)
            except ProcessLookupError:
                pass  # it exited meanwhile
        try:
            path.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
