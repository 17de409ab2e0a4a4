"""Production size: every operation of issue 21's table, on an empty and on a grown database, in one run.

    .venv/bin/python bench/scale.py [--databases postgresql,sqlite] [--runs-postgresql 1000000]
                                    [--runs-sqlite 100000] [--backlog 10000] [--tries 20] [--reuse] [--drop]
                                    [--redis-dbs 10,11] [--no-doc] [--json PATH]

For each database kind it prepares two databases: "empty" (migrated; the 2,003
definitions and 2,000 schedules, no run) and "grown" (the same, plus
``--runs-*`` finished runs with a stage per node reached, built with set-based SQL,
and a backlog of queued runs). PostgreSQL databases are ``bench_scale_empty`` /
``bench_scale_grown`` (names from ``--pg-prefix``), SQLite files live in
``var/scale/``. The grown database is slow to build (minutes for a million
runs): ``--reuse`` keeps one built earlier with the same sizes (a marker table,
``bench_scale_build``, records them); the databases are kept at the end unless
``--drop``.

Each database is prepared and measured by a child process of its own
(``python -m bench.scale --child build|measure``), because Django reads
its settings once per process. The measuring child calls the project's public
entry points in-process (the Django test client for ``/metrics`` and the
admin, ``call_command`` for the management commands, ``recovery.runs_recover``
for the sweep), each repeated ``--tries`` times (fewer when one operation's
tries pass ``--budget`` seconds; a call longer than ``--limit`` seconds is cut
by the database and reported as such). The parent prints a table (operation,
empty, grown, target, within target) and rewrites the "Scale" section of
docs/benchmarks.md. Every Redis database it uses (``--redis-dbs``) is flushed
before and after. See bench/README.md.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TITLE = "## Scale"
BUILD_FORMAT = 3  # bumped when what the grown database holds changes: an older build is not reused
DEFINITIONS_WITH_RUNS = 200
SCHEDULES = 2000
EVERY_MINUTE = 1000  # of the schedules, this many are due every 60 s
HOSTS = 100
SPAN_DAYS = 60
STAGES_PER_RUN = 3
SQLITE_BACKLOG = 10  # "a few queued runs": the SQLite sweep is about the history, PostgreSQL's about the backlog
IDLE = "scale-idle"  # stored, never run: `list_runs --definition` of a name with no runs
LAUNCH = "scale-launch"  # three small transform nodes: the launches and the typical run
OUTPUT = "scale-output"  # a node whose output is 1 MB, then two small ones
BIG_PAYLOAD_BYTES = 5 * 1024 * 1024
OUTPUT_BYTES = 1_000_000
OUTPUT_COPIES = 10  # the big node's output: this many copies of a payload string of OUTPUT_BYTES / OUTPUT_COPIES
TRACE_PREFIX = "bench-scale-"
LOAD_BATCH = 50  # definition files per load_pipelines call
BUILD_TIMEOUT = 3600
MEASURE_TIMEOUT = 3600

# Targets of issue 21, per row; None: reported, no target.
TARGETS = {
    "metrics": "p95 ≤ 50 ms, ≤ 1 MB",
    "admin": "p95 ≤ 200 ms",
    "list_runs": "p95 ≤ 50 ms",
    "list_schedules": "p95 ≤ 500 ms",
    "sweep": "p95 ≤ 50 ms",
    "payload": "refused, one line",
    "output": "stored ≤ 256 KiB",
    "typical": "≤ 50 KB of WAL",
    "prometheus": "every scrape up within 10 s",
    "beat": "tick delay p95 ≤ 1 s, beat ≤ 10% of a core",
}


def log(message: str) -> None:
    print(f"[bench scale] {message}", file=sys.stderr, flush=True)


# --- the definitions both databases hold -----------------------------------------------------

def definition_name(index: int) -> str:
    return f"scale-{index:04d}"


def scheduled_definition(index: int) -> dict:
    """The definition ``scale-<index>``: a health check, scheduled every 60 s for the first
    EVERY_MINUTE, then every 5 minutes by cron or hourly; one in ten allows overlap."""
    if index < EVERY_MINUTE:
        schedule: dict = {"every": 60}
    elif index % 2:
        schedule = {"cron": "*/5 * * * *"}
    else:
        schedule = {"every": 3600}
    if index % 10 == 9:
        schedule["overlap"] = "allow"
    return {
        "version": "1.0",
        "description": f"Health check of fleet segment {index}.",
        "defaults": {"timeout_seconds": 60, "max_retries": 0},
        "nodes": [
            {"id": "metrics", "type": "context", "config": {"include": ["cpu", "memory", "disk"]}, "next": "analyze"},
            {"id": "analyze", "type": "intelligence", "config": {"provider": "local"}, "next": "notify"},
            {"id": "notify", "type": "notify", "config": {"driver": "console"}},
        ],
        "schedule": schedule,
    }


def _transforms(first_mapping: dict) -> dict:
    return {
        "version": "1.0",
        "nodes": [
            {"id": "a", "type": "transform", "config": {"mapping": first_mapping}, "next": "b"},
            {"id": "b", "type": "transform", "config": {"mapping": {"n": "payload.n"}}, "next": "c"},
            {"id": "c", "type": "transform", "config": {"mapping": {"m": "b.n"}}},
        ],
    }


def extra_definitions() -> dict[str, dict]:
    return {
        IDLE: _transforms({"n": "payload.n"}),
        LAUNCH: _transforms({"n": "payload.n"}),
        OUTPUT: _transforms({f"copy{k}": "payload.blob" for k in range(OUTPUT_COPIES)}),
    }


def write_definitions(folder: Path) -> None:
    """The definition files load_pipelines loads into both databases."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(SCHEDULES):
        (folder / f"{definition_name(index)}.json").write_text(json.dumps(scheduled_definition(index)))
    for name, definition in extra_definitions().items():
        (folder / f"{name}.json").write_text(json.dumps(definition))


# Realistic stored values, taken from a real health-check run (console driver, local provider).
CHECKS_OUTPUT = {
    "host": "web-017", "checks_run": 3, "status_counts": {"ok": 2, "warning": 1, "critical": 0},
    "checks": {
        "cpu": {"name": "cpu", "status": "warning", "value": 87.5, "unit": "%",
                "message": "CPU usage 87.5% (warning, at or above 80%)",
                "details": {"cpu_count": 8, "physical_cpu_count": 4, "interval_seconds": 0.2,
                            "load_1m": 6.16, "load_5m": 3.03, "load_15m": 2.19}},
        "memory": {"name": "memory", "status": "ok", "value": 41.7, "unit": "%",
                   "message": "Memory usage 41.7% (ok, warning at 85%), 18.2 GiB of 31.2 GiB available",
                   "details": {"total_bytes": 33476182528, "available_bytes": 19529610496,
                               "used_bytes": 13946572032}},
        "disk": {"name": "disk", "status": "ok", "value": 61.0, "unit": "%",
                 "message": "Disk usage 61.0% on / (ok, warning at 85%)",
                 "details": {"path": "/", "paths": {"/": {"percent": 61.0, "status": "ok",
                                                          "total_bytes": 270553174016, "used_bytes": 165037585152,
                                                          "free_bytes": 105515588864, "device": "/dev/vda",
                                                          "fstype": "ext4"}}}},
    },
}
ANALYSIS_OUTPUT = {
    "provider": "local", "severity": "warning", "summary": "1 problem: cpu warning at 87.5%.",
    "probable_cause": "CPU pressure: cpu warning at 87.5%.",
    "recommendations": ["Find what is using the CPU (87.5% busy across 8 CPUs): list the top consumers "
                        "(top -o %CPU), stop runaway jobs, or add CPU capacity."],
    "findings": {"checks": 3, "ok": 2, "warning": 1, "critical": 0, "problems": 1, "alerts": 0,
                 "alerts_firing": 0},
    "alert_topics": {},
}
NOTIFY_OUTPUT = {"driver": "console", "channels_attempted": 1, "succeeded": 1, "failed": 0,
                 "deliveries": [{"channel": "console", "ok": True, "detail": "written to log"}]}
