"""What the command modules share: the console, option types and help texts, the config."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgesplit.app.flags import Overrides
from edgesplit.config import Config
from edgesplit.errors import ConfigError

# Tables stay readable when the output is a file or a CI log.
console = Console(width=None if sys.stdout.isatty() else 120)

BUNDLE_HELP = "Bundle directory written by `edgesplit partition`."
CODEC_HELP = "Tensor codec on the wire: raw, fp16 or int8, optionally +lz4 or +zstd."
CUT_HELP = (
    "Cut id (see `edgesplit show`), `auto` (the fastest cut at --bandwidth-mbps by the profile) "
    "or `after-exits` (every exit on the edge, the rest in the cloud)."
)
THRESHOLD_HELP = "Early-exit confidence (max softmax) on the calibrated grid; `off` disables exits."
BANDWIDTH_HELP = "Uplink bandwidth the policy assumes, Mbit/s."
InputShapeOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Repeatable. For an ONNX file: NAME=1x3x640x640 pins input NAME's dynamic "
        "dimensions (the full shape, batch first). For a factory returning a bare nn.Module: "
        "the input shape without the batch, 3,224,224."
    ),
]
SamplesOption = Annotated[
    Path | None,
    typer.Option(
        help="Held-out inputs for an ONNX file: an .npz with one array per input name, batch "
        "first (default: random inputs of the right dtypes)."
    ),
]
MaxTensorsOption = Annotated[
    int,
    typer.Option(
        min=1, help="The most tensors one cut may hold (cuts of several tensors split skips)."
    ),
]
ThreadsOption = Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0: its default).")]


def parse_threshold(value: str) -> float | None:
    """``--threshold``: a confidence, or ``off``/``none`` for no early exit."""
    if value.lower() in ("off", "none"):
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--threshold {value}: expected a number like 0.9, or `off`") from None


def parse_input_shapes(
    values: list[str] | None,
) -> tuple[tuple[int, ...] | None, dict[str, tuple[int, ...]]]:
    """``--input-shape`` values: a factory's shape (``3,224,224``) and ONNX pins (``N=1x3x8x8``)."""
    values = values or []
    plain = [v for v in values if "=" not in v]
    if len(plain) > 1:
        raise ConfigError(f"--input-shape given {len(plain)} times without NAME=: {plain}")
    pins: dict[str, tuple[int, ...]] = {}
    for value in values:
        if "=" not in value:
            continue
        name, _, dims = value.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.strip().split("x"))
        except ValueError:
            raise ConfigError(
                f"--input-shape {value}: expected NAME=1x3x640x640 (batch first)"
            ) from None
        if not name or min(shape) <= 0:
            raise ConfigError(f"--input-shape {value}: expected NAME=1x3x640x640, sizes >= 1")
        if name in pins:
            raise ConfigError(f"--input-shape: {name!r} is given twice")
        pins[name] = shape
    return parse_shape(plain[0] if plain else None), pins


def parse_shape(value: str | None) -> tuple[int, ...] | None:
    """``--input-shape 3,224,224`` as a tuple of positive sizes."""
    if not value:
        return None
    try:
        shape = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"--input-shape {value}: expected integers like 3,224,224") from None
    if not shape or min(shape) <= 0:
        raise ConfigError(f"--input-shape {value}: sizes must be positive")
    return shape


def positive(name: str, value: float) -> float:
    """``value`` if it is above 0, else a ConfigError naming the flag."""
    if not value > 0:
        raise ConfigError(f"{name} {value}: must be > 0")
    return value


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (see `edgesplit config --default`); flags override it.",
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Turn CURVE encryption off; refused unless the endpoint is loopback.",
    ),
]


def load(
    path: Path | None, overrides: Overrides, insecure: bool = False, *, logs: bool = True
) -> Config:
    """The config from defaults, file, environment and flags; logging set up from it.

    ``--insecure`` is the one flag that sets two keys (``security.curve`` off and
    ``security.insecure`` on). ``logs=False`` leaves logging as the global
    ``--log-level`` set it (the fleet commands, which run no node).
    """
    from edgesplit.config_load import load_config
    from edgesplit.logs import configure_logging

    given = dict(overrides)
    if insecure:
        given["security.curve"] = False
        given["security.insecure"] = True
    cfg = load_config(path, overrides=given)
    if logs:
        configure_logging(cfg.logging.level, cfg.logging.format)
    return cfg
