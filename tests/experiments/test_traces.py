"""Bandwidth traces: the real files, malformed files named by file:line, transfers by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgesplit.errors import ConfigError
from experiments.traces import Trace, load_trace, load_traces

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
# The whole shared collection where it is checked out beside the repository,
# else the three real traces copied into the repository for the tests.
TRACES = SHARED if SHARED.is_dir() else Path(__file__).resolve().parents[1] / "data" / "traces"


# --- the real traces ----------------------------------------------------------------------


def test_load_a_real_hsdpa_trace() -> None:
    trace = load_trace(TRACES / "hsdpa" / "norway_bus_1.tsv")
    assert (trace.name, trace.family, trace.offset_s) == ("norway_bus_1", "hsdpa", 0.0)
    assert len(trace.times) == len(trace.mbps) == 266
    # first lines: "0.0 4.03768755221", "0.549999952316 4.79283060109"
    assert trace.bandwidth_bps(0.0) == pytest.approx(4.03768755221e6)
    assert trace.bandwidth_bps(0.6) == pytest.approx(4.79283060109e6)
    assert not trace.times.flags.writeable


def test_a_trace_that_starts_late_is_shifted_to_zero() -> None:
    trace = load_trace(TRACES / "fcc" / "trace_939562_http---www.google_part2.tsv")
    # the file starts "370.0 2.532944", "375.0 3.43012"
    assert (trace.family, trace.offset_s, trace.times[0], trace.times[1]) == ("fcc", 370.0, 0, 5)
    assert trace.bandwidth_bps(5.0) == pytest.approx(3.43012e6)


def test_load_every_shared_trace() -> None:
    traces = load_traces([TRACES])  # the README beside them is not a trace
    families = {t.family for t in traces}
    assert families == {"hsdpa", "fcc"}
    assert len(traces) == len(list(TRACES.rglob("*.tsv")))


# --- malformed files ----------------------------------------------------------------------

GOOD = "0.0 1.0\n0.5 2.0\n"


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        (GOOD + "1.0 2.0 3.0\n", 3, "3 columns: expected 2"),
        (GOOD + "1.0\n", 3, "1 columns: expected 2"),
        ("0.0 abc\n", 1, "mbps='abc' is not a number"),
        ("x 1.0\n", 1, "time_s='x' is not a number"),
        (GOOD + "0.4 1.0\n", 3, "time_s=0.4 is before the previous sample's time_s=0.5"),
        (GOOD + "\n\n1.0 -1.0\n", 5, "mbps=-1.0: expected a finite number >= 0"),
        (GOOD + "1.0 nan\n", 3, "mbps=nan"),
        (GOOD + "1.0 inf\n", 3, "mbps=inf"),
        ("-1.0 1.0\n", 1, "time_s=-1.0"),
        ("nan 1.0\n", 1, "time_s=nan"),
    ],
)
def test_bad_line_is_named_by_file_and_line(
    tmp_path: Path, text: str, line: int, match: str
) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"bad\.tsv:{line}: {match}"):
        load_trace(path)


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n"])
def test_empty_trace_is_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.tsv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.tsv: empty trace"):
        load_trace(path)


def test_unreadable_trace_is_named(tmp_path: Path) -> None:
    path = tmp_path / "binary.tsv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"binary\.tsv: cannot read the trace"):
        load_trace(path)


def test_blank_lines_and_comments_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "wifi" / "ok.tsv"
    path.parent.mkdir()
    path.write_text("# time mbps\n\n10.0\t1.5\n  11.0   2.5  \n")
    trace = load_trace(path)
    assert (trace.name, trace.family, trace.offset_s) == ("ok", "wifi", 10.0)
    assert list(trace.times) == [0.0, 1.0] and list(trace.mbps) == [1.5, 2.5]


def test_load_traces_refuses_missing_paths_and_empty_dirs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such trace file or directory"):
        load_traces([tmp_path / "nowhere"])
    (tmp_path / "README.md").write_text("not a trace\n")
    with pytest.raises(ConfigError, match=r"no trace files matching '\*\.tsv'"):
        load_traces([tmp_path])


def test_load_traces_takes_files_and_dirs_in_order(tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / "fam").mkdir(exist_ok=True)
        (tmp_path / "fam" / f"{name}.tsv").write_text(GOOD)
    single = tmp_path / "one.tsv"
    single.write_text(GOOD)
    traces = load_traces([tmp_path / "fam", single])
    assert [t.name for t in traces] == ["a", "b", "one"]


def test_constructed_trace_is_validated() -> None:
    with pytest.raises(ConfigError, match="start at 0"):
        Trace("t", "f", np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    with pytest.raises(ConfigError, match="same non-zero length"):
        Trace("t", "f", np.array([0.0, 2.0]), np.array([1.0]))
    with pytest.raises(ConfigError, match=">= 0 Mbit/s"):
        Trace("t", "f", np.array([0.0]), np.array([-1.0]))


# --- throughput and transfers, by hand ----------------------------------------------------


def steps() -> Trace:
    """8 Mbit/s on [0, 1), nothing on [1, 2), 4 on [2, 4), 2 on [4, 5).

    Spacings 1, 1, 2: the median, 1 s, is how long the last sample holds, so
    the trace lasts 5 s and carries 8e6 + 0 + 8e6 + 2e6 = 18e6 bits a pass.
    """
    return Trace("steps", "made", np.array([0.0, 1.0, 2.0, 4.0]), np.array([8.0, 0.0, 4.0, 2.0]))


def test_bandwidth_is_piecewise_constant_and_wraps_around() -> None:
    trace = steps()
    assert trace.duration_s == 5.0
    assert trace.bits_per_period == 18e6
    assert trace.bandwidth_bps(0.999) == 8e6
    assert trace.bandwidth_bps(1.0) == 0.0  # a sample holds from its own time on
    assert trace.bandwidth_bps(4.5) == 2e6
    assert trace.bandwidth_bps(5.0) == 8e6  # 5 mod 5 = 0
    assert trace.bandwidth_bps(12.5) == 4e6  # 12.5 mod 5 = 2.5


@pytest.mark.parametrize(
    ("t0", "nbytes", "end"),
    [
        (0.0, 0, 0.0),  # nothing to send
        (0.0, 500_000, 0.5),  # 4e6 bits at 8e6 bits/s
        (0.0, 1_000_000, 1.0),  # 8e6 bits end exactly as the link stalls
        (0.5, 1_000_000, 3.0),  # 4e6 bits by 1.0, stall to 2.0, 4e6 bits at 4e6 bits/s
        (1.5, 500_000, 3.0),  # starts in the stall: waits to 2.0, then 4e6 bits take 1 s
        (3.0, 750_000, 5.0),  # 6e6 bits: 4e6 in [3, 4), 2e6 in [4, 5): done as the pass ends
        (3.0, 875_000, 5.125),  # 7e6 bits: 6e6 by 5.0, wrap, 1e6 at 8e6 bits/s: 0.125 s
        (4.5, 1_000_000, 5.875),  # 1e6 bits in [4.5, 5), wrap, 7e6 bits at 8e6: 0.875 s
        (0.0, 5_500_000, 11.0),  # 44e6 bits: two passes (36e6, 10 s), then 8e6 bits in 1 s
        (12.0, 250_000, 12.5),  # 12 mod 5 = 2: 2e6 bits at 4e6 bits/s
    ],
)
def test_transfer_end_by_hand(t0: float, nbytes: int, end: float) -> None:
    assert steps().transfer_end(t0, nbytes) == pytest.approx(end)


def test_an_all_zero_trace_refuses_a_transfer_instead_of_waiting_forever() -> None:
    trace = Trace("dead", "made", np.array([0.0, 1.0]), np.array([0.0, 0.0]))
    assert trace.bandwidth_bps(0.5) == 0.0
    assert trace.transfer_end(3.0, 0) == 3.0
    with pytest.raises(ConfigError, match="every sample is 0 Mbit/s"):
        trace.transfer_end(0.0, 1)


@pytest.mark.parametrize("t", [-1.0, math.nan, math.inf])
def test_bad_times_are_refused(t: float) -> None:
    with pytest.raises(ConfigError, match=f"t={t!r}"):
        steps().bandwidth_bps(t)
    with pytest.raises(ConfigError, match=f"t={t!r}"):
        steps().transfer_end(t, 10)


@pytest.mark.parametrize("nbytes", [-1.0, math.nan])
def test_bad_sizes_are_refused(nbytes: float) -> None:
    with pytest.raises(ConfigError, match=f"nbytes={nbytes!r}"):
        steps().transfer_end(0.0, nbytes)


@given(
    st.floats(min_value=0.0, max_value=100.0),
    st.floats(min_value=0.0, max_value=5e6),
    st.floats(min_value=0.0, max_value=5e6),
)
def test_a_transfer_split_in_two_ends_when_the_whole_does(t0: float, a: float, b: float) -> None:
    trace = steps()
    whole = trace.transfer_end(t0, a + b)
    halves = trace.transfer_end(trace.transfer_end(t0, a), b)
    assert whole >= t0
    assert halves == pytest.approx(whole, rel=1e-9, abs=1e-9)


def test_transfer_end_matches_a_fine_integration_on_a_real_trace() -> None:
    trace = load_trace(TRACES / "hsdpa" / "norway_ferry_2.tsv")
    dt = 2e-3
    grid = np.arange(0.0, 3 * trace.duration_s, dt)
    bits = np.cumsum([trace.bandwidth_bps(t) * dt for t in grid])
    for t0, nbytes in [(0.0, 1e6), (10.3, 5e6), (trace.duration_s - 1.0, 2e6)]:
        start = int(round(t0 / dt))
        done = np.searchsorted(bits - (bits[start - 1] if start else 0.0), nbytes * 8.0)
        # each of the ~10 sample boundaries crossed may shift the grid's answer by up to dt
        assert trace.transfer_end(t0, nbytes) == pytest.approx(grid[done] + dt, abs=10 * dt)