NODES = (("metrics", "context", CHECKS_OUTPUT), ("analyze", "intelligence", ANALYSIS_OUTPUT),
         ("notify", "notify", NOTIFY_OUTPUT))
FAILURE = "provider timed out after 30s"


def _node_result(node_type: str, output: dict, status: str = "succeeded", error: str | None = None) -> dict:
    return {"type": node_type, "status": status, "required": True, "attempts": 1, "duration_ms": 201.5,
            "output": output, "error": error}


RESULTS = {
    "completed": {"executed_nodes": ["metrics", "analyze", "notify"], "skipped_nodes": [],
                  "node_results": {nid: _node_result(t, out) for nid, t, out in NODES}},
    "failed": {"executed_nodes": ["metrics", "analyze"], "skipped_nodes": [],
               "node_results": {"metrics": _node_result("context", CHECKS_OUTPUT),
                                "analyze": _node_result("intelligence", {}, "failed", FAILURE)}},
    "cancelled": {"executed_nodes": ["metrics"], "skipped_nodes": [],
                  "node_results": {"metrics": _node_result("context", CHECKS_OUTPUT)}},
}
ALERT_PAYLOAD = {"source": "alertmanager", "alerts": [{"name": "HighCPU", "severity": "warning", "status": "firing",
                                                        "labels": {"team": "sre", "service": "web"}}]}


# --- building: the child -------------------------------------------------------------------------

class _Sql:
    """The few expressions in which PostgreSQL and SQLite differ."""

    def __init__(self, vendor: str):
        self.pg = vendor == "postgresql"

    def json(self) -> str:
        return "CAST(%s AS jsonb)" if self.pg else "%s"

    def ts(self, epoch: str) -> str:
        """A timestamp from seconds since the epoch, as Django stores it."""
        if self.pg:
            return f"to_timestamp({epoch})"
        # Django's SQLite backend stores UTC as text with microseconds.
        return (f"(strftime('%%Y-%%m-%%d %%H:%%M:%%S', CAST({epoch} AS INTEGER), 'unixepoch') || '.' || "
                f"printf('%%06d', CAST((({epoch}) - CAST({epoch} AS INTEGER)) * 1000000 AS INTEGER)))")

    def epoch(self, column: str) -> str:
        """Seconds since the epoch of a stored timestamp ``column`` (the inverse of ``ts``)."""
        if self.pg:
            return f"extract(epoch FROM {column})"
        return f"(julianday({column}) - 2440587.5) * 86400.0"

    def trunc(self, expr: str) -> str:
        return f"CAST(floor({expr}) AS INTEGER)" if self.pg else f"CAST({expr} AS INTEGER)"

    def pad3(self, expr: str) -> str:
        return f"lpad(CAST({expr} AS text), 3, '0')" if self.pg else f"printf('%%03d', {expr})"

    def hex_id(self) -> str:
        return "md5(CAST(s.i AS text) || 'trace')" if self.pg else "lower(hex(randomblob(16)))"

    def numbers(self, n: int) -> tuple[str, str]:
        """(a CTE to put first, the FROM item) of the integers 1..n."""
        if self.pg:
            return "", f"generate_series(CAST(1 AS bigint), {int(n)}) AS g(i)"
        return f"g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {int(n)}), ", "g"


def _bucket(multiplier: int) -> str:
    """0..99, spread over the sequence number ``i`` (a multiplicative hash: the same on both databases)."""
    return f"(((i * {multiplier}) %% 1000003) * 100 / 1000003)"


