"""The offline commands: train, profile, partition, export, show, a Triton repository.

They run where the model is prepared (a workstation, CI), and on the target for
``profile``; the partitioner (onnx, and torch for zoo models) is imported inside
each command, so the runtime commands never load it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from edgesplit import __version__
from edgesplit.app.common import (
    BANDWIDTH_HELP,
    BUNDLE_HELP,
    CODEC_HELP,
    THRESHOLD_HELP,
    InputShapeOption,
    MaxTensorsOption,
    SamplesOption,
    ThreadsOption,
    console,
    parse_input_shapes,
    parse_threshold,
    positive,
)
from edgesplit.errors import ConfigError

app = typer.Typer()


@app.command()
def version() -> None:
    """Print the edgesplit version."""
    console.print(f"edgesplit {__version__}")


@app.command()
def train(
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs (default: the built-in setting).")
    ] = None,
) -> None:
    """Train the built-in early-exit CNN (cached) and print each exit's test accuracy."""
    from partitioner.training import DEFAULT_EPOCHS, default_cache_dir, train_branchynet

    with console.status("training the early-exit CNN"):
        result = train_branchynet(default_cache_dir(), epochs=epochs or DEFAULT_EPOCHS)
    console.print(
        f"weights: {result.weights_path} ({'cached' if result.cached else 'trained'}, "
        f"{result.train_seconds:.1f} s)"
    )
    for name, acc in result.accuracy.items():
        console.print(f"  {name:8s} test accuracy {acc:.4f}")


ModelArgument = Annotated[
    str,
    typer.Option(
        help="Zoo name (branchynet, resnet18, googlenet, ...), package.module:factory, "
        "or FILE.onnx (exits: --exits, or a sidecar FILE.exits.json)."
    ),
]
ExitsOption = Annotated[
    str, typer.Option(help="Comma-separated early-exit outputs of an ONNX file.")
]
ProvidersOption = Annotated[
    str,
    typer.Option(
        help="ONNX Runtime execution providers in order of preference, comma-separated, by "
        "short or full name, e.g. tensorrt,cuda,cpu (CPU is always the fallback; the profile "
        "records the one really used)."
    ),
]
QuickOption = Annotated[
    bool, typer.Option(help="2 warm-up and 7 timed runs instead of 5 and 30: for tests.")
]


def _profile_config(
    quick: bool,
    providers: str,
    threads: int,
    batch_size: int = 1,
    layers: bool = True,
    engine_cache: Path | None = None,
    fp16: bool = False,
):
    """How to profile; providers by short or full name (``tensorrt,cuda,cpu``)."""
    from edgesplit.providers import options_by_provider, resolve_providers
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions

    order = resolve_providers(providers)
    if engine_cache is not None:
        engine_cache.mkdir(parents=True, exist_ok=True)
    return ProfileConfig(
        reps=Repetitions.quick() if quick else Repetitions(),
        providers=tuple(order),
        threads=threads,
        batch_size=batch_size,
        layers=layers,
        provider_options=options_by_provider(order, engine_cache, fp16) or None,
    )


def _range(name: str, value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split("-", 1))
    except ValueError:
        raise ConfigError(f"{name} {value}: expected LOW-HIGH in Mbit/s, like 0.1-1000") from None
    return low, high


