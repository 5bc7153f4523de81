"""Real bandwidth traces: load them, ask the throughput at a time, replay a transfer.

The format (``shared/traces/README.md``): one sample a line, two columns
separated by white space, ``time_since_start_seconds throughput_mbit_per_second``;
samples irregularly spaced; each value holds until the next sample. Blank
lines and lines starting with ``#`` are skipped.

Conventions of :class:`Trace`:

- Times are seconds since the trace's first sample (a file starting at
  370 s starts at 0 here; ``offset_s`` keeps the 370).
- The last sample holds for the median spacing between samples (1 s for a
  one-sample trace), so the trace lasts ``duration_s = times[-1] +
  median spacing``.
- Beyond ``duration_s`` the trace wraps around: time ``t`` reads the trace at
  ``t mod duration_s``, so a short trace can drive a long experiment.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgesplit.errors import ConfigError

#: File names that :func:`load_traces` picks up in a directory.
TRACE_GLOB = "*.tsv"


@dataclass(frozen=True, eq=False)
class Trace:
    """A link's throughput over time, piecewise constant.

    Attributes:
        name: the file's stem, e.g. ``norway_bus_1``.
        family: the folder it came from, e.g. ``hsdpa`` or ``fcc``.
        times: sample times, seconds since the first sample (read-only array).
        mbps: throughput from each sample time until the next, Mbit/s (read-only array).
        offset_s: the first sample's time in the file, seconds.
    """

    name: str
    family: str
    times: np.ndarray = field(repr=False)
    mbps: np.ndarray = field(repr=False)
    offset_s: float = 0.0
    # Per segment, as floats for bisect (a scalar look-up ~30x faster than numpy's):
    # start (s), rate (bits/s), bits carried before it in one pass; and the pass's length.
    _starts: tuple[float, ...] = field(init=False, repr=False)
    _rate_bps: tuple[float, ...] = field(init=False, repr=False)
    _bits_before: tuple[float, ...] = field(init=False, repr=False)
    _duration_s: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        times = np.array(self.times, dtype=np.float64)
        mbps = np.array(self.mbps, dtype=np.float64)
        where = f"trace {self.family}/{self.name}"
        if times.ndim != 1 or times.shape != mbps.shape or times.size == 0:
            raise ConfigError(
                f"{where}: times {times.shape} and mbps {mbps.shape}: "
                "expected two 1-D arrays of the same non-zero length"
            )
        if not (np.all(np.isfinite(times)) and times[0] == 0.0 and np.all(np.diff(times) >= 0)):
            raise ConfigError(f"{where}: times must be finite, start at 0 and never decrease")
        if not (np.all(np.isfinite(mbps)) and np.all(mbps >= 0)):
            raise ConfigError(f"{where}: throughput must be finite and >= 0 Mbit/s")
        times.setflags(write=False)
        mbps.setflags(write=False)
        rate = mbps * 1e6
        duration = float(times[-1] + _last_hold_s(times))
        ends = np.append(times[1:], duration)
        bits_before = np.concatenate(([0.0], np.cumsum(rate * (ends - times))))
        for name, value in (
            ("times", times),
            ("mbps", mbps),
            ("_starts", tuple(times.tolist())),
            ("_rate_bps", tuple(rate.tolist())),
            ("_bits_before", tuple(bits_before.tolist())),
            ("_duration_s", duration),
        ):
            object.__setattr__(self, name, value)

    @property
    def duration_s(self) -> float:
        """How long one pass of the trace lasts, seconds (its wrap-around period)."""
        return self._duration_s

    @property
    def bits_per_period(self) -> float:
        """Bits the link carries in one pass of the trace."""
        return self._bits_before[-1]

    def bandwidth_bps(self, t: float) -> float:
        """Throughput at time ``t`` (seconds since the start, wrapping around), bits/s."""
        _check_time(self, t)
        return self._rate_bps[self._segment(t % self._duration_s)]

    def transfer_end(self, t0: float, nbytes: float) -> float:
        """When a transfer of ``nbytes`` started at ``t0`` completes, seconds.

        Integrates the piecewise-constant throughput from ``t0`` (wrapping
        around) until ``nbytes x 8`` bits have gone; a zero-throughput
        interval stalls the transfer. O(log segments), however many it
        crosses. A trace that carries nothing at all is an error, not an
        endless wait.
        """
        _check_time(self, t0)
        if not (math.isfinite(nbytes) and nbytes >= 0):
            raise ConfigError(f"transfer nbytes={nbytes!r}: expected a finite number >= 0")
        if nbytes == 0:
            return float(t0)
        per_period = self.bits_per_period
        if per_period <= 0:
            raise ConfigError(
                f"trace {self.family}/{self.name}: every sample is 0 Mbit/s, so a transfer of "
                f"nbytes={nbytes} would never finish; use a trace that carries data"
            )
        target = self._bits_until(t0) + nbytes * 8.0
        # Whole periods before the one where the target is reached; remainder in (0, period].
        periods = math.ceil(target / per_period) - 1
        remainder = min(max(target - periods * per_period, 0.0), per_period)
        # First segment whose cumulative end reaches the remainder; its rate is > 0.
        end = bisect.bisect_left(self._bits_before, remainder)
        i = min(max(end, 1), len(self._starts)) - 1
        within = (remainder - self._bits_before[i]) / self._rate_bps[i] if remainder else 0.0
        return max(float(t0), periods * self._duration_s + self._starts[i] + within)

    def _segment(self, u: float) -> int:
        """Index of the sample in force at ``u`` within one period."""
        return max(bisect.bisect_right(self._starts, u) - 1, 0)

    def _bits_until(self, t: float) -> float:
        """Bits carried from time 0 to ``t`` (wrapping around)."""
        periods = math.floor(t / self._duration_s)
        u = t - periods * self._duration_s
        i = self._segment(u)
        partial = self._rate_bps[i] * (u - self._starts[i])
        return periods * self.bits_per_period + self._bits_before[i] + partial


def _last_hold_s(times: np.ndarray) -> float:
    """How long the last sample holds: the median spacing (1 s with a single sample)."""
    if times.size < 2:
        return 1.0
    spacing = float(np.median(np.diff(times)))
    return spacing if spacing > 0 else 1.0


def _check_time(trace: Trace, t: float) -> None:
    if not (math.isfinite(t) and t >= 0):
        raise ConfigError(
            f"trace {trace.family}/{trace.name}: t={t!r}: expected a finite time >= 0 s"
        )


def _parse_line(path: Path, lineno: int, line: str) -> tuple[float, float] | None:
    """One sample from one line, ``None`` for a blank or comment line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    columns = text.split()
    where = f"{path}:{lineno}"
    if len(columns) != 2:
        raise ConfigError(
            f"{where}: {len(columns)} columns: expected 2 (time_s, throughput Mbit/s)"
        )
    values = []
    for column, label in zip(columns, ("time_s", "mbps"), strict=True):
        try:
            values.append(float(column))
        except ValueError:
            raise ConfigError(f"{where}: {label}={column!r} is not a number") from None
    time_s, mbps = values
    if not (math.isfinite(time_s) and time_s >= 0):
        raise ConfigError(f"{where}: time_s={time_s!r}: expected a finite time >= 0")
    if not (math.isfinite(mbps) and mbps >= 0):
        raise ConfigError(f"{where}: mbps={mbps!r}: expected a finite number >= 0")
    return time_s, mbps


