"""The cloud runtime: a ZeroMQ ingress that validates requests and runs tails."""

from cloud_node.backends import OnnxRuntimeBackend, TailBackend
from cloud_node.server import CloudConfig, CloudNode

__all__ = ["CloudConfig", "CloudNode", "OnnxRuntimeBackend", "TailBackend"]
