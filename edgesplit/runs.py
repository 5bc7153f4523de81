"""Shared plumbing of the commands: build a bundle, run the edge over inputs, show results.

The CLI (``edgesplit.cli``) parses flags and calls these; the demo chains
them. The offline side (profiling, partitioning) lives in
:mod:`edgesplit.offline`, so the runtime commands never load it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edge_node.inputs import InputSet
from edge_node.node import EdgeConfig, EdgeNode, Outcome
from edge_node.report import RunSummary, summarize
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Manifest
from edgesplit.errors import ConfigError, TransportError
from offload_policy import (
    Decision,
    FixedPolicy,
    Observation,
    best_static_decision,
    predict,
    rank_cuts,
)

log = logging.getLogger(__name__)


def configure_logging(level: str = "WARNING") -> None:
    """One event a line, ``key=value`` fields, to stderr."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def progress_bar(console: Console) -> Progress:
    """The progress bar every long command shows."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )


def choose_decision(
    manifest: Manifest,
    cut: str,
    codec: str,
    threshold: float | None,
    bandwidth_bps: float,
    rtt_s: float,
) -> Decision:
    """The decision for ``--cut``: a cut id, or ``auto`` for the fastest at the assumed link."""
    if codec not in manifest.codecs:
        raise ConfigError(
            f"--codec {codec}: not measured for this bundle; measured: {', '.join(manifest.codecs)}"
        )
    if threshold is not None and manifest.calibration is not None:
        manifest.calibration.threshold_index(threshold)
    if cut == "auto":
        return best_static_decision(manifest, Observation(bandwidth_bps, rtt_s), codec, threshold)
    if cut == "after-exits":
        return Decision(cut_after_exits(manifest), threshold, codec)
    ids = [c.id for c in manifest.cuts]
    if cut not in ids:
        raise ConfigError(
            f"--cut {cut}: not a cut of this bundle; cuts: auto, after-exits, {', '.join(ids)}"
        )
    return Decision(cut, threshold, codec)


def cut_after_exits(manifest: Manifest) -> str:
    """The cut where the deepest exit branches off: all exits on the edge, the rest offloaded."""
    cuts = [
        c for c in manifest.cuts if c.kind != "output" and len(c.exits) == len(manifest.model.exits)
    ]
    if not manifest.model.exits or not cuts:
        raise ConfigError("--cut after-exits: this model has no early exits")
    return cuts[0].id


def cut_table(
    manifest: Manifest,
    codec: str,
    threshold: float | None,
    bandwidth_bps: float,
    rtt_s: float,
    chosen: str | None = None,
) -> Table:
    """Every cut with its size and predicted latency at the assumed link, fastest marked."""
    table = Table(
        title=f"cuts at {bandwidth_bps / 1e6:g} Mbit/s, codec {codec}, threshold {threshold}"
    )
    columns = (
        "cut",
        "kind",
        "shape",
        "bytes/offload",
        "P(offload)",
        "edge ms",
        "cloud ms",
        "predicted ms",
        "accuracy",
    )
    for column in columns:
        table.add_column(column, justify="right" if column not in ("cut", "kind") else "left")
    observation = Observation(bandwidth_bps, rtt_s)
    ranked = dict(rank_cuts(manifest, observation, codec, threshold))
    for cut in manifest.cuts:
        p = ranked[cut.id]
        mark = " <" if cut.id == chosen else ""
        offload = 0.0 if cut.tail is None else 1.0 - sum(p.exit_rates)
        table.add_row(
            cut.id + mark,
            cut.kind,
            "x".join(map(str, cut.shape)),
            f"{cut.bytes_for(codec):,.0f}",
            f"{offload:.2f}",
            f"{p.edge_compute_s * 1e3:.3f}",
            f"{p.cloud_s * 1e3:.3f}",
            f"{p.latency_s * 1e3:.3f}",
            "-" if p.accuracy != p.accuracy else f"{p.accuracy:.3f}",
        )
    return table


def size_table(manifest: Manifest) -> Table:
    """Bytes per sample of every cut under every measured codec (payload, no header)."""
    table = Table(title=f"bytes per sample at each cut ({manifest.sample_source})")
    table.add_column("cut")
    table.add_column("shape", justify="right")
    for codec in manifest.codecs:
        table.add_column(codec, justify="right")
    for cut in manifest.cuts:
        if cut.kind == "output":
            continue
        sizes = [f"{cut.encoded_bytes.get(c, float('nan')):,.0f}" for c in manifest.codecs]
        table.add_row(cut.id, "x".join(map(str, cut.shape)), *sizes)
    return table


def run_edge_session(
    bundle: Bundle,
    inputs: InputSet,
    connect: str | None,
    cut: str,
    threshold: float | None,
    codec: str,
    bandwidth_bps: float,
    rtt_s: float | None,
    timeout_s: float,
    results: Path | None,
    console: Console,
) -> RunSummary:
    """Pair with the cloud (if any), decide, classify every input, print and save the results.

    ``rtt_s=None`` uses the RTT measured by pinging the cloud. A cloud that does
    not answer at start is marked down: the edge answers locally and probes it.
    """
    m = bundle.manifest
    client = CloudClient(connect) if connect else None
    try:
        config = EdgeConfig(timeout_s=timeout_s, bandwidth_bps=bandwidth_bps, rtt_s=rtt_s)
        fallback = FixedPolicy(Decision(m.edge_only.id, threshold, codec), m.edge_only.id)
        node = EdgeNode(bundle, fallback, client, config)
        if client is not None:
            try:
                backend = node.check_cloud()
            except TransportError as exc:
                node.health.failed(time.monotonic())
                console.print(f"[yellow]warning:[/yellow] {exc}; answering on the edge and probing")
            else:
                console.print(
                    f"paired with cloud {connect} (backend {backend}, bundle {bundle.id[:12]}, "
                    f"ping {node.measured_rtt_s * 1e3:.3f} ms)"
                )
        assumed_rtt_s = node.observe(0.0).rtt_s
        decision = choose_decision(m, cut, codec, threshold, bandwidth_bps, assumed_rtt_s)
        node.policy = FixedPolicy(decision, m.edge_only.id)
        console.print(cut_table(m, codec, threshold, bandwidth_bps, assumed_rtt_s, decision.cut))
        node.runner.warm([m.cut(decision.cut), m.edge_only])
        outcomes, summary = run_edge(node, inputs, console)
    finally:
        if client is not None:
            client.close()
    console.print(summary_table(summary, decision, m, bandwidth_bps, assumed_rtt_s))
    if results is not None:
        write_outcomes(results, outcomes, inputs.labels)
        console.print(f"per-request results: {results}")
    return summary


def write_outcomes(path: Path, outcomes: Sequence[Outcome], labels: np.ndarray | None) -> None:
    """One JSON object per request: the outcome's fields plus the label when known."""
    with path.open("w", encoding="utf-8") as fh:
        for i, outcome in enumerate(outcomes):
            row = asdict(outcome)
            row["prediction"] = outcome.prediction.tolist()
            row["label"] = None if labels is None else int(labels[i])
            fh.write(json.dumps(row) + "\n")


