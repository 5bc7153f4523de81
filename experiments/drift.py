"""Drift scenarios: a device or cloud that runs slower (or faster) than its profile, over time.

A schedule is two step functions of time, the edge's and the cloud's speed
factor (2: twice as slow as the bundle's profile says; 1: as profiled),
each holding from its step's time until the next; before the first step a
factor is 1. Given as a file (``--drift FILE``) or as flags
(``--edge-drift 30:2,90:1``, ``--cloud-drift 60:3``).

A file is CSV (``.csv``, ``.tsv``, ``.txt``: rows ``time_s,edge_factor,cloud_factor``,
commas or whitespace, an optional header, ``#`` comments), JSON (a list of
``{"time_s": .., "edge_factor": .., "cloud_factor": ..}``, or an object with
that list under ``"drift"``) or TOML (``[[drift]]`` tables with the same
keys). In JSON and TOML a factor left out keeps its previous value.

Every value is checked: a time must be finite, >= 0 and later than the
previous step's; a factor finite and in [1/100, 100]. A bad value is one
line naming the file and the line (CSV) or step (JSON, TOML).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesplit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: The largest slowdown (and speed-up) a schedule may ask for.
MAX_FACTOR = 100.0

Steps = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class DriftSchedule:
    """Edge and cloud speed factors over time (piecewise constant).

    Attributes:
        edge: (time s, factor) steps of the edge, times increasing.
        cloud: (time s, factor) steps of the cloud, times increasing.
        source: where the schedule came from (a file, or the flags), for reports.
    """

    edge: Steps = ()
    cloud: Steps = ()
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("edge", "cloud"):
            steps = getattr(self, name)
            _check_steps(steps, f"{self.source or 'drift'} {name}")

    def edge_factor(self, t: float) -> float:
        """How many times slower than its profile the edge runs at ``t`` seconds."""
        return _at(self.edge, t)

    def cloud_factor(self, t: float) -> float:
        """How many times slower than its profile the cloud runs at ``t`` seconds."""
        return _at(self.cloud, t)

    def changes(self) -> tuple[float, ...]:
        """The times at which a factor changes, in order."""
        times: set[float] = set()
        for steps in (self.edge, self.cloud):
            previous = 1.0
            for t, f in steps:
                if f != previous:
                    times.add(t)
                previous = f
        return tuple(sorted(times))

    def describe(self) -> str:
        """One line: each term's steps, e.g. ``edge 1 -> 2x at 30 s -> 1x at 90 s``."""
        parts = []
        for name, steps in (("edge", self.edge), ("cloud", self.cloud)):
            if steps:
                parts.append(f"{name} " + ", ".join(f"{f:g}x from {t:g} s" for t, f in steps))
        return "; ".join(parts) or "no drift"


def _at(steps: Steps, t: float) -> float:
    """The factor of the last step at or before ``t`` (1 before the first)."""
    factor = 1.0
    for time_s, f in steps:
        if time_s > t:
            break
        factor = f
    return factor


def _check_steps(steps: Steps, where: str) -> None:
    previous = -math.inf
    for t, f in steps:
        _check_time(t, previous, where)
        _check_factor(f, where)
        previous = t


def _check_time(t: Any, previous: float, where: str) -> float:
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise ConfigError(f"{where}: time_s={t!r}: expected a finite number of seconds >= 0")
    if t <= previous:
        raise ConfigError(
            f"{where}: time_s={t!r}: expected later than the previous step's {previous:g} s"
        )
    return float(t)


def _check_factor(f: Any, where: str, name: str = "factor") -> float:
    if isinstance(f, bool) or not isinstance(f, int | float) or not math.isfinite(f):
        raise ConfigError(f"{where}: {name}={f!r}: expected a finite number")
    if not 1 / MAX_FACTOR <= f <= MAX_FACTOR:
        raise ConfigError(
            f"{where}: {name}={f!r}: expected {1 / MAX_FACTOR:g}..{MAX_FACTOR:g} "
            "(times slower than the profile; 1: as profiled)"
        )
    return float(f)


