"""The lists at production size: ``list_runs`` per filter, the admin's run list
per filter and ``list_schedules`` at 2,000 schedules, each measured on an
empty database and again on the same database grown, in one run.

The database is DATABASE_URL's and is emptied first: give it a scratch one
(``createdb -h 127.0.0.1 -U postgres bench_lists``, or an SQLite file path).
The grown history is written by one INSERT ... SELECT per table
(generate_series on PostgreSQL, a recursive CTE on SQLite): ``--runs`` runs
over 60 days, 3 stages each, 200 definitions with a skew (a few of them hold
most runs), 90/8/2% completed/failed/cancelled, 30% targeting one of 100
hosts, mostly launched by schedules; two busy definitions are run by other
triggers since their schedule's early days (HAND_RUN: its newest scheduled run
is weeks behind its newest runs) or have no scheduled run at all (UNSCHEDULED);
then ANALYZE. 2,000 scheduled definitions (the 200 that have runs among them)
are stored through load_pipelines' own ``schedule_sync``.

Each figure is the p95 (and median) of ``--repeat`` calls (list_schedules:
a quarter of them, at least 10), after one call that warms the caches, with
how many queries the call made, beside issue 21's target. The machine's other
load counts in every figure: compare empty and grown, taken minutes apart.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_lists python -m bench.lists --runs 1000000
    DATABASE_URL=sqlite:////tmp/bench_lists.sqlite3 python -m bench.lists --runs 100000
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFINITIONS = 200  # definitions that have runs
SCHEDULES = 2000  # scheduled definitions, the DEFINITIONS among them
HOSTS = 100
DAYS = 60
BUSY = "def-000"  # the definition the skew gives the most runs
IDLE = "def-none"  # a scheduled definition with no run at all
HAND_RUN = "def-001"  # a busy definition launched by schedules only in its first days
UNSCHEDULED = "def-002"  # a busy scheduled definition with no scheduled run among its many runs

# Issue 21's targets at the grown size, p95 in milliseconds.
TARGETS = {"list_runs": 50, "admin run list": 200, "list_schedules": 500}

RUN_COLUMNS = (
    "trace_id, definition_name, origin, origin_kind, config_snapshot, source, environment, payload, status, "
    "current_node, result, error, claimed_by, created_at, started_at, finished_at, duration_ms, trigger, "
    "reused_results, target_host"
)

# One row per run from g = 1..N, the newest last; r and t are two uniform draws in [0, 1000).
RUN_VALUES = """
    {trace}, {name}, {name}, 'definition', '{{}}', 'auto', 'production', '{{}}',
    CASE WHEN r < 900 THEN 'completed' WHEN r < 980 THEN 'failed' ELSE 'cancelled' END,
    '', '{{}}', CASE WHEN r >= 900 AND r < 980 THEN 'analyze: provider timed out' ELSE '' END, '',
    {created}, {created}, {created}, 1500.0,
    CASE WHEN t < 700 THEN 'schedule' WHEN t < 850 THEN 'cli' WHEN t < 930 THEN 'api' WHEN t < 980 THEN 'alert'
         WHEN t < 990 THEN 'retry' ELSE 'admin' END,
    '{{}}', CASE WHEN t %% 10 < 3 THEN {host} ELSE '' END
"""

PG_FILL = f"""
INSERT INTO orchestration_pipelinerun ({RUN_COLUMNS})
SELECT {RUN_VALUES.format(
    trace="md5(g::text)",
    name=f"'def-' || lpad(least(floor({DEFINITIONS} * power(s, 3)), {DEFINITIONS} - 1)::int::text, 3, '0')",
    created=f"now() - make_interval(secs => ({DAYS} * 86400.0) * (%(runs)s - g) / %(runs)s)",
    host=f"'host-' || lpad((g %% {HOSTS})::text, 3, '0')",
)}
FROM (SELECT g, floor(random() * 1000)::int AS r, floor(random() * 1000)::int AS t, random() AS s
      FROM generate_series(1, %(runs)s) AS g) AS draws
"""

SQLITE_FILL = f"""
INSERT INTO orchestration_pipelinerun ({RUN_COLUMNS})
WITH RECURSIVE seq(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM seq WHERE g < %(runs)s)
SELECT {RUN_VALUES.format(
    trace="lower(hex(randomblob(16)))",
    name=f"'def-' || printf('%%03d', min(CAST({DEFINITIONS} * s * s * s AS INTEGER), {DEFINITIONS} - 1))",
    created=f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || ({DAYS} * 86400.0 * (%(runs)s - g) / %(runs)s) "
            "|| ' seconds')",
    host=f"'host-' || printf('%%03d', g %% {HOSTS})",
)}
FROM (SELECT g, abs(random()) %% 1000 AS r, abs(random()) %% 1000 AS t, (abs(random()) %% 1000000) / 1e6 AS s
      FROM seq) AS draws
