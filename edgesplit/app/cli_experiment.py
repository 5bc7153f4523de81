"""``edgesplit experiment NAME``: run one experiment (or all) into a results folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from edgesplit.app.common import console
from edgesplit.errors import ConfigError

app = typer.Typer()


def _names() -> str:
    from experiments.catalog import CATALOG

    return "; ".join(f"{e.name}: {e.summary}" for e in CATALOG)


@app.command()
def experiment(
    name: Annotated[
        str,
        typer.Argument(
            help="layers, split-curves, bandwidth-sweep, traces, battery, drift, generalization, "
            "cloud-scaling or all.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Results root; each experiment writes OUT/NAME/.")
    ] = Path("results"),
    quick: Annotated[
        bool,
        typer.Option(help="Reduced size: `all --quick` runs in under 15 minutes on 2 cores."),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of inputs, draws and trace choice.")] = 0,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Model to run (zoo name); repeat. Default: the experiment's set."),
    ] = None,
    trace: Annotated[
        list[Path] | None,
        typer.Option(
            help="Bandwidth trace files or folders (time_s Mbit/s per line): several after "
            "one --trace, or repeat. "
            "Default: ../shared/traces, else the repository's tests/data/traces."
        ),
    ] = None,
    edge_cpu_quota: Annotated[
        float,
        typer.Option(
            help="Run the edge in a CPU cgroup of this fraction of one core (a Jetson-class "
            "device on this host); 0: no limit."
        ),
    ] = 0.1,
    device: Annotated[
        str,
        typer.Option(
            help="Edge device power model for the energy figures: jetson-nano-5w, "
            "jetson-nano-10w, jetson-xavier-nx-15w, jetson-orin-nano-15w, laptop-cpu, phone-soc."
        ),
    ] = "jetson-nano-10w",
    shaper: Annotated[
        str,
        typer.Option(
            help="How links are shaped: auto (tc in network namespaces, else an in-process "
            "token bucket on loopback), tc, or relay (the in-process one). Reports say which."
        ),
    ] = "auto",
    battery_wh: Annotated[
        float, typer.Option(help="battery: capacity of the simulated battery, Wh.")
    ] = 2.0,
    battery_hours: Annotated[
        float, typer.Option(help="battery: how long the battery-aware policy aims to last, h.")
    ] = 2.0,
    price_cloud_s: Annotated[
        float,
        typer.Option(help="Price of one second of tail compute in the cloud (cost per 1k)."),
    ] = 0.0,
    price_gb: Annotated[
        float, typer.Option(help="Price of one GB the cloud receives (cost per 1k requests).")
    ] = 0.0,
    slo_ms: Annotated[
        float | None,
        typer.Option(
            help="cloud-scaling: latency SLO of one request, ms (default: 5x the cloud-only "
            "request's median latency from one edge alone, measured first)."
        ),
    ] = None,
    cuts: Annotated[
        str | None,
        typer.Option(
            help="cloud-scaling: the edges' cut mix, comma-separated cut ids, e.g. c00,c09,c13 "
            "(default: the cloud-only cut and the 3 inner cuts cheapest to send with int8+lz4)."
        ),
    ] = None,
    cut_assign: Annotated[
        str,
        typer.Option(
            help="cloud-scaling: how each edge gets its cut of the mix: round-robin or random "
            "(seeded by --seed)."
        ),
    ] = "round-robin",
    batch_window_ms: Annotated[
        float,
        typer.Option(
            help="cloud-scaling: every node's batch window, ms: requests of one cut from any "
            "edge arriving within it run as one batch."
        ),
    ] = 2.0,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Where profiles and bundles are kept between runs "
            "(default: $EDGESPLIT_CACHE/experiments or ~/.cache/edgesplit/experiments)."
        ),
    ] = None,
) -> None:
    """Reproduce one of the field's figures on the real stack, one command each.

    Each experiment writes CSV files, PNG figures and report.md (what was
    measured on the wire and what comes from models, versions, machine,
    settings) into OUT/NAME/. Real parts: shaped links with tc in network
    namespaces (root), real edge and cloud nodes, a local Ray cluster.
    """
    from experiments.catalog import CATALOG, NAMES, entry
    from experiments.harness import Settings

    if name != "all" and name not in NAMES:
        raise ConfigError(f"experiment {name!r}: unknown; choose from {', '.join(NAMES)} or all")
    settings_kwargs = {
        "out": out,
        "quick": quick,
        "seed": seed,
        "models": tuple(model) if model else None,
        "traces": tuple(trace) if trace else None,
        "edge_cpu_quota": edge_cpu_quota or None,
        "device": device,
        "shaper": shaper,
        "battery_wh": battery_wh,
        "battery_hours": battery_hours,
        "price_cloud_s": price_cloud_s,
        "price_gb": price_gb,
        # Options of one experiment reach it as overrides of its own settings.
        "overrides": {
            k: v
            for k, v in {
                "slo_ms": slo_ms,
                "cuts": cuts,
                "assign": cut_assign,
                "batch_window_ms": batch_window_ms,
            }.items()
            if v is not None
        },
    }
    if cache is not None:
        settings_kwargs["cache"] = cache
    settings = Settings(**settings_kwargs)  # type: ignore[arg-type]
    if settings.traces:
        from experiments.traces import load_traces

        load_traces(settings.traces)  # bad trace files fail here, before any work
    if name in ("cloud-scaling", "all"):
        from experiments.exp_cloud_scaling import options

        options(settings)  # bad cloud-scaling flags fail here, before any work
    chosen = list(CATALOG) if name == "all" else [entry(name)]
    began = time.perf_counter()
    reports = []
    for e in chosen:
        console.rule(f"experiment {e.name}: {e.summary}")
        if not quick:
            console.print(f"full size: {e.load().FULL_TIME}; --quick runs a reduced one")
        reports.append(e.run(settings, console).finish_path)
    if name == "all":
        from experiments.harness import write_index

        index = write_index(settings, chosen, time.perf_counter() - began)
        console.print(
            f"all {len(chosen)} experiments in {time.perf_counter() - began:.0f} s: {index}"
        )
