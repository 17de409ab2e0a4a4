"""The run store: every hand-written SQL statement a run executes, and every
use of a Django internal, behind a few small functions.

The ORM took longer to build such a statement (about 250 µs for a fenced
UPDATE, 300 µs for the run's INSERT) than the database to execute it, so
these are written out once per database and only their parameters change.
On PostgreSQL every statement binds its parameters on the server and is
prepared (the ``server_side_binding`` and ``prepare_threshold`` options in
the settings): parsing and planning cost the database more than executing
them.

What lives here:

- (the INSERTs of new rows, the run's and a herd's, are in storeinserts.py);
- ``run_read``: a run's row with the database's time, in one SELECT;
- ``run_claim_queued`` / ``run_claim_update``: taking a queued run;
- ``run_write``: a fenced write of a run's fields, its stage rows and its
  log lines (one statement on PostgreSQL; the lines' INSERT is in storelines.py);
- ``definition_slot_lock``: the lock that serialises max_concurrent claims;
- ``run_column_values``: the distinct values of an indexed column (the admin's filters);
- ``planned_for_values``: statements planned for their parameters' values (the admin's run list).

Django internals used here (a test in tests/orchestration/test_store.py
fails loudly when a Django upgrade changes them): a query's compiler, its
``select`` and ``get_converters`` (the run's read), ``Model.from_db``, and
``connection.ops`` adapters (``adapt_json_value``, ``adapt_datetimefield_value``).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models import Model
from django.db.models.functions import Now

from apps.orchestration.models import PipelineRun, StageExecution
from apps.orchestration.storelines import log_lines_insert_sql


class LeaseLost(Exception):
    """Another process holds the run now (it took the run over, or the run was ended)."""


def _column(model: type[Model], name: str) -> models.Field:
    """The field named ``name`` of ``model``, one with a column of the model's own table."""
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or field.column is None:
        raise TypeError(f"{model.__name__}.{name} is not a column of its table")
    return field


def thread_db():
    """This thread's connection to the default database. The ``connection``
    proxy looks it up again on every attribute: hot paths take it once."""
    return connections[DEFAULT_DB_ALIAS]


class DbTime:
    """The database's time when a statement runs, plus ``seconds``: a value of a fenced write."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds

    def expression(self):
        return Now() + timedelta(seconds=self.seconds) if self.seconds else Now()

    def sql(self, vendor: str) -> tuple[str, list] | None:
        """SQL and parameters on a ``vendor`` database, as Django writes Now() (so
        stored times compare as before) plus the seconds; None on a database
        other than these two."""
        if vendor == "postgresql":
            if not self.seconds:
                return "STATEMENT_TIMESTAMP()", []
            return "(STATEMENT_TIMESTAMP() + %s)", [timedelta(seconds=self.seconds)]
        if vendor == "sqlite":
            if not self.seconds:
                return "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW')", []
            return "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW', %s)", [f"{self.seconds:+f} seconds"]
        return None


# Per (database alias, WHERE, the fields written and which of them are the database's time):
# the UPDATE's SQL and, per field, its adapter (None: the database's time, with its parameters).
_UPDATES: dict = {}


def _run_update_sql(fields: dict, where: str, where_params: list) -> tuple[str, list] | None:
    """UPDATE of the run's row writing ``fields`` (values, or DbTime) WHERE ``where``;
    None on a database whose time this module does not write."""
    db = thread_db()
    shape: list[tuple[str, float | None]] = []
    for name, value in fields.items():
        if isinstance(value, DbTime):
            shape.append((name, value.seconds))
        elif hasattr(value, "resolve_expression"):
            raise TypeError(f"{name}: a fenced write takes values or DbTime, not {type(value).__name__}")
        else:
            shape.append((name, None))
    key = (db.alias, where, tuple(shape))
    plan = _UPDATES.get(key)
    if plan is None:
        plan = _run_update_plan(db, key[2], where)
        if plan is None:
            return None  # a database whose time this module does not write
        _UPDATES[key] = plan
    sql, steps = plan
    params = []
    for (name, _), (adapt, time_params) in zip(shape, steps, strict=True):
        if adapt is None:
            params += time_params
        else:
            params.append(adapt(fields[name]))
    return sql, params + where_params


def _run_update_plan(db, shape: tuple, where: str) -> tuple[str, list] | None:
    quote = db.ops.quote_name
    sets: list[str] = []
    steps: list[tuple[Callable[[Any], Any] | None, list | None]] = []
    for name, seconds in shape:
        if seconds is not None:
            written = DbTime(seconds).sql(db.vendor)
            if written is None:
                return None
            sql, time_params = written
            steps.append((None, time_params))
        else:
            sql = "%s"
            steps.append((_adapter(_column(PipelineRun, name), db), None))
        sets.append(f"{quote(_column(PipelineRun, name).column)} = {sql}")
    return f"UPDATE {quote(PipelineRun._meta.db_table)} SET {', '.join(sets)} WHERE {where}", steps


# Every column of a stage row, in the order the upsert writes them; a row
# written again (its outcome, or a write repeated after a fault) keeps the rest.
_STAGE_COLUMNS = ("run", "node_id", "node_type", "status", "attempt", "output", "errors", "started_at",
                  "finished_at", "duration_ms")
_STAGE_OUTCOME = ("status", "output", "errors", "finished_at", "duration_ms")


def _stages_upsert_sql(stages: list, condition: str, condition_params) -> tuple[str, list]:
    """SQL and parameters inserting ``stages`` while the SQL ``condition`` holds,
    each updated with its outcome instead when its run, node and attempt have
    a row; it returns each written row's id, node id and attempt."""
    fields, head, slots, tail = _stage_upsert_parts()
    params = [adapt(getattr(stage, attname)) for stage in stages for attname, adapt in fields]
    sql = f"{head}{', '.join([slots] * len(stages))}) AS v WHERE {condition} {tail}"
    return sql, [*params, *condition_params]