def _insert_select(model, exprs: dict[str, str], params_of: dict[str, list], prefix: str, select_from: str,
                   connection) -> tuple[str, list]:
    """``<prefix> INSERT INTO <model's table> (every concrete column) SELECT ... FROM <select_from>``:
    each column from ``exprs`` (by field name), or its field's default, or NULL. Raises RuntimeError
    naming a column this script cannot fill (a new required field: teach it below)."""
    columns, values, params = [], [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.name in exprs:
            values.append(exprs[field.name])
            params.extend(params_of.get(field.name, []))
        elif field.has_default():
            db_type = field.db_type(connection)
            values.append(f"CAST(%s AS {db_type})" if connection.vendor == "postgresql" else "%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
        elif field.null:
            values.append("NULL")
        else:
            raise RuntimeError(f"bench/scale.py does not know how to fill {model.__name__}.{field.name}")
    table = connection.ops.quote_name(model._meta.db_table)
    return f"{prefix}INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {select_from}", params


def insert_runs(n: int, *, queued: bool, sql: _Sql, def_ids: dict[int, int], now: float, connection) -> None:
    """INSERT ... SELECT of ``n`` runs: finished ones over the last SPAN_DAYS (90/8/2 % completed/failed/
    cancelled), or queued ones created in the last 10 minutes; 200 definitions with a skew (the
    busiest has about a sixth of the runs), triggers mostly schedules, 30 % aimed at one of HOSTS hosts."""
    from apps.orchestration.models import PipelineRun

    span = 600.0 if queued else SPAN_DAYS * 86400.0
    t0, step = now - span - 60.0, span / n
    cte, source = sql.numbers(n)
    defs = ", ".join(f"({idx}, {pk}, '{definition_name(idx)}')" for idx, pk in sorted(def_ids.items()))
    inner = (
        f"(SELECT i, {t0!r} + i * {step!r} AS ce, {_bucket(2654435761)} AS b_status, "
        f"{_bucket(2246822519)} AS b_trigger, {_bucket(3266489917)} AS b_host, {_bucket(668265263)} AS b_time, "
        f"((i * 7919) %% {HOSTS}) AS host_n, "
        f"{sql.trunc(f'{DEFINITIONS_WITH_RUNS} * power(((i * 40503) %% 1000003) / 1000003.0, 3)' if sql.pg else f'{DEFINITIONS_WITH_RUNS} * (((i * 40503) %% 1000003) / 1000003.0) * (((i * 40503) %% 1000003) / 1000003.0) * (((i * 40503) %% 1000003) / 1000003.0)')} AS d "  # noqa: E501
        f"FROM {source}) AS s JOIN defs ON defs.idx = s.d"
    )
    trigger = ("CASE WHEN s.b_trigger < 60 THEN 'schedule' WHEN s.b_trigger < 75 THEN 'alert' "
               "WHEN s.b_trigger < 90 THEN 'cli' WHEN s.b_trigger < 97 THEN 'api' "
               "WHEN s.b_trigger < 99 THEN 'retry' ELSE 'admin' END")
    status = ("'queued'" if queued else
              "CASE WHEN s.b_status < 90 THEN 'completed' WHEN s.b_status < 98 THEN 'failed' ELSE 'cancelled' END")
    started = "s.ce + 0.02 + s.b_time / 1000.0"
    finished = f"{started} + 0.2 + s.b_time / 50.0"
    exprs = {
        "trace_id": sql.hex_id(),
        "definition": "defs.def_id", "definition_name": "defs.name", "origin": "defs.name",
        "origin_kind": "'definition'",
        "config_snapshot": sql.json(),
        "trigger": trigger,
        "idempotency_key": (f"CASE WHEN s.b_trigger < 60 THEN 'schedule:' || defs.name || ':{'q' if queued else ''}'"
                            f" || CAST(s.i AS TEXT) ELSE NULL END"),
        "target_host": f"CASE WHEN s.b_host < 30 THEN 'host-' || {sql.pad3('s.host_n')} ELSE '' END",
        "source": "CASE WHEN s.b_trigger >= 60 AND s.b_trigger < 75 THEN 'alertmanager' ELSE 'cli' END",
        "environment": "'production'",
        "payload": f"CASE WHEN s.b_trigger >= 60 AND s.b_trigger < 75 THEN {sql.json()} ELSE {sql.json()} END",
        "status": status,
        "published_at": sql.ts("s.ce"),
        "created_at": sql.ts("s.ce"),
    }
    params_of: dict[str, list] = {
        "config_snapshot": [json.dumps({k: v for k, v in scheduled_definition(0).items() if k != "schedule"})],
        "payload": [json.dumps(ALERT_PAYLOAD), "{}"],
    }
    if not queued:
        exprs.update({
            "result": (f"CASE WHEN s.b_status < 90 THEN {sql.json()} WHEN s.b_status < 98 THEN {sql.json()} "
                       f"ELSE {sql.json()} END"),
            "error": (f"CASE WHEN s.b_status < 90 THEN '' WHEN s.b_status < 98 "
                      f"THEN 'Node ''analyze'' failed: {FAILURE}' ELSE 'Cancelled by an operator' END"),
            "claimed_by": f"'worker-' || {sql.pad3('s.host_n')} || ':4242:0c1d2e3f'",
            "cancel_requested_at": f"CASE WHEN s.b_status >= 98 THEN {sql.ts('s.ce + 0.5')} ELSE NULL END",
            "started_at": sql.ts(started),
            "finished_at": sql.ts(finished),
            "duration_ms": "(0.2 + s.b_time / 50.0) * 1000.0",
        })
        params_of["result"] = [json.dumps(RESULTS[k]) for k in ("completed", "failed", "cancelled")]
    statement, params = _insert_select(PipelineRun, exprs, params_of, f"WITH {'RECURSIVE ' if not sql.pg else ''}"
                                       f"{cte}defs(idx, def_id, name) AS (VALUES {defs}) ", inner, connection)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def insert_stages(after_id: int, *, sql: _Sql, connection) -> None:
    """The stages of every finished run with an id above ``after_id``, one per node its result
    records, one after the other over its duration: three in a completed run; two in a failed
    one (the analysis failed, the notification never started); one in a cancelled one."""
    from apps.orchestration.models import PipelineRun, StageExecution

    runs = connection.ops.quote_name(PipelineRun._meta.db_table)
    nodes = ", ".join(f"({k}, '{nid}', '{t}')" for k, (nid, t, _) in enumerate(NODES, start=1))
    exprs = {
        "run": "r.id", "node_id": "n.node_id", "node_type": "n.node_type",
        "status": "CASE WHEN r.status = 'failed' AND n.k = 2 THEN 'failed' ELSE 'succeeded' END",
        "attempt": "1",
        "output": f"CASE WHEN n.k = 1 THEN {sql.json()} WHEN n.k = 2 THEN {sql.json()} ELSE {sql.json()} END",
        "errors": f"CASE WHEN r.status = 'failed' AND n.k = 2 THEN {sql.json()} ELSE {sql.json()} END",
        "started_at": sql.ts(f"{sql.epoch('r.started_at')} + (n.k - 1) * r.duration_ms / 3000.0"),
        "finished_at": sql.ts(f"{sql.epoch('r.started_at')} + n.k * r.duration_ms / 3000.0"),
        "duration_ms": "r.duration_ms / 3",
    }
    params_of = {"output": [json.dumps(out) for _, _, out in NODES], "errors": [json.dumps([FAILURE]), "[]"]}
    statement, params = _insert_select(
        StageExecution, exprs, params_of, f"WITH n(k, node_id, node_type) AS (VALUES {nodes}) ",
        f"{runs} AS r CROSS JOIN n WHERE r.id > {int(after_id)} AND (r.status = 'completed' OR "
        "(r.status = 'failed' AND n.k <= 2) OR (r.status = 'cancelled' AND n.k = 1))", connection)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def fill_rollup(*, connection) -> None:
    """The metrics' rollup (RunTally, NodeTally) as the ends of the finished runs would have left it:
    their counters and histogram buckets summed per series, spread over the rollup's shards (by run id,
    every shard used, as by many worker processes). Set-based: one INSERT ... SELECT per table."""
    from apps.orchestration.models import NODE_BUCKETS, RUN_BUCKETS, NodeTally, PipelineRun, RunTally, StageExecution
    from apps.orchestration.rollup import TALLY_SHARDS

    q = connection.ops.quote_name
    counters = ["count", "timed", "micros", *(f"le_{index}" for index in range(len(RUN_BUCKETS)))]
    timed = "started_at IS NOT NULL AND duration_ms IS NOT NULL"
    run_values = ["COUNT(*)", f"SUM(CASE WHEN {timed} THEN 1 ELSE 0 END)",
                  f"SUM(CASE WHEN {timed} THEN CAST(ROUND(duration_ms * 1000) AS BIGINT) ELSE 0 END)",
                  *(f"SUM(CASE WHEN {timed} AND duration_ms <= {b * 1000!r} THEN 1 ELSE 0 END)" for b in RUN_BUCKETS)]
    node_values = ["COUNT(*)", "COUNT(duration_ms)", "COALESCE(SUM(CAST(ROUND(duration_ms * 1000) AS BIGINT)), 0)",
                   *(f"SUM(CASE WHEN duration_ms <= {b * 1000!r} THEN 1 ELSE 0 END)" for b in NODE_BUCKETS)]
    terminal = ", ".join(f"'{status}'" for status in PipelineRun.TERMINAL)
    columns = ", ".join(q(c) for c in counters)
    with connection.cursor() as cursor:
        # The bench's runs are all of stored definitions: the label is the definition's name (origin).
        cursor.execute(
            f"INSERT INTO {q(RunTally._meta.db_table)} (definition, trigger, status, shard, {columns}) "
            f"SELECT origin, trigger, status, id % {TALLY_SHARDS}, {', '.join(run_values)} "
            f"FROM {q(PipelineRun._meta.db_table)} WHERE status IN ({terminal}) "
            f"GROUP BY origin, trigger, status, id % {TALLY_SHARDS}")
        cursor.execute(
            f"INSERT INTO {q(NodeTally._meta.db_table)} (node_type, status, shard, {columns}) "
            f"SELECT node_type, status, run_id % {TALLY_SHARDS}, {', '.join(node_values)} "
            f"FROM {q(StageExecution._meta.db_table)} GROUP BY node_type, status, run_id % {TALLY_SHARDS}")


def _fold_rollup() -> None:
    from apps.orchestration.rollup import rollup_fold

    rollup_fold()


def build_spec(runs: int, backlog: int) -> dict:
    return {"format": BUILD_FORMAT, "runs": runs, "stages_per_run": STAGES_PER_RUN, "backlog": backlog,
            "definitions_with_runs": DEFINITIONS_WITH_RUNS, "schedules": SCHEDULES, "hosts": HOSTS}


def built_spec(connection) -> dict | None:
    """The spec recorded by an earlier complete build of this database, or None."""
    if "bench_scale_build" not in connection.introspection.table_names():
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT spec FROM bench_scale_build")
        row = cursor.fetchone()
    return json.loads(row[0]) if row else None


def build_main(args) -> int:
    """The child that fills one migrated database: the definitions and schedules (load_pipelines),
    then, for ``--runs`` above 0, the runs, stages and backlog; records what it built."""
    from bench.measure import child_setup

    child_setup("scale", lambda signum, frame: (_ for _ in ()).throw(SystemExit(128 + signum)))
    from django.core.management import call_command
    from django.db import connection

    from apps.orchestration.models import NodeTally, PipelineDefinition, PipelineRun, RunTally, StageExecution

    spec = build_spec(args.runs, args.backlog)
    if built_spec(connection) == spec:
        log(f"{args.label}: reusing the database built earlier ({args.runs} runs)")
        return 0
    with tempfile.TemporaryDirectory(prefix="scale-defs") as folder:
        write_definitions(Path(folder))
        started = time.monotonic()
        # In folders of LOAD_BATCH: one load is one transaction with a savepoint per definition, and past a
        # few hundred subtransactions every statement of it slows down on PostgreSQL.
        files = sorted(Path(folder).glob("*.json"))
        for first in range(0, len(files), LOAD_BATCH):
            batch = Path(folder) / f"batch{first}"
            batch.mkdir()
            for path in files[first:first + LOAD_BATCH]:
                path.rename(batch / path.name)
            call_command("load_pipelines", "--dir", str(batch), stdout=io.StringIO())
        log(f"{args.label}: {SCHEDULES + len(extra_definitions())} definitions loaded by load_pipelines "
            f"in {time.monotonic() - started:.1f} s")
    sql = _Sql(connection.vendor)
    now = time.time()
    if args.runs:
        if PipelineRun.objects.exists():
            raise RuntimeError(f"{args.label}: the database already holds runs; build into a fresh one")
        def_ids = dict(PipelineDefinition.objects.filter(
            name__in=[definition_name(i) for i in range(DEFINITIONS_WITH_RUNS)]).values_list("name", "pk"))
        def_ids = {int(name.rsplit("-", 1)[1]): pk for name, pk in def_ids.items()}
        for what, fn in (
            (f"{args.runs} finished runs", lambda: insert_runs(args.runs, queued=False, sql=sql, def_ids=def_ids,
                                                               now=now, connection=connection)),
            ("their stages", lambda: insert_stages(0, sql=sql, connection=connection)),
            (f"{args.backlog} queued runs", lambda: insert_runs(args.backlog, queued=True, sql=sql, def_ids=def_ids,
                                                                now=now, connection=connection)),
            ("the metrics' rollup of the finished runs", lambda: fill_rollup(connection=connection)),
            # As the workers leave it: each folds the rollup every minute (METRICS_ROLLUP_FOLD_SECONDS).
            ("the rollup folded", _fold_rollup),
        ):
            started = time.monotonic()
            if what.startswith("0 "):
                continue
            fn()
            log(f"{args.label}: {what}: done in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    with connection.cursor() as cursor:
        if sql.pg:
            # What autovacuum would have done on a database that grew over 60 days: statistics and the
            # visibility map (index-only scans).
            for model in (PipelineRun, StageExecution, RunTally, NodeTally):
                cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(model._meta.db_table)}")
        else:
            cursor.execute("ANALYZE")
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_scale_build (spec TEXT NOT NULL)")
        cursor.execute("DELETE FROM bench_scale_build")
        cursor.execute("INSERT INTO bench_scale_build (spec) VALUES (%s)", [json.dumps(spec)])
    log(f"{args.label}: analysed in {time.monotonic() - started:.1f} s; "
        f"{PipelineRun.objects.count()} runs, {StageExecution.objects.count()} stages")
    return 0


# --- measuring: the child --------------------------------------------------------------------------

@contextlib.contextmanager
def cut_after(connection, seconds: float):
    """Statements of ``connection`` longer than ``seconds`` fail (PostgreSQL's statement_timeout,
    SQLite's progress handler) inside this block."""
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {int(seconds * 1000)}")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET statement_timeout = 0")
    else:
        deadline = time.monotonic() + seconds
        connection.connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 100_000)
        try:
            yield
        finally:
            connection.connection.set_progress_handler(None, 0)


