"""Who executes a run: the claim, the lease, fenced writes, takeovers.

A run is held by one process at a time. The holder is named by a token in
``claimed_by`` and keeps ``lease_expires_at`` in the future by renewing it
with its writes and, between them, from a heartbeat thread
(apps/orchestration/heartbeat.py). Every time is the database's (``Now()`` in SQL), so
neither a worker's clock nor its settings decide whether a lease has run out.

Every write of a run's progress is fenced by the holder's token: the run's
row is updated only WHERE claimed_by is the token, and the stage rows of the
same write only while that holds, so when it matches nothing the lease was
lost, nothing is written and LeaseLost is raised: a process that lost its run
writes nothing more. A write is one statement on PostgreSQL (the run's
UPDATE and the stage rows in one WITH); see ``Lease.write`` for SQLite. The
statements themselves live in the run store (apps/orchestration/store.py).
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

import psutil
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.db.models.functions import Now

from apps.orchestration import rollup, store
from apps.orchestration.interrupt import NodeInterrupt
from apps.orchestration.models import PipelineRun, StageExecution
from apps.orchestration.store import DbTime, LeaseLost, thread_db

logger = logging.getLogger("apps.orchestration.lease")

# Published on a run's wake-up channel when someone asks to cancel it; the second asks to
# stop the node being executed too (cancel_run --force). Either makes the holder read the row.
CANCEL_EVENT = "cancel-requested"
CANCEL_STOP_NODE_EVENT = "cancel-requested-stop-node"
CANCEL_EVENTS = (CANCEL_EVENT, CANCEL_STOP_NODE_EVENT)


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

    def __init__(self, db_now: datetime):
        self._base, self._start = db_now, time.monotonic()

    def now(self) -> datetime:
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
    if run.lease_expires_at is None or run.lease_expires_at <= store.run_db_now(run):
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
    error says ``reason`` and that node; ``fields`` must end it (a terminal
    status), which is counted in the metrics' rollup in the same transaction.
    False (nothing written) when the run is not running or has a live holder."""
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
        rollup.run_end_tally(run_id=run_id)
    return True


