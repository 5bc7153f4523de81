"""Packing a bundle as release archives: the full one for the cloud, the edge's part.

Both archives are deterministic (members sorted, owner and mtime zeroed):
the same bundle and ``release.json`` give the same bytes, whoever writes
them, so ``edgesplit release`` and a cloud deriving the edge's part from the
full release write the very same archive.
"""

from __future__ import annotations

import io
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edgesplit.bundle import MANIFEST, Bundle
from edgesplit.errors import ConfigError, UpdateError
from edgesplit.release.metadata import (
    MAX_SEQUENCE,
    RELEASE,
    Release,
    edge_files,
    is_sequence,
    parse_release,
)
from edgesplit.release.signing import sign_release

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def make_release(
    bundle: Bundle,
    version: str,
    out: Path,
    signing_key: Ed25519PrivateKey | None = None,
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
    if not is_sequence(sequence):
        raise ConfigError(f"release sequence={sequence!r}: expected an integer 1..{MAX_SEQUENCE}")
    release = Release(bundle.id, version, bundle.manifest.model.name, created, sequence=sequence)
    if signing_key is not None:
        release = sign_release(release, signing_key)
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
    """Add ``data`` as a plain file member ``name`` (mode 0644, owner and mtime zeroed)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


__all__ = ["edge_release_path", "make_edge_release", "make_release"]
