"""Who executes a run: the claim, the lease and its heartbeat, fenced writes.

A run is held by one process at a time. The holder is named by a token in
``claimed_by`` and keeps ``lease_expires_at`` in the future by renewing it
from a heartbeat thread. Every time is the database's (``Now()`` in SQL), so
neither a worker's clock nor its settings decide whether a lease has run out.

Every write of a run's progress is fenced by the holder's token: the run's
row is updated only WHERE claimed_by is the token, and the stage rows of the
same write only while that holds, so when it matches nothing the lease was
lost, nothing is written and LeaseLost is raised: a process that lost its run
writes nothing more. A write is one statement on PostgreSQL (the run's
UPDATE and the stage rows in one WITH); see ``Lease.write`` for SQLite.
"""
from __future__ import annotations

import contextvars
import functools
import hashlib
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from datetime import timedelta

import psutil
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.db.models.sql import UpdateQuery

from apps.orchestration import events
from apps.orchestration.models import PipelineRun, StageExecution
from apps.orchestration.statements import DbTime, statement_cursor, thread_db

logger = logging.getLogger("apps.orchestration.lease")

CANCEL_EVENT = "cancel-requested"


class LeaseLost(Exception):
    """Another process holds the run now (it took the run over, or the run was ended)."""


class CancelRequested(Exception):
    """Someone asked to cancel the run; raised before a node starts, nothing written."""


class DatabaseUnavailable(Exception):
    """The database stayed unreachable for longer than RUN_DB_RETRY_SECONDS."""


def new_token() -> str:
    """A token naming this process and this claim: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_end():
    """The end of a lease taken or renewed now, on the database's clock."""
    return Now() + timedelta(seconds=settings.RUN_LEASE_SECONDS)


def lease_expired() -> Q:
    """Runs whose holder has not renewed its lease in time (database time)."""
    return Q(lease_expires_at__lt=Now()) | Q(lease_expires_at__isnull=True)


class DbClock:
    """The database's time as read at the claim, carried forward on this
    process's monotonic clock, for the timestamps a run records."""

    def __init__(self, db_now):
        self._base, self._start = db_now, time.monotonic()

    def now(self):
        return self._base + timedelta(seconds=time.monotonic() - self._start)


def with_reconnect(action, *, what: str):
    """Call ``action(tries)`` (``tries``: how many calls failed before); when
    the database connection fails, reconnect and call it again, for up to
    RUN_DB_RETRY_SECONDS. ``action`` must be safe to repeat. Raises
    DatabaseUnavailable when the database stays away."""
    deadline = time.monotonic() + settings.RUN_DB_RETRY_SECONDS
    delay, tries = 0.25, 0
    while True:
        try:
            return action(tries)
        except (OperationalError, InterfaceError) as exc:
            if connection.in_atomic_block:
                raise  # an enclosing transaction is gone with the connection: its owner decides
            connection.close()
            tries += 1
            if time.monotonic() + delay > deadline:
                raise DatabaseUnavailable(f"{what}: {type(exc).__name__}: {exc}".strip()) from exc
            logger.warning("event=db.retry what=%s try=%d error=%s", what, tries, type(exc).__name__)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _holder_gone(run: PipelineRun) -> bool:
    """Whether ``run``'s holder is gone: its lease ran out (database time), or
    it was a process of this host that no longer exists."""
    if run.lease_expires_at is None or run.lease_expires_at <= run.db_now:
        return True
    host, _, rest = run.claimed_by.partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


def stages_interrupted(*, run: PipelineRun, holder: str) -> None:
    """Record the node a lost holder was executing as failed: it never finished.

    That is the run's open stage; or, when the run's current node has no stage
    at all, the current node itself: a run's claim stands for the start of its
    first node, whose stage is written with its end (engine._Execution._write),
    so a holder lost during that node left no row for it."""
    errors = [f"interrupted: the process executing it ({holder or 'unknown'}) was lost"]
    stages = StageExecution.objects.filter(run_id=run.pk)
    failed = {"status": StageExecution.Status.FAILED, "errors": errors, "finished_at": Now()}
    if stages.filter(status=StageExecution.Status.RUNNING).update(**failed) or not run.current_node:
        return
    if run.current_node in (run.reused_results or {}):
        return  # a retry's node that its original run executed: never executed here
    if stages.filter(node_id=run.current_node).exists():
        return
    nodes = run.config_snapshot.get("nodes") or []
    node_type = next((n.get("type") or "" for n in nodes if n.get("id") == run.current_node), "")
    stage = StageExecution.objects.create(run_id=run.pk, node_id=run.current_node, node_type=node_type, **failed)
    if run.started_at is not None:  # the claim's time: when the node started
        stages.filter(pk=stage.pk).update(started_at=run.started_at)


