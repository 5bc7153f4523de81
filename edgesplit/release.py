"""Releases: a bundle packed for over-the-air delivery, optionally signed.

A release is one uncompressed tar archive, in two parts made from the same
``release.json``::

    release.json      {"format": "edgesplit-release", "bundle_id", "version", "model",
                       "created", "sequence", "signature": null | {"alg": "ed25519", "key",
                       "value"}}
    manifest.json     the bundle's manifest
    edge/ cloud/ ...  every file the manifest lists (and nothing else)

The *full* release (:func:`make_release`) is the cloud's copy, given to
``edgesplit cloud --offer``. The *edge* release (:func:`make_edge_release`)
holds ``release.json``, ``manifest.json``, the heads (``edge/``) and the test
inputs (``data/``) only: the tails (``cloud/``) never leave the cloud. It is
derived deterministically (members sorted, owner and mtime zeroed), so
``edgesplit release`` and a cloud deriving it from the full release write the
very same bytes. The manifest still lists every file, so the
bundle id covers the tails too: an edge checks the files it holds against it.

Integrity comes in three layers. The archive's sha256, announced by the
cloud with the offer, catches a download that went wrong. The bundle id
(a sha256 over the manifest, which holds the sha256 of every file) is checked
against ``release.json`` and every file against the manifest once unpacked.
The signature, Ed25519 over ``release.json`` without its signature, so over the
bundle id and therefore over every byte, proves who released it: an edge with
a verification key refuses a release that is unsigned or signed by another key.
The signed ``sequence`` (an integer that grows with every release) lets an
edge refuse a release older than the one it has committed (a rollback).

Both runtimes read releases; the cloud also writes them
(:func:`make_release`, :func:`make_edge_release`), as does ``edgesplit release``.
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
from edgesplit.errors import BundleError, ConfigError, RollbackError, UpdateError

RELEASE = "release.json"
RELEASE_FORMAT = "edgesplit-release"
#: Largest archive accepted (and largest unpacked total): far above any bundle of a
#: model meant for an edge device, far below what would fill its disk.
MAX_RELEASE_BYTES = 2 * 1024**3
#: Largest sequence number: fits a signed 64-bit integer (msgpack, JSON readers).
MAX_SEQUENCE = 2**63 - 1
#: What a release for an edge holds besides ``release.json`` and the manifest: the heads
#: (``edge/``) and the bundle's test inputs (``data/``, for ``--inputs bundle``); never
#: the tails (``cloud/``) nor the profiles the partitioner measured.
EDGE_PARTS = ("edge/", "data/")
#: The top-level names in an edge's bundle directory.
EDGE_NAMES = frozenset({RELEASE, MANIFEST, *(part.rstrip("/") for part in EDGE_PARTS)})
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
        sequence: grows with every release of the fleet (>= 1, signed); an edge
            refuses one lower than the release it has committed. 0: a release made
            before sequences existed (no field in ``release.json``, none signed).
    """

    bundle_id: str
    version: str
    model: str
    created: str
    signature: dict[str, str] | None = None
    sequence: int = 0

    def signed_bytes(self) -> bytes:
        """The bytes a signature covers: the fields above, canonical JSON.

        A release without a sequence signs the fields it had before sequences
        existed, so its signature still verifies; removing a sequence from a
        release changes these bytes, so that breaks its signature.
        """
        data = {"format": RELEASE_FORMAT, **self._fields()}
        names = _SIGNED_FIELDS + (("sequence",) if self.sequence else ())
        return json.dumps({k: data[k] for k in names}, sort_keys=True).encode()

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "bundle_id": self.bundle_id,
            "version": self.version,
            "model": self.model,
            "created": self.created,
        }
        if self.sequence:
            fields["sequence"] = self.sequence
        return fields

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
    bundle: Bundle,
    version: str,
    out: Path,
    signing_key: Any = None,
    created: str | None = None,
    *,
    sequence: int | None = None,
    edge_out: Path | None = None,
) -> Path:
    """Pack ``bundle`` as a full release archive at ``out`` (signed when a key is given).

    The archive is deterministic for the same bundle, version, time, sequence
    and key: members sorted, owner and mtime zeroed. ``sequence`` (>= 1) defaults
    to ``created`` in whole seconds since the Unix epoch, so that a release made
    later is newer. With ``edge_out``, the release for edges
    (:func:`make_edge_release`) is written there too, from the same
    ``release.json``.

    Raises:
        ConfigError: an empty or over-long version, a bad sequence, or a ``created``
            that is not ``YYYY-MM-DDTHH:MM:SSZ`` and no sequence given.
    """
    if not version or len(version) > 64 or any(c.isspace() for c in version):
        raise ConfigError(f"release version {version!r}: expected 1..64 characters, no spaces")
    created = created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if sequence is None:
        sequence = _epoch_seconds(created)
    if not _is_sequence(sequence):
        raise ConfigError(f"release sequence={sequence!r}: expected an integer 1..{MAX_SEQUENCE}")
    release = Release(bundle.id, version, bundle.manifest.model.name, created, sequence=sequence)
    if signing_key is not None:
        value = base64.b64encode(signing_key.sign(release.signed_bytes())).decode()
        signature = {"alg": "ed25519", "key": key_id(signing_key.public_key()), "value": value}
        release = Release(**release._fields(), signature=signature)
    text = release.to_json().encode()
    _pack(out, text, bundle, sorted(bundle.manifest.files))
    if edge_out is not None:
        make_edge_release(bundle, edge_out, text)
    return out


