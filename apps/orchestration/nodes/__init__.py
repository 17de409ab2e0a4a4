"""Node types; importing this package registers each of them."""
from apps.orchestration.nodes import context, ingest, intelligence, notify, transform  # noqa: F401
from apps.orchestration.nodes.base import NodeContext, NodeError, NodeType, node_types

__all__ = ["NodeContext", "NodeError", "NodeType", "node_types"]
