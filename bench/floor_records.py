"""The statements a run needs, without the launcher: the recorded floor.

bench/floor_app.py's ``bench.recorded`` task and the benchmark's sending side
record a no-op "run" with the statements a 3-node run of the launcher makes,
in their cheapest form, on the benchmark's own database (BENCH_FLOOR_DATABASE:
a ``postgres://`` URL, or a SQLite file path):

    sender    INSERT the run (durable)                          1
    worker    claim it (conditional UPDATE, no flush wait)      1
              2 node boundaries: fenced UPDATE + a stage row    2 (one statement each on
                        (no flush wait)                           PostgreSQL, one transaction
              the end: fenced UPDATE + the last stage (durable) 1  of two on SQLite)
    waiter    read the run once it has ended                    1

Two narrow tables with no index but their keys, JSON of a few bytes, no ORM,
no logging, no wake-up events: what any launcher that records a run's claim,
its node boundaries and its end in this database must pay at the least, on
top of raw Celery's own round trip. Its throughput over raw Celery's is the
most the launcher's ratio could be on this machine with those writes.
"""
from __future__ import annotations

import json
import os
import sqlite3
from itertools import pairwise

RUN_TABLE = "bench_floor_run"
STAGE_TABLE = "bench_floor_stage"
NODES = ("a", "b", "c")
LEASE_SECONDS = 30

_connection = None  # one per process (a prefork child opens its own after the fork)


def _database() -> str:
    return os.environ["BENCH_FLOOR_DATABASE"]


def _postgresql() -> bool:
    return _database().startswith(("postgres://", "postgresql://"))


def connection():
    """This process's connection to the floor's database, in autocommit mode."""
    global _connection
    if _connection is None:
        if _postgresql():
            import psycopg

            # Prepared from the first execution, as the launcher's run statements are.
            _connection = psycopg.connect(_database(), autocommit=True, prepare_threshold=1)
        else:
            # As the launcher's SQLite settings: WAL, synchronous NORMAL, writers queue.
            _connection = sqlite3.connect(_database(), timeout=20, isolation_level=None)
            _connection.execute("PRAGMA journal_mode=WAL")
            _connection.execute("PRAGMA synchronous=NORMAL")
    return _connection


def reset() -> None:
    """Drop and create the floor's two tables (empty)."""
    db = connection()
    key = "BIGSERIAL PRIMARY KEY" if _postgresql() else "INTEGER PRIMARY KEY AUTOINCREMENT"
    stamp = "TIMESTAMPTZ" if _postgresql() else "TEXT"
    data = "JSONB" if _postgresql() else "TEXT"
    for table in (STAGE_TABLE, RUN_TABLE):
        db.execute(f"DROP TABLE IF EXISTS {table}")
    db.execute(
        f"CREATE TABLE {RUN_TABLE} (id {key}, status TEXT NOT NULL, token TEXT NOT NULL DEFAULT '',"
        f" node TEXT NOT NULL DEFAULT '', payload {data}, result {data}, lease_until {stamp},"
        f" started_at {stamp}, finished_at {stamp})"
    )
    db.execute(
        f"CREATE TABLE {STAGE_TABLE} (id {key}, run_id BIGINT NOT NULL, node TEXT NOT NULL,"
        f" status TEXT NOT NULL, output {data}, UNIQUE (run_id, node))"
    )


def run_insert(payload: dict) -> int:
    """The sender's INSERT of a queued run; returns its id."""
    db = connection()
    if _postgresql():
        return db.execute(
            f"INSERT INTO {RUN_TABLE} (status, payload) VALUES ('queued', %s) RETURNING id", [json.dumps(payload)]
        ).fetchone()[0]
    return db.execute(
        f"INSERT INTO {RUN_TABLE} (status, payload) VALUES ('queued', ?)", [json.dumps(payload)]
    ).lastrowid


def run_read(run_id: int) -> tuple[str, dict]:
    """The waiter's read of a run's status and result."""
    mark = "%s" if _postgresql() else "?"
    status, result = connection().execute(
        f"SELECT status, result FROM {RUN_TABLE} WHERE id = {mark}", [run_id]
    ).fetchone()
    return status, (result if isinstance(result, dict) or result is None else json.loads(result))


def run_execute(run_id: int, token: str) -> None:
    """The worker's statements for one run of NODES (each node's output is its name)."""
    if _postgresql():
        _execute_postgresql(run_id, token)
    else:
        _execute_sqlite(run_id, token)


def _execute_postgresql(run_id: int, token: str) -> None:
    db = connection()
    lease = f"now() + interval '{LEASE_SECONDS} seconds'"
    no_flush = "set_config('synchronous_commit', 'off', true)"
    claimed = db.execute(
        f"UPDATE {RUN_TABLE} SET status = 'running', token = %s, node = %s, lease_until = {lease},"
        f" started_at = now() WHERE id = %s AND status = 'queued' RETURNING {no_flush}",
        [token, NODES[0], run_id],
    ).fetchone()
    if claimed is None:
        return
    for done, following in pairwise(NODES):
        db.execute(
            f"WITH held AS (UPDATE {RUN_TABLE} SET node = %s, lease_until = {lease} WHERE id = %s AND token = %s"
            f" RETURNING id) INSERT INTO {STAGE_TABLE} (run_id, node, status, output)"
            f" SELECT id, %s, 'succeeded', %s FROM held RETURNING {no_flush}",
            [following, run_id, token, done, json.dumps({"node": done})],
        )
    result = json.dumps({"executed_nodes": list(NODES)})
    db.execute(
        f"WITH held AS (UPDATE {RUN_TABLE} SET status = 'completed', node = '', result = %s, finished_at = now()"
        f" WHERE id = %s AND token = %s RETURNING id) INSERT INTO {STAGE_TABLE} (run_id, node, status, output)"
        f" SELECT id, %s, 'succeeded', %s FROM held",
        [result, run_id, token, NODES[-1], json.dumps({"node": NODES[-1]})],
    )


def _execute_sqlite(run_id: int, token: str) -> None:
    db = connection()
    lease = f"datetime('now', '+{LEASE_SECONDS} seconds')"
    claimed = db.execute(
        f"UPDATE {RUN_TABLE} SET status = 'running', token = ?, node = ?, lease_until = {lease},"
        f" started_at = datetime('now') WHERE id = ? AND status = 'queued'",
        [token, NODES[0], run_id],
    ).rowcount
    if not claimed:
        return
    for done, following in pairwise(NODES):
        _sqlite_fenced(
            db, f"node = ?, lease_until = {lease}", [following], run_id, token, done,
        )
    _sqlite_fenced(
        db, "status = 'completed', node = '', result = ?, finished_at = datetime('now')",
        [json.dumps({"executed_nodes": list(NODES)})], run_id, token, NODES[-1],
    )


def _sqlite_fenced(db, sets: str, set_params: list, run_id: int, token: str, stage_node: str) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        updated = db.execute(f"UPDATE {RUN_TABLE} SET {sets} WHERE id = ? AND token = ?", [*set_params, run_id, token])
        if updated.rowcount:
            db.execute(
                f"INSERT INTO {STAGE_TABLE} (run_id, node, status, output) VALUES (?, ?, 'succeeded', ?)",
                [run_id, stage_node, json.dumps({"node": stage_node})],
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
