"""/api/v1/definitions: the stored pipeline definitions (scope runs:read)."""
from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema

from apps.api.auth import ApiKeyAuth
from apps.api.errors import ApiError
from apps.api.schemas import AUTH_ERRORS, NOT_FOUND
from apps.orchestration.api.namepages import NAME_LIST_DEFAULT, name_page, name_page_query
from apps.orchestration.rendering import iso
from apps.orchestration.schedules import schedule_describe
from apps.orchestration.selectors import pipeline_definition_get, pipeline_definitions_list
from apps.orchestration.validation import DEFINITION_NAME

router = Router(tags=["definitions"], auth=ApiKeyAuth("runs:read"))


class TriggerOut(Schema):
    """One entry of a definition's ``triggers``, summarised."""

    type: str
    source: str | None = None
    on: list[str] = []
    match: str | None = None


class DefinitionOut(Schema):
    name: str
    description: str
    enabled: bool
    schedule: str | None
    triggers: list[TriggerOut]
    updated_at: str  # ISO 8601, as the commands' --json print times


class DefinitionDetailOut(DefinitionOut):
    version: str
    tags: list[Any]
    created_at: str
    config: dict[str, Any]


class DefinitionListOut(Schema):
    definitions: list[DefinitionOut]
    next_cursor: str | None


def _schedule_text(schedule: object) -> str | None:
    if not isinstance(schedule, dict):
        return None
    try:
        return schedule_describe(schedule)
    except (KeyError, TypeError, ValueError, AttributeError):
        # Stored before validation covered it: shown as it is rather than refused.
        return "unreadable schedule"


def _triggers(triggers: object) -> list[dict]:
    found = []
    for entry in triggers if isinstance(triggers, list) else []:
        if not isinstance(entry, dict) or len(entry) != 1:
            continue
        (kind, spec), = entry.items()
        spec = spec if isinstance(spec, dict) else {}
        on = spec.get("on", ["firing"]) if kind == "alert" else []
        found.append({
            "type": str(kind),
            "source": spec["source"] if isinstance(spec.get("source"), str) else None,
            "on": [item for item in on if isinstance(item, str)] if isinstance(on, list) else [],
            "match": spec["match"] if isinstance(spec.get("match"), str) else None,
        })
    return found


def _summary(row: dict) -> dict:
    return {
        "name": row["name"],
        "description": row["description"],
        "enabled": row["is_active"],
        "schedule": _schedule_text(row["schedule"]),
        "triggers": _triggers(row["triggers"]),
        "updated_at": iso(row["updated_at"]),
    }


@router.get("", response={200: DefinitionListOut, **AUTH_ERRORS}, summary="List definitions")
def definitions_list(
    request: HttpRequest, q: str | None = None, limit: int = NAME_LIST_DEFAULT, cursor: str | None = None
) -> dict:
    """The stored definitions by name: description, whether it is enabled, its schedule in
    words and a summary of its triggers; at most ``limit`` (default 100, at most 1,000) a page,
    only those whose name holds ``q`` (any case) when given. ``next_cursor``, passed back as
    ``cursor`` with the same ``q``, gives the next page (null after the last). Scope: runs:read."""
    query = name_page_query(q=q, cursor=cursor, limit=limit)
    rows = pipeline_definitions_list(after=query.after, contains=query.contains, limit=query.limit + 1)
    page, next_cursor = name_page(rows, query, lambda row: row["name"])
    return {"definitions": [_summary(row) for row in page], "next_cursor": next_cursor}


@router.get("/{name}", response={200: DefinitionDetailOut, **AUTH_ERRORS, **NOT_FOUND}, summary="Show a definition")
def definition_get(request: HttpRequest, name: str) -> dict:
    """One definition with its whole config; 404 when no definition has that name. Scope: runs:read."""
    definition = pipeline_definition_get(name=name) if DEFINITION_NAME.fullmatch(name) else None
    if definition is None:
        raise ApiError(404, "No pipeline definition has that name")
    config = definition.config if isinstance(definition.config, dict) else {}
    return {
        **_summary({
            "name": definition.name, "description": definition.description, "is_active": definition.is_active,
            "schedule": config.get("schedule"), "triggers": config.get("triggers"),
            "updated_at": definition.updated_at,
        }),
        "version": definition.version,
        "tags": definition.tags if isinstance(definition.tags, list) else [],
        "created_at": iso(definition.created_at),
        "config": config,
    }