def _stage_upsert_parts() -> tuple[list, str, str, str]:
    """The stage upsert's fields and fixed SQL, made once per database connection."""
    db = thread_db()
    parts = _UPSERT_PARTS.get(db.alias)
    if parts is None:
        meta = StageExecution._meta
        fields = [_column(StageExecution, name) for name in _STAGE_COLUMNS]
        adapters = [(f.attname, _adapter(f, db)) for f in fields]
        quote = db.ops.quote_name
        if db.vendor == "postgresql":
            # Typed: a VALUES column holding only NULLs or literals would be text.
            slots = "(" + ", ".join(f"CAST(%s AS {f.db_type(db)})" for f in fields) + ")"
        else:
            slots = "(" + ", ".join("%s" for _ in fields) + ")"
        outcome = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in (_column(StageExecution, n).column
                                                                           for n in _STAGE_OUTCOME))
        columns = ", ".join(quote(f.column) for f in fields)
        head = f"INSERT INTO {quote(meta.db_table)} ({columns}) SELECT * FROM (VALUES "
        tail = (
            f"ON CONFLICT ({quote('run_id')}, {quote('node_id')}, {quote('attempt')}) DO UPDATE SET {outcome} "
            f"RETURNING {quote('id')}, {quote('node_id')}, {quote('attempt')}"
        )
        parts = _UPSERT_PARTS[db.alias] = (adapters, head, slots, tail)
    return parts


_UPSERT_PARTS: dict = {}


def _adapter(field, db):
    """How a value of ``field`` is passed to this connection's database: what
    field.get_db_prep_save does for the values a run's writes hold (plain
    values: JSON data, aware datetimes, text and numbers), without its checks
    for expressions (a tenth of a stage upsert's cost)."""
    ops = db.ops
    if isinstance(field, models.JSONField):
        encoder = field.encoder
        return lambda value: None if value is None else ops.adapt_json_value(value, encoder)
    if isinstance(field, models.DateTimeField):
        return ops.adapt_datetimefield_value
    if isinstance(field, (models.CharField, models.TextField, models.IntegerField, models.FloatField,
                          models.ForeignKey)):
        return lambda value: value
    return lambda value: field.get_db_prep_save(value, db)


def _set_stage_keys(stages: list, written) -> None:
    keys = {(node_id, attempt): pk for pk, node_id, attempt in written if pk is not None}
    for stage in stages:
        stage.pk = keys.get((stage.node_id, stage.attempt), stage.pk)


def writes_in_one_statement() -> bool:
    """Whether a fenced write costs one statement however much it carries (PostgreSQL)."""
    return thread_db().vendor == "postgresql"


