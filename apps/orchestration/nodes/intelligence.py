"""`intelligence` nodes: analyse what earlier nodes found with a provider."""
from apps.intelligence.base import AnalysisFailed, ProviderUnavailable
from apps.intelligence.services import analysis_run, analysis_validate
from apps.orchestration.nodes.base import NodeContext, NodeError, NodeType, node_types
from apps.orchestration.nodes.common import all_checks, latest_incident

SUMMARY_DISPLAY_LIMIT = 200


@node_types.register("intelligence")
class IntelligenceNode(NodeType):
    name = "intelligence"

    def validate(self, config: dict) -> list[str]:
        return analysis_validate(config=config)

    def run(self, config: dict, ctx: NodeContext) -> dict:
        incident = latest_incident(ctx.results)
        checks = all_checks(ctx.results)
        if incident is None and not checks:
            raise NodeError("Nothing to analyse: no earlier ingest or context node produced findings")
        provider = config.get("provider", "local")
        try:
            return analysis_run(provider=provider, config=config, incident=incident, checks=checks)
        except (ValueError, AnalysisFailed, ProviderUnavailable) as exc:
            # Their messages are written to be shown: no URL, no key, no traceback.
            raise NodeError(f"Analysis failed: {exc}") from None

    def display_lines(self, output: dict) -> list[str]:
        summary = str(output.get("summary", ""))
        if len(summary) > SUMMARY_DISPLAY_LIMIT:
            summary = summary[: SUMMARY_DISPLAY_LIMIT - 3].rstrip() + "..."
        lines = [f"Summary: {summary}", f"Provider: {output.get('provider', '')}"]
        if output.get("fallback_used"):
            lines.append(
                f"Fallback: {output.get('requested_provider', 'the provider')} unavailable "
                f"({output.get('fallback_reason', 'no reason given')}); local analysis used"
            )
        return lines
