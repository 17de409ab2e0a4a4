"""The plans of the hot list queries: each is served by an index, never a scan
of the whole run table, on PostgreSQL (EXPLAIN) and on SQLite (EXPLAIN QUERY PLAN).

No grown table is needed. On PostgreSQL each plan is read with
``enable_seqscan = off`` and ``enable_sort = off`` (a scan or a sort then
costs so much the planner takes an index whenever one can serve the query
and its order), so what is asserted is that an index CAN serve the query in
its order, which a small table cannot show otherwise: with these off, a plan
still holding a Seq Scan or an unpresorted Sort has no index to use. On SQLite the
planner does not look at table sizes without ANALYZE: the plan is the one it
uses, and one ANALYZE-d case checks the recovery sweep does not turn into a
scan with statistics either.
"""
from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.db import connection
from django.db.models import Q
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.orchestration import recovery, selectors
from apps.orchestration.models import PipelineRun
from apps.orchestration.runqueries import cursor_decode, pipeline_runs_page, run_filters_read
from apps.orchestration.selectors import pipeline_schedules_list, trace_id_prefix
from apps.orchestration.store import planned_for_values, run_column_values

pytestmark = pytest.mark.django_db(transaction=True)

FILTERS = [
    {}, {"definition": "never-ran"}, {"definition": "d3"}, {"status": "failed"}, {"trigger": "alert"},
    {"host": "web-07"}, {"since": "2h"}, {"definition": "d3", "status": "failed"},
]
# What a plan of the whole run table looks like.
TABLE_SCANS = ("Seq Scan on orchestration_pipelinerun", "SCAN orchestration_pipelinerun\n")


def some_runs(count: int = 300) -> None:
    now = timezone.now()
    PipelineRun.objects.bulk_create([
        PipelineRun(
            trace_id=f"t{i:05d}", origin=f"d{i % 10}", definition_name=f"d{i % 10}", config_snapshot={},
            status=("completed", "failed", "queued")[i % 3], trigger=("cli", "alert", "schedule")[i % 3],
            target_host=f"web-{i % 20:02d}", finished_at=now if i % 3 != 2 else None,
        )
        for i in range(count)
    ])


def plans(call, *, every_table: bool = False) -> list[str]:
    """The plan of each SELECT on the run table (with ``every_table``, of each SELECT) that ``call``
    makes (its SQL first, then the plan)."""
    with CaptureQueriesContext(connection) as queries:
        call()
    found = []
    for query in queries.captured_queries:
        sql = query["sql"]
        if not sql.startswith(("SELECT", "WITH")) or not (every_table or "orchestration_pipelinerun" in sql):
            continue
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET enable_seqscan = off; SET enable_sort = off")
                try:
                    cursor.execute("EXPLAIN " + sql)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                finally:
                    cursor.execute("RESET enable_seqscan; RESET enable_sort")
            else:
                cursor.execute("EXPLAIN QUERY PLAN " + sql)
                plan = "\n".join(row[-1] for row in cursor.fetchall()) + "\n"
        found.append(f"{sql}\n--\n{plan}")
    assert found, "no query of the run table was made"
    return found


def assert_no_table_scan(plan: str) -> None:
    """No table is read whole except along an index (that gives its order or bounds its read)."""
    if connection.vendor == "postgresql":
        assert "Seq Scan" not in plan, plan
    else:
        scans = [line for line in plan.splitlines() if re.fullmatch(r"SCAN \S+", line.strip())]
        assert scans in ([], ["SCAN subquery"]), plan


