"""Checking and unpacking a release archive into a bundle store.

An archive comes from the network: every member is checked before it is
written (plain relative files the manifest lists, sizes within a limit, for
an edge nothing but its part), and the bundle appears in the store only once
its files hash to the released bundle id (a rename at the end).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgesplit.bundle import MANIFEST, Bundle, load_bundle, sha256_file, verify_files
from edgesplit.errors import BundleError, UpdateError
from edgesplit.release.metadata import (
    EDGE_PARTS,
    RELEASE,
    Release,
    check_sequence,
    edge_files,
    edge_only,
    is_bundle_id,
    parse_release,
)
from edgesplit.release.signing import verify_signature

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

#: Largest archive accepted (and largest unpacked total): far above any bundle of a
#: model meant for an edge device, far below what would fill its disk.
MAX_RELEASE_BYTES = 2 * 1024**3


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


def unpack_release(
    archive: Path,
    store: Path,
    *,
    verify_keys: Sequence[Ed25519PublicKey] | None = None,
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


def _load_checked(root: Path, release: Release, where: str, role: str = "all") -> Bundle:
    """The bundle at ``root``, every file of ``role``'s part hashed against the manifest."""
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
    """The names in the ``files`` map of the manifest just unpacked."""
    try:
        files = json.loads(manifest.read_text()).get("files")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise UpdateError(f"{where}: {MANIFEST} is not a JSON object: {exc}") from exc
    if not isinstance(files, dict):
        raise UpdateError(f"{where}: {MANIFEST} has no files map")
    return set(files)


__all__ = ["MAX_RELEASE_BYTES", "read_release", "release_json", "unpack_release"]
