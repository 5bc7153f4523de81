"""Releases: a bundle packed for over-the-air delivery, optionally signed.

A release is one uncompressed tar archive::

    release.json      {"format": "edgesplit-release", "bundle_id", "version", "model",
                       "created", "signature": null | {"alg": "ed25519", "key", "value"}}
    manifest.json     the bundle's manifest
    edge/ cloud/ ...  every file the manifest lists (and nothing else)

Integrity comes in three layers. The archive's sha256, announced by the
cloud with the offer, catches a download that went wrong. The bundle id
(a sha256 over the manifest, which holds the sha256 of every file) is checked
against ``release.json`` and every file against the manifest once unpacked.
The signature, Ed25519 over ``release.json`` without its signature, so over the
bundle id and therefore over every byte, proves who released it: an edge with
a verification key refuses a release that is unsigned or signed by another key.

Both runtimes read releases; the cloud also writes them
(:func:`make_release`), as does ``edgesplit release``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgesplit.bundle import MANIFEST, Bundle, load_bundle, sha256_file
from edgesplit.errors import BundleError, ConfigError, UpdateError

RELEASE = "release.json"
RELEASE_FORMAT = "edgesplit-release"
#: Largest archive accepted (and largest unpacked total): far above any bundle of a
#: model meant for an edge device, far below what would fill its disk.
MAX_RELEASE_BYTES = 2 * 1024**3
_SIGNED_FIELDS = ("format", "bundle_id", "version", "model", "created")


@dataclass(frozen=True)
class Release:
    """What ``release.json`` says.

    Attributes:
        bundle_id: the id of the bundle inside (sha256 of its manifest).
        version: the release's human label, e.g. ``2026.11.30-1``.
        model: the model's name.
        created: when the release was made (ISO 8601, UTC).
        signature: ``{"alg", "key", "value"}`` or ``None`` (unsigned).
    """

    bundle_id: str
    version: str
    model: str
    created: str
    signature: dict[str, str] | None = None

    def signed_bytes(self) -> bytes:
        """The bytes a signature covers: the fields above, canonical JSON."""
        data = {"format": RELEASE_FORMAT, **self._fields()}
        return json.dumps({k: data[k] for k in _SIGNED_FIELDS}, sort_keys=True).encode()

    def _fields(self) -> dict[str, str]:
        return {
            "bundle_id": self.bundle_id,
            "version": self.version,
            "model": self.model,
            "created": self.created,
        }

    def to_json(self) -> str:
        """``release.json``'s text."""
        return json.dumps(
            {"format": RELEASE_FORMAT, **self._fields(), "signature": self.signature}, indent=1
        )


# -- signing keys ------------------------------------------------------------------------------


def write_signing_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """Write a new Ed25519 pair: ``NAME.sign_key`` (secret, 0600) and ``NAME.verify_key``.

    Raises:
        ConfigError: a bad name, or a key of that name exists (never overwritten).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgesplit.security import new_key_paths

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


def _load_pem(path: Path, private: bool) -> Any:
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


def load_signing_key(path: Path) -> Any:
    """An Ed25519 private key from a ``NAME.sign_key`` file."""
    return _load_pem(path, private=True)


def load_verify_key(path: Path) -> Any:
    """An Ed25519 public key from a ``NAME.verify_key`` file."""
    return _load_pem(path, private=False)


def key_id(public_key: Any) -> str:
    """A short fingerprint of a public key: sha256 of its raw bytes, 16 hex digits."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- writing -----------------------------------------------------------------------------------


def make_release(
    bundle: Bundle, version: str, out: Path, signing_key: Any = None, created: str | None = None
) -> Path:
    """Pack ``bundle`` as a release archive at ``out`` (signed when a key is given).

    The archive is deterministic for the same bundle, version, time and key:
    members sorted, owner and mtime zeroed.

    Raises:
        ConfigError: an empty or over-long version.
    """
    if not version or len(version) > 64 or any(c.isspace() for c in version):
        raise ConfigError(f"release version {version!r}: expected 1..64 characters, no spaces")
    release = Release(
        bundle.id,
        version,
        bundle.manifest.model.name,
        created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    if signing_key is not None:
        value = base64.b64encode(signing_key.sign(release.signed_bytes())).decode()
        signature = {"alg": "ed25519", "key": key_id(signing_key.public_key()), "value": value}
        release = Release(**release._fields(), signature=signature)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, RELEASE, release.to_json().encode())
        _add_bytes(tar, MANIFEST, (bundle.root / MANIFEST).read_bytes())
        for rel in sorted(bundle.manifest.files):
            info = tarfile.TarInfo(rel)
            path = bundle.root / rel
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    tmp.replace(out)
    return out


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# -- reading -----------------------------------------------------------------------------------


def read_release(archive: Path) -> Release:
    """``release.json`` of an archive, validated (nothing else is unpacked)."""
    try:
        with tarfile.open(archive, "r:") as tar:
            member = tar.next()
            if member is None or member.name != RELEASE or not member.isfile():
                raise UpdateError(f"{archive}: the first member is not {RELEASE}: not a release")
            if member.size > 64 * 1024:
                raise UpdateError(f"{archive}: {RELEASE} has {member.size} bytes (most 65536)")
            fh = tar.extractfile(member)
            assert fh is not None
            return parse_release(fh.read(), archive)
    except (OSError, tarfile.TarError) as exc:
        raise UpdateError(f"{archive}: not a readable release archive: {exc}") from exc


