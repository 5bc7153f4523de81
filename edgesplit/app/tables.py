"""The tables the commands print: cuts, sizes, profiles, pruning, the edge's start and summary."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.table import Table

from edge_node.config import UpdateConfig
from edge_node.inputs import InputSource
from edge_node.node import EdgeNode
from edge_node.report import RunSummary
from edgesplit.bundle import Manifest
from offload_policy import Decision, Observation, predict, rank_cuts, whole_model_accuracy

if TYPE_CHECKING:
    from partitioner.profile import TargetProfile


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
            cut.kind if len(cut.tensors) == 1 else f"{cut.kind} ({len(cut.tensors)} tensors)",
            cut.describe_shape(),
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
        table.add_row(cut.id, cut.describe_shape(), *sizes)
    return table


def outputs_text(manifest: Manifest) -> str:
    """What each answer carries, and what the prediction and accuracy are read from."""
    finals = {t.name: t for t in manifest.edge_only.tensors}
    parts = [
        f"{name} {'x'.join(map(str, finals[name].shape)) if name in finals else '?'}"
        for name in manifest.model.outputs
    ]
    first = finals.get(manifest.model.output)
    if first is not None and len(first.shape) == 1 and first.shape[0] >= 2:
        how = f"prediction = argmax of {manifest.model.output}"
    else:
        how = (
            f"{manifest.model.output} is not class scores: no prediction or accuracy "
            "(every output is in the results file, --results)"
        )
    return f"{', '.join(parts)}; {how}"


def floor_text(floor: float, default: bool, manifest: Manifest) -> str:
    """The accuracy floor in force, and where it comes from."""
    if not default:
        return f"{floor:.3f} (set)" if floor > 0 else "0 (set: any trade allowed)"
    whole = whole_model_accuracy(manifest)
    if math.isnan(whole):
        return "none (the bundle has no labels and no fidelity figures)"
    if manifest.calibration is None:
        return (
            f"{floor:.3f} (no labels: agreement with the unsplit model, measured by the "
            "partitioner per cut and codec, less one point)"
        )
    return f"{floor:.3f} (the whole model's {whole:.3f} less one point)"


def startup_table(
    node: EdgeNode,
    inputs: InputSource,
    providers: str,
    power: str,
    security: str,
    default_floor: bool,
    backend: str | None,
    metrics_url: str | None,
    updates: UpdateConfig | None = None,
) -> Table:
    """What the edge runs with and what each monitor reads.

    ``default_floor``: the accuracy floor is the default one (none configured);
    ``updates``: ``None`` when the edge takes none.
    """
    table = Table(title="edge node", show_header=False)
    table.add_column("what")
    table.add_column("value")
    client = node.client
    cloud = "none (edge only)"
    if client is not None:
        cloud = f"{client.endpoint}, " + (f"backend {backend}" if backend else "not answering yet")
    rows = [
        (
            "bundle",
            f"{node.bundle.root} ({node.bundle.id[:12]}, {node.bundle.manifest.model.name})",
        ),
        ("inputs", inputs.source),
        ("cloud", cloud),
        ("security", security),
        (
            "policy",
            f"{node.policy.name}, pipeline depth {node.config.pipeline_depth}, accuracy floor "
            + floor_text(
                node.config.accuracy_floor,
                default_floor,
                node.bundle.manifest,
            ),
        ),
        ("onnx runtime", providers),
        ("power", power),
        ("link", node.link.describe()),
        ("metrics", metrics_url or "off (--metrics-port)"),
        ("updates", _updates(updates)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _updates(c: UpdateConfig | None) -> str:
    """How the edge takes updates, in one line."""
    if c is None:
        return "none (no cloud)"
    if not c.accept:
        return f"off (--no-updates): reports to the fleet as {c.name!r}"
    signed = "signed releases only" if c.verify_keys is not None else "signed or not"
    return f"on: as {c.name!r}, {signed}, probation {c.probation_s:g} s, state in {c.state_dir}"


def summary_table(
    summary: RunSummary,
    decision: Decision | None,
    manifest: Manifest,
    bandwidth_bps: float,
    rtt_s: float,
    node: EdgeNode | None = None,
) -> Table:
    """The run's figures, next to what the profile predicted for a fixed ``decision``.

    ``decision=None`` (an adaptive policy): the decisions taken are listed instead.
    """
    table = Table(title="summary")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [("requests", f"{summary.requests}"), ("accuracy", f"{summary.accuracy:.4f}")]
    rows.append(("answers", outputs_text(manifest)))
    predicted = loopback = None
    if decision is not None:
        predicted = predict(manifest, decision, Observation(bandwidth_bps, rtt_s))
        loopback = predict(manifest, decision, Observation(1e12, rtt_s))
        if predicted.accuracy == predicted.accuracy:
            rows[1] = ("accuracy", f"{summary.accuracy:.4f} (predicted {predicted.accuracy:.4f})")
        rows.append(
            (
                "decision",
                f"cut={decision.cut} threshold={decision.exit_threshold} codec={decision.codec}",
            )
        )
    for choice, count in summary.decisions.items():
        rows.append((f"decided {choice}", f"{count} ({count / summary.requests:.1%})"))
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
        ("latency mean (measured)", f"{summary.latency_mean_s * 1e3:.2f} ms"),
    ]
    if predicted is not None and loopback is not None:
        rows += [
            (
                f"latency mean (predicted, loopback, rtt {rtt_s * 1e3:.2f} ms)",
                f"{loopback.latency_s * 1e3:.2f} ms",
            ),
            (
                f"latency mean (predicted at {bandwidth_bps / 1e6:g} Mbit/s)",
                f"{predicted.latency_s * 1e3:.2f} ms",
            ),
        ]
    if node is not None:
        link = node.link.reading()
        rows.append(
            (
                "link at the end",
                f"{link.bandwidth_bps / 1e6:.2f} Mbit/s ({link.source}, {link.samples} samples), "
                f"rtt {link.rtt_s * 1e3:.2f} ms",
            )
        )
        if node.recoveries or node.counts["cloud_probes"]:
            rows.append(
                (
                    "cloud probes / recoveries",
                    f"{node.counts['cloud_probes']} / {node.recoveries}",
                )
            )
    rows += [
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


def _ms(timing) -> str:
    return "-" if timing is None else f"{timing.median_s * 1e3:.3f}"


def profile_table(profile: TargetProfile, codec: str = "int8+lz4") -> Table:
    """Every cut of a profile: shape, bytes, the side's latency and the head's memory."""
    side = "head" if profile.role == "edge" else "tail"
    table = Table(
        title=(
            f"{profile.role} profile of {profile.model}: {profile.provider}, "
            f"{profile.threads or 'default'} threads, batch {profile.batch_size}, "
            f"{profile.machine.get('cpu', '?')}; whole model {_ms(profile.whole_model)} ms, "
            f"{len(profile.layers)} kernels"
        )
    )
    columns = [
        "cut",
        "kind",
        "shape",
        "raw bytes",
        f"{codec} bytes",
        f"{side} ms",
        f"{side} p95 ms",
    ]
    if profile.role == "edge":
        columns += ["head peak MiB", "head weights MiB"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("cut", "kind") else "right")
    for cut in profile.cuts:
        timing = cut.head if profile.role == "edge" else cut.tail
        row = [
            cut.id,
            cut.kind,
            " + ".join("x".join(map(str, shape)) for shape in cut.shapes),
            f"{cut.raw_bytes:,}",
            f"{cut.encoded_bytes[codec]:,.0f}" if codec in cut.encoded_bytes else "-",
            _ms(timing),
            "-" if timing is None else f"{timing.p95_s * 1e3:.3f}",
        ]
        if profile.role == "edge":
            row += [
                "-" if cut.head_peak_bytes is None else f"{cut.head_peak_bytes / 2**20:.1f}",
                "-" if cut.head_weights_bytes is None else f"{cut.head_weights_bytes / 2**20:.2f}",
            ]
        table.add_row(*row)
    return table


def pruning_table(manifest: Manifest) -> Table:
    """The cuts pruned from a bundle and why."""
    info = manifest.pruning
    title = "pruning off: every candidate cut kept"
    if info is not None:
        title = (
            f"{len(manifest.cuts)} of {info.candidates} candidate cuts kept; pruned: never optimal "
            f"at {info.bandwidth_mbps[0]:g}-{info.bandwidth_mbps[1]:g} Mbit/s"
        )
    table = Table(title=title)
    for column in ("pruned cut", "shape", "beaten by", "why"):
        table.add_column(column, overflow="fold")
    for cut in manifest.pruned:
        why = cut.reason.split(". With ", 1)[-1]
        table.add_row(cut.id, cut.describe_shape(), ",".join(cut.beaten_by), why)
    return table


def coverage_text(manifest: Manifest) -> str:
    """How evenly the cuts spread over the model's edge compute, in one line."""
    kept = manifest.largest_gap()
    search = manifest.cut_search
    if kept is None:
        return "coverage: not measured (a bundle from before cut sets; re-partition to see it)"
    multi = sum(len(c.tensors) > 1 for c in manifest.cuts if c.kind == "inner")
    text = f"coverage: largest stretch of edge compute without a kept cut {kept:.1%}"
    if search is not None:
        text += (
            f"; without an offered cut {search.largest_gap:.1%} ({search.offered} cuts offered "
            f"of {search.candidates} candidate sets, at most {search.max_tensors} tensors each, "
            f"compute in {search.compute_measure})"
        )
    return text + f"; {multi} kept cut(s) of several tensors"