def run_end_abandoned(*, run_id: int, fields: dict, reason: str) -> bool:
    """End running run ``run_id`` with ``fields`` when its holder is gone (its
    lease ran out), recording the node it was executing as interrupted; the
    error says ``reason`` and that node. False (nothing written) when the run
    is not running or has a live holder."""
    with transaction.atomic():
        run = (
            PipelineRun.objects.select_for_update()
            .filter(lease_expired(), pk=run_id, status=PipelineRun.Status.RUNNING)
            .first()
        )
        if run is None:
            return False
        node = run.current_node
        stages_interrupted(run=run, holder=run.claimed_by)
        PipelineRun.objects.filter(pk=run_id).update(
            error=f"{reason}; its worker was gone (at node '{node}')" if node else reason, **fields
        )
    return True


class Lease:
    """This process's hold on one run, and the fenced writes made under it."""

    def __init__(self, run_id: int, trace_id: str, token: str, clock: DbClock):
        self.run_id, self.trace_id, self.token, self.clock = run_id, trace_id, token, clock
        self.lost = threading.Event()  # set by the heartbeat when a renewal matched nothing
        self.cancel_requested = threading.Event()
        self.ending = threading.Event()  # set when the run's end is being written
        # When a write last renewed the lease (this process's monotonic clock; the claim
        # took it just now): the heartbeat renews only after a whole interval without one.
        self.renewed_at = time.monotonic()

    # Built when first used (the heartbeat, a refused write), then reused: each update or read works on a copy.
    @functools.cached_property
    def _held(self):
        return PipelineRun.objects.filter(pk=self.run_id, claimed_by=self.token, status=PipelineRun.Status.RUNNING)

    @functools.cached_property
    def _held_uncancelled(self):
        return self._held.filter(cancel_requested_at__isnull=True)

    def _mine(self, *, unless_cancelled: bool):
        """The run's row while this process holds it (and, with ``unless_cancelled``,
        while nobody has asked to cancel it)."""
        return self._held_uncancelled if unless_cancelled else self._held

    def write(
        self,
        *,
        run_fields: dict,
        stages: Sequence[StageExecution] = (),
        stage: StageExecution | None = None,
        before_node: bool = False,
        durable: bool = False,
    ) -> None:
        """Write ``run_fields`` on the run and save ``stages`` (and ``stage``),
        fenced by this lease's token. A stage row is inserted, or its outcome
        updated when its run, node and attempt have a row already; the
        stages' primary keys are set. Unless ``durable`` (the run's end), the
        same write renews the lease, so the heartbeat has nothing to do while
        writes come. Reconnects through database faults (a write is safe to
        repeat).

        On PostgreSQL a write is one statement and one commit, and only a
        ``durable`` one waits for the disk flush: a database crash could lose
        the last progress records, and the run is then taken over and its
        missing nodes executed again. On SQLite (no UPDATE inside a WITH) the
        stage rows go first, then the run's row, each fenced by the token, so
        a process that dies between the two leaves stage rows that the
        takeover settles (a stage left open is recorded as interrupted, a
        finished one is kept); a ``durable`` write there is one transaction.

        A cancel request seen here sets ``cancel_requested``; with
        ``before_node`` it raises CancelRequested instead and writes nothing.
        Raises LeaseLost (nothing written) and DatabaseUnavailable.
        """
        rows = [*stages, stage] if stage is not None else list(stages)
        for row in rows:
            if row.started_at is None:
                row.started_at = self.clock.now()
        postgresql = thread_db().vendor == "postgresql"
        # PostgreSQL updates the run's row in every write (its lock is the fence), so it renews there too.
        renew = not durable and bool(run_fields or postgresql)
        fields = dict(run_fields)
        if renew:
            fields.update(heartbeat_at=DbTime(), lease_expires_at=DbTime(settings.RUN_LEASE_SECONDS))
        if durable:
            self.ending.set()

        def attempt(tries: int) -> None:
            with transaction.atomic() if durable and not postgresql else nullcontext():
                if self._write_once(fields, rows, unless_cancelled=True, durable=durable):
                    return
                if not self._held.exists():
                    raise LeaseLost(f"run {self.run_id} is no longer held by {self.token}")
                self.cancel_requested.set()
                if before_node:
                    raise CancelRequested()
                if not self._write_once(fields, rows, unless_cancelled=False, durable=durable):
                    raise LeaseLost(f"run {self.run_id} is no longer held by {self.token}")

        started = time.monotonic()
        with_reconnect(attempt, what=f"recording run {self.run_id}")
        if renew:
            self.renewed_at = started

    def _write_once(self, fields: dict, stages: list, *, unless_cancelled: bool, durable: bool) -> bool:
        """One try of a write; False when the fence matched nothing (and nothing was written)."""
        db = thread_db()
        if db.vendor == "postgresql":
            update = self._update_sql(fields, unless_cancelled=unless_cancelled)
            return _write_in_one_statement(update, stages, durable=durable)
        if stages:
            fence, fence_params = self._fence_sql(unless_cancelled=unless_cancelled)
            table = db.ops.quote_name(PipelineRun._meta.db_table)
            sql, params = _stages_upsert_sql(stages, f"EXISTS (SELECT 1 FROM {table} WHERE {fence})", fence_params)
            with db.cursor() as cursor:
                cursor.execute(sql, params)
                written = cursor.fetchall()
            if not written:
                return False
            _set_stage_keys(stages, written)
            if fields and not _row_count(self._update_sql(fields, unless_cancelled=False)):
                # Taken over between the two statements: the takeover has recorded the stages just written.
                raise LeaseLost(f"run {self.run_id} is no longer held by {self.token}")
            return True
        return bool(_row_count(self._update_sql(fields, unless_cancelled=unless_cancelled))) if fields else True

    # The fenced writes' SQL is written out here: the ORM took longer to build
    # such a statement (about 250 µs) than the database to execute it (15 µs).

    def _fence_sql(self, *, unless_cancelled: bool) -> tuple[str, list]:
        """The WHERE condition of the run's row while this process holds it (see _mine)."""
        quote = thread_db().ops.quote_name
        sql = f"{quote('id')} = %s AND {quote('claimed_by')} = %s AND {quote('status')} = %s"
        if unless_cancelled:
            sql += f" AND {quote('cancel_requested_at')} IS NULL"
        return sql, [self.run_id, self.token, PipelineRun.Status.RUNNING.value]

    def _update_sql(self, fields: dict, *, unless_cancelled: bool) -> tuple[str, list]:
        """The fenced UPDATE writing ``fields`` on the run's row (values, or DbTime)."""
        fence, fence_params = self._fence_sql(unless_cancelled=unless_cancelled)
        written = _run_update_sql(fields, fence, fence_params)
        if written is not None:
            return written
        query = self._mine(unless_cancelled=unless_cancelled).query.chain(UpdateQuery)
        query.add_update_values({k: v.expression() if isinstance(v, DbTime) else v for k, v in fields.items()})
        return query.get_compiler(connection=connection).as_sql()