def repeat(label: str, fn, *, tries: int, budget: float, limit: float, connection) -> dict:
    """``fn()`` (returns a dict of facts or None) up to ``tries`` + 1 times, fewer once ``budget``
    seconds have gone (at least 4 tries); the first try longer than ``limit`` seconds, or the
    first error, ends it. Returns the samples (ms; the first left out when 3 others remain),
    the facts of the last try, and what stopped it."""
    samples: list[float] = []
    facts: dict = {}
    stopped = None
    began = time.monotonic()
    for _ in range(tries + 1):
        t0 = time.perf_counter()
        try:
            with cut_after(connection, limit):
                t0 = time.perf_counter()
                facts = fn() or {}
                elapsed = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - any failure is a result to report
            elapsed = time.perf_counter() - t0
            if elapsed >= limit * 0.95:
                stopped = f"cut at {limit:g} s"
            else:
                stopped = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            log(f"{label}: {stopped}")
            break
        samples.append(elapsed * 1000)
        if len(samples) >= 4 and time.monotonic() - began > budget:
            break
    # The first call pays for imports, compiled templates and cold caches: left out when there are others.
    first = samples.pop(0) if len(samples) >= 4 else None
    return {"samples_ms": samples, "first_ms": first, "facts": facts, "stopped": stopped}


def _client():
    from django.test import Client

    return Client(SERVER_NAME="localhost")


def _metrics_once(client) -> dict:
    response = client.get("/metrics")
    if response.status_code != 200:
        raise RuntimeError(f"/metrics answered {response.status_code}: {response.content[:200]!r}")
    body = response.content
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {"bytes": len(body), "series": series}


def _admin_once(client, query: str) -> dict:
    response = client.get(f"/admin/orchestration/pipelinerun/?{query}")
    if response.status_code != 200:
        raise RuntimeError(f"the admin answered {response.status_code} for ?{query} "
                           f"({response.get('Location', '')})")
    return {"bytes": len(response.content)}


def _command_once(*argv: str) -> dict:
    from django.core.management import call_command

    out = io.StringIO()
    call_command(*argv, stdout=out, stderr=io.StringIO())
    return {"lines": out.getvalue().count("\n")}


def _runs_delete(trace_ids: list[str]) -> None:
    from apps.orchestration.models import PipelineRun

    PipelineRun.objects.filter(trace_id__in=trace_ids).delete()


def _wal_lsn(connection) -> str | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()")
        return cursor.fetchone()[0]


def _wal_since(connection, lsn: str | None) -> int | None:
    if lsn is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [lsn])
        return int(cursor.fetchone()[0])


