"""Run listings asked for as text: filters, keyset pages and their cursors
(apps/orchestration/runqueries.py), on the real database."""
from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.orchestration import selectors
from apps.orchestration.models import PipelineRun
from apps.orchestration.runqueries import (
    FilterError,
    RunFilters,
    cursor_decode,
    cursor_encode,
    limit_read,
    pipeline_runs_page,
    run_filters_read,
)
from tests.hostile import HOSTILE_TEXT
from tests.support import make_run

pytestmark = pytest.mark.django_db


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def all_pages(filters: RunFilters, limit: int, between=None) -> list[list[int]]:
    """Every page's run ids, first to last; ``between(n)`` runs after page n is read."""
    pages, cursor = [], None
    while True:
        rows, cursor = pipeline_runs_page(filters=filters, limit=limit, cursor=cursor)
        pages.append([row["id"] for row in rows])
        if between is not None:
            between(len(pages))
        if cursor is None:
            return pages


def test_a_cursor_names_the_created_at_and_id_it_was_made_from():
    at = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
    assert cursor_decode(cursor_encode({"created_at": at, "id": 42})) == (at, 42)
    # An offset is read as the same instant, in UTC as stored.
    assert cursor_decode(_b64("2026-03-01T14:30:05.123456+02:00|42")) == (at, 42)


@pytest.mark.parametrize("cursor", [
    *HOSTILE_TEXT,
    _b64("2026-03-01T12:30:05|42"),  # no zone: not one this listing made
    _b64("2026-03-01T12:30:05+00:00|0"),
    _b64("2026-03-01T12:30:05+00:00|-3"),
    _b64("2026-03-01T12:30:05+00:00|+3"),
    _b64(f"2026-03-01T12:30:05+00:00|{2**63}"),
    _b64("2026-03-01T12:30:05+00:00|4|5"),
    _b64("0001-01-01T00:00:00+14:00|1"),  # before the calendar in UTC
    _b64("9999-12-31T23:59:59-14:00|1"),  # after it
    _b64("tomorrow|1"),
    _b64("\x00|1"),
    "é" * 10,
    "=" * 8,
    "a" * 101,
])
def test_cursors_this_listing_did_not_make_are_refused_with_one_message(cursor):
    with pytest.raises(FilterError) as caught:
        cursor_decode(cursor)
    assert str(caught.value) == "cursor is not one this listing gave (use next_cursor as it was returned)"


def test_pages_hold_every_run_once_newest_first_even_when_runs_share_a_moment():
    at = timezone.now() - timedelta(hours=1)
    runs = [make_run(name="paged") for _ in range(11)]
    # Four runs created at the very same instant: the id orders them.
    PipelineRun.objects.filter(pk__in=[run.pk for run in runs[3:7]]).update(created_at=at)
    expected = list(PipelineRun.objects.order_by("-created_at", "-pk").values_list("pk", flat=True))
    pages = all_pages(RunFilters(), limit=3)
    assert [len(page) for page in pages] == [3, 3, 3, 2]
    assert [run_id for page in pages for run_id in page] == expected


def test_a_last_page_that_is_exactly_full_has_no_next_cursor():
    for _ in range(4):
        make_run(name="paged")
    pages = all_pages(RunFilters(), limit=2)
    assert [len(page) for page in pages] == [2, 2]


def test_runs_launched_while_paging_neither_repeat_nor_hide_a_run():
    old = [make_run(name="paged") for _ in range(7)]
    expected = sorted((run.pk for run in old), reverse=True)
    newer: list[int] = []

    def launch_more(_page: int) -> None:
        newer.extend(make_run(name="paged").pk for _ in range(2))

    pages = all_pages(RunFilters(definition="paged"), limit=2, between=launch_more)
    seen = [run_id for page in pages for run_id in page]
    assert seen == expected  # the old runs, each once, in order; the newer ones belong to a new first page
    assert not set(seen) & set(newer)
    first, _ = pipeline_runs_page(filters=RunFilters(definition="paged"), limit=2)
    assert [row["id"] for row in first] == sorted(newer, reverse=True)[:2]


