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
The pieces: :mod:`~edgesplit.release.metadata` (``release.json`` and the
sequence check), :mod:`~edgesplit.release.signing` (keys, signatures),
:mod:`~edgesplit.release.pack` (writing archives) and
:mod:`~edgesplit.release.unpack` (checking and unpacking them).
"""

from edgesplit.release.metadata import (
    EDGE_NAMES,
    EDGE_PARTS,
    MAX_SEQUENCE,
    RELEASE,
    RELEASE_FORMAT,
    Release,
    check_sequence,
    edge_files,
    edge_only,
    is_bundle_id,
    parse_release,
)
from edgesplit.release.pack import edge_release_path, make_edge_release, make_release
from edgesplit.release.signing import (
    key_id,
    load_signing_key,
    load_verify_key,
    sign_release,
    verify_signature,
    write_signing_keys,
)
from edgesplit.release.unpack import MAX_RELEASE_BYTES, read_release, release_json, unpack_release

__all__ = [
    "EDGE_NAMES",
    "EDGE_PARTS",
    "MAX_RELEASE_BYTES",
    "MAX_SEQUENCE",
    "RELEASE",
    "RELEASE_FORMAT",
    "Release",
    "check_sequence",
    "edge_files",
    "edge_only",
    "edge_release_path",
    "is_bundle_id",
    "key_id",
    "load_signing_key",
    "load_verify_key",
    "make_edge_release",
    "make_release",
    "parse_release",
    "read_release",
    "release_json",
    "sign_release",
    "unpack_release",
    "verify_signature",
    "write_signing_keys",
]