def make_edge_release(bundle: Bundle, out: Path, release_json: bytes | None = None) -> Path:
    """Write the release for edges: ``release.json``, the manifest, ``edge/`` and ``data/``.

    Deterministic (members sorted, owner and mtime zeroed): the same bundle and
    ``release.json`` give the same bytes, whoever writes them.

    Args:
        bundle: the released bundle (a full one: ``edge/`` is read from it).
        out: the archive to write.
        release_json: ``release.json``'s bytes; ``None``: the file kept beside the
            manifest of a bundle unpacked by :func:`unpack_release`.

    Raises:
        UpdateError: no ``release.json`` given or kept, or it names another bundle.
    """
    if release_json is None:
        try:
            release_json = (bundle.root / RELEASE).read_bytes()
        except OSError as exc:
            raise UpdateError(f"{bundle.root}: no {RELEASE} kept with the bundle") from exc
    release = parse_release(release_json, bundle.root / RELEASE)
    if release.bundle_id != bundle.id:
        raise UpdateError(
            f"{bundle.root}: {RELEASE} names bundle {release.bundle_id[:12]}, not {bundle.id[:12]}"
        )
    _pack(out, release_json, bundle, edge_files(bundle))
    return out


def edge_files(bundle: Bundle) -> list[str]:
    """The manifest's files a release for edges carries (``EDGE_PARTS``), sorted."""
    return sorted(f for f in bundle.manifest.files if f.startswith(EDGE_PARTS))


def edge_release_path(archive: Path) -> Path:
    """Where ``edgesplit release`` writes the edge part of ``archive``: ``NAME.edge.tar``."""
    name = archive.name[:-4] if archive.name.endswith(".tar") else archive.name
    return archive.with_name(f"{name}.edge.tar")


def _epoch_seconds(created: str) -> int:
    try:
        when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise ConfigError(
            f"release created={created!r} is not YYYY-MM-DDTHH:MM:SSZ: give a sequence"
        ) from exc
    return int(when.timestamp())