def _write_in_one_statement(
    update: tuple[str, list], stages: list, *, durable: bool, run_id: int, log_lines: list
) -> bool:
    """The fenced write as one PostgreSQL statement: the run's UPDATE (which waits
    for a takeover changing the row, then checks the token again) and the
    stage rows and log lines only when it matched. Returns whether it matched."""
    update_sql, update_params = update
    ctes, params = f"WITH held AS ({update_sql} RETURNING 1)", list(update_params)
    if log_lines:
        # A data-modifying WITH runs whether or not the query reads it.
        logged_sql, logged_params = log_lines_insert_sql(run_id, log_lines, "EXISTS (SELECT 1 FROM held)", [])
        ctes += f", logged AS ({logged_sql})"
        params += logged_params
    rows, source = "NULL::bigint, NULL::text, NULL::integer", ""
    if stages:
        upsert_sql, upsert_params = _stages_upsert_sql(stages, "EXISTS (SELECT 1 FROM held)", [])
        ctes += f", staged AS ({upsert_sql})"
        params += upsert_params
        rows, source = "staged.*", " FROM (SELECT 1) AS one LEFT JOIN staged ON true"
    # synchronous_commit is read when the statement's transaction commits.
    flush = "" if durable else ", set_config('synchronous_commit', 'off', true)"
    with thread_db().cursor() as cursor:
        cursor.execute(f"{ctes} SELECT (SELECT count(*) FROM held), {rows}{flush}{source}", params)
        result = cursor.fetchall()
    if not result[0][0]:
        return False
    _set_stage_keys(stages, [row[1:4] for row in result])
    return True


def _row_count(statement: tuple[str, list]) -> int:
    with thread_db().cursor() as cursor:
        cursor.execute(*statement)
        return cursor.rowcount


def _fence_sql(run_id: int, token: str, *, unless_cancelled: bool) -> tuple[str, list]:
    """The WHERE condition of the run's row while ``token`` holds it (and, with
    ``unless_cancelled``, while nobody has asked to cancel it)."""
    quote = thread_db().ops.quote_name
    sql = f"{quote('id')} = %s AND {quote('claimed_by')} = %s AND {quote('status')} = %s"
    if unless_cancelled:
        sql += f" AND {quote('cancel_requested_at')} IS NULL"
    return sql, [run_id, token, PipelineRun.Status.RUNNING.value]


def _fenced_update_sql(run_id: int, token: str, fields: dict, *, unless_cancelled: bool) -> tuple[str, list]:
    """The fenced UPDATE writing ``fields`` (values, DbTime, or Now()) on the run's row."""
    fields = {name: DbTime() if isinstance(value, Now) else value for name, value in fields.items()}
    fence, fence_params = _fence_sql(run_id, token, unless_cancelled=unless_cancelled)
    written = _run_update_sql(fields, fence, fence_params)
    if written is None:
        raise RuntimeError(f"no SQL for the database's time on {thread_db().vendor}")
    return written


def run_write(
    *, run_id: int, token: str, fields: dict, stages: list, unless_cancelled: bool, durable: bool,
    log_lines: list | None = None,
) -> bool:
    """Write ``fields`` on run ``run_id``, upsert ``stages`` (setting their
    primary keys) and insert ``log_lines`` (runlogs.LogLine tuples), fenced
    by ``token``: only while it holds the run (and, with
    ``unless_cancelled``, while no cancel was requested). Returns False
    when the fence matched nothing (nothing was written).

    On PostgreSQL it is one statement, and only a ``durable`` one waits for
    the disk flush. On SQLite (no UPDATE inside a WITH) the stage rows go
    first, then the log lines, then the run's row, each fenced; the caller
    makes a ``durable`` write one transaction. Raises LeaseLost when the run
    was taken over between those statements (the takeover has recorded the
    stages)."""
    db = thread_db()
    log_lines = log_lines or []
    if db.vendor == "postgresql":
        update = _fenced_update_sql(run_id, token, fields, unless_cancelled=unless_cancelled)
        return _write_in_one_statement(update, stages, durable=durable, run_id=run_id, log_lines=log_lines)
    fence, fence_params = _fence_sql(run_id, token, unless_cancelled=unless_cancelled)
    held = f"EXISTS (SELECT 1 FROM {db.ops.quote_name(PipelineRun._meta.db_table)} WHERE {fence})"
    if stages:
        sql, params = _stages_upsert_sql(stages, held, fence_params)
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            written = cursor.fetchall()
        if not written:
            return False
        _set_stage_keys(stages, written)
    if log_lines:
        # Before the run's row: the end's UPDATE makes the run terminal, which the fence no longer matches.
        sql, params = log_lines_insert_sql(run_id, log_lines, held, fence_params)
        with db.cursor() as cursor:
            cursor.execute(sql, params)
    if not fields:
        return True
    if stages:
        if not _row_count(_fenced_update_sql(run_id, token, fields, unless_cancelled=False)):
            raise LeaseLost(f"run {run_id} is no longer held by {token}")
        return True
    return bool(_row_count(_fenced_update_sql(run_id, token, fields, unless_cancelled=unless_cancelled)))


