"""``edgesplit release`` (pack and sign a bundle) and ``edgesplit fleet`` (status, rollout)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from edgesplit.cli import app, console
from edgesplit.cli_runtime import ConfigOption, InsecureOption, SecretKeyOption, _edge_security
from edgesplit.errors import ConfigError, TransportError

fleet_app = typer.Typer(
    help="The fleet of edges a cloud node sees: versions, health, last seen; the rollout.",
    no_args_is_help=True,
)
app.add_typer(fleet_app, name="fleet")

ConnectOption = Annotated[
    str | None,
    typer.Option(
        help="The cloud node's endpoint, e.g. tcp://cloud:5555 (default: [edge] connect)."
    ),
]
ServerKeyOption = Annotated[
    Path | None, typer.Option(help="The cloud's public key file (NAME.key).")
]
TimeoutOption = Annotated[float, typer.Option(help="Seconds to wait for the cloud's answer.")]


@app.command()
def release(
    bundle: Annotated[Path, typer.Argument(help="The bundle directory to release.")],
    version: Annotated[str, typer.Option(help="The release's label, e.g. 2 or 2026.11.30.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Archive to write (default: MODEL-VERSION.tar beside the bundle)."),
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option(help="Sign with this key (NAME.sign_key from `edgesplit keys --signing`)."),
    ] = None,
) -> None:
    """Pack a bundle as a release archive for over-the-air updates, signed if a key is given.

    Every file is hashed against the manifest first. Offer the archive with
    `edgesplit cloud --offer ARCHIVE --offer-fraction F`; edges started with
    --verify-key take only releases signed with the matching key.
    """
    from edgesplit.bundle import load_bundle
    from edgesplit.release import key_id, load_signing_key, make_release

    b = load_bundle(bundle, verify="all")
    key = load_signing_key(sign_key) if sign_key is not None else None
    target = out or bundle.parent / f"{b.manifest.model.name}-{version}.tar"
    make_release(b, version, target, key)
    signed = f"signed by key {key_id(key.public_key())}" if key is not None else "unsigned"
    console.print(
        f"release {version}: bundle {b.id[:12]} ({b.manifest.model.name}), "
        f"{target.stat().st_size / 1e6:.1f} MB, {signed} -> {target}"
    )


def _ask(
    config: Path | None,
    connect: str | None,
    secret_key: Path | None,
    server_key: Path | None,
    insecure: bool,
    meta: dict[str, Any],
    timeout_s: float,
) -> dict[str, Any]:
    """Send a ``fleet`` message to the cloud; return its JSON report."""
    from edge_node.transport import CloudClient
    from edgesplit.cli_runtime import _load

    cfg = _load(
        config,
        {
            "edge.connect": connect,
            "security.secret_key": secret_key,
            "security.server_key": server_key,
        },
        insecure,
    )
    endpoint = cfg.edge.connect
    if not endpoint:
        raise ConfigError("no cloud endpoint: give --connect tcp://HOST:PORT")
    keys, server, _ = _edge_security(cfg, endpoint)
    with CloudClient(endpoint, keys=keys, server_key=server) as client:
        reply, _ = client.request("fleet", None, meta=meta, timeout_s=timeout_s)
    if reply is None:
        raise TransportError(f"{endpoint}: no answer within {timeout_s:g} s")
    if reply.message.kind != "report" or "json" not in reply.arrays:
        raise TransportError(
            f"{endpoint} refused: {reply.message.meta.get('code')}: "
            f"{reply.message.meta.get('message')}"
        )
    return json.loads(reply.arrays["json"].tobytes())


@fleet_app.command("status")
def status(
    config: ConfigOption = None,
    connect: ConnectOption = None,
    secret_key: SecretKeyOption = None,
    server_key: ServerKeyOption = None,
    insecure: InsecureOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw report as JSON.")] = False,
    timeout_s: TimeoutOption = 5.0,
) -> None:
    """List the edges with their bundle version, health and last-seen time, and compare A/B.

    Health is over each edge's current bundle (its last 500 requests): error
    rate (answers that had to fall back) and latency percentiles. The
    comparison weights each version's edges by their requests.
    """
    report = _ask(config, connect, secret_key, server_key, insecure, {"op": "status"}, timeout_s)
    if as_json:
        # Strict JSON for other tools: no NaN (unknown figures are null).
        text = json.dumps(_nulls(report), indent=1, allow_nan=False)
        print(text)  # noqa: T201 - the report itself, for a pipe
        return
    show_report(report)


@fleet_app.command("rollout")
def rollout(
    fraction: Annotated[
        float, typer.Option(help="Share of the edges offered the release: 0 stops, 1 everyone.")
    ],
    config: ConfigOption = None,
    connect: ConnectOption = None,
    secret_key: SecretKeyOption = None,
    server_key: ServerKeyOption = None,
    insecure: InsecureOption = False,
    timeout_s: TimeoutOption = 5.0,
) -> None:
    """Change the share of the fleet offered the cloud's release (its --offer).

    Raising it only adds edges (each edge's group is a stable hash); lowering
    it sends the edges that leave back to the stable bundle, which they keep
    in their store. Needs a key listed in the cloud's --fleet-admins.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"--fraction {fraction}: expected 0..1")
    meta = {"op": "rollout", "fraction": fraction}
    report = _ask(config, connect, secret_key, server_key, insecure, meta, timeout_s)
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
    edges = Table(title=f"{len(report['edges'])} edge(s)")
    for column in ("edge", "group", "version", "bundle", "state", "requests", "errors"):
        edges.add_column(column, justify="right" if column in ("requests", "errors") else "left")
    for column in ("p50 ms", "p95 ms", "last seen", "note"):
        edges.add_column(column, justify="left" if column == "note" else "right")
    for e in report["edges"]:
        edges.add_row(
            escape(e["name"]),
            e["group"],
            escape(e["version"] or "-"),
            escape(e["bundle"][:12]),
            e["state"],
            str(e["requests"]),
            _rate(e["error_rate"]),
            _ms(e["p50_ms"]),
            _ms(e["p95_ms"]),
            f"{e['age_s']:.0f} s ago" + (" (stale)" if e["stale"] else ""),
            escape(e["note"][:60]),
        )
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