def run_edge(
    node: EdgeNode, inputs: InputSet, console: Console
) -> tuple[list[Outcome], RunSummary]:
    """Answer every input with a live progress bar; return outcomes and their summary."""
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    with progress_bar(console) as bar:
        task = bar.add_task("classify", total=len(inputs), status="")
        for i, batch in enumerate(inputs.batches()):
            outcomes.append(node.infer(batch))
            if i % 25 == 0 or i == len(inputs) - 1:
                counts = " ".join(f"{k}={v}" for k, v in sorted(node.counts.items()))
                bar.update(task, completed=i + 1, status=counts)
    return outcomes, summarize(outcomes, inputs.labels, time.perf_counter() - started)


def summary_table(
    summary: RunSummary, decision: Decision, manifest: Manifest, bandwidth_bps: float, rtt_s: float
) -> Table:
    """The run's figures next to what the profile predicted (``rtt_s``: the measured RTT)."""
    predicted = predict(manifest, decision, Observation(bandwidth_bps, rtt_s))
    loopback = predict(manifest, decision, Observation(1e12, rtt_s))
    table = Table(title="summary")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("requests", f"{summary.requests}"),
        (
            "accuracy",
            f"{summary.accuracy:.4f}"
            + (
                f" (predicted {predicted.accuracy:.4f})"
                if predicted.accuracy == predicted.accuracy
                else ""
            ),
        ),
        (
            "decision",
            f"cut={decision.cut} threshold={decision.exit_threshold} codec={decision.codec}",
        ),
    ]
    for place, count in summary.finished.items():
        acc = summary.accuracy_by_place.get(place)
        rows.append(
            (
                f"finished at {place}",
                f"{count} ({count / summary.requests:.1%})"
                + (f", accuracy {acc:.4f}" if acc is not None else ""),
            )
        )
    for reason, count in summary.fallback_reasons.items():
        rows.append((f"fallback: {reason}", str(count)))
    rows += [
        (
            "latency p50 / p95 / p99",
            f"{summary.latency_p50_s * 1e3:.2f} / {summary.latency_p95_s * 1e3:.2f}"
            f" / {summary.latency_p99_s * 1e3:.2f} ms",
        ),
        ("latency mean (measured on loopback)", f"{summary.latency_mean_s * 1e3:.2f} ms"),
        (
            f"latency mean (predicted, loopback, rtt {rtt_s * 1e3:.2f} ms)",
            f"{loopback.latency_s * 1e3:.2f} ms",
        ),
        (
            f"latency mean (predicted at {bandwidth_bps / 1e6:g} Mbit/s)",
            f"{predicted.latency_s * 1e3:.2f} ms",
        ),
        (
            "bytes sent",
            f"{summary.bytes_sent:,} in {summary.offloaded} offloads "
            f"({summary.bytes_sent / max(1, summary.offloaded):,.0f} per offload)",
        ),
        (
            "wall time",
            f"{summary.wall_s:.2f} s ({summary.requests / summary.wall_s:.0f} requests/s)",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def start_cloud_process(
    bundle: Path,
    bind: str,
    log_path: Path,
    ready_timeout_s: float = 60.0,
    extra: Sequence[str] = (),
) -> tuple[subprocess.Popen, str]:
    """Start ``edgesplit cloud`` in its own process; return it and its bound endpoint.

    Its log goes to ``log_path`` (a file, so a chatty node never blocks on a pipe).
    """
    fd, ready = tempfile.mkstemp(prefix="edgesplit-cloud-", suffix=".endpoint")
    os.close(fd)
    os.unlink(ready)
    cmd = [
        sys.executable,
        "-m",
        "edgesplit",
        "cloud",
        "--bundle",
        str(bundle),
        "--bind",
        bind,
        "--ready-file",
        ready,
        *extra,
    ]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + ready_timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                lines = Path(log_path).read_text(errors="replace").strip().splitlines()
                raise TransportError(
                    f"cloud node exited with code {proc.returncode}: "
                    f"{lines[-1] if lines else 'no message'} (log: {log_path})"
                )
            if os.path.exists(ready) and os.path.getsize(ready) > 0:
                with open(ready, encoding="utf-8") as fh:
                    return proc, fh.read().strip()
            time.sleep(0.05)
        stop_process(proc)
        raise TransportError(f"cloud node did not become ready within {ready_timeout_s:g} s")
    finally:
        if os.path.exists(ready):
            os.unlink(ready)


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; return the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
