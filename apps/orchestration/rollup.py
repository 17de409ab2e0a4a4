"""The metrics' rollup: the hand-written statements that add a run's end to
RunTally and NodeTally, read by /metrics (apps/orchestration/metrics.py).

Part of the run store (apps/orchestration/store.py), kept in a module of its
own because that one is at the 500-line limit. A run's end is counted with
two INSERT ... ON CONFLICT DO UPDATE statements whose cost does not depend on
how many runs are stored; pruning never touches the rollup, so its counters
only go up.
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

_COUNTERS = ("count", "timed", "seconds", *(f"le_{index}" for index in range(len(RUN_BUCKETS))))

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
        f"CASE WHEN {timed} THEN {duration} / 1000.0 ELSE 0 END",
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
        f"COALESCE(SUM({duration}), 0) / 1000.0",
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
