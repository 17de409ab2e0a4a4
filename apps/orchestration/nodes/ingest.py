"""`ingest` nodes: read the run's payload as alerts and record them."""
from apps.alerts.parsers.base import PayloadError
from apps.alerts.services import alert_ingest, alert_sources
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
            return alert_ingest(payload=ctx.payload, source=source)
        except PayloadError as exc:
            raise NodeError(str(exc)) from exc

    def display_lines(self, output: dict) -> list[str]:
        lines = [
            f"Source: {output.get('source', '')}",
            f"Alerts: {len(output.get('alerts', []))} "
            f"(new: {output.get('created', 0)}, updated: {output.get('updated', 0)}, "
            f"resolved: {output.get('resolved', 0)})",
        ]
        incident = output.get("incident")
        if incident:
            lines.append(f"Incident: #{incident['id']} {incident['title']} ({incident['status']})")
        return lines
