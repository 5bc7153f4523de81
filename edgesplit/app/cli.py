"""The ``edgesplit`` command line: the root app, its global options and the entry point.

Each command lives in a module of its own (``cli_*``), as thin as it can be:
parse the flags, load the config, call the assembly (:mod:`edgesplit.app.cloud`,
:mod:`edgesplit.app.edge`) or the library, print, exit code. A domain error prints
one line naming what and where, and exits 1. The experiments (network
namespaces, tc) load only when ``edgesplit experiment`` or ``simulate`` runs.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from edgesplit.app import (
    cli_cloud,
    cli_demo,
    cli_edge,
    cli_experiment,
    cli_fleet,
    cli_offline,
    cli_setup,
    cli_simulate,
)
from edgesplit.errors import EdgesplitError

app = typer.Typer(
    name="edgesplit",
    help=(
        "Run one deep neural network across an edge device and the cloud.\n\n"
        "Start with `edgesplit demo`: it trains the built-in early-exit model, partitions it, "
        "starts a cloud node and classifies the test set through head -> exit -> ZeroMQ -> tail."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for _commands in (
    cli_demo,
    cli_offline,
    cli_cloud,
    cli_edge,
    cli_setup,
    cli_fleet,
    cli_experiment,
    cli_simulate,
):
    app.add_typer(_commands.app)


@app.callback()
def main_options(
    log_level: Annotated[
        str, typer.Option(help="Log level: debug, info, warning, error.")
    ] = "warning",
) -> None:
    """Global options."""
    from edgesplit.logs import configure_logging

    configure_logging(log_level)


def _bare_ray_flag(argv: list[str]) -> list[str]:
    """``cloud --ray`` with no address means a local cluster: give the option its value."""
    if "cloud" not in argv:
        return argv
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, "local")
            break
    return out


#: Options that take several values after one flag as well as repeats (``--trace a b``).
MULTI_VALUE_OPTIONS = ("--trace",)


def _multi_values(argv: list[str]) -> list[str]:
    """``--trace a b c`` as ``--trace a --trace b --trace c`` (click takes one value a flag).

    The values run up to the next token that starts with ``-``: options come after
    the command's positional arguments in every command that takes traces.
    """
    out: list[str] = []
    option: str | None = None
    for arg in argv:
        if arg == "--":
            option = None
        elif arg.startswith("-"):
            name = arg.split("=", 1)[0]
            option = name if name in MULTI_VALUE_OPTIONS else None
            out.append(arg)
            continue
        elif option is not None and out and out[-1] != option:
            out.append(option)
        out.append(arg)
    return out


def main() -> None:
    """Entry point: run the app; a domain error prints one line and exits 1."""
    try:
        app(args=_multi_values(_bare_ray_flag(sys.argv[1:])))
    except EdgesplitError as exc:
        from rich.markup import escape

        # The message as written: rich would take "[[drift]]" for markup and "a:b:" for an emoji.
        Console(stderr=True, emoji=False).print(
            f"[red]edgesplit: error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
