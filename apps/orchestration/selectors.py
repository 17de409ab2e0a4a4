"""Reads of pipeline definitions and runs."""
from apps.orchestration.models import PipelineDefinition, PipelineRun

# Run ids are 64-bit; a larger number names no run (and some databases cannot even compare it).
RUN_ID_MAX = 2**63 - 1


def pipeline_definition_get(*, name: str) -> PipelineDefinition | None:
    return PipelineDefinition.objects.filter(name=name).first()


def pipeline_run_get(*, run_id: int) -> PipelineRun | None:
    if not 0 < run_id <= RUN_ID_MAX:
        return None
    return PipelineRun.objects.filter(pk=run_id).first()
