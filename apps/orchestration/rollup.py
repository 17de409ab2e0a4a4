"""The metrics' rollup: the hand-written statements that add a run's end to
RunTally and NodeTally, read by /metrics (apps/orchestration/metrics.py).

Part of the run store (apps/orchestration/store.py), kept in a module of its
own because that one is at the 500-line limit. A run's end is counted with
two INSERT ... ON CONFLICT DO UPDATE statements whose cost does not depend on
how many runs are stored; pruning never touches the rollup, so its counters
only go up. ``rollup_fold`` (every worker, every METRICS_ROLLUP_FOLD_SECONDS)
folds the writers' rows of each series back into one, so a scrape reads about
one row per series.
"""
from __future__ import annotations

import os
import threading

from apps.orchestration.models import NODE_BUCKETS, RUN_BUCKETS, NodeTally, PipelineRun, RunTally, StageExecution
from apps.orchestration.store import thread_db

# Rows per series. Every run's end adds to its node types' rows (one series for all runs of
# every definition): spread over a few rows by writer, workers ending runs at once mostly
# update different rows instead of each waiting for the last one's commit on a single row lock.
TALLY_SHARDS = 8

_COUNTERS = ("count", "timed", "micros", *(f"le_{index}" for index in range(len(RUN_BUCKETS))))

# Per database alias: the two statements of run_end_tally.
_STATEMENTS: dict[str, tuple[str, str]] = {}


def run_end_tally(*, run_id: int) -> None:
    """Add run ``run_id``'s end to the rollup: one to the RunTally row of its
    definition label, trigger and status (and its duration to that row's
    histogram when the run started), and its stage rows to NodeTally per node
    type and status.

    Call it once per run, in the transaction that wrote the run's terminal
    status and only when that write matched: both commit or neither, so each
    run is counted exactly once. A run that is not terminal adds nothing.
    Raises what the database raises (RuntimeError on a database other than
    PostgreSQL and SQLite)."""
    db = thread_db()
    statements = _STATEMENTS.get(db.alias)
    if statements is None:
        statements = _STATEMENTS[db.alias] = _statements(db)
    shard = hash((os.getpid(), threading.get_ident())) % TALLY_SHARDS
    with db.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql, [shard, run_id])


def _statements(db) -> tuple[str, str]:
    """The run's and the nodes' upserts on ``db`` (parameters: the shard, the run's id)."""
    q = db.ops.quote_name
    duration, origin = q("duration_ms"), q("origin")
    # The label of a config file's run is its file name only, never its directory.
    if db.vendor == "postgresql":
        file_name = f"regexp_replace({origin}, '^.*/', '')"
    elif db.vendor == "sqlite":
        # rtrim strips every character of the file name (none is '/'), leaving the directory.
        file_name = f"substr({origin}, length(rtrim({origin}, replace({origin}, '/', ''))) + 1)"
    else:
        raise RuntimeError(f"no SQL for the metrics' rollup on {db.vendor}")
    label = f"CASE WHEN {q('origin_kind')} = 'config' THEN 'config:' || {file_name} ELSE {origin} END"
    # A run that never started (cancelled while queued, refused at launch) has no duration to show.
    timed = f"{q('started_at')} IS NOT NULL AND {duration} IS NOT NULL"
    run_values = [
        "1",
        f"CASE WHEN {timed} THEN 1 ELSE 0 END",
        f"CASE WHEN {timed} THEN CAST(ROUND({duration} * 1000) AS BIGINT) ELSE 0 END",
        *(f"CASE WHEN {timed} AND {duration} <= {bound * 1000!r} THEN 1 ELSE 0 END" for bound in RUN_BUCKETS),
    ]
    terminal = ", ".join(f"'{status}'" for status in PipelineRun.TERMINAL)
    runs = _upsert(
        db, RunTally, ("definition", "trigger", "status"),
        f"SELECT {label}, {q('trigger')}, {q('status')}, %s, {', '.join(run_values)} "
        f"FROM {q(PipelineRun._meta.db_table)} WHERE {q('id')} = %s AND {q('status')} IN ({terminal})",
    )
    node_values = [
        "COUNT(*)",
        f"COUNT({duration})",
        f"COALESCE(SUM(CAST(ROUND({duration} * 1000) AS BIGINT)), 0)",
        *(f"SUM(CASE WHEN {duration} <= {bound * 1000!r} THEN 1 ELSE 0 END)" for bound in NODE_BUCKETS),
    ]
    nodes = _upsert(
        db, NodeTally, ("node_type", "status"),
        f"SELECT {q('node_type')}, {q('status')}, %s, {', '.join(node_values)} "
        f"FROM {q(StageExecution._meta.db_table)} WHERE {q('run_id')} = %s "
        f"GROUP BY {q('node_type')}, {q('status')}",
    )
    return runs, nodes