# Per (database alias, WHERE, the fields written and which of them are the database's time):
# the UPDATE's SQL and, per field, its adapter (None: the database's time, with its parameters).
_UPDATES: dict = {}


def _run_update_sql(fields: dict, where: str, where_params: list) -> tuple[str, list] | None:
    """UPDATE of the run's row writing ``fields`` (values, or DbTime) WHERE ``where``;
    None when a value is an ORM expression (the ORM then writes it)."""
    db = thread_db()
    shape = []
    for name, value in fields.items():
        if isinstance(value, DbTime):
            shape.append((name, value.seconds))
        elif hasattr(value, "resolve_expression"):
            return None
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
    for (name, _), (adapt, time_params) in zip(shape, steps):
        if adapt is None:
            params += time_params
        else:
            params.append(adapt(fields[name]))
    return sql, params + where_params


def _run_update_plan(db, shape: tuple, where: str) -> tuple[str, list] | None:
    quote = db.ops.quote_name
    sets, steps = [], []
    for name, seconds in shape:
        if seconds is not None:
            written = DbTime(seconds).sql(db.vendor)
            if written is None:
                return None
            sql, time_params = written
            steps.append((None, time_params))
        else:
            sql = "%s"
            steps.append((_adapter(PipelineRun._meta.get_field(name), db), None))
        sets.append(f"{quote(PipelineRun._meta.get_field(name).column)} = {sql}")
    return f"UPDATE {quote(PipelineRun._meta.db_table)} SET {', '.join(sets)} WHERE {where}", steps


