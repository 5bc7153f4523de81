"""The runtime commands' flags, made from the settings' one declaration.

A setting declared with ``cli=("edge",)`` (see :mod:`edgesplit.settings`) is a
flag of ``edgesplit edge``: its name, type and help come from the declaration,
and its value reaches :func:`edgesplit.config_load.load_config` as an override
``"section.key"``. A command decorated with :func:`with_settings` receives them
all in one ``overrides`` argument (flags left out are not there), so no setting
is named twice between the declaration, the flag and the override.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from edgesplit.config import SECTIONS
from edgesplit.settings import ENV_PREFIX, Key, keys_of

F = TypeVar("F", bound=Callable[..., object])
Overrides = Mapping[str, object]
"""Flag values given, keyed ``"section.key"``: what ``load_config`` takes as overrides."""


def command_settings(command: str) -> list[tuple[str, Key]]:
    """``(section.key, key)`` of every setting that ``command`` takes as a flag."""
    return [
        (f"{section}.{key.name}", key)
        for section, cls in SECTIONS.items()
        for key in keys_of(cls)
        if command in key.spec.cli
    ]


def _flag_type(key: Key) -> type:
    """What typer parses the flag as; lists and keys that take ``off`` stay text for the loader."""
    if key.kind is tuple or key.spec.off or key.kind not in (bool, int, float, Path):
        return str
    return key.kind


def _parameter(dotted: str, key: Key) -> inspect.Parameter:
    section = dotted.partition(".")[0]
    option = typer.Option(str(key.flag), help=_help(section, key))
    return inspect.Parameter(
        _param_name(key),
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[_flag_type(key) | None, option],
    )


def _help(section: str, key: Key) -> str:
    """The declared help, then what the flag takes, its default and its variable."""
    parts = [key.spec.help]
    if key.spec.choices:
        parts.append(f"One of: {', '.join(key.spec.choices)}.")
    elif key.kind is tuple:
        parts.append("Comma-separated.")
    if key.default is not None and key.default != ():
        default = key.default
        if isinstance(default, bool):
            default = "on" if default else "off"
        elif isinstance(default, tuple):
            default = ",".join(default)
        parts.append(f"Default: {default}.")
    parts.append(f"Env: {ENV_PREFIX}{section.upper()}_{key.name.upper()}.")
    return " ".join(parts)


def _param_name(key: Key) -> str:
    """The parameter's name: its flag's, as click names it (``--log-level``: ``log_level``)."""
    return str(key.flag).split("/", 1)[0].lstrip("-").replace("-", "_")


def with_settings(command: str) -> Callable[[F], F]:
    """Give the decorated command a flag per setting declared for ``command``.

    The command takes an ``overrides: Overrides`` parameter instead of one
    parameter per setting; its other parameters (``--config``, flags that are not
    settings) stay as they are.
    """

    def decorate(func: F) -> F:
        hints = typing.get_type_hints(func, include_extras=True)
        own = [
            p.replace(annotation=hints.get(name, p.annotation))
            for name, p in inspect.signature(func).parameters.items()
            if name != "overrides"
        ]
        settings = command_settings(command)

        @functools.wraps(func)
        def wrapper(**kwargs: object) -> object:
            given = {dotted: kwargs.pop(_param_name(key)) for dotted, key in settings}
            overrides = {k: v for k, v in given.items() if v is not None}
            return func(**kwargs, overrides=overrides)

        generated = [_parameter(dotted, key) for dotted, key in settings]
        names = [p.name for p in [*own, *generated]]
        if len(set(names)) != len(names):
            raise TypeError(f"{func.__name__}: a setting's flag is also a parameter: {names}")
        wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*own, *generated]
        )
        wrapper.__annotations__ = {}
        return typing.cast(F, wrapper)

    return decorate


__all__ = ["Overrides", "command_settings", "with_settings"]
