"""Pages of the API's lists by definition name (/api/v1/definitions, /api/v1/schedules).

A page is at most ``limit`` entries by name, optionally only the names holding ``q`` (any case).
Its ``next_cursor`` is the last name on it, passed back as ``cursor`` for the names after it,
so entries added or removed meanwhile never shift a page; it is null after the last page.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from apps.api.errors import ApiError
from apps.orchestration.runqueries import FilterError, limit_read
from apps.orchestration.validation import DEFINITION_NAME

# Entries of a page unless ?limit says otherwise, and the most it may ask for.
NAME_LIST_DEFAULT, NAME_LIST_MAX = 100, 1000

Item = TypeVar("Item")


@dataclass(frozen=True)
class NamePageQuery:
    """What a request asks of a list by name, checked: ``after`` the cursor's name, ``contains``
    the filter, ``limit`` the page size."""

    after: str | None
    contains: str | None
    limit: int


def name_page_query(*, q: str | None, cursor: str | None, limit: int) -> NamePageQuery:
    """The page the query string asks for; ApiError 400 naming the parameter that no page of a
    list by definition name can answer (a definition name is letters, digits, '-' and '_')."""
    problems = []
    if q is not None and q != "" and not DEFINITION_NAME.fullmatch(q):
        problems.append("q must be part of a definition name: letters, digits, '-' and '_' (at most 100)")
    if cursor is not None and not DEFINITION_NAME.fullmatch(cursor):
        problems.append("cursor is not one this listing gave (use next_cursor as it was returned)")
    try:
        limit_read(limit, most=NAME_LIST_MAX, flag="limit")
    except FilterError as exc:
        problems.append(str(exc))
    if problems:
        raise ApiError(400, problems[0], problems)
    return NamePageQuery(after=cursor, contains=q or None, limit=limit)


def name_page(items: list[Item], query: NamePageQuery, name_of: Callable[[Item], str]) -> tuple[list[Item], str | None]:
    """The page of ``items`` (read with a limit one above the page's, so one more tells that a
    next page exists) and its ``next_cursor``."""
    page = items[:query.limit]
    more = len(items) > query.limit
    return page, (name_of(page[-1]) if more else None)