def _row_count(statement: tuple[str, list]) -> int:
    with statement_cursor() as cursor:
        cursor.execute(*statement)
        return cursor.rowcount


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
        fields = [meta.get_field(name) for name in _STAGE_COLUMNS]
        adapters = [(f.attname, _adapter(f, db)) for f in fields]
        quote = db.ops.quote_name
        if db.vendor == "postgresql":
            # Typed: a VALUES column holding only NULLs or literals would be text.
            slots = "(" + ", ".join(f"CAST(%s AS {f.db_type(db)})" for f in fields) + ")"
        else:
            slots = "(" + ", ".join("%s" for _ in fields) + ")"
        outcome = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in (meta.get_field(n).column
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


def _write_in_one_statement(update: tuple[str, list], stages: list, *, durable: bool) -> bool:
    """The fenced write as one PostgreSQL statement: the run's UPDATE (which waits
    for a takeover changing the row, then checks the token again) and the
    stage rows only when it matched. Returns whether it matched."""
    update_sql, update_params = update
    ctes, params = f"WITH held AS ({update_sql} RETURNING 1)", list(update_params)
    rows, source = "NULL::bigint, NULL::text, NULL::integer", ""
    if stages:
        upsert_sql, upsert_params = _stages_upsert_sql(stages, "EXISTS (SELECT 1 FROM held)", [])
        ctes += f", staged AS ({upsert_sql})"
        params += upsert_params
        rows, source = "staged.*", " FROM (SELECT 1) AS one LEFT JOIN staged ON true"
    # synchronous_commit is read when the statement's transaction commits.
    flush = "" if durable else ", set_config('synchronous_commit', 'off', true)"
    with statement_cursor() as cursor:
        cursor.execute(f"{ctes} SELECT (SELECT count(*) FROM held), {rows}{flush}{source}", params)
        result = cursor.fetchall()
    if not result[0][0]:
        return False
    _set_stage_keys(stages, [row[1:4] for row in result])
    return True


@dataclass
class Claim:
    """The outcome of a claim. ``lease`` is None when the run is not this
    process's to execute: it is finished (``reason`` "finished") or a live
    process holds it ("held"), or its definition's max_concurrent runs are
    running already ("at_limit": it stays queued until one of them ends)."""

    run: PipelineRun
    lease: Lease | None
    reason: str  # "claimed", "taken_over", "finished", "held" or "at_limit"

    @property
    def resumed(self) -> bool:
        return self.reason == "taken_over"


def run_claim(*, run_id: int, token: str) -> Claim:
    """Take run ``run_id`` for the process named by ``token``.

    A queued run is taken with one conditional UPDATE, so of two deliveries
    only one gets it. A running run is taken over only when its holder is
    gone (its lease ran out, or its process died on this host); the node it
    was executing is then recorded as interrupted. Raises
    PipelineRun.DoesNotExist for an unknown id, DatabaseUnavailable.
    """

    def attempt(tries: int) -> Claim:
        if not tries:
            run = _claim_queued(run_id, token)
            if run is not None:
                return _claimed(run, token, "claimed")
        run = run_read(run_id)
        if run.is_terminal:
            return Claim(run, None, "finished")
        if tries and run.status == PipelineRun.Status.RUNNING and run.claimed_by == token:
            reason = "claimed"  # an earlier try committed the claim before its connection failed
            return _claimed(run, token, reason)
        taken = {"claimed_by": token, "heartbeat_at": Now(), "lease_expires_at": lease_end()}
        if run.status == PipelineRun.Status.QUEUED:
            nodes = run.config_snapshot.get("nodes") or []
            first = nodes[0]["id"] if nodes else ""
            limit = run.config_snapshot.get("max_concurrent")
            quote = connection.ops.quote_name
            claim = _run_update_sql(
                {"status": PipelineRun.Status.RUNNING.value, "started_at": DbTime(), "current_node": first,
                 "claimed_by": token, "heartbeat_at": DbTime(), "lease_expires_at": DbTime(settings.RUN_LEASE_SECONDS)},
                f"{quote('id')} = %s AND {quote('status')} = %s", [run_id, PipelineRun.Status.QUEUED.value],
            )
            # Only a limited definition pays for a transaction around its claim.
            with transaction.atomic() if limit else nullcontext():
                if limit and not _slot_free(run, limit):
                    return Claim(run, None, "at_limit")
                if claim is not None:
                    claimed = _row_count(claim)
                else:
                    rows = PipelineRun.objects.filter(pk=run_id, status=PipelineRun.Status.QUEUED)
                    claimed = rows.update(
                        status=PipelineRun.Status.RUNNING, started_at=Now(), current_node=first, **taken
                    )
                if not claimed:
                    return Claim(run, None, "held")  # another delivery took it, or it was cancelled
            run.status, run.started_at, run.current_node = PipelineRun.Status.RUNNING, run.db_now, first
            reason = "claimed"
        else:
            if not _holder_gone(run):
                return Claim(run, None, "held")
            previous = run.claimed_by
            with transaction.atomic():
                rows = PipelineRun.objects.filter(pk=run_id, status=PipelineRun.Status.RUNNING, claimed_by=previous)
                if not (run.lease_expires_at is not None and run.lease_expires_at > run.db_now):
                    rows = rows.filter(lease_expired())  # the holder must not have renewed meanwhile
                if not rows.update(**taken):
                    return Claim(run, None, "held")
                stages_interrupted(run=run, holder=previous)
            logger.warning(
                "event=run.taken_over run_id=%s trace_id=%s previous=%s", run_id, run.trace_id, previous or "unknown",
                extra={"run_id": run_id, "trace_id": run.trace_id},
            )
            reason = "taken_over"
        return _claimed(run, token, reason)

    return with_reconnect(attempt, what=f"claiming run {run_id}")


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
    with statement_cursor() as cursor:
        cursor.execute(sql, [run_id])
        row = cursor.fetchone()
    if row is None:
        raise PipelineRun.DoesNotExist(f"PipelineRun {run_id} does not exist")
    return _run_from_row(db, names, converters, row)


def _reader(db) -> tuple[str, list, dict]:
    """The SQL reading a run's row with the database's time, the row's field
    names and its converters, made by the ORM once per database."""
    reader = _READERS.get(db.alias)
    if reader is None:
        compiler = PipelineRun.objects.annotate(db_now=Now()).filter(pk=0).order_by().query.get_compiler(
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


# Per database: the claim of a queued run as one UPDATE returning the row (see _claim_queued).
_CLAIMS: dict = {}


def _claim_queued(run_id: int, token: str) -> PipelineRun | None:
    """Take run ``run_id`` when it is queued and its definition sets no
    max_concurrent, in one UPDATE that returns the claimed row (its first
    node, read from the snapshot, becomes the current one); None when that
    UPDATE matched nothing (run_claim then reads the row and decides) or
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
        snapshot = quote(PipelineRun._meta.get_field("config_snapshot").column)
        if db.vendor == "postgresql":
            first, unlimited = f"COALESCE({snapshot} -> 'nodes' -> 0 ->> 'id', '')", f"{snapshot} -> 'max_concurrent'"
            flush = ", set_config('synchronous_commit', 'off', true)"
        else:
            first = f"COALESCE(JSON_EXTRACT({snapshot}, '$.nodes[0].id'), '')"
            unlimited, flush = f"JSON_EXTRACT({snapshot}, '$.max_concurrent')", ""
        update, _ = _run_update_sql(
            {"status": PipelineRun.Status.RUNNING.value, "started_at": DbTime(), "claimed_by": "",
             "heartbeat_at": DbTime(), "lease_expires_at": DbTime(settings.RUN_LEASE_SECONDS)},
            f"{quote('id')} = %s AND {quote('status')} = %s AND {unlimited} IS NULL", [],
        )
        select = _reader(db)[0]
        returning = select[len("SELECT "):select.index(" FROM ")]
        head, _, where = update.partition(" WHERE ")
        claim = _CLAIMS[db.alias] = f"{head}, {quote('current_node')} = {first} WHERE {where} RETURNING {returning}{flush}"
    params = [PipelineRun.Status.RUNNING.value, token, *_lease_params(db), run_id, PipelineRun.Status.QUEUED.value]
    with statement_cursor() as cursor:
        cursor.execute(claim, params)
        row = cursor.fetchone()
    if row is None:
        return None
    _, names, converters = _reader(db)
    return _run_from_row(db, names, converters, row)


def _lease_params(db) -> list:
    """The parameter of DbTime(RUN_LEASE_SECONDS) on ``db``."""
    return DbTime(settings.RUN_LEASE_SECONDS).sql(db.vendor)[1]


def same_origin(run: PipelineRun):
    """The runs of the same definition (or config file, or the built-in pipeline) as ``run``."""
    return PipelineRun.objects.filter(origin_kind=run.origin_kind, origin=run.origin)


def _slot_free(run: PipelineRun, limit: int) -> bool:
    """Whether fewer than ``limit`` runs of ``run``'s definition are running.
    Call inside the claim's transaction: on PostgreSQL it takes a lock per
    definition until the transaction ends, so two claims cannot both count
    the same last slot (SQLite's write transactions are serial already)."""
    if connection.vendor == "postgresql":
        digest = hashlib.blake2b(f"{run.origin_kind}:{run.origin}".encode(), digest_size=8).digest()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)])
    return same_origin(run).filter(status=PipelineRun.Status.RUNNING).count() < limit


