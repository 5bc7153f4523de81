"""The figures of ``benchmarks/gpu_check.sh``: one ``gpu_check: NAME = VALUE UNIT`` line each.

The shell script installs, starts and stops; this module only reads and measures,
so each part also runs (and is tested) on a machine without a GPU:

- ``runtime``: the Python, the ONNX Runtime package(s) installed and the providers
  the build lists;
- ``libpath``: the library folders of the NVIDIA pip packages (CUDA, cuDNN, TensorRT)
  in this environment, for ``LD_LIBRARY_PATH``;
- ``providers WANTED``: the provider a real session takes for WANTED (a probe model),
  and why the first choice is not available when it is not;
- ``profile FILE``: the provider an ``edgesplit profile`` really ran on and its
  whole-model latency;
- ``cloud ENDPOINT``: cloud-only requests (the raw input sent, the whole model as the
  tail) to a running ``edgesplit cloud``, one at a time after a warm-up: p50, p95 and
  the tail's compute time; the provider from the node's start-up line in its log.

Run from the repository root::

    python -m benchmarks.gpu_check providers tensorrt,cuda --label tensorrt
    python -m benchmarks.gpu_check profile WORK/profile.json --label resnet18.cuda
    python -m benchmarks.gpu_check cloud tcp://127.0.0.1:5555 --bundle B --log L --label cloud
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.metadata
import platform
import re
import site
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Where ONNX Runtime's TensorRT provider looks for TensorRT, newest first.
NVINFER_SONAMES = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")


def figure(name: str, value: object, unit: str = "") -> None:
    """Print one figure line, the form the script and docs/runtime.md use."""
    print(f"gpu_check: {name} = {value}{' ' + unit if unit else ''}", flush=True)


def runtime() -> int:
    """The Python, the ONNX Runtime packages and build, and the CUDA each library wants.

    torch (here only to export models) and onnxruntime-gpu may want different CUDA
    majors; their NVIDIA pip packages then share folders, and the CUDA provider may
    not load. The two lines side by side say so.
    """
    import onnxruntime as ort
    from onnxruntime.capi import build_and_package_info

    figure("python", platform.python_version())
    packages = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            packages.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    figure("onnxruntime.packages", ", ".join(packages) or "none")
    if len(packages) > 1:
        figure(
            "onnxruntime.warning",
            "both the CPU and the GPU package are installed: they overwrite each other's "
            "files; uninstall both and install onnxruntime-gpu alone",
        )
    figure("onnxruntime.version", ort.__version__)
    figure("onnxruntime.providers_in_build", ",".join(ort.get_available_providers()))
    cuda = getattr(build_and_package_info, "cuda_version", None)  # GPU builds only
    figure("onnxruntime.built_for_cuda", cuda or "none (a CPU build)")
    try:
        import torch
    except ImportError:
        figure("torch", "not installed")
    else:
        figure("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    return 0


def library_path() -> int:
    """Print the NVIDIA pip packages' library folders, colon-separated (maybe nothing)."""
    folders: list[str] = []
    for packages in site.getsitepackages():
        patterns = (f"{packages}/nvidia/**/lib", f"{packages}/tensorrt_libs")
        for pattern in patterns:
            for folder in sorted(glob.glob(pattern, recursive=True)):
                if folder not in folders and glob.glob(f"{folder}/*.so*"):
                    folders.append(folder)
    print(":".join(folders))
    return 0


def tensorrt_missing() -> str | None:
    """Why TensorRT's library cannot be loaded here, or ``None`` when it can."""
    for soname in NVINFER_SONAMES:
        try:
            ctypes.CDLL(soname)
        except OSError:
            continue
        return None
    return (
        "libnvinfer (TensorRT) is not on the library path: install TensorRT 10 "
        "(pip install tensorrt-cu12, or the script's --install-tensorrt) or add its lib "
        "folder to LD_LIBRARY_PATH"
    )


def providers(wanted: str, label: str) -> int:
    """Which provider a probe session takes for ``wanted``; why not the first, if not."""
    from edgesplit.providers import SHORT_NAMES, TENSORRT, report_providers

    report = report_providers(wanted)
    figure(f"provider.{label}", report.used)
    if report.fell_back:
        first = report.requested[0]
        short = {full: name for name, full in SHORT_NAMES.items()}.get(first, first)
        reason = "; ".join(why for name, why in report.skipped if name == first)
        if first == TENSORRT and first in report.in_build:
            reason = tensorrt_missing() or reason
        figure(short, f"not available ({reason}; the session runs on {report.used})")
    return 0