def assert_indexed(plan: str, *, ordered: bool = True) -> None:
    """No scan of the whole run table; with ``ordered``, no sort of what it read either
    (the index gives the order; on PostgreSQL only ties of one created_at could be sorted)."""
    for scan in TABLE_SCANS:
        assert scan not in plan, plan
    if connection.vendor == "postgresql":
        assert "Index" in plan, plan
        if ordered:
            assert "Sort Key" not in plan or "Presorted Key: " in plan, plan
    else:
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan or "PRIMARY KEY" in plan, plan
        if ordered:
            assert "TEMP B-TREE FOR ORDER BY" not in plan, plan


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_list_runs_pages_are_read_along_an_index_with_each_filter(filters):
    some_runs()
    _, cursor = pipeline_runs_page(filters=run_filters_read(**filters), limit=2)
    read = run_filters_read(**filters)
    before = cursor_decode(cursor) if cursor else None
    query = selectors.pipeline_runs_listed(
        definition=read.definition, status=read.status, trigger=read.trigger, since=read.since, host=read.host,
        before=before,
    )[:3]
    # The filter's own index, so the filter bounds the read (not a walk of the created_at index
    # that drops what does not match: a definition with no runs would read the whole history).
    indexes = {"definition": "pipelinerun_definition_created", "status": "pipelinerun_status_created",
               "trigger": "pipelinerun_trigger_created", "host": "pipelinerun_host_created"}
    wanted = [indexes[name] for name in filters if name in indexes] or ["pipelinerun_created"]
    for plan in plans(lambda: list(query)):
        assert_indexed(plan)
        assert any(name in plan for name in wanted), plan


ADMIN_QUERIES = [
    "", "?status__exact=failed", "?definition_name=d3", "?definition_name=never-ran", "?target_host=web-07",
    "?trigger__exact=alert", "?p=2", "?q=t0001", "?q=42", "?o=5", "?o=-5.1",
    # The date filter's "Today" and "Past 7 days" (its links: local midnights, with their offset).
    "?created_at__gte={today}&created_at__lt={tomorrow}", "?created_at__gte={week_ago}&created_at__lt={tomorrow}",
    "?definition_name=d3&status__exact=failed", "?definition_name=d3&trigger__exact=alert",
    "?target_host=web-07&status__exact=queued&created_at__gte={today}&created_at__lt={tomorrow}",
]


def admin_url(query: str) -> str:
    """The run list's address with ``query``, its date placeholders filled in as the date filter's links have them."""
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    days = {"today": today, "tomorrow": today + timedelta(days=1), "week_ago": today - timedelta(days=7)}
    return "/admin/orchestration/pipelinerun/" + query.format(**{key: quote(str(day)) for key, day in days.items()})


@pytest.mark.parametrize("query", ADMIN_QUERIES)
def test_the_admin_run_list_counts_and_reads_along_an_index_with_any_filter(admin_client, query):
    some_runs()
    answer = {}

    def page():
        answer["page"] = admin_client.get(admin_url(query))

    for plan in plans(page):
        # The filters' choices and the capped count read along an index; the page in its order.
        assert_indexed(plan, ordered=False)
        assert "DISTINCT" not in plan and "COUNT(*) FROM \"orchestration_pipelinerun\"" not in plan, plan
    assert answer["page"].status_code == 200


