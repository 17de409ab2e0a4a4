"""Reads of pipeline definitions and runs."""
from __future__ import annotations

from datetime import datetime

from apps.orchestration.models import PipelineDefinition, PipelineRun

# Run ids are 64-bit; a larger number names no run (and some databases cannot even compare it).
RUN_ID_MAX = 2**63 - 1
# The most runs one listing returns: enough for any screen or script, and a bound on the read.
RUN_LIST_MAX = 1000
# The columns a run listing shows: never the result, snapshot or payload blobs.
RUN_LIST_FIELDS = (
    "id",
    "trace_id",
    "definition_name",
    "origin",
    "origin_kind",
    "trigger",
    "idempotency_key",
    "status",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "duration_ms",
)


def pipeline_definition_get(*, name: str) -> PipelineDefinition | None:
    return PipelineDefinition.objects.filter(name=name).first()


def pipeline_run_get(*, run_id: int) -> PipelineRun | None:
    if not 0 < run_id <= RUN_ID_MAX:
        return None
    return PipelineRun.objects.filter(pk=run_id).first()


def pipeline_runs_list(
    *,
    definition: str | None = None,
    status: str | None = None,
    trigger: str | None = None,
    since: datetime | None = None,
    limit: int = 20,
) -> list[dict]:
    """The newest runs first (by creation, then id), at most ``limit`` of them,
    as dicts of RUN_LIST_FIELDS: runs of the definition named ``definition``,
    with ``status``, launched by ``trigger``, created at or after ``since``.

    Raises ValueError when ``limit`` is not from 1 to RUN_LIST_MAX.
    """
    if not 1 <= limit <= RUN_LIST_MAX:
        raise ValueError(f"limit must be from 1 to {RUN_LIST_MAX}")
    runs = PipelineRun.objects.all()
    if definition is not None:
        runs = runs.filter(definition_name=definition)
    if status is not None:
        runs = runs.filter(status=status)
    if trigger is not None:
        runs = runs.filter(trigger=trigger)
    if since is not None:
        runs = runs.filter(created_at__gte=since)
    return list(runs.order_by("-created_at", "-pk").values(*RUN_LIST_FIELDS)[:limit])
