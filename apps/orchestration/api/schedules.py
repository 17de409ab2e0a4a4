"""/api/v1/schedules: the pipeline schedules beat fires, as ``list_schedules --json`` (scope runs:read)."""
from __future__ import annotations

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Schema

from apps.api.auth import ApiKeyAuth
from apps.api.schemas import AUTH_ERRORS
from apps.orchestration.api.namepages import NAME_LIST_DEFAULT, name_page, name_page_query
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
    paused: bool
    last_run: LastRunOut | None
    next_due_at: str | None


class ScheduleListOut(Schema):
    schedules: list[ScheduleOut]
    next_cursor: str | None


@router.get("", response={200: ScheduleListOut, **AUTH_ERRORS}, summary="List schedules")
def schedules_list(
    request: HttpRequest, q: str | None = None, limit: int = NAME_LIST_DEFAULT, cursor: str | None = None
) -> dict:
    """The pipeline schedules in beat's table by definition name, enabled or not, with the last
    scheduled run and when the next one is due (ISO 8601, UTC); at most ``limit`` (default 100,
    at most 1,000) a page, only those whose definition name holds ``q`` (any case) when given.
    ``next_cursor``, passed back as ``cursor`` with the same ``q``, gives the next page (null
    after the last). Scope: runs:read."""
    query = name_page_query(q=q, cursor=cursor, limit=limit)
    listings = pipeline_schedules_list(
        now=timezone.now(), after=query.after, contains=query.contains, limit=query.limit + 1
    )
    page, next_cursor = name_page(listings, query, lambda item: item.definition)
    return {"schedules": [schedule_listing_dict(item) for item in page], "next_cursor": next_cursor}
