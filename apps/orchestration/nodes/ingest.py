"""`ingest` nodes: read the run's payload as alerts and record them (or, in
a run an alert started, report them as the intake recorded them)."""
from apps.alerts.parsers.base import PayloadError
from apps.alerts.services import alert_ingest, alert_recorded, alert_sources
from apps.orchestration.nodes.base import NodeContext, NodeError, NodeType, node_types

AUTODETECT = ("cli", "auto")


@node_types.register("ingest")
class IngestNode(NodeType):
    name = "ingest"
    options = frozenset({"source"})

    def validate(self, config: dict) -> list[str]:
        messages = super().validate(config)
        source = config.get("source")
        if source is not None:
            known = alert_sources()
            if not isinstance(source, str) or (source not in known and source not in AUTODETECT):
                messages.append(f"unknown alert source: {source} (known: {', '.join(known)}, auto)")
        return messages

    def run(self, config: dict, ctx: NodeContext) -> dict:
        source = config.get("source") or ctx.source
        try:
            if ctx.trigger == "alert":
                # The intake recorded these alerts with the run; recording them again would count them twice.
                recorded = alert_recorded(payload=ctx.payload, source=source)
                if recorded is not None:
                    return recorded
            return alert_ingest(payload=ctx.payload, source=source)
        except PayloadError as exc:
            raise NodeError(str(exc)) from exc

    def display_lines(self, output: dict) -> list[str]:
        counts = (
            "recorded when received" if output.get("recorded")
            else f"new: {output.get('created', 0)}, updated: {output.get('updated', 0)}"
        )
        lines = [
            f"Source: {output.get('source', '')}",
            f"Alerts: {len(output.get('alerts', []))} ({counts}, resolved: {output.get('resolved', 0)})",
        ]
        incident = output.get("incident")
        if incident:
            lines.append(f"Incident: #{incident['id']} {incident['title']} ({incident['status']})")
        return lines
