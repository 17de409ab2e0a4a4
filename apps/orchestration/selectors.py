"""Reads of pipeline definitions and runs."""
from apps.orchestration.models import PipelineDefinition, PipelineRun


def pipeline_definition_get(*, name: str) -> PipelineDefinition | None:
    return PipelineDefinition.objects.filter(name=name).first()


def pipeline_run_get(*, run_id: int) -> PipelineRun | None:
    return PipelineRun.objects.filter(pk=run_id).first()