def parse_release(data: bytes, where: Path) -> Release:
    """``release.json``'s bytes, validated."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UpdateError(f"{where}: {RELEASE} is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != RELEASE_FORMAT:
        raise UpdateError(f"{where}: {RELEASE} has no format={RELEASE_FORMAT!r}")
    fields = {}
    for name in ("bundle_id", "version", "model", "created"):
        value = raw.get(name)
        if not isinstance(value, str) or not value or len(value) > 256:
            raise UpdateError(f"{where}: {RELEASE} field {name!r} is {value!r}, expected a string")
        fields[name] = value
    signature = raw.get("signature")
    if signature is not None and not (
        isinstance(signature, dict)
        and all(isinstance(signature.get(k), str) for k in ("alg", "key", "value"))
    ):
        raise UpdateError(f"{where}: {RELEASE} signature is malformed: {signature!r}")
    return Release(**fields, signature=signature)


def verify_signature(release: Release, keys: list[Any], where: str = "release") -> str:
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


def unpack_release(
    archive: Path,
    store: Path,
    *,
    verify_keys: list[Any] | None = None,
    expected_sha256: str | None = None,
    max_bytes: int = MAX_RELEASE_BYTES,
) -> tuple[Release, Bundle]:
    """Check and unpack a release into ``store/<bundle_id>``; return it loaded.

    Checks, in order: the archive's sha256 (when given), ``release.json``, the
    signature (when ``verify_keys`` is given: then an unsigned release is
    refused), every member (regular files only, names the manifest lists,
    no ``..``, no absolute paths, sizes within ``max_bytes`` in all), then the
    bundle as :func:`edgesplit.bundle.load_bundle` reads it with every file
    hashed, and that its id is the one released. The bundle appears in the store
    only once all of this passed (a rename); a bundle already there is reused.

    Raises:
        UpdateError: whichever check failed, saying which and why.
    """
    if expected_sha256 is not None:
        actual = sha256_file(archive)
        if actual != expected_sha256:
            raise UpdateError(
                f"{archive.name}: sha256 {actual[:12]} does not match the offer's "
                f"{expected_sha256[:12]}: corrupt download"
            )
    size = archive.stat().st_size
    if size > max_bytes:
        raise UpdateError(f"{archive.name}: {size} bytes, over the limit of {max_bytes}")
    release = read_release(archive)
    if verify_keys is not None:
        verify_signature(release, verify_keys, archive.name)
    if not is_bundle_id(release.bundle_id):
        raise UpdateError(f"{archive.name}: bundle_id {release.bundle_id[:20]!r} is not a sha256")
    final = store / release.bundle_id
    if (final / MANIFEST).is_file():
        try:
            return release, _load_checked(final, release, archive.name)
        except UpdateError:
            shutil.rmtree(final, ignore_errors=True)
    store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=store))
    try:
        _extract(archive, staging, max_bytes)
        bundle = _load_checked(staging, release, archive.name)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return release, Bundle(final, bundle.manifest)


def is_bundle_id(value: str) -> bool:
    """Whether ``value`` looks like a bundle id: 64 lowercase hex digits (a sha256)."""
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _load_checked(root: Path, release: Release, where: str) -> Bundle:
    try:
        bundle = load_bundle(root, verify="all")
        extra = set(bundle.manifest.files) - set(bundle.files_for("all"))
        from edgesplit.bundle import verify_files

        verify_files(bundle, sorted(extra))
    except BundleError as exc:
        raise UpdateError(f"{where}: the bundle inside is invalid: {exc}") from exc
    if bundle.id != release.bundle_id:
        raise UpdateError(
            f"{where}: {RELEASE} names bundle {release.bundle_id[:12]} but the manifest inside "
            f"is bundle {bundle.id[:12]}: tampered"
        )
    return bundle


def _extract(archive: Path, dest: Path, max_bytes: int) -> None:
    total = 0
    manifest_files: set[str] | None = None
    seen: set[str] = set()
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                name = member.name
                if name in seen:
                    raise UpdateError(f"{archive.name}: member {name!r} appears twice")
                seen.add(name)
                if name == RELEASE:
                    if not member.isfile() or member.size > 64 * 1024:
                        raise UpdateError(f"{archive.name}: {RELEASE} is not a small file")
                    source = tar.extractfile(member)
                    assert source is not None
                    # Kept with the bundle: its signature is checked again if it is reused.
                    (dest / RELEASE).write_bytes(source.read())
                    continue
                parts = Path(name).parts
                if not member.isfile() or name.startswith("/") or ".." in parts or not parts:
                    raise UpdateError(
                        f"{archive.name}: member {name!r} is not a plain relative file"
                    )
                if name != MANIFEST:
                    if manifest_files is None:
                        raise UpdateError(f"{archive.name}: {MANIFEST} must come before {name!r}")
                    if name not in manifest_files:
                        raise UpdateError(
                            f"{archive.name}: member {name!r} is not listed in the manifest"
                        )
                total += member.size
                if total > max_bytes:
                    raise UpdateError(f"{archive.name}: unpacks to over {max_bytes} bytes")
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                with target.open("wb") as fh:
                    shutil.copyfileobj(source, fh, 1 << 20)
                if name == MANIFEST:
                    manifest_files = _listed_files(target, archive.name)
    except (OSError, tarfile.TarError) as exc:
        raise UpdateError(f"{archive.name}: cannot unpack: {exc}") from exc


def _listed_files(manifest: Path, where: str) -> set[str]:
    try:
        files = json.loads(manifest.read_text()).get("files")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise UpdateError(f"{where}: {MANIFEST} is not a JSON object: {exc}") from exc
    if not isinstance(files, dict):
        raise UpdateError(f"{where}: {MANIFEST} has no files map")
    return set(files)


__all__ = [
    "MAX_RELEASE_BYTES",
    "RELEASE",
    "Release",
    "key_id",
    "load_signing_key",
    "load_verify_key",
    "is_bundle_id",
    "make_release",
    "parse_release",
    "read_release",
    "unpack_release",
    "verify_signature",
    "write_signing_keys",
]
