"""The device runtime: run heads, take confident exits, offload the rest, always answer."""

from edge_node.config import EdgeConfig, UpdateConfig
from edge_node.head import HeadResult, HeadRunner
from edge_node.node import EdgeNode
from edge_node.records import CloudHealth, Outcome
from edge_node.transport import CloudClient, Reply

__all__ = [
    "CloudClient",
    "CloudHealth",
    "EdgeConfig",
    "EdgeNode",
    "HeadResult",
    "HeadRunner",
    "Outcome",
    "Reply",
    "UpdateConfig",
]
