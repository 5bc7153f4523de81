"""Signing releases: Ed25519 key files, a release's signature, and its check.

The signature covers ``release.json`` without its signature
(:meth:`~edgesplit.release.metadata.Release.signed_bytes`): the bundle id and
so every byte of the bundle. An edge with verification keys refuses a release
that is unsigned or signed by another key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from edgesplit.errors import ConfigError, UpdateError
from edgesplit.release.metadata import Release
from edgesplit.security import new_key_paths

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )


def write_signing_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """Write a new Ed25519 pair: ``NAME.sign_key`` (secret, 0600) and ``NAME.verify_key``.

    Raises:
        ConfigError: a bad name, or a key of that name exists (never overwritten).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    secret, public = new_key_paths(directory, name, (".sign_key", ".verify_key"))
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return secret, public


def _load_pem(path: Path, private: bool) -> object:
    """The key in a PEM file, checked to be an Ed25519 private (or public) key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the key: {exc.strerror}") from exc
    kind = "NAME.sign_key" if private else "NAME.verify_key"
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path}: not a PEM key ({exc}); give the {kind} file from `edgesplit keys --signing`"
        ) from exc
    wanted = Ed25519PrivateKey if private else Ed25519PublicKey
    if not isinstance(key, wanted):
        raise ConfigError(f"{path}: not an Ed25519 key; give the {kind} file")
    return key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a ``NAME.sign_key`` file."""
    return cast("Ed25519PrivateKey", _load_pem(path, private=True))


def load_verify_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a ``NAME.verify_key`` file."""
    return cast("Ed25519PublicKey", _load_pem(path, private=False))


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: sha256 of its raw bytes, 16 hex digits."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_release(release: Release, signing_key: Ed25519PrivateKey) -> Release:
    """``release`` with its Ed25519 signature by ``signing_key`` (any old one replaced)."""
    value = base64.b64encode(signing_key.sign(release.signed_bytes())).decode()
    signature = {"alg": "ed25519", "key": key_id(signing_key.public_key()), "value": value}
    return Release(**release._fields(), signature=signature)


def verify_signature(
    release: Release, keys: Sequence[Ed25519PublicKey], where: str = "release"
) -> str:
    """Check ``release``'s signature against trusted ``keys``; return the key id that signed.

    Raises:
        UpdateError: unsigned, an unknown algorithm, or no trusted key verifies it.
    """
    from cryptography.exceptions import InvalidSignature

    if release.signature is None:
        raise UpdateError(f"{where}: unsigned, and this edge accepts only signed releases")
    if release.signature["alg"] != "ed25519":
        raise UpdateError(f"{where}: signature alg={release.signature['alg']!r}, expected ed25519")
    try:
        value = base64.b64decode(release.signature["value"], validate=True)
    except ValueError as exc:
        raise UpdateError(f"{where}: signature is not base64: {exc}") from exc
    for key in keys:
        try:
            key.verify(value, release.signed_bytes())
        except InvalidSignature:
            continue
        return key_id(key)
    raise UpdateError(
        f"{where}: signature by key {release.signature['key']} does not verify with any trusted "
        f"key ({', '.join(key_id(k) for k in keys) or 'none'}): tampered or signed by someone else"
    )


__all__ = [
    "key_id",
    "load_signing_key",
    "load_verify_key",
    "sign_release",
    "verify_signature",
    "write_signing_keys",
]