"""

STAGES_FILL = """
INSERT INTO orchestration_stageexecution
    (run_id, node_id, node_type, status, attempt, output, errors, started_at, finished_at, duration_ms)
SELECT r.id, n.node_id, n.node_type, CASE WHEN r.status = 'failed' AND n.node_id = 'analyze' THEN 'failed'
       ELSE 'succeeded' END, 1, '{}', '[]', r.created_at, r.created_at, 500.0
FROM orchestration_pipelinerun AS r
CROSS JOIN (SELECT 'metrics' AS node_id, 'context' AS node_type UNION ALL SELECT 'analyze', 'intelligence'
            UNION ALL SELECT 'notify', 'notify') AS n
"""


def setup_django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def empty_tables() -> None:
    from django_celery_beat.models import PeriodicTask

    from apps.orchestration.models import PipelineDefinition
    from bench.measure import runs_clear

    # Not through the ORM: on PostgreSQL its delete of a grown table binds every id at once (too many).
    runs_clear()
    PeriodicTask.objects.filter(name__startswith="pipeline:").delete()
    PipelineDefinition.objects.all().delete()


def store_schedules(*, distinct: bool = False) -> None:
    """SCHEDULES scheduled definitions (def-000.. have runs, IDLE has none), synced into beat's table:
    half every 60 s, half on 60 cron expressions (a few schedule rows, shared); with ``distinct``,
    each on a schedule row of its own (every 61 s, 62 s...; 1,000 cron expressions)."""
    from apps.orchestration.models import PipelineDefinition
    from apps.orchestration.schedules import schedule_sync

    nodes = [{"id": "t", "type": "transform", "config": {"set": {"ok": True}}}]
    names = [f"def-{i:03d}" for i in range(DEFINITIONS)] + [IDLE]
    names += [f"sched-{i:04d}" for i in range(SCHEDULES - len(names))]
    for i, name in enumerate(names):
        if distinct:
            hour = (i // 60) % 24
            schedule = {"every": 60 + i} if i % 2 else {"cron": f"{i % 60} {hour} * * *", "timezone": "Europe/Berlin"}
        else:
            schedule = {"every": 60} if i % 2 else {"cron": f"{i % 60} * * * *", "timezone": "Europe/Berlin"}
        definition = PipelineDefinition.objects.create(
            name=name, config={"version": "1.0", "nodes": nodes, "schedule": schedule}
        )
        schedule_sync(definition=definition)


def grow(runs: int) -> float:
    """Write ``runs`` runs and their stages, then ANALYZE; returns the seconds it took."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    started = time.monotonic()
    with connection.cursor() as cursor:
        fill = PG_FILL if connection.vendor == "postgresql" else SQLITE_FILL
        cursor.execute(fill, {"runs": runs})
        cursor.execute(STAGES_FILL)
        # Runs of other triggers after (or without) any scheduled one: list_schedules' newest scheduled run
        # must not read through them.
        early = connection.ops.adapt_datetimefield_value(timezone.now() - timedelta(days=DAYS - 3))
        cursor.execute(
            "UPDATE orchestration_pipelinerun SET trigger = 'cli' WHERE trigger = 'schedule' AND "
            "((definition_name = %s AND created_at > %s) OR definition_name = %s)",
            [HAND_RUN, early, UNSCHEDULED],
        )
        # Runs of the idle definition's schedule are none; a few live runs for the sweep to look at.
        cursor.execute(
            "UPDATE orchestration_pipelinerun SET status = 'queued', finished_at = NULL "
            "WHERE id IN (SELECT id FROM orchestration_pipelinerun ORDER BY id DESC LIMIT 20)"
        )
        cursor.execute("ANALYZE")
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM (ANALYZE) orchestration_pipelinerun")
    return time.monotonic() - started


