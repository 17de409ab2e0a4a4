"""`notify` nodes: tell people what the run found through a driver or named channels.

A node names a ``driver`` (default console) with its options, or, without
``driver``, a ``channel`` / ``channels`` stored as NotificationChannel rows,
whose options the node's other keys override. Validation stays pure: channels
are looked up when the node runs.

``notify_on`` makes the node speak only when there is something to say
(apps/orchestration/monitoring.py): "always" (the default: every run),
"problem" (a warning or critical), "change" (a severity other than the one
its receivers last heard of), with ``renotify_after`` seconds between
reminders while a problem lasts; a return to ok after a problem is a
"resolved" notice. A node that stays quiet succeeds and says why.
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
from apps.options import is_positive_number
from apps.orchestration.monitoring import (
    ALWAYS,
    NOTIFY_ON,
    RENOTIFY_MAX,
    RENOTIFY_MIN,
    Decision,
    monitor_key,
    notice_claim,
    notice_release,
    run_severity,
)
from apps.orchestration.nodes.base import NodeContext, NodeError, NodeType, node_types
from apps.orchestration.nodes.common import all_checks, latest_analysis, latest_incident, measured_host


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
        return _notice_messages(config) + notification_validate(config=config)

    def run(self, config: dict, ctx: NodeContext) -> dict:
        mode = config.get("notify_on", ALWAYS)
        decision: Decision | None = None
        if mode != ALWAYS:
            decision = notice_claim(
                ctx=ctx, severity=run_severity(ctx.results), mode=mode, renotify_after=config.get("renotify_after")
            )
            if decision.notice is None:
                return {"notify_on": mode, "notice": None, "quiet": decision.reason}
        try:
            result = self._send(config, ctx, decision)
        except BaseException:  # a failed delivery, or the node's time limit in the middle of one
            if decision is not None:
                notice_release(decision)  # maybe not heard: the next run decides as if it had not been claimed
            raise
        if decision is not None:
            result = {"notify_on": mode, "notice": decision.notice, "reason": decision.reason, **result}
        return result

    def _send(self, config: dict, ctx: NodeContext, decision: Decision | None) -> dict:
        """Build the message and deliver it; raises NodeError when a delivery failed."""
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
            # A notice names the host its state is kept under: its trigger and its resolve share a dedup key.
            host=(monitor_key(ctx)[1] or None) if decision is not None else measured_host(ctx.results),
            # At-least-once across a takeover: a repeat of this node in this run, or in a retry of it, has the same key.
            key=notification_key(run_id=ctx.key_run_id or ctx.run_id, node_id=ctx.node_id),
            notice=decision.notice or "" if decision is not None else "",
            previous=decision.previous if decision is not None else None,
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
        if output.get("quiet"):
            return [f"Quiet: {output['quiet']} (notify_on: {output.get('notify_on')})"]
        lines = []
        if output.get("notify_on"):
            lines.append(f"Notice: {output.get('notice') or 'plain'} ({output.get('reason')})")
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


def _notice_messages(config: dict) -> list[str]:
    """Problems with a notify node's ``notify_on`` and ``renotify_after``."""
    messages = []
    mode = config.get("notify_on", ALWAYS)
    if mode not in NOTIFY_ON:
        messages.append(f"notify_on must be one of: {', '.join(NOTIFY_ON)}")
    if "renotify_after" in config:
        seconds = config["renotify_after"]
        if not is_positive_number(seconds) or not RENOTIFY_MIN <= seconds <= RENOTIFY_MAX:
            messages.append(f"renotify_after must be a number of seconds from {RENOTIFY_MIN} to {RENOTIFY_MAX}")
        elif mode == ALWAYS:
            messages.append('renotify_after applies only with notify_on "problem" or "change"')
    return messages