def _trace(made: list[str], what: str) -> str:
    """A new trace id for a run this benchmark makes, remembered in ``made`` (to delete it afterwards)."""
    made.append(f"{TRACE_PREFIX}{what}-{os.getpid()}-{len(made)}")
    return made[-1]


def _launch_big_payload(made: list[str], payload: str) -> dict:
    """``run_pipeline --definition LAUNCH --payload <5 MB>`` (no --wait): queued or refused."""
    from django.core.management import CommandError

    trace = _trace(made, "payload")
    try:
        _command_once("run_pipeline", "--definition", LAUNCH, "--payload", payload, "--trace-id", trace)
        outcome = "queued"
    except CommandError as exc:
        text = str(exc)
        outcome = f"refused (exit {exc.returncode}, {len(text.splitlines())} line): {text.splitlines()[0][:120]}"
    return {"outcome": outcome}


def _inline_run(connection, definition: str, payload: dict, made: list[str]) -> dict:
    """``run_pipeline --definition D --payload P --inline``: the run's time, the WAL it wrote (PostgreSQL)
    and the largest stored stage output."""
    from apps.orchestration.models import PipelineRun, StageExecution

    trace = _trace(made, "inline")
    text = json.dumps(payload)
    lsn = _wal_lsn(connection)
    _command_once("run_pipeline", "--definition", definition, "--payload", text, "--inline", "--trace-id", trace)
    wal = _wal_since(connection, lsn)
    run = PipelineRun.objects.get(trace_id=trace)
    if run.status != PipelineRun.Status.COMPLETED:
        raise RuntimeError(f"the {definition} run ended {run.status}: {run.error[:200]}")
    stored = max(len(json.dumps(o)) for o in StageExecution.objects.filter(run=run).values_list("output", flat=True))
    return {"wal_bytes": wal, "largest_output_bytes": stored}


def _wrap_wal(fn, wal: list):
    def once():
        facts = fn()
        if facts.get("wal_bytes") is not None:
            wal.append(facts["wal_bytes"])
        return facts
    return once


