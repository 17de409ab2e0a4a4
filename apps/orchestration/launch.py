"""The launcher: store a LaunchRequest as a queued run, then send its
wake-up message to the workers once the run's row is committed.

Every trigger (the CLI, a schedule's tick, a retry, the admin) comes through
here with the same checks. Bad input raises LaunchError before anything is
written.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from contextlib import nullcontext

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from apps.orchestration import dispatch, engine, rollup
from apps.orchestration.inputs import definition_check, launch_check
from apps.orchestration.launchrequest import (
    AlreadyRetried,
    LaunchError,
    LaunchRequest,
    Refusal,
    RunExists,
    Targets,
)
from apps.orchestration.models import PipelineRun
from apps.orchestration.selectors import run_newest_retry_id
from apps.orchestration.storeinserts import row_insert, rows_insert
from apps.orchestration.targeting import launch_targets, target_host_check
from apps.text import printable

logger = logging.getLogger("apps.orchestration.launch")


def pipeline_run_create(*, request: LaunchRequest) -> PipelineRun:
    """Validate the request, then store a queued run holding a snapshot of
    the definition and the payload (and, for a retry, the run it retries and
    the node results it reuses; for a targeted run, its host and the group
    of runs launched with it). Sends nothing: ``run_execute`` or a worker
    takes it from there.

    Raises LaunchError for bad input and RunExists (creating nothing) when a
    run of the same definition has the request's idempotency key already,
    even when another launch stores it at the same moment; LaunchError
    (CONFLICT) when a run of another definition has it. A retry of a run that
    has a retry already raises AlreadyRetried unless ``retry_again``: the check
    and the INSERT are one transaction holding the retried run's row."""
    definition_check(resolved=request.resolved)
    launch_check(request=request)
    target_host_check(request.target_host)
    return _run_create(request)


def pipeline_run_launch(*, request: LaunchRequest) -> PipelineRun:
    """Validate, store the run as queued, and enqueue it for a worker once
    committed: for the workers serving its ``target_host``, or any worker.

    Raises RunExists when a run has the idempotency key already (nothing is
    stored or sent), LaunchError for bad input, another definition's key or a
    run retried already (nothing stored; see pipeline_run_create) and, as
    UNAVAILABLE, when the broker cannot take the run (the run is then marked
    failed, so nothing runs later by surprise). Inside an enclosing
    transaction the message is sent when that transaction commits; if the
    broker refuses it then, the failure is logged and the run stays queued
    for the recovery sweep to send.
    """
    definition_check(resolved=request.resolved)
    launch_check(request=request)
    target_host_check(request.target_host)
    dispatch.broker_ready()
    return launch_checked(request=request)


def pipeline_run_launch_inline(*, request: LaunchRequest) -> PipelineRun | None:
    """Store the run as pipeline_run_create does, then execute it in this
    process (no broker, no worker); returns it in its terminal state."""
    run = pipeline_run_create(request=request)
    return engine.run_execute(run_id=run.pk)


def pipeline_runs_launch(*, request: LaunchRequest, targets: Targets) -> list[PipelineRun]:
    """Launch the runs ``targets`` (from launch_targets, which checked the
    definition) stand for, as pipeline_run_launch does: one run, or with
    ``fan_out`` one per host sharing a new group id. Raises as
    pipeline_run_launch does, and LaunchError for an idempotency key given
    to several runs; runs launched before a failure stay launched."""
    launch_check(request=request)
    if targets.fan_out and request.idempotency_key is not None:
        raise LaunchError("--idempotency-key names one run: it cannot be used with --host all or a definition's hosts")
    dispatch.broker_ready()
    group_id = uuid.uuid4() if targets.fan_out else None
    return [
        launch_checked(request=dataclasses.replace(request, target_host=host, group_id=group_id))
        for host in targets.hosts
    ]


