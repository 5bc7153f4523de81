"""edgesplit: run one deep neural network across an edge device and the cloud.

The top-level ``edgesplit`` package is the thin root shared by every role: the
exception tree, the bundle reader and the ``edgesplit`` command line. The roles
themselves live in ``partitioner``, ``offload_policy``, ``wire``, ``edge_node``
and ``cloud_node`` (see the README's architecture section).
"""

from edgesplit.errors import (
    BackendError,
    BundleError,
    ConfigError,
    DecompressionError,
    EdgesplitError,
    HeaderError,
    ModelError,
    PayloadError,
    PolicyError,
    TransportError,
    WireError,
)

__version__ = "0.1.0"

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
    "TransportError",
    "WireError",
    "__version__",
]