@app.command()
def profile(
    model: ModelArgument = "",
    device: Annotated[
        str, typer.Option(help="Which target this machine is: edge (times heads) or cloud (tails).")
    ] = "edge",
    out: Annotated[Path | None, typer.Option(help="Profile JSON file to write.")] = None,
    quick: QuickOption = False,
    exits: ExitsOption = "",
    input_shape: InputShapeOption = None,
    samples: SamplesOption = None,
    max_tensors: MaxTensorsOption = 8,
    providers: ProvidersOption = "CPUExecutionProvider",
    threads: ThreadsOption = 0,
    batch_size: Annotated[int, typer.Option(help="Batch size of the timed runs.")] = 1,
    layers: Annotated[
        bool, typer.Option(help="Per-layer latency from ONNX Runtime's node profiling.")
    ] = True,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Draw per-layer latency and output-size bars and per-cut figures to this PNG."
        ),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Read an existing profile (e.g. BUNDLE/profiles/edge.json) instead of measuring.",
        ),
    ] = None,
    fp16: Annotated[
        bool,
        typer.Option(
            "--fp16", help="TensorRT in FP16, as the edge serves with [edge] fp16 = true."
        ),
    ] = False,
    engine_cache: Annotated[
        Path | None,
        typer.Option(help="TensorRT/OpenVINO engine cache directory, as the edge's."),
    ] = None,
) -> None:
    """Measure a model on this machine as the edge device or the cloud machine.

    Run it on the target itself: `edgesplit profile --device edge` on the
    Jetson, `--device cloud` on the server, then give both files to
    `edgesplit partition --edge-profile ... --cloud-profile ...`. Records
    per-layer kernel latency, per-cut head (edge) or tail (cloud) latency
    (median and p95 after a warm-up), activation bytes raw and per codec on
    real samples, each head's peak memory, and the machine, execution
    provider, threads and batch size.
    """
    from edgesplit.app.tables import profile_table
    from partitioner.build import run_profile
    from partitioner.profile import load_profile, save_profile

    if from_file is not None:
        measured = load_profile(from_file)
    else:
        if not model:
            raise ConfigError("--model is required (or --from PROFILE to plot an existing one)")
        if device not in ("edge", "cloud"):
            raise ConfigError(f"--device {device}: expected edge or cloud")
        if out is None:
            raise ConfigError("--out is required: the profile JSON file to write")
        shape, pins = parse_input_shapes(input_shape)
        config = _profile_config(quick, providers, threads, batch_size, layers, engine_cache, fp16)
        measured = run_profile(
            model,
            device,
            config=replace(config, max_tensors=max_tensors),
            exits=tuple(e for e in exits.split(",") if e),
            input_shape=shape,
            input_shapes=pins,
            samples=samples,
            console=console,
        )
        save_profile(measured, out)
        console.print(f"profile written to {out}")
    console.print(profile_table(measured))
    if plot is not None:
        from partitioner.plots import plot_profile

        plot_profile(measured, plot)
        console.print(f"plot written to {plot}")


@app.command()
def partition(
    model: ModelArgument,
    out: Annotated[
        Path, typer.Option(help="Directory to write the bundle to (replaced when complete).")
    ],
    quick: QuickOption = False,
    exits: ExitsOption = "",
    input_shape: InputShapeOption = None,
    samples: SamplesOption = None,
    max_tensors: MaxTensorsOption = 8,
    providers: ProvidersOption = "CPUExecutionProvider",
    threads: ThreadsOption = 0,
    edge_profile: Annotated[
        Path | None,
        typer.Option(
            help="Profile measured on the edge device (`edgesplit profile --device edge`); "
            "default: measure here."
        ),
    ] = None,
    cloud_profile: Annotated[
        Path | None,
        typer.Option(
            help="Profile measured on the cloud machine (`--device cloud`); default: measure here."
        ),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(help="Drop cuts never optimal in the operating range (see --prune-range)."),
    ] = True,
    prune_range: Annotated[
        str,
        typer.Option(
            help="Uplink bandwidth range a kept cut must be optimal somewhere in, Mbit/s."
        ),
    ] = "0.1-1000",
    device_power: Annotated[
        str,
        typer.Option(
            help="Edge power model for the energy side of pruning: jetson-nano-5w, "
            "jetson-nano-10w, jetson-xavier-nx-15w, jetson-orin-nano-15w, laptop-cpu, phone-soc."
        ),
    ] = "jetson-nano-10w",
    bandwidth_mbps: Annotated[
        float, typer.Option(help="Bandwidth for the summary table, Mbit/s.")
    ] = 10.0,
) -> None:
    """Find the cuts of a model, profile, calibrate exits, prune, and write the bundle.

    On one machine it profiles both sides here in one step. With
    --edge-profile and --cloud-profile it uses what the targets measured
    (the model must be the same ONNX graph). Note: on one machine the edge is
    as fast as the cloud, so pruning keeps few cuts; --no-prune keeps all.
    """
    from edgesplit.app.tables import cut_table, pruning_table
    from partitioner.build import build_bundle
    from partitioner.partition import PartitionConfig
    from partitioner.pruning import PruneConfig

    low, high = _range("--prune-range", prune_range)
    shape, pins = parse_input_shapes(input_shape)
    config = PartitionConfig(
        profile=replace(_profile_config(quick, providers, threads), max_tensors=max_tensors),
        edge_profile=edge_profile,
        cloud_profile=cloud_profile,
        prune=PruneConfig(enabled=prune, bandwidth_mbps=(low, high), device=device_power),
        fidelity_samples=16 if quick else 32,
    )
    bundle = build_bundle(
        model,
        out,
        config=config,
        exits=tuple(e for e in exits.split(",") if e),
        input_shape=shape,
        input_shapes=pins,
        samples=samples,
        console=console,
    )
    m = bundle.manifest
    console.print(
        f"bundle {bundle.root} id={bundle.id[:12]} cuts={len(m.cuts)} segments={len(m.segments)}"
    )
    console.print(
        cut_table(
            m,
            "int8+lz4" if "int8+lz4" in m.codecs else m.codecs[0],
            None,
            positive("--bandwidth-mbps", bandwidth_mbps) * 1e6,
            0.0,
        )
    )
    if m.pruned:
        console.print(pruning_table(m))


