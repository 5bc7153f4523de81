"""Figures of a profile: per-layer latency and output size, and per-cut figures.

The top two panels are the classic per-layer bars (latency of each kernel as
ONNX Runtime ran it; the size of what it outputs), as in Neurosurgeon's
figures: where the data shrinks early and the compute is late, a split pays.
The bottom panel shows the candidate cuts: head (edge profile) or tail (cloud
profile) latency, and the bytes sent raw and with int8+lz4.
"""

from __future__ import annotations

from pathlib import Path

from edgesplit.errors import ConfigError
from partitioner.profile import TargetProfile


def plot_profile(profile: TargetProfile, path: Path, codec: str = "int8+lz4") -> Path:
    """Draw ``profile`` to a PNG at ``path`` and return the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'edgesplit[experiments]'") from None
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--plot {path}: expected a .png file name")
    layers = profile.layers
    fig, axes = plt.subplots(3, 1, figsize=(max(8.0, 0.16 * len(layers) + 3), 10))
    title = (
        f"{profile.model}: {profile.role} profile on {profile.machine.get('cpu', '?')} "
        f"({profile.provider}, {profile.threads or 'default'} threads, batch {profile.batch_size})"
    )
    fig.suptitle(title, fontsize=10)

    x = range(len(layers))
    labels = [layer.op for layer in layers]
    ax = axes[0]
    if layers:
        ax.bar(x, [layer.median_s * 1e3 for layer in layers], color="tab:blue")
        ax.set_xticks(list(x), labels, rotation=90, fontsize=6)
    else:
        ax.text(0.5, 0.5, "no per-layer profile (--no-layers)", ha="center", transform=ax.transAxes)
    ax.set_ylabel("latency (ms)")
    ax.set_title(
        f"per-layer latency ({len(layers)} kernels, median of {profile.runs} runs)", fontsize=9
    )

    ax = axes[1]
    if layers:
        ax.bar(x, [layer.output_bytes / 1024 for layer in layers], color="tab:orange")
        ax.set_xticks(list(x), labels, rotation=90, fontsize=6)
        ax.set_yscale("log")
    ax.set_ylabel("output size (KiB)")
    ax.set_title("per-layer output size", fontsize=9)

    ax = axes[2]
    cuts = profile.cuts
    ids = [c.id for c in cuts]
    side = "head" if profile.role == "edge" else "tail"
    seconds = [
        (getattr(c, side).median_s * 1e3 if getattr(c, side) is not None else 0.0) for c in cuts
    ]
    positions = range(len(cuts))
    ax.bar(positions, seconds, color="tab:green", label=f"{side} latency (ms)")
    ax.set_ylabel(f"{side} latency (ms)")
    ax.set_xticks(list(positions), ids, rotation=90, fontsize=7)
    twin = ax.twinx()
    twin.plot(positions, [c.raw_bytes / 1024 for c in cuts], "o-", color="tab:red", label="raw KiB")
    coded = [c.encoded_bytes.get(codec, float("nan")) / 1024 for c in cuts]
    twin.plot(positions, coded, "s--", color="tab:purple", label=f"{codec} KiB")
    twin.set_yscale("log")
    twin.set_ylabel("bytes sent per sample (KiB)")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="upper center")
    ax.set_title(f"candidate cuts: {side} latency and activation size", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
