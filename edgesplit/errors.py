"""The one exception tree of edgesplit.

Every error that edgesplit raises on purpose derives from ``EdgesplitError``,
so a CLI or a server loop can catch the whole family at one boundary::

    EdgesplitError
    ├── ConfigError        bad CLI flag, config file or environment value
    ├── ModelError         a model that cannot be found, built, exported or loaded
    ├── BundleError        a bundle that is missing, malformed or tampered with
    ├── PolicyError        a policy given inconsistent observations or profiles
    ├── BackendError       an inference backend (ONNX Runtime, Triton) failed
    ├── TransportError     a socket could not bind, connect or exchange messages
    ├── UpdateError        a bundle release refused: corrupt, unsigned, tampered or invalid
    │   └── RollbackError      a release older than the one the edge has committed
    └── WireError          a message frame that is not valid edgesplit wire format
        ├── HeaderError        the msgpack header frame is malformed or unsupported
        ├── PayloadError       a tensor frame disagrees with what its header declares
        └── DecompressionError a compressed frame is corrupt or would expand past a limit

Messages say what, where and what to do, with values as ``key=value``.
This module imports nothing, so every package may depend on it.
"""

from __future__ import annotations


class EdgesplitError(Exception):
    """Root of every error edgesplit raises on purpose."""


class ConfigError(EdgesplitError):
    """A CLI flag, config file or environment value is invalid."""


class ModelError(EdgesplitError):
    """A model cannot be found, built, exported or loaded."""


class BundleError(EdgesplitError):
    """A bundle is missing, malformed, or does not match its manifest."""


class PolicyError(EdgesplitError):
    """A policy was given inconsistent observations or profiles."""


class BackendError(EdgesplitError):
    """An inference backend failed to load a model or run a request."""


class BackendBusy(BackendError):
    """The backend cannot take a request now (a replica was lost, none answered in time).

    The cloud node answers ``busy``, and the edge runs the request itself.
    """


class UpdateError(EdgesplitError):
    """A release (an over-the-air bundle update) was refused; the old bundle keeps serving."""


class RollbackError(UpdateError):
    """A release older than the one the edge has committed (a lower sequence) was refused."""


class TransportError(EdgesplitError):
    """A socket could not bind, connect, or exchange messages."""


class WireError(EdgesplitError):
    """A frame is not valid edgesplit wire format."""


class HeaderError(WireError):
    """The msgpack header frame is malformed, oversized or unsupported."""


class PayloadError(WireError):
    """A tensor frame disagrees with its header (size, dtype, shape, codec)."""


class DecompressionError(WireError):
    """A compressed tensor frame is corrupt or would expand past a limit."""


__all__ = [
    "BackendError",
    "BundleError",
    "ConfigError",
    "DecompressionError",
    "EdgesplitError",
    "HeaderError",
    "ModelError",
    "PayloadError",
    "PolicyError",
    "RollbackError",
    "TransportError",
    "UpdateError",
    "WireError",
]
