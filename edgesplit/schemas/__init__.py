"""JSON Schemas of the files edgesplit writes, shipped with the package and checked on load.

``manifest.schema.json`` describes a bundle's ``manifest.json`` (format
version 3; ``manifest-v2.schema.json`` the version 2 manifests still read);
``profile.schema.json`` a profile written by ``edgesplit profile``. Other
tools can validate the files with any JSON Schema (2020-12) validator.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from edgesplit.errors import BundleError, EdgesplitError, ModelError

SCHEMAS = ("manifest", "manifest-v2", "profile")
_ERRORS: dict[str, type[EdgesplitError]] = {
    "manifest": BundleError,
    "manifest-v2": BundleError,
    "profile": ModelError,
}


@cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema named ``name`` (``manifest`` or ``profile``)."""
    text = resources.files(__package__).joinpath(f"{name}.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema(name))
    cls.check_schema(schema(name))
    return cls(schema(name))


def _where(error: jsonschema.ValidationError) -> str:
    parts = []
    for part in error.absolute_path:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts).lstrip(".") or "(top level)"


def validate(data: Any, name: str, source: Path, hint: str) -> None:
    """Check ``data`` against schema ``name``; the error names the file and the field.

    Raises:
        BundleError: a manifest does not match its schema.
        ModelError: a profile does not match its schema.
    """
    errors = list(_validator(name).iter_errors(data))
    if errors:
        # The most specific error: inside a oneOf, the branch that nearly matched.
        first = jsonschema.exceptions.best_match(errors)
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise _ERRORS[name](f"{source}: {_where(first)}: {first.message:.200}{more}; {hint}")
