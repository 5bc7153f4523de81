"""The shaped-link benchmark's figures: latency, where requests finished, bytes, cuts; printed."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from benchmarks.triton_direct import p95

#: The edge runs, in the order printed.
PATHS = ("adaptive", "fixed", "cloud-only")


def latency_figures(seconds: Sequence[float]) -> dict[str, float]:
    """Median and p95, milliseconds."""
    return {
        "median_ms": statistics.median(seconds) * 1e3,
        "p95_ms": p95(seconds) * 1e3 if len(seconds) > 1 else seconds[0] * 1e3,
    }


def edge_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Latency, where requests finished, bytes per request and the cuts of one edge run."""
    return {
        **latency_figures([r["latency_s"] for r in rows]),
        "requests": len(rows),
        "finished": dict(Counter(r["finished"] for r in rows)),
        "bytes_per_request": statistics.fmean(r["bytes_sent"] for r in rows),
        "cuts": dict(Counter(f"{r['cut']}/{r['codec']}" for r in rows)),
        "fallbacks": dict(Counter(r["reason"] for r in rows if r["reason"])),
    }


def report(model: str, rates: Sequence[dict[str, Any]]) -> None:
    """Print one row per rate and path, then the ratios."""
    print(
        f"{'model':>10} {'Mbit/s':>6} {'path':>9} {'median ms':>10} {'p95 ms':>9} "
        f"{'bytes/req':>10} {'x direct':>8}  where finished; cuts"
    )
    for r in rates:
        d = r["direct"]
        print(
            f"{model:>10} {r['rate_mbps']:>6g} {'direct':>9} {d['median_ms']:10.2f} "
            f"{d['p95_ms']:9.2f} {d['bytes_per_request']:10,.0f} {1:8.3f}  "
            f"Triton ({d['requests']} requests, raw input)"
        )
        for name in PATHS:
            e = r[name]
            where = " ".join(f"{k}={v}" for k, v in sorted(e["finished"].items()))
            cuts = " ".join(f"{k}={v}" for k, v in sorted(e["cuts"].items()))
            falls = f"; fallbacks {e['fallbacks']}" if e["fallbacks"] else ""
            print(
                f"{model:>10} {r['rate_mbps']:>6g} {name:>9} {e['median_ms']:10.2f} "
                f"{e['p95_ms']:9.2f} {e['bytes_per_request']:10,.0f} "
                f"{e['ratio_to_direct']:8.3f}  {where}; {cuts}{falls}"
            )
    for r in rates:
        print(
            f"at {r['rate_mbps']:g} Mbit/s: edgesplit adaptive / direct median "
            f"{r['adaptive']['ratio_to_direct']:.4f}, fixed best cut / direct "
            f"{r['fixed']['ratio_to_direct']:.4f}, cloud-only through edgesplit / direct "
            f"{r['cloud-only']['ratio_to_direct']:.4f}"
        )