def timed(call, repeat: int) -> dict:
    """p95 and median milliseconds of ``repeat`` calls after a warm-up, and the queries of one call."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        call()
    # Counted now: the log it reads is cleared by the requests that follow.
    made = len(queries)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p95": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
        "median": statistics.median(times),
        "queries": made,
    }


def list_runs_cases() -> dict:
    from apps.orchestration.runqueries import pipeline_runs_page, run_filters_read

    cases = {
        "no filter": {},
        f"--definition {BUSY}": {"definition": BUSY},
        "--definition def-150": {"definition": "def-150"},
        f"--definition {IDLE} (no runs)": {"definition": IDLE},
        "--status failed": {"status": "failed"},
        "--status running (none)": {"status": "running"},
        "--trigger alert": {"trigger": "alert"},
        "--host host-007": {"host": "host-007"},
        "--host nohost (no runs)": {"host": "nohost"},
        "--since 1h": {"since": "1h"},
        f"--definition {BUSY} --status cancelled": {"definition": BUSY, "status": "cancelled"},
        "--trigger alert --status failed": {"trigger": "alert", "status": "failed"},
    }

    def call(filters):
        def page():
            _rows, cursor = pipeline_runs_page(filters=run_filters_read(**filters), limit=20)
            if cursor:  # and the page after it, as --json users and the API follow next_cursor
                pipeline_runs_page(filters=run_filters_read(**filters), limit=20, cursor=cursor)
        return page

    return {name: call(filters) for name, filters in cases.items()}


def admin_cases() -> dict:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(username="bench-lists", defaults={"is_superuser": True,
                                                                                       "is_staff": True})
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    url = "/admin/orchestration/pipelinerun/"
    cases = {
        "no filter": "",
        "status=failed": "?status__exact=failed",
        f"definition={BUSY}": f"?definition_name={BUSY}",
        f"definition={IDLE} (no runs)": f"?definition_name={IDLE}",
        "host=host-007": "?target_host=host-007",
        "trigger=alert": "?trigger__exact=alert",
        "created today": "?created_at__gte={today}&created_at__lt={tomorrow}",
        "created in the past 7 days": "?created_at__gte={week_ago}&created_at__lt={tomorrow}",
        f"definition={BUSY}, status=cancelled": f"?definition_name={BUSY}&status__exact=cancelled",
        f"definition={BUSY}, trigger=admin": f"?definition_name={BUSY}&trigger__exact=admin",
        "host=host-007, status=failed, past 7 days":
            "?target_host=host-007&status__exact=failed&created_at__gte={week_ago}&created_at__lt={tomorrow}",
        "page 20": "?p=20",
        "page 200 (the last one offered)": "?p=200",
        "search by trace id prefix": "?q=ab12",
    }

    def call(query):
        def get():
            from datetime import timedelta
            from urllib.parse import quote

            from django.utils import timezone

            # As the date filter's links have them: local midnights, with their offset.
            today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
            days = {"today": today, "tomorrow": today + timedelta(days=1), "week_ago": today - timedelta(days=7)}
            answer = client.get(url + query.format(**{key: quote(str(day)) for key, day in days.items()}))
            assert answer.status_code == 200, answer.status_code
        return get

    return {name: call(query) for name, query in cases.items()}


def list_schedules_case() -> dict:
    from io import StringIO

    from django.core.management import call_command

    def call(*options):
        def run():
            out = StringIO()
            call_command("list_schedules", *options, stdout=out)
            assert out.getvalue().count("\n") >= SCHEDULES, "not every schedule was listed"
        return run

    return {f"list_schedules, {SCHEDULES} schedules": call(), f"list_schedules --json, {SCHEDULES} schedules":
            call("--json")}


def measure(repeat: int) -> dict:
    results = {}
    for section, cases in (("list_runs", list_runs_cases()), ("admin run list", admin_cases()),
                           ("list_schedules", list_schedules_case())):
        for name, call in cases.items():
            results[(section, name)] = timed(call, repeat if section != "list_schedules" else max(10, repeat // 4))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the grown database (3 stages each)")
    parser.add_argument("--repeat", type=int, default=40, help="calls measured per figure")
    parser.add_argument("--distinct-schedules", action="store_true",
                        help="each schedule on a schedule row of its own (no two share an interval or a crontab)")
    args = parser.parse_args()
    setup_django()
    from django.db import connection

    empty_tables()
    store_schedules(distinct=args.distinct_schedules)
    empty = measure(args.repeat)
    seconds = grow(args.runs)
    print(f"grew to {args.runs} runs, {3 * args.runs} stages in {seconds:.0f} s ({connection.vendor})",
          file=sys.stderr)
    grown = measure(args.repeat)
    print(f"| {connection.vendor}: operation | empty p95 (median) | grown p95 (median), {args.runs:,} runs | queries "
          "| target p95 |")
    print("|---|---|---|---|---|")
    for key, before in empty.items():
        after = grown[key]
        print(f"| {key[0]}: {key[1]} | {before['p95']:.1f} ms ({before['median']:.1f}) "
              f"| {after['p95']:.1f} ms ({after['median']:.1f}) | {after['queries']} | {TARGETS[key[0]]} ms "
              f"{'ok' if after['p95'] <= TARGETS[key[0]] else 'OVER'} |")


if __name__ == "__main__":
    main()