class Lease:
    """This process's hold on one run, and the fenced writes made under it."""

    def __init__(self, run_id: int, trace_id: str, token: str, clock: DbClock):
        self.run_id, self.trace_id, self.token, self.clock = run_id, trace_id, token, clock
        self.lost = threading.Event()  # set by the heartbeat when a renewal matched nothing
        self.cancel_requested = threading.Event()
        # A cancel that also stops the node being executed (cancel_run --force), heard by the heartbeat.
        self.node_interrupt = NodeInterrupt()
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

    def held(self, *, unless_cancelled: bool):
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
        on_end: Callable[[], None] | None = None,
        log_lines: Sequence[tuple] = (),
    ) -> None:
        """Write ``run_fields`` on the run, save ``stages`` (and ``stage``) and
        insert the run's ``log_lines`` (runlogs.LogLine tuples), fenced by
        this lease's token. A stage row is inserted, or its outcome
        updated when its run, node and attempt have a row already; the
        stages' primary keys are set. Unless ``durable`` (the run's end), the
        same write renews the lease, so the heartbeat has nothing to do while
        writes come. Reconnects through database faults (a write is safe to
        repeat).

        A ``durable`` write is the run's end (``run_fields`` hold its terminal
        status): it is one transaction with the run's count in the metrics'
        rollup (rollup.run_end_tally) and ``on_end``, called after the write
        matched (the run's monitoring state).

        On PostgreSQL a write is one statement and one commit, and only a
        ``durable`` one waits for the disk flush: a database crash could lose
        the last progress records, and the run is then taken over and its
        missing nodes executed again. On SQLite (no UPDATE inside a WITH) the
        stage rows go first, then the run's row, each fenced by the token, so
        a process that dies between the two leaves stage rows that the
        takeover settles (a stage left open is recorded as interrupted, a
        finished one is kept).

        A cancel request seen here sets ``cancel_requested``; with
        ``before_node`` it raises CancelRequested instead and writes nothing.
        Raises LeaseLost (nothing written) and DatabaseUnavailable.
        """
        rows = [*stages, stage] if stage is not None else list(stages)
        lines = list(log_lines)
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
            # The run's end and its count in the metrics' rollup commit together, or neither does.
            with transaction.atomic() if durable else nullcontext():
                if not store.run_write(run_id=self.run_id, token=self.token, fields=fields, stages=rows,
                                       unless_cancelled=True, durable=durable, log_lines=lines):
                    if not self._held.exists():
                        raise LeaseLost(f"run {self.run_id} is no longer held by {self.token}")
                    self.cancel_requested.set()
                    if before_node:
                        raise CancelRequested()
                    if not store.run_write(run_id=self.run_id, token=self.token, fields=fields, stages=rows,
                                           unless_cancelled=False, durable=durable, log_lines=lines):
                        raise LeaseLost(f"run {self.run_id} is no longer held by {self.token}")
                if durable:
                    rollup.run_end_tally(run_id=self.run_id)
                    if on_end is not None:
                        on_end()

        started = time.monotonic()
        with_reconnect(attempt, what=f"recording run {self.run_id}")
        if renew:
            self.renewed_at = started


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
            run = store.run_claim_queued(run_id, token)
            if run is not None:
                return _claimed(run, token, "claimed")
        run = store.run_read(run_id)
        if run.is_terminal:
            return Claim(run, None, "finished")
        if tries and run.status == PipelineRun.Status.RUNNING and run.claimed_by == token:
            reason = "claimed"  # an earlier try committed the claim before its connection failed
            return _claimed(run, token, reason)
        if run.status == PipelineRun.Status.QUEUED:
            nodes = run.config_snapshot.get("nodes") or []
            first = nodes[0]["id"] if nodes else ""
            limit = run.config_snapshot.get("max_concurrent")
            # Only a limited definition pays for a transaction around its claim.
            with transaction.atomic() if limit else nullcontext():
                if limit and not _slot_free(run, limit):
                    return Claim(run, None, "at_limit")
                if not store.run_claim_update(run_id=run_id, token=token, first_node=first):
                    return Claim(run, None, "held")  # another delivery took it, or it was cancelled
            run.status, run.started_at, run.current_node = PipelineRun.Status.RUNNING, run.db_now, first
            reason = "claimed"
        else:
            if not _holder_gone(run):
                return Claim(run, None, "held")
            previous = run.claimed_by
            taken = {"claimed_by": token, "heartbeat_at": Now(), "lease_expires_at": lease_end()}
            with transaction.atomic():
                rows = PipelineRun.objects.filter(pk=run_id, status=PipelineRun.Status.RUNNING, claimed_by=previous)
                if not (run.lease_expires_at is not None and run.lease_expires_at > store.run_db_now(run)):
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


def same_origin(run: PipelineRun):
    """The runs of the same definition (or config file, or the built-in pipeline) as ``run``."""
    return PipelineRun.objects.filter(origin_kind=run.origin_kind, origin=run.origin)


def _slot_free(run: PipelineRun, limit: int) -> bool:
    """Whether fewer than ``limit`` runs of ``run``'s definition are running.
    Call inside the claim's transaction: on PostgreSQL it takes a lock per
    definition until the transaction ends, so two claims cannot both count
    the same last slot (SQLite's write transactions are serial already)."""
    store.definition_slot_lock(origin_kind=run.origin_kind, origin=run.origin)
    return same_origin(run).filter(status=PipelineRun.Status.RUNNING).count() < limit


def _claimed(run: PipelineRun, token: str, reason: str) -> Claim:
    run.claimed_by = token
    lease = Lease(run.pk, run.trace_id, token, DbClock(store.run_db_now(run)))
    if run.cancel_requested_at is not None:
        lease.cancel_requested.set()
    return Claim(run, lease, reason)
