"""`context` nodes: gather the state of this host through the registered checkers."""
from django.conf import settings

from apps.checkers.services import checks_run, checks_validate
from apps.orchestration.nodes.base import NodeContext, NodeError, NodeType, node_types

DEFAULT_INCLUDE = ["cpu", "memory", "disk"]


@node_types.register("context")
class ContextNode(NodeType):
    name = "context"
    options = frozenset({"include", "thresholds", "options"})

    def validate(self, config: dict) -> list[str]:
        return super().validate(config) + checks_validate(
            include=config.get("include", DEFAULT_INCLUDE),
            thresholds=config.get("thresholds", {}),
            options=config.get("options", {}),
        )

    def run(self, config: dict, ctx: NodeContext) -> dict:
        try:
            results = checks_run(
                include=config.get("include", DEFAULT_INCLUDE),
                thresholds=config.get("thresholds", {}),
                options=config.get("options", {}),
            )
        except (OSError, ValueError) as exc:
            raise NodeError(f"Check failed: {exc}") from exc
        counts = {"ok": 0, "warning": 0, "critical": 0}
        for result in results:
            counts[result["status"]] = counts.get(result["status"], 0) + 1
        return {
            "host": settings.MONITOR_HOST,
            "checks_run": len(results),
            "status_counts": counts,
            "checks": {result["name"]: result for result in results},
        }

    def display_lines(self, output: dict) -> list[str]:
        return [f"Checks run: {output.get('checks_run', 0)}"]