def _pack(out: Path, release_json: bytes, bundle: Bundle, files: list[str]) -> None:
    """Write an archive: ``release.json``, the manifest, then ``files``; a rename at the end."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, RELEASE, release_json)
        _add_bytes(tar, MANIFEST, (bundle.root / MANIFEST).read_bytes())
        for rel in files:
            info = tarfile.TarInfo(rel)
            path = bundle.root / rel
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    tmp.replace(out)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# -- reading -----------------------------------------------------------------------------------


def read_release(archive: Path) -> Release:
    """``release.json`` of an archive, validated (nothing else is unpacked)."""
    return parse_release(release_json(archive), archive)


def release_json(archive: Path) -> bytes:
    """The bytes of an archive's ``release.json`` (its first member), not yet validated."""
    try:
        with tarfile.open(archive, "r:") as tar:
            member = tar.next()
            if member is None or member.name != RELEASE or not member.isfile():
                raise UpdateError(f"{archive}: the first member is not {RELEASE}: not a release")
            if member.size > 64 * 1024:
                raise UpdateError(f"{archive}: {RELEASE} has {member.size} bytes (most 65536)")
            fh = tar.extractfile(member)
            assert fh is not None
            return fh.read()
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
    sequence = raw.get("sequence", 0)
    if "sequence" in raw and not _is_sequence(sequence):
        raise UpdateError(
            f"{where}: {RELEASE} sequence={str(sequence)[:30]!r}, expected an integer "
            f"1..{MAX_SEQUENCE}"
        )
    return Release(**fields, signature=signature, sequence=sequence)


def _is_sequence(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SEQUENCE


def check_sequence(release: Release, committed: tuple[int, str] | None, where: str) -> None:
    """Refuse ``release`` if it is older than the release an edge has committed.

    ``committed`` is that release's ``(sequence, bundle id)``, ``None`` when the
    edge has committed none with a sequence (then any release is taken). Older
    is a lower sequence, or the same sequence for another bundle; a release
    without a sequence (0) is older than any with one.

    Raises:
        RollbackError: a rollback, saying both sequences and how to force it.
    """
    if committed is None:
        return
    sequence, bundle_id = committed
    if release.sequence > sequence or (
        release.sequence == sequence and release.bundle_id == bundle_id
    ):
        return
    have = f"sequence {release.sequence}" if release.sequence else "no sequence (an older format)"
    than = "the same as" if release.sequence == sequence else "older than"
    raise RollbackError(
        f"{where}: rollback refused: release {release.version} (bundle {release.bundle_id[:12]}) "
        f"has {have}, {than} the committed release's sequence {sequence} (bundle "
        f"{bundle_id[:12]}); to take it anyway set [update] allow_downgrade = true on this edge"
    )


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
    role: str = "all",
    committed: tuple[int, str] | None = None,
) -> tuple[Release, Bundle]:
    """Check and unpack a release into ``store/<bundle_id>``; return it loaded.

    Checks, in order: the archive's sha256 (when given), ``release.json``, the
    signature (when ``verify_keys`` is given: then an unsigned release is
    refused), its sequence against ``committed`` (when given: an older release
    is a rollback, see :func:`check_sequence`), every member (regular files only,
    names the manifest lists, no ``..``, no absolute paths, sizes within
    ``max_bytes`` in all; for ``role="edge"`` only ``release.json``,
    ``manifest.json`` and ``EDGE_PARTS``: ``edge/``, ``data/``), then the bundle as
    :func:`edgesplit.bundle.load_bundle` reads it with the files ``role`` needs
    hashed (``all``: every file the manifest lists), and that its id is the one
    released. The bundle appears in the store only once all of this passed (a
    rename); a bundle already there is reused.

    Raises:
        UpdateError: whichever check failed, saying which and why.
    """
    if role not in ("all", "edge"):
        raise ValueError(f"role={role!r}: expected 'all' or 'edge'")
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
    check_sequence(release, committed, archive.name)
    final = store / release.bundle_id
    if (final / MANIFEST).is_file():
        try:
            if role == "edge" and not edge_only(final):
                raise UpdateError(f"{final}: holds more than an edge needs")
            return release, _load_checked(final, release, archive.name, role)
        except UpdateError:
            shutil.rmtree(final, ignore_errors=True)
    store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=store))
    try:
        _extract(archive, staging, max_bytes, edge=role == "edge")
        bundle = _load_checked(staging, release, archive.name, role)
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


