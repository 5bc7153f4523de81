"""``edgesplit keys`` and ``edgesplit config``: the set-up a deployment starts with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgesplit.app.common import console
from edgesplit.errors import ConfigError

app = typer.Typer()


@app.command()
def keys(
    out: Annotated[Path, typer.Option(help="Directory to write the key files into.")],
    name: Annotated[
        str, typer.Option(help="Key name: writes NAME.key (public) and NAME.key_secret.")
    ],
    signing: Annotated[
        bool,
        typer.Option(
            "--signing",
            help="An Ed25519 release-signing pair instead: NAME.sign_key (for "
            "`edgesplit release --sign-key`) and NAME.verify_key (for the edges' --verify-key).",
        ),
    ] = False,
) -> None:
    """Create a CURVE key pair for a cloud or an edge node, or a release-signing pair.

    The cloud gets its NAME.key_secret and a directory holding each allowed
    edge's public NAME.key; each edge gets its own NAME.key_secret and the
    cloud's public NAME.key. Secret files are written 0600 and never
    overwritten.
    """
    if signing:
        from edgesplit.release import write_signing_keys

        secret_path, public_path = write_signing_keys(out, name)
        console.print(
            f"signing key {secret_path} (keep it where releases are made)\n"
            f"verify key {public_path} (give it to every edge: --verify-key)"
        )
        return
    from edgesplit.security import generate_keys

    public, secret = generate_keys(out, name)
    console.print(f"public key {public} (share it)\nsecret key {secret} (keep it on this node)")


@app.command("config")
def config_command(
    default: Annotated[
        bool, typer.Option("--default", help="Print the fully commented default config file.")
    ] = False,
    check: Annotated[
        Path | None, typer.Option(help="Validate this config file and print the result.")
    ] = None,
) -> None:
    """Print the default config file, or check one (with the environment applied)."""
    from edgesplit.config_load import load_config
    from edgesplit.config_render import config_to_toml, render_default_config

    if check is not None:
        cfg = load_config(check)
        console.print(config_to_toml(cfg), highlight=False, markup=False)
        console.print(f"{check}: valid", style="green")
    elif default:
        print(render_default_config(), end="")  # noqa: T201 - the file itself, for a redirect
    else:
        raise ConfigError("give --default (print the default file) or --check FILE")
