"""The one place edgesplit creates ONNX Runtime sessions.

Providers are tried in the order given and a session reports the one it
really uses (``get_available_providers`` lists GPU providers that may fail
to load). Intra-op threads do not spin-wait: the edge and the cloud often
share few cores, and spinning threads of one process starve the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import onnxruntime as ort

from edgesplit.errors import BackendError

CPU = "CPUExecutionProvider"

_ORT_ERRORS: tuple[type[BaseException], ...] = (
    ort.capi.onnxruntime_pybind11_state.Fail,
    ort.capi.onnxruntime_pybind11_state.InvalidArgument,
    ort.capi.onnxruntime_pybind11_state.InvalidGraph,
    ort.capi.onnxruntime_pybind11_state.NoSuchFile,
    RuntimeError,
)


def create_session(
    model: Path | str | bytes,
    providers: Sequence[str] = (CPU,),
    threads: int = 0,
    *,
    profile_prefix: str | None = None,
    provider_options: Mapping[str, Mapping[str, str]] | None = None,
) -> ort.InferenceSession:
    """An inference session on the first of ``providers`` that this build has.

    Args:
        model: an ONNX file path or serialized model bytes.
        providers: execution providers in order of preference; CPU is the fallback.
        threads: intra-op threads (0: ONNX Runtime's default, one per core).
        profile_prefix: turn on ONNX Runtime's node profiling, writing the
            trace to a JSON file named with this prefix (``end_profiling``).
        provider_options: options per provider's full name (e.g. the TensorRT
            engine cache); providers not named get none.

    Raises:
        BackendError: the model does not load; the message names the file.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    available = ort.get_available_providers()
    wanted = [p for p in providers if p in available]
    if CPU not in wanted:
        wanted.append(CPU)
    source = model if isinstance(model, bytes) else str(model)
    try:
        if provider_options is None:
            return ort.InferenceSession(source, sess_options=options, providers=wanted)
        per_provider = [dict(provider_options.get(p, {})) for p in wanted]
        return ort.InferenceSession(
            source, sess_options=options, providers=wanted, provider_options=per_provider
        )
    except _ORT_ERRORS as exc:
        where = "in-memory model" if isinstance(model, bytes) else str(model)
        raise BackendError(
            f"{where}: ONNX Runtime cannot load it with providers={wanted}: {exc}"
        ) from exc


def run_errors() -> tuple[type[BaseException], ...]:
    """The exception types ``InferenceSession.run`` raises for bad inputs or failures.

    ValueError included: the Python binding checks the input names itself.
    """
    return (*_ORT_ERRORS, ValueError)
