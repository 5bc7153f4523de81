"""``edgesplit simulate``: replay bandwidth traces against a bundle and policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgesplit.app.common import BUNDLE_HELP, console
from edgesplit.errors import ConfigError

app = typer.Typer()


@app.command()
def simulate(
    bundle: Annotated[Path, typer.Option(help=BUNDLE_HELP)],
    trace: Annotated[
        list[Path],
        typer.Option(
            help="Bandwidth trace files or folders of them (time_s Mbit/s per line): "
            "several after one --trace, or repeat."
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
        float | None,
        typer.Option(
            help="Lowest expected accuracy a policy may choose, 0..1 (default: the whole "
            "model's accuracy less one point; 0 allows any trade)."
        ),
    ] = None,
    price_cloud_s: Annotated[
        float, typer.Option(help="Price of one second of the tail's compute in the cloud.")
    ] = 0.0,
    price_gb: Annotated[float, typer.Option(help="Price of one GB the cloud receives.")] = 0.0,
    cost_budget: Annotated[
        float | None,
        typer.Option(help="Most expected cloud cost per request edgesplit may choose."),
    ] = None,
    cost_weight: Annotated[
        float,
        typer.Option(
            help="Seconds of latency one unit of cost is worth: edgesplit minimises "
            "latency + weight x cost (0: latency alone)."
        ),
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
    drift: Annotated[
        Path | None,
        typer.Option(
            help="Drift schedule file (CSV, JSON or TOML) of time_s, edge_factor, cloud_factor: "
            "from each time on, the edge and the cloud run that many times slower than "
            "profiled."
        ),
    ] = None,
    edge_drift: Annotated[
        str | None,
        typer.Option(
            help="Edge slowdowns over time as TIME_S:FACTOR,...; 30:2,90:1 is 2x slower "
            "from 30 s, as profiled again from 90 s."
        ),
    ] = None,
    cloud_drift: Annotated[
        str | None, typer.Option(help="Cloud slowdowns over time, as --edge-drift.")
    ] = None,
    corrections: Annotated[
        bool,
        typer.Option(
            "--corrections/--no-corrections",
            help="edgesplit learns the edge's and cloud's speed from the times it measures, "
            "as the edge node does (off: it trusts the profile).",
        ),
    ] = True,
    compute_jitter: Annotated[
        float,
        typer.Option(help="Spread of each head and tail time (lognormal sigma; 0.1: ~10%)."),
    ] = 0.0,
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
            help="The edge's bandwidth estimator: tracked (EWMA 0.8 corrected by its own "
            "recent errors), harmonic (last 5), robust (RobustMPC's lower bound over it), "
            "ewma or last."
        ),
    ] = "tracked",
) -> None:
    """Replay bandwidth traces against a bundle's profile with each policy.

    Reports mean and p95 latency, energy per request, accuracy, SLO misses
    and the offload rate per (trace, policy), then a summary per trace family
    with each policy's mean latency relative to the oracle (which knows the
    true bandwidth at each request).
    """
    from edgesplit.app.tables import floor_text
    from edgesplit.bundle import load_bundle
    from experiments.drift import drift_schedule
    from experiments.report import result_table, summary_table
    from experiments.simulate import POLICIES, SimConfig, floor_in_force, simulate_all
    from experiments.traces import load_traces
    from offload_policy.adaptive import PolicyConfig

    names = policy or list(POLICIES)
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ConfigError(f"--policy {unknown[0]}: unknown; choose from {', '.join(POLICIES)}")
    if battery_level is not None and not 0 <= battery_level <= 1:
        raise ConfigError(f"--battery-level {battery_level}: expected 0..1")
    if accuracy_floor is not None and not 0 <= accuracy_floor <= 1:
        raise ConfigError(f"--accuracy-floor {accuracy_floor}: expected 0..1")
    schedule = drift_schedule(drift, edge_drift, cloud_drift)
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
            price_cloud_s=price_cloud_s,
            price_gb=price_gb,
            cost_budget=cost_budget,
            cost_weight=cost_weight,
        ),
        battery_level=battery_level,
        seed=seed,
        estimator=estimator,
        drift=schedule,
        corrections="learn" if corrections else "off",
        compute_jitter=compute_jitter,
    )
    results = simulate_all(manifest, traces, names, config)
    if as_json:
        for result in results:
            typer.echo(json.dumps(result.to_json()))
        return
    console.print(result_table(results))
    console.print(summary_table(results))
    if schedule is not None:
        console.print(
            f"drift ({schedule.source}): {schedule.describe()}; edgesplit "
            + ("learns the speeds from its measurements" if corrections else "trusts the profile")
            + ", the oracle is told them"
        )
    floor = floor_in_force(manifest, config)
    console.print(
        "accuracy floor in force: "
        + floor_text(floor, accuracy_floor is None, manifest)
        + ("; --accuracy-floor 0 allows any trade" if accuracy_floor is None else "")
    )
    if price_cloud_s or price_gb:
        console.print(
            f"cloud cost: {price_cloud_s:g} per compute-second, {price_gb:g} per GB received"
            + (f", budget {cost_budget:g} per request" if cost_budget is not None else "")
            + (f", weight {cost_weight:g} s per unit" if cost_weight else "")
        )