def test_the_admin_list_is_planned_for_its_filters_values_never_by_a_generic_plan(admin_client):
    """Prepared statements (the settings' prepare_threshold) switch to a generic plan from their sixth
    execution on a connection; the admin's count and page stay planned for the values they are given."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's prepared statements (SQLite plans every statement anew)")
    some_runs()
    with planned_for_values(), connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "force_custom_plan"
    for _ in range(8):
        assert admin_client.get(admin_url("?definition_name=d3&status__exact=failed")).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "auto"  # SET LOCAL: only for the list's transaction
        cursor.execute(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%%FROM \"orchestration_pipelinerun\"%%' AND statement NOT LIKE 'WITH RECURSIVE%%'"
        )  # the count and the page (the filters' choices are index probes whatever their plan)
        prepared = cursor.fetchall()
    assert len(prepared) >= 2, prepared  # the count and the page, each executed 8 times
    for statement, generic, custom in prepared:
        assert generic == 0 and custom >= 7, (statement, generic, custom)


def test_the_admin_count_stops_at_its_cap_and_says_more(admin_client, monkeypatch):
    from apps.orchestration import admin as run_admin

    some_runs(120)
    monkeypatch.setattr(run_admin, "RUN_COUNT_MAX", 100)
    text = admin_client.get("/admin/orchestration/pipelinerun/").content.decode()
    assert "more than 100 pipeline runs" in text
    assert "?p=2" in text and "?p=3" not in text  # 100 runs: two pages of 50, no third
    text = admin_client.get("/admin/orchestration/pipelinerun/?status__exact=failed").content.decode()
    assert "40 pipeline runs" in text and "more than" not in text


def test_filter_choices_are_the_columns_values_in_order_without_empty_ones():
    some_runs(60)
    PipelineRun.objects.filter(pk__in=PipelineRun.objects.order_by("pk").values("pk")[:5]).update(target_host="")
    assert run_column_values("definition_name", limit=100) == [f"d{i}" for i in range(10)]
    assert run_column_values("target_host", limit=3) == ["web-00", "web-01", "web-02"]
    with pytest.raises(ValueError, match="no index leads"):
        run_column_values("error", limit=3)
    for plan in plans(lambda: run_column_values("target_host", limit=50)):
        assert_indexed(plan, ordered=False)


def test_trace_id_prefix_is_case_sensitive_and_exact_at_the_edges():
    some_runs(20)
    PipelineRun.objects.filter(trace_id="t00001").update(trace_id="T00001")
    PipelineRun.objects.filter(trace_id="t00002").update(trace_id="t0000\U0010ffff")
    PipelineRun.objects.filter(trace_id="t00003").update(trace_id="t0000\ud7ff!")
    assert set(PipelineRun.objects.filter(trace_id_prefix("t0001")).values_list("trace_id", flat=True)) == {
        f"t{i:05d}" for i in range(10, 20)
    }
    assert not PipelineRun.objects.filter(trace_id_prefix("T0000")).exclude(trace_id="T00001").exists()
    assert PipelineRun.objects.filter(trace_id_prefix("t0000\U0010ffff")).count() == 1
    assert PipelineRun.objects.filter(trace_id_prefix("t0000\ud7ff")).count() == 1


def test_list_schedules_reads_each_definitions_newest_scheduled_run_along_an_index():
    from tests.orchestration.test_list_schedules import scheduled

    some_runs(60)
    for name in ("d1", "d2", "never-ran"):
        scheduled(name, {"every": 60})
    scheduled("d3", {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"})
    with connection.cursor() as cursor:  # the run table's statistics, as a grown database has them
        cursor.execute("ANALYZE orchestration_pipelinerun")
    found = plans(pipeline_schedules_list, every_table=True)
    for plan in found:
        assert_no_table_scan(plan)
    for plan in [plan for plan in found if "orchestration_pipelinerun" in plan]:
        assert_indexed(plan, ordered=False)
    # The newest scheduled run of a definition is one probe of (definition, trigger, created_at), however
    # many runs of other triggers came after it (the (definition, created_at) index would read them all).
    (listing,) = [plan for plan in found if "SUBSTR" in plan]
    assert "pipelinerun_definition_trigger" in listing.split("\n--\n")[1], listing


def test_the_recovery_sweep_reads_only_live_runs_along_an_index():
    some_runs()
    quiet = Q(published_at__isnull=True) | Q(published_at__lt=Now() - timedelta(seconds=30))
    for plan in plans(lambda: recovery._candidates(quiet)):
        assert_indexed(plan)


def test_the_recovery_sweep_stays_indexed_on_sqlite_with_analyze_statistics():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's planner with ANALYZE's statistics (PostgreSQL's plans are asserted above)")
    some_runs(3000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    quiet = Q(published_at__isnull=True) | Q(published_at__lt=Now() - timedelta(seconds=30))
    for plan in plans(lambda: recovery._candidates(quiet)):
        assert_indexed(plan)
    # 1,000 queued runs, none ever sent: the oldest BATCH of them.
    candidates = recovery._candidates(quiet)
    assert len(candidates) == recovery.BATCH and candidates[0]["pk"] < candidates[-1]["pk"]