def fidelity_table(manifest: Manifest) -> Table:
    """Per kept cut and codec: how far the split model's outputs are from the whole model's."""
    first = next((c.fidelity for c in manifest.cuts if c.fidelity), {})
    sample = next(iter(first.values()), None)
    title = "fidelity: split model against the whole model"
    if sample is not None:
        title += f" ({sample.samples} samples; agreement = same top-1 class)"
    table = Table(title=title)
    table.add_column("cut")
    for codec in manifest.codecs:
        table.add_column(codec, justify="right")
    for cut in manifest.cuts:
        if cut.tail is None:
            continue
        cells = []
        for codec in manifest.codecs:
            f = cut.fidelity.get(codec)
            if f is None:
                cells.append("-")
                continue
            worst_max = max(f.max_rel_error.values(), default=0.0)
            worst_mean = max(f.mean_rel_error.values(), default=0.0)
            head = "" if f.agreement is None else f"{f.agreement:.1%} agree, "
            cells.append(f"{head}rel err max {worst_max:.1e} mean {worst_mean:.1e}")
        table.add_row(cut.id, *cells)
    return table


__all__ = [
    "coverage_text",
    "cut_table",
    "fidelity_table",
    "profile_table",
    "pruning_table",
    "size_table",
    "startup_table",
    "summary_table",
]
