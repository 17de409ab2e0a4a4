"""/api/v1/schedules: the pipeline schedules beat fires, as ``list_schedules --json`` (scope runs:read)."""
from __future__ import annotations

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Schema

from apps.api.auth import ApiKeyAuth
from apps.api.schemas import AUTH_ERRORS
from apps.orchestration.listings import schedule_listing_dict
from apps.orchestration.selectors import pipeline_schedules_list

router = Router(tags=["schedules"], auth=ApiKeyAuth("runs:read"))


class LastRunOut(Schema):
    run_id: int
    status: str
    created_at: str


class ScheduleOut(Schema):
    """One schedule: the fields of ``list_schedules --json``."""

    definition: str
    task: str
    kind: str
    schedule: str
    every_seconds: float | None
    cron: str | None
    timezone: str | None
    overlap: str | None
    enabled: bool
    last_run: LastRunOut | None
    next_due_at: str | None


class ScheduleListOut(Schema):
    schedules: list[ScheduleOut]


@router.get("", response={200: ScheduleListOut, **AUTH_ERRORS}, summary="List schedules")
def schedules_list(request: HttpRequest) -> dict:
    """Every pipeline schedule in beat's table, enabled or not, with the last scheduled run and
    when the next one is due (ISO 8601, UTC). Scope: runs:read."""
    listings = pipeline_schedules_list(now=timezone.now())
    return {"schedules": [schedule_listing_dict(item) for item in listings]}
