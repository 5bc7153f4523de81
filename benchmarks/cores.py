"""Which cores each part of a benchmark runs on, and how much CPU each part got (Linux).

Pinning uses ``os.sched_setaffinity`` on every thread of a process (the
affinity is per thread; a thread or process created later inherits its
creator's). Use is measured from ``/proc``: a process's ``utime + stime`` (all
its threads), and each core's busy time from ``/proc/stat``. A part is a set of
processes found by walking ``/proc`` (children by parent pid, names by
command line), so nothing is asked of the processes themselves.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Clock ticks a second of /proc's CPU times.
TICKS_S = os.sysconf("SC_CLK_TCK")

#: How a Ray Serve replica's process names itself (its title, in /proc/PID/cmdline).
REPLICA_TITLE = "ray::ServeReplica"

#: A part's processes: name -> pids (re-found at every sample: processes come and go).
Parts = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class Layout:
    """Core sets for the parts of a Ray tier run; ``None``: left unpinned.

    Attributes:
        replicas: replica k's cores (replicas ordered by pid, the first started first).
        ingress: the ``edgesplit cloud`` process's cores.
        others: Ray's own processes, the load generators and this script.
        note: what shares a core with what, in words.
    """

    replicas: tuple[frozenset[int], ...]
    ingress: frozenset[int] | None
    others: frozenset[int] | None
    note: str

    @property
    def isolated(self) -> bool:
        """Whether every replica, the ingress and the rest have cores of their own."""
        return (
            self.ingress is not None
            and self.others is not None
            and not (self.ingress & self.others)
        )

    def server(self) -> frozenset[int] | None:
        """The replicas' and the ingress's cores: where a single-process node runs."""
        if self.ingress is None:
            return None
        return frozenset().union(*self.replicas, self.ingress)

    def cores_of(self, part: str) -> frozenset[int] | None:
        """The cores ``part`` (a name of :func:`ray_parts`) is pinned to."""
        if part.startswith("replica "):
            k = int(part.split()[1]) - 1
            return self.replicas[k] if k < len(self.replicas) else None
        return self.ingress if part == "ingress" else self.others


def plan(cores: Sequence[int], replicas: int) -> Layout:
    """The best layout of ``replicas`` replicas, the ingress and the rest on ``cores``.

    Enough cores (replicas + 2): a core a replica, one for the ingress, the
    rest for Ray's processes and the load generators. One fewer: the ingress
    shares its core with the rest, the replicas keep theirs. Fewer still: the
    replicas get a core each as far as they go, everything else is unpinned and
    shares the replicas' cores.
    """
    c = sorted(cores)
    n = len(c)
    if n >= replicas + 2:
        return Layout(
            tuple(frozenset({c[k]}) for k in range(replicas)),
            frozenset({c[replicas]}),
            frozenset(c[replicas + 1 :]),
            "each replica, the ingress, and Ray's processes with the load generators "
            "have cores of their own",
        )
    if n == replicas + 1:
        last = frozenset({c[replicas]})
        return Layout(
            tuple(frozenset({c[k]}) for k in range(replicas)),
            last,
            last,
            f"each replica has its own core; the ingress shares core {c[replicas]} with "
            "Ray's processes and the load generators",
        )
    return Layout(
        tuple(frozenset({c[k % n]}) for k in range(replicas)),
        None,
        None,
        f"only {n} core(s) for {replicas} replica(s) + ingress + the rest: the replicas are "
        "pinned, the ingress, Ray's processes and the load generators are not and share the "
        "replicas' cores",
    )


def describe(cores: frozenset[int] | None) -> str:
    """``core 3``, ``cores 3-7``, ``cores 0,2``, or ``unpinned``."""
    if cores is None:
        return "unpinned"
    c = sorted(cores)
    if len(c) == 1:
        return f"core {c[0]}"
    if c == list(range(c[0], c[-1] + 1)):
        return f"cores {c[0]}-{c[-1]}"
    return "cores " + ",".join(map(str, c))


# --- /proc --------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def process_table() -> dict[int, tuple[int, list[str]]]:
    """Every process now: pid -> (parent pid, command line)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            ppid = int(_stat_fields(pid)[1])
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        table[pid] = (ppid, [a.decode(errors="replace") for a in argv if a])
    return table