def pipeline_runs_launch_to(*, request: LaunchRequest, host: str | None) -> tuple[list[PipelineRun], Targets]:
    """Decide where the runs of ``request`` go (targeting.launch_targets with
    ``host``: a host name, ``auto``, ``all``, or None for the definition's
    choice), then launch them as pipeline_runs_launch does. Returns the runs
    and the targets they were launched for (whose ``note`` says what was
    decided for the caller). Raises as both do; nothing is stored when the
    targets cannot be decided."""
    targets = launch_targets(host=host, resolved=request.resolved, payload=request.payload, source=request.source)
    return pipeline_runs_launch(request=request, targets=targets), targets


def launch_checked(*, request: LaunchRequest) -> PipelineRun:
    """pipeline_run_launch once its checks have passed and the broker is ready."""
    # Inside an enclosing transaction the send happens after this returns: only the log can tell.
    outcome = {"nested": transaction.get_connection().in_atomic_block}
    run = _run_create(request)
    # Sent now (the run's INSERT has committed), or when the enclosing transaction commits.
    transaction.on_commit(functools.partial(_enqueue, run, outcome))
    if "error" in outcome and not outcome["nested"]:
        message = f"Could not enqueue run {run.pk}: the broker did not take it ({outcome['error']})"
        run_mark_failed(run_id=run.pk, error=message)
        raise LaunchError(message, Refusal.UNAVAILABLE)
    return run


def run_mark_failed(*, run_id: int, error: str) -> None:
    """Mark a run that never started as failed with ``error`` (when it is still
    queued), counted in the metrics' rollup in the same transaction."""
    now = timezone.now()
    with transaction.atomic():
        if PipelineRun.objects.filter(pk=run_id, status=PipelineRun.Status.QUEUED).update(
            status=PipelineRun.Status.FAILED, error=error, finished_at=now, duration_ms=0
        ):
            rollup.run_end_tally(run_id=run_id)


def _run_create(request: LaunchRequest) -> PipelineRun:
    """pipeline_run_create once its checks have passed."""
    key = request.idempotency_key
    if key is not None:
        existing = PipelineRun.objects.filter(idempotency_key=key).first()
        if existing is not None:
            raise _key_taken(existing, request)
    checked_retry = None if request.retry_again else request.retry_of
    # One INSERT needs no transaction of its own; inside an enclosing one, a savepoint
    # lets a refused idempotency key leave that transaction usable. A retry's check and
    # its INSERT go together, so two retries of one run at once cannot both pass it.
    guarded = checked_retry is not None or (key is not None and transaction.get_connection().in_atomic_block)
    try:
        with transaction.atomic() if guarded else nullcontext():
            if checked_retry is not None:
                _retry_check(checked_retry)
            return _run_store(request)
    except IntegrityError:
        existing = PipelineRun.objects.filter(idempotency_key=key).first() if key else None
        if existing is None:
            raise
        raise _key_taken(existing, request) from None


def _key_taken(existing: PipelineRun, request: LaunchRequest) -> Exception:
    """What a launch whose idempotency key run ``existing`` holds raises:
    RunExists when that run is of the request's definition (the same stored
    definition, config file or built-in pipeline), else LaunchError (CONFLICT)."""
    resolved = request.resolved
    if (existing.origin_kind, existing.origin) == (resolved.kind, resolved.origin):
        return RunExists(existing)
    of = {"definition": "definition ", "config": "config "}.get(existing.origin_kind)
    owner = f"{of}{printable(existing.origin)}" if of else "the built-in pipeline"
    return LaunchError(
        f"Idempotency key {printable(existing.idempotency_key or '')} belongs to run {existing.pk} of {owner}",
        Refusal.CONFLICT,
    )


def _retry_check(original: PipelineRun) -> None:
    """Inside the launch's transaction: lock the row of ``original``, the run
    retried, until it commits (on SQLite the transaction holds the database's
    write lock from its start) and raise AlreadyRetried when that run has a
    retry already, LaunchError (NOT_FOUND) when it is gone."""
    locked = PipelineRun.objects.select_for_update(no_key=True).filter(pk=original.pk).values_list("pk", flat=True)
    if locked.first() is None:
        raise LaunchError(f"Pipeline run not found: {original.pk}", Refusal.NOT_FOUND)
    newest = run_newest_retry_id(run_id=original.pk)
    if newest is not None:
        raise AlreadyRetried(original.pk, newest)