def load_trace(path: str | Path) -> Trace:
    """The trace in ``path``; ConfigError naming ``file:line`` for anything malformed.

    Rejected: a line without exactly two columns, a value that is not a
    number, a time that is negative, infinite or earlier than the previous
    one, a throughput that is negative, NaN or infinite, and a file with no
    samples.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the trace: {exc}") from exc
    times: list[float] = []
    mbps: list[float] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        sample = _parse_line(path, lineno, line)
        if sample is None:
            continue
        if times and sample[0] < times[-1]:
            raise ConfigError(
                f"{path}:{lineno}: time_s={sample[0]!r} is before the previous "
                f"sample's time_s={times[-1]!r}: times must not go backwards"
            )
        times.append(sample[0])
        mbps.append(sample[1])
    if not times:
        raise ConfigError(f"{path}: empty trace: expected lines of 'time_s mbps'")
    start = times[0]
    return Trace(
        name=path.stem,
        family=path.parent.name,
        times=np.asarray(times) - start,
        mbps=np.asarray(mbps),
        offset_s=start,
    )


def load_traces(paths: Iterable[str | Path], pattern: str = TRACE_GLOB) -> list[Trace]:
    """Every trace under ``paths``: files as given, directories searched recursively.

    In a directory only files matching ``pattern`` count (so a README beside
    the traces is skipped), in sorted order. A missing path, or a directory
    without traces, is a ConfigError.
    """
    traces: list[Trace] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files = sorted(p for p in path.rglob(pattern) if p.is_file())
            if not files:
                raise ConfigError(f"{path}: no trace files matching {pattern!r}")
            traces.extend(load_trace(f) for f in files)
        elif path.is_file():
            traces.append(load_trace(path))
        else:
            raise ConfigError(f"{path}: no such trace file or directory")
    return traces


__all__ = ["TRACE_GLOB", "Trace", "load_trace", "load_traces"]