def run_claim_update(*, run_id: int, token: str, first_node: str) -> int:
    """Take queued run ``run_id`` for ``token`` with one conditional UPDATE
    (its first node becomes the current one); the number of rows it took (0 or 1)."""
    quote = thread_db().ops.quote_name
    claim = _run_update_sql(
        {"status": PipelineRun.Status.RUNNING.value, "started_at": DbTime(), "current_node": first_node,
         "claimed_by": token, "heartbeat_at": DbTime(), "lease_expires_at": DbTime(settings.RUN_LEASE_SECONDS)},
        f"{quote('id')} = %s AND {quote('status')} = %s", [run_id, PipelineRun.Status.QUEUED.value],
    )
    if claim is None:
        raise RuntimeError(f"no SQL for the database's time on {thread_db().vendor}")
    return _row_count(claim)


def definition_slot_lock(*, origin_kind: str, origin: str) -> None:
    """Inside a transaction on PostgreSQL, hold a lock for the definition
    ``origin_kind``/``origin`` until the transaction ends, so two claims
    cannot both count the same last max_concurrent slot (SQLite's write
    transactions are serial already: nothing to do there)."""
    db = thread_db()
    if db.vendor == "postgresql":
        digest = hashlib.blake2b(f"{origin_kind}:{origin}".encode(), digest_size=8).digest()
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)])


# Columns whose values run_column_values lists: each leads an index (models.py).
_LISTED_COLUMNS = ("definition_name", "target_host")


def run_column_values(column: str, *, limit: int) -> list[str]:
    """The distinct non-empty values of PipelineRun's ``column`` (one of
    _LISTED_COLUMNS), in order, at most ``limit``. One statement that jumps
    from each value to the next along the column's index (a loose index scan):
    its cost grows with the values listed, not with the runs. Reads only;
    raises ValueError for another column."""
    if column not in _LISTED_COLUMNS:
        raise ValueError(f"no index leads with {column!r}")
    quote = thread_db().ops.quote_name
    table, col = quote(PipelineRun._meta.db_table), quote(column)
    following = f"(SELECT CAST({col} AS TEXT) FROM {table} WHERE {col} > %s ORDER BY {col} LIMIT 1)"
    sql = (
        f"WITH RECURSIVE listed(value, n) AS (SELECT {following}, 1 UNION ALL "
        f"SELECT {following.replace('%s', 'listed.value')}, n + 1 FROM listed "
        f"WHERE listed.value IS NOT NULL AND n < %s) SELECT value FROM listed WHERE value IS NOT NULL"
    )
    with thread_db().cursor() as cursor:
        cursor.execute(sql, ["", limit])
        return [row[0] for row in cursor.fetchall()]


@contextmanager
def planned_for_values() -> Iterator[None]:
    """Inside, this thread's statements are planned for their parameters'
    values: on PostgreSQL, a transaction with ``plan_cache_mode =
    force_custom_plan`` until it ends (a prepared statement's generic plan,
    taken from its sixth execution on a connection, picks its index for the
    average value of each filter, and for a value that holds half the runs
    reads all of them); nothing on SQLite, which plans every statement anew."""
    db = thread_db()
    if db.vendor != "postgresql":
        yield
        return
    with transaction.atomic(using=db.alias):
        with db.cursor() as cursor:
            cursor.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        yield


# Per database connection: the SQL reading a run's row with the database's time, and how
# to turn the row into a PipelineRun, made by the ORM once (it took longer than the read).
_READERS: dict = {}


def run_read(run_id: int) -> PipelineRun:
    """Run ``run_id`` as stored, with the database's time now as ``db_now``;
    raises PipelineRun.DoesNotExist. One statement, compiled once per
    connection (and prepared on PostgreSQL): the claim's read and a waiting
    watcher's."""
    db = thread_db()
    sql, names, converters = _reader(db)
    with thread_db().cursor() as cursor:
        cursor.execute(sql, [run_id])
        row = cursor.fetchone()
    if row is None:
        raise PipelineRun.DoesNotExist(f"PipelineRun {run_id} does not exist")
    return _run_from_row(db, names, converters, row)


