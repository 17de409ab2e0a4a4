"""`notify` nodes: tell people what the run found through a driver."""
from apps.notify.message import message_build
from apps.notify.services import notification_send, notification_validate
from apps.orchestration.nodes.base import NodeContext, NodeError, NodeType, node_types
from apps.orchestration.nodes.common import all_checks, latest_analysis, latest_incident


@node_types.register("notify")
class NotifyNode(NodeType):
    name = "notify"

    def validate(self, config: dict) -> list[str]:
        return notification_validate(config=config)

    def run(self, config: dict, ctx: NodeContext) -> dict:
        message = message_build(
            run_info={
                "pipeline": ctx.pipeline,
                "run_id": ctx.run_id,
                "trace_id": ctx.trace_id,
                "environment": ctx.environment,
            },
            incident=latest_incident(ctx.results),
            checks=all_checks(ctx.results),
            analysis=latest_analysis(ctx.results),
        )
        driver = config.get("driver", "console")
        driver_config = {k: v for k, v in config.items() if k not in ("driver", "required")}
        result = notification_send(driver=driver, config=driver_config, message=message)
        if result["failed"]:
            details = "; ".join(
                f"{d['channel']}: {d['detail']}" for d in result["deliveries"] if not d["ok"]
            )
            raise NodeError(f"Notification failed ({details})", output=result)
        return result

    def display_lines(self, output: dict) -> list[str]:
        return [
            f"Driver: {output.get('driver', '')}",
            f"Channels attempted: {output.get('channels_attempted', 0)}",
            f"Succeeded: {output.get('succeeded', 0)}",
        ]
