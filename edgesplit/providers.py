"""ONNX Runtime execution providers for the edge: which to ask for, their options, which ran.

A build of onnxruntime-gpu lists the CUDA and TensorRT providers even on a machine
without a GPU or without their libraries, and a session then quietly runs on the
CPU. So what counts is ``InferenceSession.get_providers()`` of a real session, which
``report_providers`` checks and explains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from edgesplit.errors import ConfigError
from edgesplit.onnxrt import CPU, create_session

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"

DEFAULT_ORDER = (TENSORRT, CUDA, OPENVINO, CPU)
"""Providers tried when the config names none, fastest first."""

SHORT_NAMES = {"tensorrt": TENSORRT, "cuda": CUDA, "openvino": OPENVINO, "cpu": CPU}

PROBE_MODEL = (
    b'\x08\x08\x12\x00:;\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x05probeZ\x0f\n\x01x\x12\n\n'
    b"\x08\x08\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01"
    b"B\x04\n\x00\x10\r"
)
"""A serialized ONNX model, ``y = Identity(x)`` on float[1] (IR 8, opset 13), to probe
which provider a session gets without a bundle (onnx is not a runtime dependency)."""


def provider_name(name: str) -> str:
    """The full name of a provider given by short name or full name, in any case.

    Raises:
        ConfigError: a name ONNX Runtime does not know; the message lists the valid ones.
    """
    key = name.strip().lower()
    if key in SHORT_NAMES:
        return SHORT_NAMES[key]
    known: list[str] = [*DEFAULT_ORDER, *ort.get_all_providers()]
    for full in known:
        if full.lower() == key:
            return full
    others = [p for p in ort.get_all_providers() if p not in DEFAULT_ORDER]
    raise ConfigError(
        f"execution provider {name!r} is unknown; valid: {', '.join(SHORT_NAMES)}, "
        f"their full names ({', '.join(DEFAULT_ORDER)}), or another provider ONNX Runtime "
        f"knows ({', '.join(others)})"
    )


def resolve_providers(wanted: Sequence[str] | None) -> list[str]:
    """Full provider names in order of preference, ending with the CPU provider.

    ``None`` gives ``DEFAULT_ORDER``; a string is read as a comma-separated list.
    Duplicates are dropped, and providers after the CPU one are too: the CPU
    provider takes every node, so they would never run.

    Raises:
        ConfigError: an unknown provider name.
    """
    if wanted is None:
        return list(DEFAULT_ORDER)
    names = wanted.split(",") if isinstance(wanted, str) else list(wanted)
    full_names = [provider_name(name) for name in names if name.strip()]
    order: list[str] = []
    for full in full_names:
        if full not in order:
            order.append(full)
        if full == CPU:
            break
    if CPU not in order:
        order.append(CPU)
    return order


def provider_options(
    name: str, engine_cache_dir: Path | None = None, fp16: bool = False
) -> dict[str, str]:
    """ONNX Runtime options for one provider.

    TensorRT: fp16 on or off, and with ``engine_cache_dir`` an engine cache, so a
    Jetson builds each engine once instead of at every start (minutes on a Nano).
    OpenVINO: its model cache in ``engine_cache_dir``. Others: none. The directory
    should exist.

    Raises:
        ConfigError: an unknown provider name.
    """
    full = provider_name(name)
    if full == TENSORRT:
        options = {"trt_fp16_enable": str(fp16)}
        if engine_cache_dir is not None:
            options["trt_engine_cache_enable"] = "True"
            options["trt_engine_cache_path"] = str(engine_cache_dir)
        return options
    if full == OPENVINO and engine_cache_dir is not None:
        return {"cache_dir": str(engine_cache_dir)}
    return {}


def options_by_provider(
    providers: Sequence[str], engine_cache_dir: Path | None = None, fp16: bool = False
) -> dict[str, dict[str, str]]:
    """``provider_options`` of each provider that has some, keyed by full name.

    This is the ``provider_options`` argument of ``edgesplit.onnxrt.create_session``.
    """
    options = {provider_name(p): provider_options(p, engine_cache_dir, fp16) for p in providers}
    return {name: values for name, values in options.items() if values}


@dataclass(frozen=True)
class ProviderReport:
    """Which provider a real session uses, against the order asked for.

    Attributes:
        requested: full names in order of preference (``resolve_providers``).
        in_build: what this ONNX Runtime build lists (``get_available_providers``).
        active: what the session really registered (``session.get_providers()``).
    """

    requested: tuple[str, ...]
    in_build: tuple[str, ...]
    active: tuple[str, ...]

    @property
    def used(self) -> str:
        """The provider that runs the model (the first the session registered)."""
        return self.active[0] if self.active else CPU

    @property
    def fell_back(self) -> bool:
        """Whether the session runs on something other than the first choice."""
        return self.used != self.requested[0]

    @property
    def skipped(self) -> tuple[tuple[str, str], ...]:
        """(provider, why) for each provider preferred to the one used."""
        skipped = []
        for name in self.requested:
            if name == self.used:
                break
            why = (
                "not in this ONNX Runtime build"
                if name not in self.in_build
                else "in this build, but the session did not take it "
                "(its libraries or the device are missing; see ONNX Runtime's log)"
            )
            skipped.append((name, why))
        return tuple(skipped)

    def describe(self) -> str:
        """One line for the edge's start-up report."""
        line = f"execution provider: {self.used} (asked {' > '.join(self.requested)})"
        if self.skipped:
            line += "; fell back past " + "; ".join(f"{n}: {why}" for n, why in self.skipped)
        return line


def report_providers(
    wanted: Sequence[str] | None = None,
    probe: ort.InferenceSession | Path | str | bytes | None = None,
    *,
    engine_cache_dir: Path | None = None,
    fp16: bool = False,
) -> ProviderReport:
    """Which of the ``wanted`` providers a real session uses.

    Args:
        wanted: provider names as ``resolve_providers`` takes them (``None``: default order).
        probe: a session already made with ``wanted``; or a model (path or bytes) to make
            one from; ``None``: the built-in ``PROBE_MODEL``.
        engine_cache_dir: the TensorRT/OpenVINO cache for the probe session.
        fp16: TensorRT fp16 for the probe session.

    Raises:
        ConfigError: an unknown provider name.
        BackendError: the probe model does not load.
    """
    requested = resolve_providers(wanted)
    if isinstance(probe, ort.InferenceSession):
        session = probe
    else:
        options: Mapping[str, Mapping[str, str]] = options_by_provider(
            requested, engine_cache_dir, fp16
        )
        model = PROBE_MODEL if probe is None else probe
        session = create_session(model, requested, threads=1, provider_options=options)
    return ProviderReport(
        requested=tuple(requested),
        in_build=tuple(ort.get_available_providers()),
        active=tuple(session.get_providers()),
    )


__all__ = [
    "CUDA",
    "DEFAULT_ORDER",
    "OPENVINO",
    "PROBE_MODEL",
    "SHORT_NAMES",
    "TENSORRT",
    "ProviderReport",
    "options_by_provider",
    "provider_name",
    "provider_options",
    "report_providers",
    "resolve_providers",
]