def profile(path: Path, label: str) -> int:
    """The provider a profile really ran on, against the one asked for, and its latency."""
    from partitioner.profile import load_profile

    measured = load_profile(path)
    figure(f"profile.{label}.provider", measured.provider)
    asked = measured.providers_requested[0] if measured.providers_requested else "?"
    if measured.provider != asked:
        figure(f"profile.{label}.fell_back", f"asked {asked}, ran on {measured.provider}")
    whole = measured.whole_model
    figure(f"profile.{label}.whole_model_p50", f"{whole.median_s * 1e3:.3f}", "ms")
    figure(f"profile.{label}.whole_model_p95", f"{whole.p95_s * 1e3:.3f}", "ms")
    return 0


def logged_provider(log: Path) -> str:
    """The provider in a cloud node's start-up line (``backend onnxruntime (CUDA...)``)."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    for line in text.splitlines():
        if line.startswith("cloud node:"):
            found = re.findall(r"\w+ExecutionProvider", line)
            if found:
                return found[-1]
    return f"unknown (no provider in the start-up line of {log})"


def cloud(
    endpoint: str, bundle_path: Path, log: Path | None, label: str, requests: int, warmup: int
) -> int:
    """Cloud-only requests, one at a time: p50, p95 of the round trip, the tail's compute."""
    import wire
    from edge_node.transport import CloudClient
    from edgesplit.bundle import load_bundle
    from experiments.loadgen import sample

    bundle = load_bundle(bundle_path)
    cut = bundle.manifest.cuts[0]
    if cut.kind != "input":
        figure(f"{label}.error", f"{bundle_path} has no cloud-only cut (partition with --no-prune)")
        return 1
    value = sample(bundle, 1)
    tensors = (wire.Tensor(cut.name, value),)
    if log is not None:
        figure(f"{label}.provider", logged_provider(log))
    round_trips: list[float] = []
    compute: list[float] = []
    failed = 0
    with CloudClient(endpoint) as client:
        for i in range(warmup + requests):
            began = time.perf_counter()
            request = wire.InferRequest(client.new_id(), bundle.id, cut.id, tensors)
            reply, _ = client.call(request, timeout_s=30)
            elapsed = time.perf_counter() - began
            if reply is None or not isinstance(reply.message, wire.Result):
                failed += 1
                continue
            if i >= warmup:
                round_trips.append(elapsed)
                compute.append(reply.message.compute_s)
    figure(f"{label}.requests", f"{len(round_trips)} ok, {failed} failed")
    if not round_trips:
        return 1
    figure(f"{label}.p50", f"{statistics.median(round_trips) * 1e3:.3f}", "ms")
    figure(f"{label}.p95", f"{float(np.percentile(round_trips, 95)) * 1e3:.3f}", "ms")
    figure(f"{label}.compute_p50", f"{statistics.median(compute) * 1e3:.3f}", "ms")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse a subcommand and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("runtime", help="Python, ONNX Runtime packages and build providers")
    sub.add_parser("libpath", help="NVIDIA pip packages' library folders, for LD_LIBRARY_PATH")
    p = sub.add_parser("providers", help="the provider a probe session really takes")
    p.add_argument("wanted", help="providers in order, e.g. tensorrt,cuda")
    p.add_argument("--label", required=True)
    p = sub.add_parser("profile", help="summarize an `edgesplit profile` JSON file")
    p.add_argument("path", type=Path)
    p.add_argument("--label", required=True)
    p = sub.add_parser("cloud", help="cloud-only requests to a running `edgesplit cloud`")
    p.add_argument("endpoint")
    p.add_argument("--bundle", type=Path, required=True, help="the bundle the node serves")
    p.add_argument("--log", type=Path, help="the node's log, for the provider it uses")
    p.add_argument("--label", required=True)
    p.add_argument("--requests", type=int, default=200, help="timed requests")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests first")
    args = parser.parse_args(argv)
    if args.command == "runtime":
        return runtime()
    if args.command == "libpath":
        return library_path()
    if args.command == "providers":
        return providers(args.wanted, args.label)
    if args.command == "profile":
        return profile(args.path, args.label)
    if args.requests < 1 or args.warmup < 0:
        parser.error("--requests >= 1 and --warmup >= 0")
    return cloud(args.endpoint, args.bundle, args.log, args.label, args.requests, args.warmup)


if __name__ == "__main__":
    sys.exit(main())
