"""``edgesplit release`` (pack and sign a bundle) and ``edgesplit fleet`` (status, rollout)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from edgesplit.app.common import ConfigOption, InsecureOption, console, load
from edgesplit.app.flags import Overrides, with_settings
from edgesplit.errors import ConfigError

app = typer.Typer()
fleet_app = typer.Typer(
    help="The fleet of edges a cloud node sees: versions, health, last seen; the rollout.",
    no_args_is_help=True,
)
app.add_typer(fleet_app, name="fleet")

TimeoutOption = Annotated[float, typer.Option(help="Seconds to wait for the cloud's answer.")]


@app.command()
def release(
    bundle: Annotated[Path, typer.Argument(help="The bundle directory to release.")],
    version: Annotated[str, typer.Option(help="The release's label, e.g. 2 or 2026.11.30.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Full archive to write, for `edgesplit cloud --offer` (default: "
            "MODEL-VERSION.tar beside the bundle); the edges' part goes beside it as NAME.edge.tar."
        ),
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option(help="Sign with this key (NAME.sign_key from `edgesplit keys --signing`)."),
    ] = None,
    sequence: Annotated[
        int | None,
        typer.Option(
            help="The release's sequence number, signed: an edge refuses one lower than the "
            "release it has committed (default: the release time in seconds since 1970)."
        ),
    ] = None,
) -> None:
    """Pack a bundle as a release for over-the-air updates, signed if a key is given.

    Every file is hashed against the manifest first. Two archives come out of
    one release.json: the full one (OUT) for the cloud, `edgesplit cloud
    --offer OUT --offer-fraction F`, which serves its tails; and NAME.edge.tar,
    the manifest, edge/ and data/ (no tail), which is what edges download (the cloud derives
    the same bytes itself; publish this one at --offer-url). Edges started with
    --verify-key take only releases signed with the matching key, and none with
    a lower sequence than the one they committed.
    """
    from edgesplit.bundle import load_bundle
    from edgesplit.release import (
        edge_release_path,
        key_id,
        load_signing_key,
        make_release,
        read_release,
    )

    b = load_bundle(bundle, verify="all")
    key = load_signing_key(sign_key) if sign_key is not None else None
    target = out or bundle.parent / f"{b.manifest.model.name}-{version}.tar"
    edge_target = edge_release_path(target)
    make_release(b, version, target, key, sequence=sequence, edge_out=edge_target)
    signed = f"signed by key {key_id(key.public_key())}" if key is not None else "unsigned"
    made = read_release(target)
    console.print(
        escape(
            f"release {version} (sequence {made.sequence}): bundle {b.id[:12]} "
            f"({b.manifest.model.name}), {signed}\n"
            f"  for the cloud (--offer), tails included, {target.stat().st_size / 1e6:.1f} MB: "
            f"{target}\n"
            f"  for the edges (what they download; publish it at --offer-url), no tail, "
            f"{edge_target.stat().st_size / 1e6:.1f} MB: {edge_target}"
        ),
        soft_wrap=True,
    )


def _ask(
    config: Path | None,
    overrides: Overrides,
    insecure: bool,
    timeout_s: float,
    fraction: float | None = None,
) -> dict[str, Any]:
    """The cloud's fleet view (after a rollout change to ``fraction``, if given)."""
    from edge_node.fleet_query import fleet_report
    from edge_node.transport import CloudClient
    from edgesplit.app.edge import edge_security

    cfg = load(config, overrides, insecure, logs=False)
    endpoint = cfg.edge.connect
    if not endpoint:
        raise ConfigError("no cloud endpoint: give --connect tcp://HOST:PORT")
    keys, server, _ = edge_security(cfg, endpoint)
    with CloudClient(endpoint, keys=keys, server_key=server) as client:
        return fleet_report(client, timeout_s, fraction)


@fleet_app.command("status")
@with_settings("fleet")
def status(
    config: ConfigOption = None,
    insecure: InsecureOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw report as JSON.")] = False,
    timeout_s: TimeoutOption = 5.0,
    *,
    overrides: Overrides,
) -> None:
    """List the edges with their bundle version, health and last-seen time, and compare A/B.

    Health is over each edge's current bundle (its last 500 requests): error
    rate (answers that had to fall back) and latency percentiles. The
    comparison weights each version's edges by their requests. The cloud sends
    the edges page by page; all are listed. Needs a key listed in the cloud's
    --fleet-admins.
    """
    report = _ask(config, overrides, insecure, timeout_s)
    if as_json:
        # Strict JSON for other tools: no NaN (unknown figures are null).
        text = json.dumps(_nulls(report), indent=1, allow_nan=False)
        print(text)  # noqa: T201 - the report itself, for a pipe
        return
    show_report(report)


