"""Take an offered bundle on the updater's background thread: download, verify, stage.

:func:`take` fetches the release (or reuses the copy already on this edge, checked
again), unpacks and verifies it, loads its head sessions and policy, and says what
came of it: a :class:`Staged` bundle ready to switch to, or a :class:`Failure`
that is permanent (what the release is) or passing (tried again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edge_node.bundle_store import BundleStore
from edge_node.download import Downloader, Offer, TransientUpdateError
from edge_node.head import HeadRunner
from edgesplit.bundle import Bundle, TensorSpec
from edgesplit.errors import ConfigError, RollbackError, UpdateError
from offload_policy import Policy


@dataclass(frozen=True)
class Staged:
    """A checked bundle with its sessions and policy, ready to switch to."""

    bundle: Bundle
    version: str
    runner: HeadRunner
    policy: Policy
    sequence: int = 0  # its release's; 0: the configured bundle or an unsequenced release


@dataclass(frozen=True)
class Failure:
    """Why a download or staging of ``bundle_id`` failed."""

    bundle_id: str
    message: str
    permanent: bool  # what the release is; else passing trouble, tried again
    rollback: bool = False  # older than the release committed


def take(
    offer: Offer,
    input_spec: tuple[TensorSpec, ...],
    store: BundleStore,
    downloader: Downloader,
    make_runner: Callable[[Bundle], HeadRunner],
    make_policy: Callable[[Bundle], Policy],
) -> Staged | Failure:
    """The offered bundle staged, or why not; never raises."""
    bundle_id = offer.bundle_id
    archive = store.archive_path(bundle_id)

    def stage(bundle: Bundle, version: str, sequence: int) -> Staged:
        if tuple(bundle.manifest.model.inputs) != tuple(input_spec):
            raise UpdateError(
                f"bundle {bundle.id[:12]} takes inputs {list(bundle.manifest.model.inputs)}, "
                f"this edge feeds {list(input_spec)}"
            )
        runner = make_runner(bundle)
        runner.warm(bundle.manifest.cuts)
        return Staged(bundle, version or bundle.id[:12], runner, make_policy(bundle), sequence)

    try:
        kept = store.local(bundle_id)
        if kept is not None:
            # Taken before (a rollout stopped, a bundle committed then left): hash every
            # file again rather than trust the disk, and check its signature and
            # sequence again.
            bundle, sequence = store.reuse(kept, bundle_id)
            return stage(bundle, offer.version, sequence)
        downloader.fetch(offer, archive)
        release, bundle = store.unpack(archive)
        if release.bundle_id != bundle_id:
            raise UpdateError(
                f"offered bundle {bundle_id[:12]} but the release holds {release.bundle_id[:12]}"
            )
        return stage(bundle, release.version, release.sequence)
    except TransientUpdateError as exc:
        return Failure(bundle_id, str(exc), permanent=False)
    except RollbackError as exc:
        return Failure(bundle_id, str(exc), permanent=True, rollback=True)
    except (UpdateError, ConfigError) as exc:
        # What the release is: unsigned, tampered, invalid, or not for this edge.
        return Failure(bundle_id, str(exc), permanent=True)
    except Exception as exc:  # noqa: BLE001 - disk, network, a session (GPU memory...)
        # Local or passing trouble: tried again, refused after the last attempt.
        return Failure(bundle_id, f"{type(exc).__name__}: {exc}", permanent=False)
    finally:
        archive.unlink(missing_ok=True)