def descendants(table: Mapping[int, tuple[int, list[str]]], root: int) -> list[int]:
    """The processes below ``root`` (children, their children, ...), by pid."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return sorted(out)


def cloud_node_pid(table: Mapping[int, tuple[int, list[str]]], parent: int) -> int:
    """The one ``edgesplit cloud`` process started by ``parent``."""
    found = [
        pid
        for pid, (ppid, argv) in table.items()
        if ppid == parent and argv[1:4] == ["-m", "edgesplit", "cloud"]
    ]
    if len(found) != 1:
        raise RuntimeError(f"expected one `edgesplit cloud` child of {parent}, found {found}")
    return found[0]


def ray_parts(ingress: int, me: int) -> dict[str, list[int]]:
    """The parts of a Ray tier run: replicas (by pid), ingress, Ray's processes, load.

    Ray's processes are the ingress's descendants (its local cluster: GCS,
    raylet, agents, the Serve controller, idle workers) other than the
    replicas; the load generators are this process and its other children.
    """
    table = process_table()
    below = descendants(table, ingress)
    replicas = [p for p in below if table[p][1][:1] and table[p][1][0].startswith(REPLICA_TITLE)]
    parts: dict[str, list[int]] = {f"replica {k + 1}": [p] for k, p in enumerate(replicas)}
    parts["ingress"] = [ingress]
    parts["Ray processes"] = [p for p in below if p not in replicas]
    load = [p for p in descendants(table, me) if p != ingress and p not in below]
    parts["load generators"] = [me, *load]
    return parts


def pin(pid: int, cores: Iterable[int]) -> int:
    """Pin every thread of ``pid`` to ``cores``; the number of threads pinned."""
    mask = set(cores)
    done = 0
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:  # the process ended
        return 0
    for tid in tids:
        try:
            if os.sched_getaffinity(tid) != mask:
                os.sched_setaffinity(tid, mask)
            done += 1
        except (ProcessLookupError, FileNotFoundError):  # the thread ended
            continue
    return done


def pin_parts(parts: Parts, cores_of: Callable[[str], frozenset[int] | None]) -> None:
    """Pin each part's processes (all their threads) to its cores; unpinned parts are left."""
    for name, pids in parts.items():
        cores = cores_of(name)
        if cores is not None:
            for pid in pids:
                pin(pid, cores)


def _process_ticks(pid: int) -> int | None:
    try:
        fields = _stat_fields(pid)
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def _core_ticks() -> dict[int, int]:
    """Busy ticks of each core since boot: everything but idle and iowait."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            out[int(name[3:])] = sum(ticks) - ticks[3] - ticks[4]
    return out


@dataclass(frozen=True)
class Sample:
    """CPU ticks at one moment (wall clock), per part's processes and per core."""

    at: float
    parts: dict[str, dict[int, int]]
    cores: dict[int, int]


@dataclass(frozen=True)
class Share:
    """What each part and each core got over a window, in cores busy (CPU-s / wall-s)."""

    wall_s: float
    parts: dict[str, float]
    cores: dict[int, float]


class CpuSampler:
    """Samples the parts' CPU times every ``period_s`` in a thread, pinning as it goes.

    ``find()`` names the parts' processes afresh at every sample; with ``cores_of``
    they are (re)pinned too, which catches the threads and processes that
    appeared since the last sample.
    """

    def __init__(
        self,
        find: Callable[[], Parts],
        cores_of: Callable[[str], frozenset[int] | None] | None = None,
        period_s: float = 0.2,
    ) -> None:
        self._find, self._cores_of, self._period_s = find, cores_of, period_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            parts = self._find()
            if self._cores_of is not None:
                pin_parts(parts, self._cores_of)
            ticks = {
                name: {p: t for p in pids if (t := _process_ticks(p)) is not None}
                for name, pids in parts.items()
            }
            self.samples.append(Sample(time.time(), ticks, _core_ticks()))
            self._stop.wait(self._period_s)

    def share(self, began: float, ended: float) -> Share:
        """Cores busy per part and per core between the samples nearest inside the window."""
        inside = [s for s in self.samples if began <= s.at <= ended]
        if len(inside) < 2:
            raise RuntimeError(f"fewer than 2 CPU samples in the window {began:.1f}..{ended:.1f}")
        first, last = inside[0], inside[-1]
        wall = last.at - first.at
        # Each process's latest ticks in the window: one that ended in it keeps what it
        # used until its last sample; one that appeared in it counts from 0.
        latest: dict[str, dict[int, int]] = {}
        for sample in inside:
            for name, ticks in sample.parts.items():
                latest.setdefault(name, {}).update(ticks)
        parts = {}
        for name, now in latest.items():
            before = first.parts.get(name, {})
            parts[name] = sum(t - before.get(p, 0) for p, t in now.items()) / TICKS_S / wall
        cores = {c: (t - first.cores.get(c, t)) / TICKS_S / wall for c, t in last.cores.items()}
        return Share(wall, parts, cores)
