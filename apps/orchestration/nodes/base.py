"""The node-type family: what each kind of pipeline node does."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from apps.options import unknown_option_messages
from apps.registry import Registry


class NodeError(Exception):
    """Raised by a node handler when the node fails; ``output`` keeps what it
    produced before failing (for example delivery results)."""

    def __init__(self, message: str, output: dict | None = None):
        super().__init__(message)
        self.output = output or {}


@dataclass
class NodeContext:
    """What a node sees of its run: the run's identity, the payload, and the
    outputs of the nodes that succeeded before it, in order."""

    run_id: int
    trace_id: str
    pipeline: str
    source: str
    environment: str
    payload: dict
    timeout_seconds: float = 60  # the node's time limit (the definition's defaults.timeout_seconds)
    results: dict[str, dict] = field(default_factory=dict)  # node id -> {"type", "output"}
    # The id of the node being run; "" when unknown. Notify nodes key their deliveries with it.
    node_id: str = ""
    # What launched the run (a PipelineRun.Trigger value): an alert's run finds its alerts recorded already.
    trigger: str = "cli"
    # How the run names its definition (definition, config, builtin: ``pipeline`` is its origin), and the host
    # it was aimed at ("" for any worker): the key of its monitoring state (apps.orchestration.monitoring).
    origin_kind: str = "definition"
    target_host: str = ""
    # The time as the run records it (the database's, carried on this process' clock by the engine).
    now: Callable[[], datetime] = timezone.now
    # The run id side effects are keyed with: the first run of a retry chain (so a retry's
    # notifications repeat that run's keys and receivers drop them), else run_id; 0: run_id.
    key_run_id: int = 0

    def outputs_of_type(self, node_type: str) -> list[dict]:
        return [r["output"] for r in self.results.values() if r["type"] == node_type]


class NodeType:
    """Base class of a node type.

    ``validate`` checks the node's config and returns messages (no node prefix,
    never raises); ``run`` executes the node and returns a JSON-serialisable
    output or raises NodeError; ``display_lines`` gives the result display's
    lines for a successful output.
    """

    name: str = ""
    options: frozenset[str] = frozenset()  # the config keys the node type takes

    def validate(self, config: dict) -> list[str]:
        # `required` is tolerated in config too, as the notify and intelligence configs do.
        return unknown_option_messages(config, self.options | {"required"}, f"{self.name} node")

    def run(self, config: dict, ctx: NodeContext) -> dict:
        raise NotImplementedError

    def display_lines(self, output: dict) -> list[str]:
        return []


node_types: Registry[type[NodeType]] = Registry("node type")