@app.command()
def export(
    model: Annotated[
        str, typer.Option(help="Zoo name (branchynet, resnet18, ...) or package.module:factory.")
    ],
    out: Annotated[Path, typer.Option(help="ONNX file to write.")],
    input_shape: InputShapeOption = None,
) -> None:
    """Export a model to ONNX with a dynamic batch and its early exits as extra outputs."""
    from partitioner.export import export_onnx, resolve_model

    with console.status(f"building {model} (training if needed)"):
        spec = resolve_model(model, parse_input_shapes(input_shape)[0])
    path = export_onnx(spec, out)
    console.print(
        f"{path}: input {list(spec.input_shape)} (batch dynamic), outputs "
        f"{list(spec.output_names)} (final first, then exits {list(spec.exit_names)})"
    )


@app.command()
def show(
    bundle: Annotated[Path, typer.Option(help=BUNDLE_HELP)],
    codec: Annotated[str, typer.Option(help=CODEC_HELP)] = "int8+lz4",
    threshold: Annotated[str, typer.Option(help=THRESHOLD_HELP)] = "off",
    bandwidth_mbps: Annotated[float, typer.Option(help=BANDWIDTH_HELP)] = 10.0,
    rtt_ms: Annotated[float, typer.Option(help="Round-trip time the policy assumes, ms.")] = 0.0,
    sizes: Annotated[bool, typer.Option(help="Also show bytes per cut under every codec.")] = False,
) -> None:
    """Show a bundle's cuts with sizes and predicted latency at a given link."""
    from edgesplit.app.tables import (
        coverage_text,
        cut_table,
        fidelity_table,
        pruning_table,
        size_table,
    )
    from edgesplit.bundle import load_bundle

    b = load_bundle(bundle)
    m = b.manifest
    console.print(
        f"bundle {b.root} id={b.id[:12]} model={m.model.name} exits={list(m.model.exits)}"
    )
    inputs = ", ".join(f"{i.name} {'x'.join(map(str, i.shape))} {i.dtype}" for i in m.model.inputs)
    batch = ", batch fixed to 1" if m.model.fixed_batch else ""
    console.print(f"inputs: {inputs}; outputs: {', '.join(m.model.outputs)}{batch}")
    for role, p in m.profiles.items():
        console.print(
            f"{role} profiled on {p.machine.get('host')} ({p.machine.get('cpu')}, {p.provider}, "
            f"{p.threads or 'default'} threads)"
        )
    console.print(f"samples: {m.sample_source}")
    console.print(
        cut_table(
            m,
            codec,
            parse_threshold(threshold),
            positive("--bandwidth-mbps", bandwidth_mbps) * 1e6,
            rtt_ms / 1e3,
        )
    )
    if sizes:
        console.print(size_table(m))
    console.print(coverage_text(m))
    if any(c.fidelity for c in m.cuts):
        console.print(fidelity_table(m))
    console.print(pruning_table(m))


@app.command("triton-repository")
def triton_repository(
    bundle: Annotated[Path, typer.Option(help=BUNDLE_HELP)],
    out: Annotated[Path, typer.Option(help="New directory for the python-backend repository.")],
    threads: ThreadsOption = 0,
) -> None:
    """Write the bundle's tails as a Triton repository for a Triton without ONNX Runtime.

    A stock Triton serves BUNDLE/cloud as it is. A Triton with the python
    backend only (the tritonserver of nvidia-pytriton, say) serves this copy:
    the same models, inputs, outputs and dynamic batching, each running its
    model.onnx with ONNX Runtime from a generated model.py.
    """
    from edgesplit.bundle import load_bundle
    from partitioner.triton import python_backend_repository

    names = python_backend_repository(load_bundle(bundle, verify="cloud"), out, threads=threads)
    console.print(
        f"{len(names)} models written to {out}; serve with tritonserver --model-repository {out}"
    )