def _upsert(db, model, labels: tuple[str, ...], select: str) -> str:
    """INSERT into ``model``'s table the rows of ``select`` (its labels, the shard, then
    the counters), each added to the row of the same labels and shard when there is one."""
    q = db.ops.quote_name
    table = q(model._meta.db_table)
    key = ", ".join(q(column) for column in (*labels, "shard"))
    counters = ", ".join(q(column) for column in _COUNTERS)
    added = ", ".join(f"{q(column)} = {table}.{q(column)} + excluded.{q(column)}" for column in _COUNTERS)
    # The WHERE inside the SELECT also keeps SQLite from reading ON CONFLICT as a join's ON.
    return f"INSERT INTO {table} ({key}, {counters}) {select} ON CONFLICT ({key}) DO UPDATE SET {added}"


def rollup_fold() -> int:
    """Fold every series' shard rows into its shard 0 (RunTally, then NodeTally, one
    transaction each): the same sums in fewer rows, so a scrape reads about one row
    per series instead of one per series and writer. Returns how many rows were folded.

    Concurrent ends stay counted exactly once: on PostgreSQL the shard rows are deleted
    and their values added to shard 0 in one statement (an end that updates a row being
    deleted waits for it, then inserts a fresh one), on SQLite writers take turns. A fold
    that would wait on ends' locks gives up at once (returns what it folded so far); the
    next one folds the rest. Raises DatabaseError (RuntimeError on another database)."""
    from django.db import OperationalError, connection, transaction

    folded = 0
    for model, labels in ((RunTally, ("definition", "trigger", "status")), (NodeTally, ("node_type", "status"))):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    # Ends waiting on the fold's locks wait at most this long; the fold, not an end, gives up.
                    cursor.execute("SET LOCAL lock_timeout = '200ms'")
                for sql in _fold_statements(connection, model, labels):
                    cursor.execute(sql)
                if connection.vendor == "postgresql":
                    folded += cursor.fetchone()[0]
                else:
                    folded += max(cursor.rowcount, 0)  # the DELETE's
        except OperationalError:
            if connection.vendor != "postgresql":
                raise
            break
    return folded


def _fold_statements(db, model, labels: tuple[str, ...]) -> list[str]:
    """The statements folding ``model``'s shard rows into shard 0; the last one tells how many
    rows it folded (PostgreSQL: its one row; SQLite: the DELETE's row count)."""
    q = db.ops.quote_name
    table = q(model._meta.db_table)
    label_list = ", ".join(q(label) for label in labels)
    key = f"{label_list}, {q('shard')}"
    counters = ", ".join(q(column) for column in _COUNTERS)
    sums = ", ".join(f"SUM({q(column)})" for column in _COUNTERS)
    added = ", ".join(f"{q(column)} = {table}.{q(column)} + excluded.{q(column)}" for column in _COUNTERS)
    upsert = f"ON CONFLICT ({key}) DO UPDATE SET {added}"
    if db.vendor == "postgresql":
        # One statement: exactly the rows deleted are added (RETURNING gives their latest values).
        return [
            f"WITH moved AS (DELETE FROM {table} WHERE {q('shard')} <> 0 RETURNING {label_list}, {counters}), "
            f"added AS (INSERT INTO {table} ({key}, {counters}) SELECT {label_list}, 0, {sums} FROM moved "
            f"GROUP BY {label_list} {upsert} RETURNING 1) SELECT COUNT(*) FROM moved",
        ]
    if db.vendor == "sqlite":
        # SQLite has one writer at a time: no end comes between the two statements of the transaction.
        return [
            f"INSERT INTO {table} ({key}, {counters}) SELECT {label_list}, 0, {sums} FROM {table} "
            f"WHERE {q('shard')} <> 0 GROUP BY {label_list} {upsert}",
            f"DELETE FROM {table} WHERE {q('shard')} <> 0",
        ]
    raise RuntimeError(f"no SQL for the metrics' rollup on {db.vendor}")


def rollup_sums(*, model: type[RunTally] | type[NodeTally], labels: list[str], counts_only: bool = False,
                skip_status: str | None = None) -> list[tuple]:
    """``model``'s counters summed per value of ``labels`` (at least one; summed over the
    shards and the labels left out), ordered by the labels: tuples of the labels' values
    then the counters (count, timed, micros, le_0...; only count with ``counts_only``),
    all integers, leaving out the rows of status ``skip_status``. One query over the small
    rollup, read with a plain cursor (an ORM's per-value conversion cost more than the
    query with thousands of series). Raises DatabaseError."""
    from django.db import connection

    q = connection.ops.quote_name
    label_list = ", ".join(q(label) for label in labels)
    sums = ", ".join(f"CAST(SUM({q(column)}) AS BIGINT)" for column in (_COUNTERS[:1] if counts_only else _COUNTERS))
    where, params = (f" WHERE {q('status')} <> %s", [skip_status]) if skip_status else ("", [])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {label_list}, {sums} FROM {q(model._meta.db_table)}{where} "
            f"GROUP BY {label_list} ORDER BY {label_list}",
            params,
        )
        return cursor.fetchall()