def edge_only(root: Path) -> bool:
    """Whether a bundle directory holds only what an edge needs (no tail, nothing else)."""
    return all(p.name in EDGE_NAMES for p in root.iterdir())


def _load_checked(root: Path, release: Release, where: str, role: str = "all") -> Bundle:
    """The bundle at ``root``, every file of ``role``'s part hashed against the manifest."""
    from edgesplit.bundle import verify_files

    try:
        bundle = load_bundle(root, verify=role)
        if role == "all":
            verify_files(bundle, sorted(set(bundle.manifest.files) - set(bundle.files_for("all"))))
        else:
            verify_files(bundle, sorted(set(edge_files(bundle)) - set(bundle.files_for("edge"))))
    except BundleError as exc:
        raise UpdateError(f"{where}: the bundle inside is invalid: {exc}") from exc
    if bundle.id != release.bundle_id:
        raise UpdateError(
            f"{where}: {RELEASE} names bundle {release.bundle_id[:12]} but the manifest inside "
            f"is bundle {bundle.id[:12]}: tampered"
        )
    return bundle


def _extract(archive: Path, dest: Path, max_bytes: int, edge: bool = False) -> None:
    """Unpack ``archive``'s members into ``dest``, each checked before it is written.

    With ``edge``, a member outside ``release.json``, ``manifest.json`` and
    ``EDGE_PARTS`` (a tail under ``cloud/``, say) refuses the whole release: an
    edge holds no tail.
    """
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
                _check_member(member, manifest_files, edge, archive.name)
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


def _check_member(
    member: tarfile.TarInfo, manifest_files: set[str] | None, edge: bool, where: str
) -> None:
    """A member other than ``release.json`` may be unpacked: a plain relative file listed.

    Raises:
        UpdateError: a link, device, absolute or ``..`` path; a file before the
            manifest or not listed in it; for an ``edge``, anything outside
            ``EDGE_PARTS`` (a tail).
    """
    name = member.name
    parts = Path(name).parts
    if not member.isfile() or name.startswith("/") or ".." in parts or not parts:
        raise UpdateError(f"{where}: member {name!r} is not a plain relative file")
    if edge and name != MANIFEST and not name.startswith(EDGE_PARTS):
        raise UpdateError(
            f"{where}: member {name!r} is not for an edge: a release for an edge holds "
            f"{RELEASE}, {MANIFEST}, {' and '.join(EDGE_PARTS)} only (tails stay in the cloud)"
        )
    if name == MANIFEST:
        return
    if manifest_files is None:
        raise UpdateError(f"{where}: {MANIFEST} must come before {name!r}")
    if name not in manifest_files:
        raise UpdateError(f"{where}: member {name!r} is not listed in the manifest")


def _listed_files(manifest: Path, where: str) -> set[str]:
    try:
        files = json.loads(manifest.read_text()).get("files")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise UpdateError(f"{where}: {MANIFEST} is not a JSON object: {exc}") from exc
    if not isinstance(files, dict):
        raise UpdateError(f"{where}: {MANIFEST} has no files map")
    return set(files)


__all__ = [
    "EDGE_NAMES",
    "EDGE_PARTS",
    "MAX_RELEASE_BYTES",
    "MAX_SEQUENCE",
    "RELEASE",
    "Release",
    "check_sequence",
    "edge_files",
    "edge_only",
    "edge_release_path",
    "key_id",
    "load_signing_key",
    "load_verify_key",
    "is_bundle_id",
    "make_edge_release",
    "make_release",
    "parse_release",
    "read_release",
    "release_json",
    "unpack_release",
    "verify_signature",
    "write_signing_keys",
]