@fleet_app.command("rollout")
@with_settings("fleet")
def rollout(
    fraction: Annotated[
        float, typer.Option(help="Share of the edges offered the release: 0 stops, 1 everyone.")
    ],
    config: ConfigOption = None,
    insecure: InsecureOption = False,
    timeout_s: TimeoutOption = 5.0,
    *,
    overrides: Overrides,
) -> None:
    """Change the share of the fleet offered the cloud's release (its --offer).

    Raising it only adds edges (each edge's group is a stable hash); lowering
    it sends the edges that leave back to the stable bundle, which they keep
    in their store. Needs a key listed in the cloud's --fleet-admins.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"--fraction {fraction}: expected 0..1")
    report = _ask(config, overrides, insecure, timeout_s, fraction)
    show_report(report)


def show_report(report: dict[str, Any]) -> None:
    """The fleet view and the A/B comparison as tables."""
    stable, candidate = report["stable"], report["candidate"]
    line = escape(f"stable {stable['version']} ({stable['bundle'][:12]})")
    if candidate:
        line += escape(
            f"; candidate {candidate['version']} ({candidate['bundle'][:12]}) offered to "
            f"{report['fraction']:.0%} of the edges"
        )
    console.print(line)
    cells = [_edge_cells(e) for e in report["edges"]]
    if len(cells) > TABLE_EDGES:
        _print_columns(f"{len(cells)} edge(s)", cells)
    else:
        edges = Table(title=f"{len(cells)} edge(s)")
        for column in _EDGE_COLUMNS:
            edges.add_column(column, justify="left" if column in _LEFT else "right")
        for row in cells:
            edges.add_row(*(escape(cell) for cell in row))
        console.print(edges)
    rows = report["comparison"]
    if not rows:
        return
    table = Table(title="by version (edges heard from in the last minute)")
    for column in ("version", "edges", "requests", "error rate", "p50 ms", "p95 ms"):
        table.add_column(column, justify="left" if column == "version" else "right")
    for r in rows:
        table.add_row(
            escape(r["version"]),
            str(r["edges"]),
            str(r["requests"]),
            _rate(r["error_rate"]),
            _ms(r["p50_ms"]),
            _ms(r["p95_ms"]),
        )
    console.print(table)


#: Edges listed as a table; more are printed as plain columns (a table costs about 1 ms
#: a row to lay out: two minutes for 100,000 edges; plain columns take about 2 s).
TABLE_EDGES = 1_000
_EDGE_COLUMNS = (
    "edge",
    "group",
    "version",
    "bundle",
    "state",
    "requests",
    "errors",
    "p50 ms",
    "p95 ms",
    "last seen",
    "note",
)
_LEFT = frozenset({"edge", "group", "version", "bundle", "state", "note"})
# Control characters an edge declared (terminal escapes) are shown as "?".
_CONTROLS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], "?")


def _edge_cells(e: dict[str, Any]) -> list[str]:
    """One edge's row of the listing, as text (not markup)."""
    cells = [
        e["name"],
        e["group"],
        e["version"] or "-",
        e["bundle"][:12],
        e["state"],
        str(e["requests"]),
        _rate(e["error_rate"]),
        _ms(e["p50_ms"]),
        _ms(e["p95_ms"]),
        f"{e['age_s']:.0f} s ago" + (" (stale)" if e["stale"] else ""),
        e["note"][:60],
    ]
    return [cell.translate(_CONTROLS) for cell in cells]


def _print_columns(title: str, rows: list[list[str]]) -> None:
    """``rows`` under ``_EDGE_COLUMNS`` as aligned plain text, a thousand lines a write."""
    widths = [
        min(64, max(len(column), *(len(row[i]) for row in rows)))
        for i, column in enumerate(_EDGE_COLUMNS)
    ]
    left = [column in _LEFT for column in _EDGE_COLUMNS]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if lft else c.rjust(w) for c, w, lft in zip(cells, widths, left, strict=True)
        ).rstrip()

    lines = [title, line(list(_EDGE_COLUMNS)), *(line(row) for row in rows)]
    for start in range(0, len(lines), 1000):
        console.out("\n".join(lines[start : start + 1000]), highlight=False)


def _nulls(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulls(v) for v in value]
    return value


def _rate(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"