def test_a_page_keeps_the_filters_and_reads_one_statement():
    keep = [make_run(name="wanted", status="failed", finished_at=timezone.now()) for _ in range(3)]
    make_run(name="wanted")  # queued: another status
    make_run(name="other", status="failed", finished_at=timezone.now())
    filters = run_filters_read(definition="wanted", status="failed")
    rows, cursor = pipeline_runs_page(filters=filters, limit=2)
    with CaptureQueriesContext(connection) as queries:
        rest, last = pipeline_runs_page(filters=filters, limit=2, cursor=cursor)
    assert [row["id"] for row in rows + rest] == sorted((run.pk for run in keep), reverse=True)
    assert last is None
    assert len(queries) == 1
    sql = queries[0]["sql"].upper()
    assert "OFFSET" not in sql and "COUNT(" not in sql


def test_filters_are_refused_with_the_messages_of_list_runs():
    cases = {
        "definition": ("no spaces", "--definition must be a definition name: letters, digits, '-' and '_', at most 100"),
        "host": ("web 01", "--host must be a host name (letters, digits, '.', '-' and '_', starting with a letter "
                 "or digit, at most 100)"),
        "since": ("yesterday", "--since must be a duration above 0 such as 30s, 15m, 2h or 7d (at most "
                  "1000000000s), not yesterday"),
        "status": ("done", "--status must be one of: queued, running, completed, failed, cancelled"),
    }
    for option, (value, message) in cases.items():
        with pytest.raises(FilterError) as caught:
            run_filters_read(**{option: value})
        assert str(caught.value) == message
    with pytest.raises(FilterError, match=r"^--trigger must be one of: cli, schedule, retry, admin, api"):
        run_filters_read(trigger="cron")
    with pytest.raises(FilterError, match=r"^--limit must be from 1 to 500$"):
        limit_read(501, most=500)
    assert limit_read(500, most=500) == 500


def test_since_and_host_are_read_as_list_runs_reads_them():
    filters = run_filters_read(since="2h", host="Web-01")
    assert filters.host == "web-01"
    assert timedelta(hours=2) - (timezone.now() - filters.since) < timedelta(seconds=5)


@pytest.mark.parametrize("filters", [
    {}, {"status": "completed"}, {"trigger": "api"}, {"host": "web-07"}, {"definition": "d3"},
])
def test_a_page_is_read_along_the_created_at_index_without_sorting_the_table(filters):
    if connection.vendor != "postgresql":
        pytest.skip("the plan asserted is PostgreSQL's")
    now = timezone.now()
    PipelineRun.objects.bulk_create(
        [
            PipelineRun(
                trace_id=f"t{i}", origin=f"d{i % 10}", definition_name=f"d{i % 10}", config_snapshot={},
                status=("completed", "failed", "queued")[i % 3], trigger=("cli", "api", "schedule")[i % 3],
                target_host=f"web-{i % 20:02d}", finished_at=now if i % 3 != 2 else None,
            )
            for i in range(20_000)
        ],
        batch_size=2000,
    )
    with connection.cursor() as cursor:
        # One run a second back from now, newest last inserted; then the planner's statistics.
        cursor.execute("UPDATE orchestration_pipelinerun SET created_at = now() - id * interval '1 second'")
        cursor.execute("ANALYZE orchestration_pipelinerun")
    _, cursor_text = pipeline_runs_page(filters=run_filters_read(**filters), limit=50)
    assert cursor_text is not None
    read = run_filters_read(**filters)
    plan = selectors.pipeline_runs_listed(
        definition=read.definition, status=read.status, trigger=read.trigger, host=read.host,
        before=cursor_decode(cursor_text),
    )[:51].explain()
    assert "Seq Scan" not in plan, plan
    assert "Index Scan Backward using" in plan and "created_at" in plan, plan
    # Only the runs of one instant could need sorting by id: the order itself is the index's.
    assert "Sort Key" not in plan or "Presorted Key: created_at" in plan, plan
