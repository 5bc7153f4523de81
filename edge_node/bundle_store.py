"""The edge's update store on disk: downloads, staged and committed bundles, what it refused.

``state_dir`` holds::

    downloads/<id>.tar   an archive being downloaded (deleted once unpacked or failed)
    bundles/<id>/        bundles unpacked from releases (``.staging-*`` while unpacking)
    current              the bundle committed last: a restart serves it
    sequence.json        the sequence of the release committed last, and its bundle
    refused.json         releases refused for good (never taken again)

:class:`BundleStore` checks every bundle it hands out as if it had just arrived
(signature, sequence, every file's hash); :func:`committed_bundle` and
:func:`read_sequence` read a store without one.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from edge_node.config import UpdateConfig
from edgesplit.bundle import Bundle, load_bundle
from edgesplit.errors import BundleError, EdgesplitError, RollbackError, UpdateError
from edgesplit.release import (
    EDGE_NAMES,
    RELEASE,
    Release,
    check_sequence,
    edge_only,
    is_bundle_id,
    parse_release,
    unpack_release,
    verify_signature,
)

log = logging.getLogger(__name__)

CURRENT = "current"
REFUSED = "refused.json"
#: The sequence of the release committed last, and its bundle: older ones are refused.
SEQUENCE = "sequence.json"


class BundleStore:
    """One edge's ``state_dir`` (see the module's docstring).

    Opening it deletes what a stopped run left half done (partial downloads,
    stagings) and the tails a bundle taken before edge releases existed holds.

    Attributes:
        refused: bundle ids refused, for good or as rollbacks.
        committed_sequence: ``(sequence, bundle id)`` of the release committed last;
            ``None``: none with a sequence.
    """

    def __init__(self, config: UpdateConfig) -> None:
        self.config = config
        self.root = config.state_dir
        self.refused: set[str] = _read_refused(self.root / REFUSED)
        self.committed_sequence = read_sequence(self.root)
        # Refused as rollbacks: not written to refused.json, so that an operator who
        # then allows downgrades gets them at the next offer.
        self._older: set[str] = set()
        _clean_leftovers(self.root, config.base_root)

    @property
    def bundles(self) -> Path:
        """Where bundles are unpacked, one directory per id."""
        return self.root / "bundles"

    def archive_path(self, bundle_id: str) -> Path:
        """Where the archive of ``bundle_id`` is downloaded to (the folder is made)."""
        downloads = self.root / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        return downloads / f"{bundle_id}.tar"

    def local(self, bundle_id: str) -> Path | None:
        """Where ``bundle_id`` already is on this edge: the configured bundle or the store."""
        if bundle_id == self.config.base and self.config.base_root is not None:
            return self.config.base_root
        kept = self.bundles / bundle_id
        return kept if (kept / "manifest.json").is_file() else None

    def floor(self) -> tuple[int, str] | None:
        """What a release must not be older than: the committed one's, unless downgrades go."""
        return None if self.config.allow_downgrade else self.committed_sequence

    def unpack(self, archive: Path) -> tuple[Release, Bundle]:
        """Check a downloaded release (signature, sequence, edge part only) and unpack it.

        Raises:
            RollbackError: the release is older than the one committed.
            UpdateError: unsigned, tampered or invalid, or holding a tail.
        """
        keys = self.config.verify_keys
        return unpack_release(
            archive,
            self.bundles,
            verify_keys=None if keys is None else list(keys),
            role="edge",
            committed=self.floor(),
        )

    def reuse(self, root: Path, bundle_id: str) -> tuple[Bundle, int]:
        """A bundle already on this edge, checked again as if it had just arrived.

        Returns it and its release's sequence (0 for the configured bundle: the
        operator's own choice is never a rollback).

        Raises:
            RollbackError: its release is older than the one committed.
            UpdateError: damaged, another bundle, or unsigned where signatures are required.
        """
        try:
            bundle = load_bundle(root, verify="edge")
        except BundleError as exc:
            raise UpdateError(f"bundle {bundle_id[:12]} on this edge is damaged: {exc}") from exc
        if bundle.id != bundle_id:
            raise UpdateError(f"{root} holds bundle {bundle.id[:12]}, not {bundle_id[:12]}")
        if root == self.config.base_root:
            return bundle, 0
        keys = self.config.verify_keys
        try:
            release = parse_release((root / RELEASE).read_bytes(), root)
        except OSError as exc:
            if keys is not None:
                raise UpdateError(f"{root}: no {RELEASE} kept with the bundle") from exc
            release = None
        if release is not None and release.bundle_id != bundle_id:
            raise UpdateError(f"{root}: {RELEASE} names another bundle")
        if keys is not None:
            # A bundle stored before a verify key was configured must be signed too.
            assert release is not None
            verify_signature(release, list(keys), str(root))
        floor = self.floor()
        if release is not None:
            # Re-assigned a release the store kept: a rollback too if it is older.
            check_sequence(release, floor, str(root))
            return bundle, release.sequence
        if floor is not None:
            raise RollbackError(
                f"{root}: rollback refused: bundle {bundle_id[:12]} has no {RELEASE}, so no "
                f"sequence, older than the committed release's {floor[0]}; to take it anyway "
                "set [update] allow_downgrade = true on this edge"
            )
        return bundle, 0

    def commit(self, bundle: Bundle, version: str, sequence: int) -> None:
        """Make ``bundle`` the one a restart serves; record its release's sequence; prune.

        Sequence 0 (the configured bundle, an unsequenced release) leaves the recorded
        sequence as it was: going back to it is the operator's choice, not a release's.
        """
        _write_atomic(
            self.root / CURRENT,
            json.dumps(
                {
                    "bundle": bundle.id,
                    "version": version,
                    "base": self.config.base,
                    "path": str(bundle.root),
                }
            ),
        )
        if sequence:
            self.committed_sequence = (sequence, bundle.id)
            _write_atomic(
                self.root / SEQUENCE,
                json.dumps({"sequence": sequence, "bundle": bundle.id, "version": version}),
            )
        self._prune(bundle.id)

    def refuse(self, bundle_id: str, rollback: bool = False) -> None:
        """Never take ``bundle_id`` again; a rollback refusal lasts until the edge restarts."""
        if rollback:
            self._older.add(bundle_id)
        self.refused.add(bundle_id)
        if not rollback:
            _write_atomic(self.root / REFUSED, json.dumps(sorted(self.refused - self._older)))

    def discard(self, bundle_id: str) -> None:
        """Delete a refused bundle from the store (never anything outside it)."""
        kept = self.bundles / bundle_id
        if is_bundle_id(bundle_id) and kept.is_dir():
            shutil.rmtree(kept, ignore_errors=True)

    def _prune(self, current: str) -> None:
        """Delete the oldest bundles beyond ``keep``, never ``current``."""
        if not self.bundles.is_dir():
            return
        kept = sorted(
            (p for p in self.bundles.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in [p for p in kept if p.name != current][max(0, self.config.keep - 1) :]:
            shutil.rmtree(old, ignore_errors=True)


def committed_bundle(state_dir: Path, base: str | None = None) -> tuple[Bundle, str] | None:
    """The bundle an update committed in ``state_dir`` and its version, if it loads.

    With ``base``, only if that update was taken over the bundle of id ``base``
    (the edge is still configured as it was then).
    """
    path = state_dir / CURRENT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds no JSON object")
        if base is not None and data.get("base") != base:
            log.info("%s: committed over another configured bundle; serving the configured", path)
            return None
        where = Path(data.get("path") or state_dir / "bundles" / data["bundle"])
        bundle = load_bundle(where, verify="edge")
    except (OSError, ValueError, KeyError, TypeError, EdgesplitError) as exc:
        log.warning("committed bundle in %s does not load, using the configured one: %s", path, exc)
        return None
    if bundle.id != data["bundle"]:
        return None
    return bundle, str(data.get("version", ""))


def read_sequence(state_dir: Path) -> tuple[int, str] | None:
    """``(sequence, bundle id)`` of the release committed last in ``state_dir``, if any.

    A file that does not read is logged and taken as none: the edge must not stop
    serving over it (a release is then judged as on a fresh edge).
    """
    path = state_dir / SEQUENCE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s does not read, no committed sequence: %s", path, exc)
        return None
    sequence = data.get("sequence") if isinstance(data, dict) else None
    bundle = data.get("bundle") if isinstance(data, dict) else None
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        log.warning("%s holds no sequence, none committed: %r", path, data)
        return None
    return sequence, bundle if isinstance(bundle, str) else ""


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _clean_leftovers(state_dir: Path, base_root: Path | None = None) -> None:
    """Partial downloads and half-unpacked stagings of a run that was stopped.

    Also what an edge never needs in its store: a bundle taken before releases for
    edges existed holds its tails too (``cloud/``); only the edge's part is kept.
    """
    for partial in (state_dir / "downloads").glob("*.tar"):
        partial.unlink(missing_ok=True)
    store = state_dir / "bundles"
    for staging in store.glob(".staging-*"):
        shutil.rmtree(staging, ignore_errors=True)
    for kept in store.glob("*"):
        if not is_bundle_id(kept.name) or not kept.is_dir() or kept == base_root:
            continue
        if edge_only(kept):
            continue
        for extra in kept.iterdir():
            if extra.name in EDGE_NAMES:
                continue
            if extra.is_dir() and not extra.is_symlink():
                shutil.rmtree(extra, ignore_errors=True)
            else:
                extra.unlink(missing_ok=True)


def _read_refused(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {x for x in data if isinstance(x, str)} if isinstance(data, list) else set()


__all__ = [
    "CURRENT",
    "REFUSED",
    "SEQUENCE",
    "BundleStore",
    "committed_bundle",
    "read_sequence",
]