def _claimed(run: PipelineRun, token: str, reason: str) -> Claim:
    run.claimed_by = token
    lease = Lease(run.pk, run.trace_id, token, DbClock(run.db_now))
    if run.cancel_requested_at is not None:
        lease.cancel_requested.set()
    return Claim(run, lease, reason)


class Heartbeat:
    """Renews a lease from a background thread while its run executes (when no
    write has renewed it for an interval), and listens on the run's wake-up
    channel for cancel requests.

    The thread starts once the run has gone on for ``start_after`` seconds
    (a second, or half an interval when that is shorter): a run that ends
    sooner renews its lease and sees cancel requests through its own writes,
    and costs no thread and no subscription. A thread started late reads
    the run's row once for a cancel request it could not hear.

    Database errors do not end it: it reconnects and tries again at the next
    beat. A renewal that matches nothing sets ``lease.lost``.
    """

    def __init__(self, lease: Lease):
        self.lease = lease
        self.interval = settings.RUN_LEASE_SECONDS / 3
        self.start_after = min(1.0, self.interval / 2)
        self._stop = threading.Event()
        self._started = threading.Event()  # set once the starter has started the thread
        self._events = ExitStack()
        self._subscription = None
        # The thread runs in a copy of this context, so its log lines carry the run's ids (apps/logcontext.py).
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name=f"heartbeat-{lease.run_id}", daemon=True
        )

    @property
    def _ids(self) -> dict:
        """The ``extra`` of a line about this lease's run."""
        return {"run_id": self.lease.run_id, "trace_id": self.lease.trace_id}

    def __enter__(self) -> Heartbeat:
        _starter.add(self, time.monotonic() + self.start_after)
        return self

    def __exit__(self, *exc) -> None:
        if _starter.remove(self):
            return  # the run ended before its heartbeat was needed
        self._started.wait(5)  # being started right now
        # The thread ends at once on the run's final status, or within a second of this (a
        # run lost midway, or a final status sent before it subscribed); it renews nothing
        # once stopped, so the run's process goes on without waiting for it (a run that frees
        # a max_concurrent slot wakes the next one now, not a second later).
        self._stop.set()

    def _start(self) -> None:
        """Start the thread (called by the starter)."""
        try:
            self._thread.start()
        finally:
            self._started.set()

    def _run(self) -> None:
        _leave_timer_signal_to_main_thread()
        try:
            # Subscribed before the row is read, so a cancel request is either in the row or heard;
            # the run's final status, published as it ends, reaches the thread and ends it at once.
            self._subscription = self._events.enter_context(events.run_events(run_id=self.lease.run_id))
            if not self._stop.is_set() and self._cancel_stored():
                self._cancel_seen()
            next_beat = self.lease.renewed_at + self.interval
            while not self._stop.is_set():
                remaining = next_beat - time.monotonic()
                if remaining <= 0:
                    if self.lease.renewed_at + self.interval > time.monotonic():
                        next_beat = self.lease.renewed_at + self.interval  # a write renewed it meanwhile
                        continue
                    next_beat = time.monotonic() + (self.interval if self._renew() else min(self.interval, 1.0))
                    continue
                message = self._subscription.wait(remaining, stop=self._stop)
                if message in PipelineRun.TERMINAL:
                    return  # the run ended
                if message == CANCEL_EVENT and self._cancel_stored():
                    self._cancel_seen()
        finally:
            self._events.close()
            connection.close()

    def _cancel_stored(self) -> bool:
        """Whether the run's row holds a cancel request: a wake-up is only a hint."""
        try:
            return PipelineRun.objects.filter(pk=self.lease.run_id, cancel_requested_at__isnull=False).exists()
        except DatabaseError:
            connection.close()
            return False  # the next renewal, or the next node boundary, reads it again

    def _cancel_seen(self) -> None:
        if not self.lease.cancel_requested.is_set():
            self.lease.cancel_requested.set()
            logger.info(
                "event=run.cancel_requested run_id=%s trace_id=%s", self.lease.run_id, self.lease.trace_id,
                extra=self._ids,
            )

    def _renew(self) -> bool:
        """One renewal; False when the database could not be reached."""
        renew = {"heartbeat_at": Now(), "lease_expires_at": lease_end()}
        try:
            if self.lease._mine(unless_cancelled=True).update(**renew):
                return True
            if self.lease._mine(unless_cancelled=False).update(**renew):
                self._cancel_seen()
                return True
        except DatabaseError as exc:
            logger.warning(
                "event=heartbeat.error run_id=%s trace_id=%s error=%s",
                self.lease.run_id, self.lease.trace_id, f"{type(exc).__name__}: {exc}".strip(),
                extra=self._ids,
            )
            connection.close()
            return False
        if not (self._stop.is_set() or self.lease.ending.is_set()):
            self.lease.lost.set()
            logger.warning(
                "event=heartbeat.lease_lost run_id=%s trace_id=%s worker=%s",
                self.lease.run_id, self.lease.trace_id, self.lease.token,
                extra=self._ids,
            )
        return True