def _run_store(request: LaunchRequest) -> PipelineRun:
    run = run_row(request)
    # published_at: counted from here, a run whose message never reaches the broker is re-sent by the sweep.
    row_insert(run, db_time=("published_at",))
    return run


def run_row(request: LaunchRequest) -> PipelineRun:
    """The queued run ``request`` (checked already) makes, not yet stored."""
    resolved = request.resolved
    return PipelineRun(
        trace_id=request.trace_id or str(uuid.uuid4()),
        target_host=request.target_host,
        group_id=request.group_id,
        trigger=request.trigger,
        idempotency_key=request.idempotency_key,
        retry_of=request.retry_of,
        # The first run of the retry chain, from the run retried as read: no query.
        retry_root=(request.retry_of.retry_root or request.retry_of.pk) if request.retry_of is not None else None,
        reused_results=request.reused_results or {},
        definition=resolved.definition,
        definition_name=resolved.origin if resolved.kind != "config" else "",
        origin=resolved.origin,
        origin_kind=resolved.kind,
        config_snapshot=resolved.config,
        source=request.source,
        environment=request.environment,
        payload=request.payload,
    )


def runs_store_keyed(*, runs: list[PipelineRun]) -> list[PipelineRun]:
    """Store ``runs`` (unsaved rows, from run_row or failed ones that never
    start, each with an idempotency key) with multi-row INSERTs, skipping
    each whose key a run has already; once the enclosing transaction
    commits (at once outside one), send the queued ones' messages. Returns
    the runs stored.

    A broker that refuses the messages raises nothing: the runs stay queued,
    marked as never sent (a batch that failed halfway may have reached the
    broker, and a duplicate message is harmless: the claim drops it), and
    the recovery sweep sends them once the broker is back; one line is
    logged."""
    stored = rows_insert(runs, db_time=("published_at",), unique="idempotency_key")
    for run in stored:
        if run.status in PipelineRun.TERMINAL:
            rollup.run_end_tally(run_id=run.pk)  # a failed tick ends as it is made
    queued = [run for run in stored if run.status == PipelineRun.Status.QUEUED]
    if queued:
        transaction.on_commit(functools.partial(_send_all, queued))
    return stored


def _send_all(runs: list[PipelineRun]) -> None:
    """Send the runs' messages in batches; when the broker refuses, mark them all unsent."""
    try:
        dispatch.broker_ready()
        dispatch.runs_publish(runs)
    except Exception as exc:  # noqa: BLE001 - kombu raises several kinds for an unreachable broker
        unsent = [run.pk for run in runs]
        try:
            # Never sent, as far as is known: the sweep sends them even while it cannot look into the queue.
            PipelineRun.objects.filter(pk__in=unsent, status=PipelineRun.Status.QUEUED).update(published_at=None)
        except DatabaseError:
            pass  # they still carry published_at: the sweep sends them once its grace has passed
        logger.error(
            "event=run.enqueue_failed runs=%d first_run_id=%s error=%s (they stay queued; the recovery sweep "
            "sends them when the broker is back)", len(unsent), unsent[0], f"{type(exc).__name__}: {exc}".strip(),
        )


def _enqueue(run: PipelineRun, outcome: dict) -> None:
    """Send the run's message; a refusal is noted in ``outcome``, and logged
    when the launcher has already returned."""
    try:
        dispatch.run_publish(run_id=run.pk, definition=run.origin, trace_id=run.trace_id, host=run.target_host)
    except Exception as exc:  # noqa: BLE001 - kombu raises several kinds for an unreachable broker
        outcome["error"] = f"{type(exc).__name__}: {exc}"
        if outcome["nested"]:
            logger.error(
                "event=run.enqueue_failed run_id=%s trace_id=%s error=%s (the recovery sweep sends it when it can)",
                run.pk, run.trace_id, outcome["error"],
                extra={"run_id": run.pk, "trace_id": run.trace_id},
            )
