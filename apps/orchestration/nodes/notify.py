"""`notify` nodes: tell people what the run found through a driver or named channels.

A node names a ``driver`` (default console) with its options, or, without
``driver``, a ``channel`` / ``channels`` stored as NotificationChannel rows,
whose options the node's other keys override. Validation stays pure: channels
are looked up when the node runs.
"""
from apps.notify.message import message_build, notification_key
from apps.notify.services import (
    ChannelUnavailable,
    node_options,
    notification_channel_send,
    notification_channels_send,
    notification_send,
    notification_validate,
    uses_channels,
)
from apps.orchestration.nodes.base import NodeContext, NodeError, NodeType, node_types
from apps.orchestration.nodes.common import all_checks, latest_analysis, latest_incident


def _measured_host(results: dict) -> str | None:
    """The host the most recent context node measured, if any."""
    for entry in reversed(list(results.values())):
        if entry["type"] == "context" and entry["output"].get("host"):
            return str(entry["output"]["host"])
    return None


def _failures(result: dict) -> list[str]:
    """"<where>: <detail>" for every failed delivery of a send's summary."""
    if "channels" not in result:
        return [f"{d['channel']}: {d['detail']}" for d in result["deliveries"] if not d["ok"]]
    failures = []
    for channel in result["channels"]:
        for d in channel["deliveries"]:
            if not d["ok"]:
                where = channel["channel"]
                if d["channel"] not in (channel["channel"], channel["driver"]):
                    where += f": {d['channel']}"
                failures.append(f"{where}: {d['detail']}")
    return failures


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
            host=_measured_host(ctx.results),
            # At-least-once across a takeover: a repeat of this node in this run, or in a retry of it, has the same key.
            key=notification_key(run_id=ctx.key_run_id or ctx.run_id, node_id=ctx.node_id),
        )
        options = node_options(config)
        if uses_channels(config) and "channel" in config:
            try:
                result = notification_channel_send(name=config["channel"], overrides=options, message=message)
            except ChannelUnavailable as exc:
                raise NodeError(str(exc)) from exc
        elif uses_channels(config):
            result = notification_channels_send(names=config["channels"], overrides=options, message=message)
        else:
            result = notification_send(driver=config.get("driver", "console"), config=options, message=message)
        if result["failed"]:
            raise NodeError(f"Notification failed ({'; '.join(_failures(result))})", output=result)
        return result

    def display_lines(self, output: dict) -> list[str]:
        lines = []
        if "channels" in output:
            lines.append(f"Channels: {', '.join(c['channel'] for c in output['channels'])}")
        elif output.get("channel"):
            lines.append(f"Channel: {output['channel']}")
        return [
            *lines,
            f"Driver: {output.get('driver', '')}",
            f"Channels attempted: {output.get('channels_attempted', 0)}",
            f"Succeeded: {output.get('succeeded', 0)}",
        ]