def _leave_timer_signal_to_main_thread() -> None:
    """Block SIGALRM in this thread. A node's time limit (engine._time_limit)
    is a SIGALRM timer whose handler must interrupt the node's blocking call
    in the main thread; a signal the kernel hands to another thread would
    only be handled once that call returns on its own."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})


class _Starter:
    """Starts each heartbeat's thread when it is due, from one thread per
    process (started when first needed, and again in a forked child)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._due: dict[Heartbeat, float] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = None
        self._sleeping_until = math.inf  # woken only for a heartbeat due earlier (a wake-up costs a thread switch)

    def add(self, beat: Heartbeat, at: float) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid, self._sleeping_until = os.getpid(), math.inf
                self._thread = threading.Thread(target=self._loop, name="heartbeat-starter", daemon=True)
                self._thread.start()
            self._due[beat] = at
            wake = at < self._sleeping_until
        if wake:
            self._wake.set()

    def remove(self, beat: Heartbeat) -> bool:
        """Forget ``beat``; True when its thread was not started (and now never will be)."""
        with self._lock:
            return self._due.pop(beat, None) is not None

    def _loop(self) -> None:
        _leave_timer_signal_to_main_thread()
        while True:
            with self._lock:
                now = time.monotonic()
                due = [beat for beat, at in self._due.items() if at <= now]
                for beat in due:
                    del self._due[beat]
                self._sleeping_until = min(self._due.values(), default=math.inf)
                wait = min(self._sleeping_until - now, 60)
            for beat in due:
                try:
                    beat._start()
                except Exception:  # a thread that cannot start: the run's writes still renew and fence it
                    logger.exception("event=heartbeat.start_failed run_id=%s", beat.lease.run_id)
            self._wake.wait(max(wait, 0))
            self._wake.clear()


_starter = _Starter()
