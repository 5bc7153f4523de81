"""The runtime-overhead benchmark's figures: one :class:`Variant` per codec and CURVE, printed.

Overhead = median(edgesplit RTT - compute_s) - median(echo RTT), against
target (a), :data:`TARGET_OVERHEAD_S`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TARGET_OVERHEAD_S = 0.5e-3


@dataclass(frozen=True)
class Variant:
    """Figures of one codec with CURVE off or on (seconds)."""

    codec: str
    curve: bool
    request_bytes: int
    edgesplit_median_s: float
    edgesplit_p95_s: float
    compute_median_s: float
    net_median_s: float
    net_p95_s: float
    echo_median_s: float
    echo_p95_s: float
    overhead_s: float
    passed: bool


def variant(codec: str, curve: bool, size: int, ours: np.ndarray, echo: np.ndarray) -> Variant:
    """Summarize the (RTT, compute) rows of the edgesplit and echo paths of one variant."""
    net = ours[:, 0] - ours[:, 1]
    overhead = float(np.median(net) - np.median(echo[:, 0]))
    return Variant(
        codec=codec,
        curve=curve,
        request_bytes=size,
        edgesplit_median_s=float(np.median(ours[:, 0])),
        edgesplit_p95_s=float(np.percentile(ours[:, 0], 95)),
        compute_median_s=float(np.median(ours[:, 1])),
        net_median_s=float(np.median(net)),
        net_p95_s=float(np.percentile(net, 95)),
        echo_median_s=float(np.median(echo[:, 0])),
        echo_p95_s=float(np.percentile(echo[:, 0], 95)),
        overhead_s=overhead,
        passed=overhead < TARGET_OVERHEAD_S,
    )


def report(figures: dict) -> None:
    """Print the round-trip table and the in-process components."""
    us = 1e6
    print(
        f"\nround trips, µs ({figures['requests']} each, interleaved, "
        f"{figures['measured_s']:.1f} s, 1-min load {figures['loadavg_1m'][0]:.2f} -> "
        f"{figures['loadavg_1m'][1]:.2f}); net = RTT - compute_s; "
        "overhead = median(net) - median(echo)"
    )
    head = (
        "codec",
        "curve",
        "req bytes",
        "RTT p50",
        "RTT p95",
        "compute",
        "net p50",
        "net p95",
        "echo p50",
        "echo p95",
        "overhead",
        "< 500 µs",
    )
    print("{:<9} {:>5} {:>9} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}  {}".format(*head))
    for v in figures["variants"]:
        print(
            f"{v['codec']:<9} {'on' if v['curve'] else 'off':>5} {v['request_bytes']:>9,} "
            f"{v['edgesplit_median_s'] * us:8.0f} {v['edgesplit_p95_s'] * us:8.0f} "
            f"{v['compute_median_s'] * us:7.1f} {v['net_median_s'] * us:8.0f} "
            f"{v['net_p95_s'] * us:8.0f} {v['echo_median_s'] * us:8.0f} "
            f"{v['echo_p95_s'] * us:8.0f} {v['overhead_s'] * us:8.0f}  "
            f"{'PASS' if v['passed'] else 'FAIL'}"
        )
    plain = {v["codec"]: v for v in figures["variants"] if not v["curve"]}
    print("\nin-process, request message, median µs (rest = overhead, CURVE off, - enc - dec)")
    print(f"{'codec':<9} {'header B':>8} {'payload B':>9} {'encode':>7} {'decode':>7} {'rest':>7}")
    for p in figures["components"]:
        rest = plain[p["codec"]]["overhead_s"] - p["encode_s"] - p["decode_s"]
        print(
            f"{p['codec']:<9} {p['header_bytes']:>8} {p['payload_bytes']:>9,} "
            f"{p['encode_s'] * us:7.1f} {p['decode_s'] * us:7.1f} {rest * us:7.0f}"
        )
    verdict = all(v["passed"] for v in figures["variants"])
    verdict_text = "PASS" if verdict else "FAIL"
    print(f"\ntarget (a): overhead < 500 µs median in every variant: {verdict_text}")
