"""edgesplit: run one deep neural network across an edge device and the cloud.

The ``edgesplit`` package is the core every role stands on and that imports none
of them: the exception tree, the bundle and its manifest, the typed settings
(``settings``, ``config*``), keys, releases, and the one place that makes ONNX
Runtime sessions and resolves execution providers. The roles live in
``partitioner``, ``offload_policy``, ``wire``, ``edge_node`` and ``cloud_node``;
the command line and the assembly of each role in the app layer,
:mod:`edgesplit.app`, which nothing imports (docs/architecture.md).
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
