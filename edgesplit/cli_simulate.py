"""``edgesplit simulate``: replay bandwidth traces against a bundle and policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgesplit.cli import BUNDLE_HELP, app, console
from edgesplit.errors import ConfigError


@app.command()
def simulate(
    bundle: Annotated[Path, typer.Option(help=BUNDLE_HELP)],
    trace: Annotated[
        list[Path],
        typer.Option(
            help="Bandwidth trace file or folder of them (time_s Mbit/s per line); repeat."
        ),
    ],
    policy: Annotated[
        list[str] | None,
        typer.Option(
            help="edgesplit, oracle, neurosurgeon, edgent, edge-only or cloud-only; repeat "
            "(default: all)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per (trace, policy) on stdout.")
    ] = False,
    interval_ms: Annotated[float, typer.Option(help="Time between requests, ms.")] = 1000.0,
    rtt_ms: Annotated[float, typer.Option(help="Round-trip time of the link, ms.")] = 40.0,
    slo_ms: Annotated[
        float | None, typer.Option(help="Latency objective, ms (Edgent's deadline).")
    ] = None,
    accuracy_floor: Annotated[
        float, typer.Option(help="Lowest expected accuracy a policy may choose, 0..1.")
    ] = 0.0,
    bandwidth_scale: Annotated[
        float, typer.Option(help="Multiply the traces' throughput (x10 for a WiFi-class link).")
    ] = 1.0,
    edge_slowdown: Annotated[
        float,
        typer.Option(
            help="The edge device is this many times slower than the machine that profiled "
            "the bundle's edge side (a model of a slower device; 1: as profiled)."
        ),
    ] = 1.0,
    radio: Annotated[str, typer.Option(help="Radio power model: wifi, lte or 3g.")] = "wifi",
    device_power: Annotated[str, typer.Option(help="Edge device power model.")] = "jetson-nano-10w",
    battery_level: Annotated[
        float | None,
        typer.Option(help="Start on a battery at this level (0..1); default: mains power."),
    ] = None,
    capacity_wh: Annotated[float, typer.Option(help="Battery capacity, Wh.")] = 20.0,
    target_hours: Annotated[
        float, typer.Option(help="Battery-aware mode: make the battery last this long.")
    ] = 8.0,
    seed: Annotated[int, typer.Option(help="Seed of the exit draws.")] = 0,
    estimator: Annotated[
        str,
        typer.Option(
            help="The edge's bandwidth estimator: harmonic (last 5), robust (RobustMPC's "
            "lower bound over it), ewma or last."
        ),
    ] = "harmonic",
) -> None:
    """Replay bandwidth traces against a bundle's profile with each policy.

    Reports mean and p95 latency, energy per request, accuracy, SLO misses
    and the offload rate per (trace, policy), then a summary per trace family
    with each policy's mean latency relative to the oracle (which knows the
    true bandwidth at each request).
    """
    from edgesplit.bundle import load_bundle
    from experiments.report import result_table, summary_table
    from experiments.simulate import POLICIES, SimConfig, simulate_all
    from experiments.traces import load_traces
    from offload_policy.adaptive import PolicyConfig

    names = policy or list(POLICIES)
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ConfigError(f"--policy {unknown[0]}: unknown; choose from {', '.join(POLICIES)}")
    if battery_level is not None and not 0 <= battery_level <= 1:
        raise ConfigError(f"--battery-level {battery_level}: expected 0..1")
    manifest = load_bundle(bundle, verify="none").manifest
    traces = load_traces(trace)
    config = SimConfig(
        interval_s=interval_ms / 1e3,
        rtt_s=rtt_ms / 1e3,
        slo_s=None if slo_ms is None else slo_ms / 1e3,
        accuracy_floor=accuracy_floor,
        bandwidth_scale=bandwidth_scale,
        edge_slowdown=edge_slowdown,
        policy=PolicyConfig(
            radio=radio,
            device=device_power,
            capacity_wh=capacity_wh,
            target_lifetime_s=target_hours * 3600,
            requests_per_s=1e3 / interval_ms,
        ),
        battery_level=battery_level,
        seed=seed,
        estimator=estimator,
    )
    results = simulate_all(manifest, traces, names, config)
    if as_json:
        for result in results:
            typer.echo(json.dumps(result.to_json()))
        return
    console.print(result_table(results))
    console.print(summary_table(results))