def _number(text: str, where: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: {name}={text!r}: expected a number") from None


def parse_steps(text: str, flag: str) -> Steps:
    """``"30:2,90:1"`` (time s : factor, comma-separated) as steps; ConfigError naming ``flag``."""
    steps: list[tuple[float, float]] = []
    previous = -math.inf
    for k, item in enumerate(p.strip() for p in text.split(",")):
        where = f"{flag} {text}: step {k + 1}"
        time_s, sep, factor = item.partition(":")
        if not sep:
            raise ConfigError(f"{where}: {item!r}: expected TIME_S:FACTOR, e.g. 30:2")
        t = _check_time(_number(time_s.strip(), where, "time_s"), previous, where)
        f = _check_factor(_number(factor.strip(), where, "factor"), where)
        steps.append((t, f))
        previous = t
    return tuple(steps)


def drift_from_flags(edge: str | None, cloud: str | None) -> DriftSchedule | None:
    """The schedule of ``--edge-drift`` and ``--cloud-drift`` (``None`` when neither is given)."""
    if edge is None and cloud is None:
        return None
    parts = [f"--edge-drift {edge}" if edge else "", f"--cloud-drift {cloud}" if cloud else ""]
    return DriftSchedule(
        edge=parse_steps(edge, "--edge-drift") if edge else (),
        cloud=parse_steps(cloud, "--cloud-drift") if cloud else (),
        source=" ".join(p for p in parts if p),
    )


def drift_schedule(path: Path | None, edge: str | None, cloud: str | None) -> DriftSchedule | None:
    """The schedule of ``--drift FILE`` or of ``--edge-drift``/``--cloud-drift`` (not both)."""
    if path is not None and (edge is not None or cloud is not None):
        raise ConfigError(
            "--drift FILE and --edge-drift/--cloud-drift: give one or the other "
            "(the file has both columns)"
        )
    if path is not None:
        return load_drift(path)
    return drift_from_flags(edge, cloud)


def load_drift(path: Path) -> DriftSchedule:
    """The schedule in ``path`` (CSV, JSON or TOML; see the module docstring).

    Raises:
        ConfigError: unreadable, malformed, or a value out of range; names the file and line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--drift {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--drift {path}: unreadable: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
        rows = _step_list(data, path)
        return _from_records(rows, path, "step")
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not TOML: {exc}") from None
        return _from_records(_step_list(data, path), path, "[[drift]]")
    return _from_csv(text, path)


def _step_list(data: Any, path: Path) -> list[Any]:
    if isinstance(data, dict):
        data = data.get("drift")
    if not isinstance(data, list) or not data:
        raise ConfigError(
            f"{path}: expected a non-empty list of steps (time_s, edge_factor, cloud_factor)"
        )
    return data


def _from_records(rows: Sequence[Any], path: Path, what: str) -> DriftSchedule:
    edge: list[tuple[float, float]] = []
    cloud: list[tuple[float, float]] = []
    previous = -math.inf
    factors = {"edge_factor": 1.0, "cloud_factor": 1.0}
    for k, row in enumerate(rows):
        where = f"{path}: {what} {k + 1}"
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: expected a table with time_s, edge_factor, cloud_factor")
        unknown = set(row) - {"time_s", *factors}
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {sorted(unknown)[0]!r}; "
                "expected time_s, edge_factor, cloud_factor"
            )
        if "time_s" not in row:
            raise ConfigError(f"{where}: time_s missing")
        t = _check_time(row["time_s"], previous, where)
        for name in factors:
            if name in row:
                factors[name] = _check_factor(row[name], where, name)
        edge.append((t, factors["edge_factor"]))
        cloud.append((t, factors["cloud_factor"]))
        previous = t
    return DriftSchedule(tuple(edge), tuple(cloud), str(path))


def _from_csv(text: str, path: Path) -> DriftSchedule:
    edge: list[tuple[float, float]] = []
    cloud: list[tuple[float, float]] = []
    previous = -math.inf
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cells = [c for c in line.replace(",", " ").replace(";", " ").split() if c]
        if not edge and cells[0].lower() in ("time_s", "time", "t"):
            continue  # the header
        where = f"{path}:{number}"
        if len(cells) != 3:
            raise ConfigError(
                f"{where}: {line!r}: expected 3 values: time_s, edge_factor, cloud_factor"
            )
        t = _check_time(_number(cells[0], where, "time_s"), previous, where)
        e = _check_factor(_number(cells[1], where, "edge_factor"), where, "edge_factor")
        c = _check_factor(_number(cells[2], where, "cloud_factor"), where, "cloud_factor")
        edge.append((t, e))
        cloud.append((t, c))
        previous = t
    if not edge:
        raise ConfigError(f"{path}: no steps (rows of time_s, edge_factor, cloud_factor)")
    return DriftSchedule(tuple(edge), tuple(cloud), str(path))


class SpeedModel:
    """One simulated run's true speeds, and what its policy is told of them.

    The device's head and the cloud's tail take their profiled time x the
    schedule's factor at that moment (x a lognormal jitter of ``jitter``, a
    device's run-to-run spread, when > 0). The policy is told: ``learn``: the
    closed-loop corrections learned from those times (the edge node's own
    loop, :mod:`offload_policy.corrections`); ``told``: the true factors (the
    oracle); ``profile``: nothing (1, the profile trusted).
    """

    def __init__(
        self,
        schedule: DriftSchedule | None,
        mode: str,
        jitter: float = 0.0,
        seed: Sequence[int] = (0,),
    ) -> None:
        from offload_policy.corrections import Corrections

        if mode not in ("learn", "told", "profile"):
            raise ConfigError(f"speed model {mode!r}: expected learn, told or profile")
        if not 0 <= jitter < 10 or math.isnan(jitter):
            raise ConfigError(f"compute jitter {jitter!r}: expected 0..10 (lognormal sigma)")
        self.schedule = schedule
        self.mode = mode
        self.jitter = jitter
        self.corrections = Corrections()
        self._rng = np.random.default_rng(list(seed)) if jitter > 0 else None

    def true_factors(self, t: float) -> tuple[float, float]:
        """(edge, cloud): how many times slower than profiled each runs at ``t``."""
        if self.schedule is None:
            return 1.0, 1.0
        return self.schedule.edge_factor(t), self.schedule.cloud_factor(t)

    def told(self, t: float) -> tuple[float, float]:
        """(edge, cloud) factors the policy is told at ``t``."""
        if self.mode == "told":
            return self.true_factors(t)
        if self.mode == "learn":
            f = self.corrections.factors(t)
            return f.edge, f.cloud
        return 1.0, 1.0

    def _spread(self) -> float:
        return 1.0 if self._rng is None else float(np.exp(self._rng.normal(0.0, self.jitter)))

    def edge_s(self, t: float, profiled_s: float) -> float:
        """How long a head the profile times at ``profiled_s`` takes at ``t``; it is measured."""
        if profiled_s <= 0:
            return profiled_s
        actual = profiled_s * self.true_factors(t)[0] * self._spread()
        if self.mode == "learn":
            self.corrections = self.corrections.observe_edge(t, actual, profiled_s)
        return actual

    def wants_probe(self, t: float, edge_s: float) -> bool:
        """Whether a request that ran ``edge_s`` of head should time a segment while it waits.

        Only when learning, when the request ran no head, and when the edge term is
        due (:meth:`offload_policy.corrections.Corrections.probe_due`), as the edge
        node does.
        """
        return self.mode == "learn" and edge_s <= 0 and self.corrections.probe_due(t)

    def tail_s(self, t: float, profiled_s: float) -> float:
        """How long a tail the profile times at ``profiled_s`` takes at ``t``; it is reported."""
        if profiled_s <= 0:
            return profiled_s
        actual = profiled_s * self.true_factors(t)[1] * self._spread()
        if self.mode == "learn":
            self.corrections = self.corrections.observe_cloud(t, actual, profiled_s)
        return actual


__all__ = [
    "MAX_FACTOR",
    "DriftSchedule",
    "SpeedModel",
    "drift_from_flags",
    "drift_schedule",
    "load_drift",
    "parse_steps",
]