def measure_main(args) -> int:
    """The child that measures every operation on one prepared database; writes JSON to --out."""
    from bench.measure import child_setup

    child_setup("scale", lambda signum, frame: (_ for _ in ()).throw(SystemExit(128 + signum)))
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Count

    from apps.orchestration import dispatch, recovery
    from apps.orchestration.models import PipelineRun, StageExecution

    # The web process serves static files from var/static once collectstatic ran; the admin's pages need none.
    warnings.filterwarnings("ignore", message="No directory at")
    PipelineRun.objects.filter(trace_id__startswith=TRACE_PREFIX).delete()  # left by a run that was stopped
    # The backlog's messages: one per queued run, in its host's queue or the shared one, as the launcher sends them:
    # each right after its run is created, so a queue holds them in the order of created_at.
    started = time.monotonic()
    queued = list(PipelineRun.objects.filter(status=PipelineRun.Status.QUEUED).order_by("created_at", "pk")
                  .values_list("pk", "origin", "trace_id", "target_host"))
    for pk, origin, trace_id, host in queued:
        dispatch.run_publish(run_id=pk, definition=origin, trace_id=trace_id, host=host or None)
    waiting = dispatch.queued_run_ids(hosts={host or None for *_, host in queued} | {None})
    log(f"{args.label}: {len(queued)} messages sent in {time.monotonic() - started:.1f} s; "
        f"{len(waiting or ())} found in the queues")

    user, _ = get_user_model().objects.get_or_create(
        username="bench-scale", defaults={"is_staff": True, "is_superuser": True, "email": ""})
    client = _client()
    client.force_login(user)
    busiest = (PipelineRun.objects.values("definition_name").annotate(n=Count("pk")).order_by("-n")
               .values_list("definition_name", flat=True).first()) if args.grown else None
    busiest = busiest or definition_name(0)
    # The admin's "Past 7 days" link: from midnight (UTC) a week ago to midnight tomorrow.
    today = datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    past_week = urlencode({"created_at__gte": str(today - datetime.timedelta(days=7)),
                           "created_at__lt": str(today + datetime.timedelta(days=1))})

    result: dict = {
        "label": args.label, "vendor": connection.vendor, "grown": args.grown,
        "runs": PipelineRun.objects.count(), "stages": StageExecution.objects.count(),
        "queued_messages": len(queued), "busiest": busiest,
        "ops": {},
    }
    from django_celery_beat.models import PeriodicTask

    result["schedules"] = PeriodicTask.objects.filter(name__startswith="pipeline:").count()
    ops = result["ops"]
    kw = {"tries": args.tries, "budget": args.budget, "limit": args.limit, "connection": connection}

    def run(key: str, label: str, fn, **extra):
        log(f"{args.label}: {label}")
        ops[key] = {"label": label, **repeat(f"{args.label} {label}", fn, **{**kw, **extra})}

    run("metrics", "GET /metrics", lambda: _metrics_once(_client()))
    for key, shown, query in (
            ("", "", ""), ("status", "status failed", "status__exact=failed"),
            ("definition", f"definition {busiest}", f"definition_name={busiest}"),
            ("host", "host host-007", "target_host=host-007"), ("trigger", "trigger alert", "trigger__exact=alert"),
            ("created", "created in the past 7 days", past_week)):
        run(f"admin {key}".strip(), f"admin run list{', ' + shown if shown else ''}",
            lambda q=query: _admin_once(client, q))
    for key, argv in (("definition idle", ("--definition", IDLE)), ("definition busiest", ("--definition", busiest)),
                      ("status", ("--status", "failed")), ("trigger", ("--trigger", "alert")),
                      ("host", ("--host", "host-007")), ("since", ("--since", "1h")), ("", ())):
        run(f"list_runs {key}".strip(), " ".join(("list_runs", *argv)),
            lambda a=argv: _command_once("list_runs", *a))
    run("list_schedules", f"list_schedules ({result['schedules']} schedules)",
        lambda: _command_once("list_schedules"))
    recovery.runs_recover()  # once first: whatever it re-sends is not the steady state measured
    run("sweep", f"recovery sweep ({len(queued)} queued messages)", lambda: {"recovered": len(recovery.runs_recover())})

    made: list[str] = []
    payload = json.dumps({"blob": "p" * BIG_PAYLOAD_BYTES})
    run("payload", f"run_pipeline --payload of {BIG_PAYLOAD_BYTES // (1024 * 1024)} MiB",
        lambda: _launch_big_payload(made, payload), tries=min(args.tries, 5))
    _runs_delete(made)

    made = []
    chunk = base64.b64encode(os.urandom(OUTPUT_BYTES // OUTPUT_COPIES * 3 // 4)).decode()  # incompressible text
    wal: dict[str, list] = {"output": [], "typical": []}
    run("output", f"a node output of {OUTPUT_BYTES / 1e6:g} MB (run_pipeline --inline)",
        _wrap_wal(lambda: _inline_run(connection, OUTPUT, {"blob": chunk, "n": 1}, made), wal["output"]),
        tries=min(args.tries, 10))
    run("typical", "a typical 3-node run (run_pipeline --inline)",
        _wrap_wal(lambda: _inline_run(connection, LAUNCH, {"n": 1}, made), wal["typical"]),
        tries=min(args.tries, 10))
    _runs_delete(made)
    for key, values in wal.items():
        ops[key]["wal_bytes"] = values
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


# --- the parent ----------------------------------------------------------------------------------

def _pg_admin():
    import psycopg

    from bench.run import PG_ADMIN

    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)


def pg_recreate(database: str) -> None:
    from psycopg import sql

    with _pg_admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def pg_exists(database: str) -> bool:
    with _pg_admin() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None


def pg_drop(database: str) -> None:
    from psycopg import sql

    with _pg_admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def environments(args, sqlite_dir: Path = ROOT / "var" / "scale") -> list[dict]:
    """One entry per database measured: its label, kind, size, URL, Redis database and runs to build
    (SQLite files in ``sqlite_dir``)."""
    envs = []
    for vendor in args.databases:
        for grown, redis_db in ((False, args.redis_dbs[0]), (True, args.redis_dbs[1])):
            size = "grown" if grown else "empty"
            if vendor == "postgresql":
                name = f"{args.pg_prefix}_{size}"
                url = f"postgres://postgres@127.0.0.1:5432/{name}"
                runs, backlog = (args.runs_postgresql, args.backlog) if grown else (0, 0)
            else:
                name = str(sqlite_dir / f"{size}.sqlite3")
                url = f"sqlite:///{name}"
                runs, backlog = (args.runs_sqlite, SQLITE_BACKLOG) if grown else (0, 0)
            envs.append({"label": f"{vendor} {size}", "vendor": vendor, "grown": grown, "name": name, "url": url,
                         "redis_db": redis_db, "runs": runs, "backlog": backlog})
    return envs


def child_env(env: dict) -> dict:
    from bench.run import REDIS_HOST, REDIS_PORT, base_env

    out = base_env()
    out.update({
        "DATABASE_URL": env["url"],
        "CELERY_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{env['redis_db']}",
        "METRICS_PUBLIC": "1",  # the scrape as Prometheus makes it, without a key to create and revoke
        "EMBEDDED_BROKER_DIR": str(ROOT / "var" / "scale" / "broker"),
    })
    return out


def _stored_spec(env: dict) -> dict | None:
    """The build spec a complete earlier build left in the database of ``env``, or None."""
    query = "SELECT spec FROM bench_scale_build"
    try:
        if env["vendor"] == "postgresql":
            import psycopg

            if not pg_exists(env["name"]):
                return None
            with psycopg.connect(env["url"].replace("postgres://", "postgresql://"), connect_timeout=5) as conn:
                row = conn.execute(query).fetchone()
        else:
            import sqlite3

            if not Path(env["name"]).exists():
                return None
            with contextlib.closing(sqlite3.connect(env["name"])) as conn:
                row = conn.execute(query).fetchone()
    except Exception:  # noqa: BLE001 - no table (a build that did not finish), or no database: not reusable
        return None
    return json.loads(row[0]) if row else None


def _reusable(env: dict) -> bool:
    """Whether the database of ``env`` holds a complete earlier build of the same sizes."""
    return _stored_spec(env) == build_spec(env["runs"], env["backlog"])


def prepare(env: dict, args) -> bool:
    """Create (or, with --reuse, keep) the database of ``env``, migrate it and fill it (build child);
    True when a complete earlier build was kept."""
    from bench.run import PYTHON, run_child

    reuse = args.reuse and env["grown"] and _reusable(env)
    if args.reuse and env["grown"] and not reuse:
        log(f"{env['label']}: no complete build of these sizes to reuse; building it")
    if not reuse:
        if env["vendor"] == "postgresql":
            pg_recreate(env["name"])
        else:
            Path(env["name"]).parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(env["name"] + suffix).unlink(missing_ok=True)
    environ = child_env(env)
    started = time.monotonic()
    migrate = subprocess.run([PYTHON, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
                             cwd=ROOT, env=environ, capture_output=True, text=True, timeout=1800)
    if migrate.returncode != 0:
        raise RuntimeError(f"{env['label']}: migrate failed: {migrate.stderr[-2000:]}")
    log(f"{env['label']}: migrated in {time.monotonic() - started:.1f} s")
    with tempfile.TemporaryDirectory(prefix="scale") as tmp:
        out = Path(tmp) / "build.json"
        cmd = [PYTHON, "-m", "bench.scale", "--child", "build", "--label", env["label"], "--out", str(out),
               "--child-runs", str(env["runs"]), "--child-backlog", str(env["backlog"])]
        out.write_text("{}")  # the build child reports through its log; run_child reads this file
        run_child(cmd, environ, out, BUILD_TIMEOUT, f"{env['label']}: build")
    return reuse


def measure(env: dict, args) -> dict:
    from bench.run import PYTHON, redis_client, run_child

    environ = child_env(env)
    redis_client(env["redis_db"]).flushdb()
    try:
        with tempfile.TemporaryDirectory(prefix="scale") as tmp:
            out = Path(tmp) / "measure.json"
            cmd = [PYTHON, "-m", "bench.scale", "--child", "measure", "--label", env["label"], "--out", str(out),
                   "--tries", str(args.tries), "--budget", str(args.budget), "--limit", str(args.limit)]
            if env["grown"]:
                cmd.append("--grown")
            return run_child(cmd, environ, out, MEASURE_TIMEOUT, f"{env['label']}: measurements")
    finally:
        redis_client(env["redis_db"]).flushdb()


def herd(env: dict, minutes: int) -> dict:
    """bench/schedule.py's herd (a real beat firing 2,000 schedules, 1,000 every minute, no
    worker) on the database of ``env``, whose runs and schedules it replaces; its figures."""
    from bench.run import PYTHON, redis_client, run_child

    redis_client(env["redis_db"]).flushdb()
    try:
        with tempfile.TemporaryDirectory(prefix="scale-herd") as tmp:
            out = Path(tmp) / "herd.json"
            cmd = [PYTHON, "-m", "bench.schedule", "--herd", "--minutes", str(minutes), "--workdir", tmp,
                   "--out", str(out)]
            return run_child(cmd, child_env(env), out, (minutes + 5) * 60, f"{env['label']}: beat herd")
    finally:
        redis_client(env["redis_db"]).flushdb()


# --- the report ------------------------------------------------------------------------------------

def _pct(values: list[float], p: float) -> float:
    from bench.run import pct

    return pct(values, p)


def _cell(op: dict | None, key: str) -> str:
    """What one operation measured, as the table shows it."""
    if op is None:
        return "—"
    samples = op["samples_ms"]
    stopped = op.get("stopped")
    if not samples:
        return f"> {stopped.split()[-2]} s (cut)" if stopped and stopped.startswith("cut") else f"error: {stopped}"
    text = f"{_pct(samples, 50):.1f} / {_pct(samples, 95):.1f} ms"
    if key == "metrics":
        text += f", {op['facts']['bytes'] / 1024:.0f} KB, {op['facts']['series']} series"
    elif key == "payload":
        text += f", {op['facts']['outcome']}"
    elif key in ("output", "typical"):
        if op.get("wal_bytes"):
            text += f", WAL {min(op['wal_bytes']) / 1024:.0f} KB (p50 {_pct(op['wal_bytes'], 50) / 1024:.0f} KB)"
        if key == "output":
            text += f", stored {op['facts']['largest_output_bytes'] / 1024:.0f} KB"
    if stopped:
        text += f" ({len(samples)} tries, then {stopped})"
    return text


def _scraped(seen: dict | None) -> str:
    """What a real Prometheus saw of /metrics (bench/prometheus_scrape.py), as the table shows it."""
    if not seen:
        return "—"
    up = "all up" if seen["all_up"] else "NOT all up"
    longest = seen["duration_max_s"]
    took = f", longest {longest * 1000:.0f} ms" if longest is not None else ""
    return f"{seen['scrapes']} scrapes, {up}{took}, {seen['samples'] or 0:.0f} samples"


def _within(key: str, op: dict | None) -> str:
    """Whether the grown database's figure meets the issue's target for ``key``."""
    if op is None:
        return "—"
    samples = op["samples_ms"]
    if not samples or op.get("stopped"):
        return "no"
    p95 = _pct(samples, 95)
    kind = key.split()[0]
    if kind == "metrics":
        ok = p95 <= 50 and op["facts"]["bytes"] <= 1024 * 1024
    elif kind == "admin":
        ok = p95 <= 200
    elif kind == "list_runs":
        ok = p95 <= 50
    elif kind == "list_schedules":
        ok = p95 <= 500
    elif kind == "sweep":
        ok = p95 <= 50
    elif kind == "payload":
        outcome = op["facts"]["outcome"]
        ok = outcome.startswith("refused") and "1 line" in outcome
    elif kind == "output":
        ok = op["facts"]["largest_output_bytes"] <= 256 * 1024 + 1024
    elif kind == "typical":
        ok = bool(op.get("wal_bytes")) and min(op["wal_bytes"]) <= 50 * 1000
        if not op.get("wal_bytes"):
            return "—"
    else:
        return "—"
    return "yes" if ok else "no"


def build_table(results: dict) -> tuple[str, list[str]]:
    """The Markdown table of every operation, per database: empty, grown, target, within target."""
    from bench.run import _markdown

    rows, missed = [], []
    for vendor in ("postgresql", "sqlite"):
        empty, grown = results.get(f"{vendor} empty"), results.get(f"{vendor} grown")
        if not (empty and grown):
            continue
        for key, op in grown["ops"].items():
            if key == "typical" and vendor == "sqlite":
                continue  # WAL bytes are PostgreSQL's
            verdict = _within(key, op)
            target = TARGETS.get(key.split()[0], "")
            rows.append([op["label"], vendor, _cell(empty["ops"].get(key), key), _cell(op, key), target, verdict])
            if verdict == "no":
                missed.append(f"{op['label']} on {vendor}")
        if "beat" in empty:
            seen = empty["beat"]
            label = f"beat, {seen['schedules']} schedules ({seen['every_minute']} every 60 s)"
            cell = (f"{seen['ticks']} ticks in {seen['minutes']} min: tick delay p50 {seen['delay_p50_s']:.2f} / "
                    f"p95 {seen['delay_p95_s']:.2f} s, beat CPU {seen['beat_cpu_share'] * 100:.1f}% of a core")
            verdict = "yes" if seen["delay_p95_s"] <= 1 and seen["beat_cpu_share"] <= 0.10 else "no"
            rows.append([label, vendor, "—", cell, TARGETS["beat"], verdict])
            if verdict == "no":
                missed.append(f"{label} on {vendor}")
        if "prometheus" in grown:
            label = "a real Prometheus scraping /metrics"
            seen = grown["prometheus"]
            verdict = "yes" if seen["all_up"] and (seen["duration_max_s"] or 0) < seen["timeout_s"] else "no"
            rows.append([label, vendor, _scraped(empty.get("prometheus")), _scraped(seen), TARGETS["prometheus"],
                         verdict])
            if verdict == "no":
                missed.append(f"{label} on {vendor}")
    table = _markdown(["operation", "database", "empty: p50 / p95", "grown: p50 / p95", "target (grown)",
                       "within target"], rows)
    return table, missed


HOW_MEASURED = """\
Two databases per kind, measured in the same run: **empty** (migrated, with
{definitions} definitions loaded by `load_pipelines`, {schedules} of them
scheduled — {every_minute} every 60 s, the rest every 5 minutes by cron or
hourly — and no run) and **grown** (the same, plus the runs). The grown
PostgreSQL database holds {runs_pg} finished runs, the SQLite one
{runs_sqlite}, each with a stage per node it reached (three in a completed
run, two in a failed one, one in a cancelled one); both built with one `INSERT ... SELECT`
per table over `generate_series` (a recursive CTE on SQLite), every column
the model has filled (a new column gets its default). The runs are spread
over {span} days, {with_runs} definitions (the busiest has about a sixth of
them), 90 / 8 / 2 % completed / failed / cancelled, 60 % launched by a
schedule, 15 % by an alert, 30 % aimed at one of {hosts} hosts, each with the
result and stage outputs of a real health-check run (about 2 KB and 1.5 KB),
its stages one after the other over its duration.
On PostgreSQL {backlog} more runs are queued (a backlog: a message each,
sent by `dispatch.run_publish` to the shared queue or one of the host
queues, on Redis); on SQLite {sqlite_backlog}. After the build, `VACUUM
(ANALYZE)` (PostgreSQL) or `ANALYZE` (SQLite), as autovacuum would have by
then.

Each operation runs in a child process set up like the product's, through
its public entry points: `GET /metrics` and the admin through the Django
test client (a superuser; `METRICS_PUBLIC=1`), the commands through
`call_command` in-process, the sweep as `recovery.runs_recover()` (once
before, not measured, so that what it re-sends is not counted). Each is
repeated up to {tries} times (fewer once {budget:g} s have gone, at least
3); p50 / p95 of the wall clock of each call. A call longer than {limit:g} s
is cut by the database (statement timeout) and shown as "> {limit:g} s".
The launch with a big payload is `run_pipeline --definition {launch}
--payload <5 MiB>` without `--wait` (its run, when one is made, is deleted
afterwards). The node output is `run_pipeline --definition {output} --inline`
whose first node copies a 100 KB payload string ten times (1 MB of
incompressible text) before two small nodes; the typical run is three small
`transform` nodes. WAL is `pg_current_wal_lsn()` after minus before each run:
the cluster's WAL, so other writers on the server add to it; the smallest
over the tries is shown, with the p50. "`list_runs --definition {idle}`" is
a stored definition with no run. "A real Prometheus scraping /metrics" is
the Debian package's Prometheus scraping the web service (gunicorn, one
process) every 10 s with its default 10 s timeout, {scrapes} times per
database (`bench/prometheus_scrape.py`); the longest scrape is Prometheus's
own `scrape_duration_seconds`. `bench/schedule.py` ("Scheduling delay")
measures beat's tick delay with one schedule. Beat at {schedules} schedules
is its `--herd`: the empty database's schedules and runs replaced by
{schedules} scheduled definitions, half of them due every minute (cron
`* * * * *`, overlap allow), fired by a real beat with no worker for
{herd_minutes} whole minutes after a warm-up minute; the tick delay is a
run's `created_at` minus the due time in its key, beat's CPU is its user +
system time from /proc over those minutes. It runs last, as it replaces
what the empty database held; no run history takes part in a tick.
"""


def report(results: dict, args, facts: dict, elapsed: float, reused: list[str]) -> tuple[str, str, list[str]]:
    """The table, the "Scale" section of docs/benchmarks.md, and the targets missed."""
    table, missed = build_table(results)
    sizes = "; ".join(f"{label}: {r['runs']} runs, {r['stages']} stages, {r['schedules']} schedules, "
                      f"{r['queued_messages']} queued messages" for label, r in results.items())
    command = (f".venv/bin/python bench/scale.py --databases {','.join(args.databases)} --runs-postgresql "
               f"{args.runs_postgresql} --runs-sqlite {args.runs_sqlite} --backlog {args.backlog} --tries {args.tries}"
               f" --budget {args.budget:g} --limit {args.limit:g} [--reuse]")
    verdict = ("Targets missed at the grown size: " + "; ".join(missed) + ".") if missed else "All targets met."
    how = HOW_MEASURED.format(
        definitions=SCHEDULES + len(extra_definitions()), schedules=SCHEDULES, every_minute=EVERY_MINUTE,
        runs_pg=f"{args.runs_postgresql:,}",
        runs_sqlite=f"{args.runs_sqlite:,}", span=SPAN_DAYS, with_runs=DEFINITIONS_WITH_RUNS, hosts=HOSTS,
        backlog=f"{args.backlog:,}", sqlite_backlog=SQLITE_BACKLOG, tries=args.tries, budget=args.budget,
        limit=args.limit, launch=LAUNCH, output=OUTPUT, idle=IDLE, scrapes=args.scrapes,
        herd_minutes=args.herd_minutes)
    built = f"reused from an earlier build: {', '.join(reused)}" if reused else "every database built in this run"
    section = (f"{TITLE}\n\nMeasured on {facts['date']} by `bench/scale.py` (took {elapsed:.0f} s; {built}); "
               f"re-run:\n\n    {command}\n\n"
               f"Load average before / after: {facts['load_before']} / {facts['load_after']}. "
               f"Databases as measured: {sizes}.\n\n{table}\n\n{verdict}\n\n{how}")
    return table, section, missed


def parent_main(args) -> int:
    from bench import prometheus_scrape
    from bench.run import machine_facts

    started = time.monotonic()
    facts = machine_facts(["redis"] if "postgresql" in args.databases else [])
    envs = environments(args)
    results: dict = {}
    reused: list[str] = []
    try:
        for env in envs:
            if prepare(env, args):
                reused.append(env["label"])
        for env in envs:
            log(f"{env['label']}: measuring")
            results[env["label"]] = measure(env, args)
            log(f"{env['label']}: a real Prometheus scraping /metrics")
            results[env["label"]]["prometheus"] = prometheus_scrape.measure(child_env(env), scrapes=args.scrapes)
        if args.herd_minutes:
            for env in envs:
                if not env["grown"]:  # the herd replaces the database's runs and schedules: the empty one's
                    log(f"{env['label']}: beat with {SCHEDULES} schedules, {args.herd_minutes} min")
                    try:
                        results[env["label"]]["beat"] = herd(env, args.herd_minutes)
                    except RuntimeError as exc:  # the table is still written, without this row
                        log(f"{env['label']}: beat herd: {exc}")
    finally:
        tidy_up(envs, args)
    elapsed = time.monotonic() - started
    facts["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    publish(report(results, args, facts, elapsed, reused), args, facts, results, title=TITLE[3:], elapsed=elapsed)
    return 0


def tidy_up(envs: list[dict], args) -> None:
    """After measuring: flush the Redis databases used and, with ``--drop``, drop the databases."""
    from bench.run import redis_client

    for db in args.redis_dbs:
        with contextlib.suppress(Exception):
            redis_client(db).flushdb()
    if args.drop:
        for env in envs:
            if env["vendor"] == "postgresql":
                pg_drop(env["name"])
            else:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(env["name"] + suffix).unlink(missing_ok=True)
        shutil.rmtree(ROOT / "var" / "scale" / "broker", ignore_errors=True)
        log("databases dropped")


def publish(reported: tuple[str, str, list[str]], args, facts: dict, results: dict, *, title: str,
            elapsed: float) -> None:
    """Print the table and the verdict, write ``--json``, and (unless ``--no-doc``) the docs section."""
    from bench.run import replace_section

    table, section, missed = reported
    print(table)
    print()
    print(("Targets missed at the grown size:\n  " + "\n  ".join(missed)) if missed else "All targets met.")
    if args.json:
        Path(args.json).write_text(json.dumps({"facts": facts, "results": results}, indent=1))
    if not args.no_doc:
        replace_section(section)
        log(f"wrote the {title} section of docs/benchmarks.md ({elapsed:.0f} s)")


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)  # run the finally blocks: flush Redis, stop the child


def main() -> int:
    parser = argparse.ArgumentParser(description="Every operation of issue 21's table, empty and grown.")
    parser.add_argument("--child", choices=["build", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--child-runs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-backlog", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--grown", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--databases", default="postgresql,sqlite", help="comma-separated: postgresql, sqlite")
    parser.add_argument("--runs-postgresql", type=int, default=1_000_000, help="finished runs (default 1000000)")
    parser.add_argument("--runs-sqlite", type=int, default=100_000, help="finished runs (default 100000)")
    parser.add_argument("--backlog", type=int, default=10_000,
                        help="queued runs, one message each, on PostgreSQL (default 10000)")
    parser.add_argument("--tries", type=int, default=20, help="tries per operation (default 20)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds of tries per operation before stopping early, at least 3 tries (default 30)")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds one call may take (default 60)")
    parser.add_argument("--reuse", action="store_true", help="keep a grown database built earlier with the same sizes")
    parser.add_argument("--drop", action="store_true", help="drop the databases at the end")
    parser.add_argument("--pg-prefix", default="bench_scale",
                        help="PostgreSQL databases <prefix>_empty and <prefix>_grown (default bench_scale)")
    parser.add_argument("--redis-dbs", default="10,11", help="two spare Redis databases, flushed (default 10,11)")
    parser.add_argument("--scrapes", type=int, default=6,
                        help="scrapes of /metrics by a real Prometheus per database, 10 s apart (default 6)")
    parser.add_argument("--herd-minutes", type=int, default=2,
                        help="minutes beat fires 2,000 schedules per database kind, after a warm-up minute "
                             "(default 2; 0 leaves it out)")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not rewrite docs/benchmarks.md")
    parser.add_argument("--json", help="also write every sample to this file")
    args = parser.parse_args()
    if args.child:
        args.runs, args.backlog = args.child_runs, args.child_backlog
        return build_main(args) if args.child == "build" else measure_main(args)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not args.databases or any(d not in ("postgresql", "sqlite") for d in args.databases):
        parser.error("--databases takes a comma-separated list of: postgresql, sqlite")
    try:
        args.redis_dbs = [int(x) for x in args.redis_dbs.split(",")]
    except ValueError:
        args.redis_dbs = []
    if len(args.redis_dbs) != 2 or any(not 0 <= x <= 15 for x in args.redis_dbs):
        parser.error("--redis-dbs takes two Redis database numbers, like 10,11")
    if args.runs_postgresql < 1 or args.runs_sqlite < 1 or args.backlog < 0 or args.tries < 3:
        parser.error("--runs-* must be >= 1, --backlog >= 0 and --tries >= 3")
    if args.scrapes < 1 or args.herd_minutes < 0:
        parser.error("--scrapes must be at least 1 and --herd-minutes at least 0")
    if args.budget <= 0 or args.limit <= 0:
        parser.error("--budget and --limit must be above 0")
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