def run_db_now(run: PipelineRun) -> datetime:
    """The database's time when ``run`` was read by this store (run_read, the
    claim); raises ValueError for a run read some other way, which has none."""
    if run.db_now is None:
        raise ValueError(f"run {run.pk} was not read by the run store: it has no database time")
    return run.db_now


def _reader(db) -> tuple[str, list, dict]:
    """The SQL reading a run's row with the database's time, the row's field
    names and its converters, made by the ORM once per database."""
    reader = _READERS.get(db.alias)
    if reader is None:
        # The read's time comes last in the row, read by position (see _run_from_row).
        compiler = PipelineRun.objects.annotate(read_at=Now()).filter(pk=0).order_by().query.get_compiler(
            connection=db
        )
        sql, params = compiler.as_sql()
        if list(params) != [0] or not sql.startswith("SELECT ") or sql.count(" FROM ") != 1:
            raise RuntimeError(f"unexpected SQL of the run's read: {sql!r} {params!r}")
        columns = [column for column, _, _ in compiler.select]
        names = [column.target.attname for column in columns[:-1]]
        reader = _READERS[db.alias] = (sql, names, compiler.get_converters(columns))
    return reader


def _run_from_row(db, names: list, converters: dict, row) -> PipelineRun:
    row = list(row)
    for position, (functions, expression) in converters.items():
        for convert in functions:
            row[position] = convert(row[position], expression, db)
    run = PipelineRun.from_db(db.alias, names, row[:len(names)])
    run.db_now = row[len(names)]
    return run


# Per database: the claim of a queued run as one UPDATE returning the row (see run_claim_queued).
_CLAIMS: dict = {}


def run_claim_queued(run_id: int, token: str) -> PipelineRun | None:
    """Take run ``run_id`` when it is queued and its definition sets no
    max_concurrent, in one UPDATE that returns the claimed row (its first
    node, read from the snapshot, becomes the current one); None when that
    UPDATE matched nothing (the claim then reads the row and decides) or
    this database has no such statement here.

    On PostgreSQL the claim does not wait for the disk flush: should the
    database lose it in a crash, the run is queued again and the recovery
    sweep sends it, while this process's fenced writes find the row no
    longer its own and stop. The run's end is durable, and so is all before it."""
    db = thread_db()
    claim = _CLAIMS.get(db.alias)
    if claim is None:
        if db.vendor not in ("postgresql", "sqlite"):
            return None
        quote = db.ops.quote_name
        snapshot = quote(_column(PipelineRun, "config_snapshot").column)
        if db.vendor == "postgresql":
            first, unlimited = f"COALESCE({snapshot} -> 'nodes' -> 0 ->> 'id', '')", f"{snapshot} -> 'max_concurrent'"
            flush = ", set_config('synchronous_commit', 'off', true)"
        else:
            first = f"COALESCE(JSON_EXTRACT({snapshot}, '$.nodes[0].id'), '')"
            unlimited, flush = f"JSON_EXTRACT({snapshot}, '$.max_concurrent')", ""
        written = _run_update_sql(
            {"status": PipelineRun.Status.RUNNING.value, "started_at": DbTime(), "claimed_by": "",
             "heartbeat_at": DbTime(), "lease_expires_at": DbTime(settings.RUN_LEASE_SECONDS)},
            f"{quote('id')} = %s AND {quote('status')} = %s AND {unlimited} IS NULL", [],
        )
        if written is None:
            return None
        update = written[0]
        select = _reader(db)[0]
        returning = select[len("SELECT "):select.index(" FROM ")]
        head, _, where = update.partition(" WHERE ")
        claim = _CLAIMS[db.alias] = (
            f"{head}, {quote('current_node')} = {first} WHERE {where} RETURNING {returning}{flush}"
        )
    params = [PipelineRun.Status.RUNNING.value, token, *_lease_params(db), run_id, PipelineRun.Status.QUEUED.value]
    with thread_db().cursor() as cursor:
        cursor.execute(claim, params)
        row = cursor.fetchone()
    if row is None:
        return None
    _, names, converters = _reader(db)
    return _run_from_row(db, names, converters, row)


def _lease_params(db) -> list:
    """The parameter of DbTime(RUN_LEASE_SECONDS) on ``db``."""
    written = DbTime(settings.RUN_LEASE_SECONDS).sql(db.vendor)
    if written is None:
        raise RuntimeError(f"no SQL for the database's time on {db.vendor}")
    return written[1]
