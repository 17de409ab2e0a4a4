"""A schedule's tick: the runs beat's message for one due time launches,
once however often the message is delivered."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid

from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from apps.orchestration import dispatch, rollup
from apps.orchestration.inputs import launch_check
from apps.orchestration.launch import launch_checked
from apps.orchestration.launchrequest import LaunchError, LaunchRequest, ResolvedDefinition, RunExists
from apps.orchestration.models import PipelineDefinition, PipelineRun
from apps.orchestration.schedules import schedule_disable
from apps.orchestration.targeting import launch_targets
from apps.orchestration.validation import validate_definition
from apps.text import printable

logger = logging.getLogger("apps.orchestration.ticks")


def pipeline_run_schedule(*, definition_name: str, due: str | None = None) -> list[PipelineRun]:
    """Launch the scheduled runs of the definition ``definition_name`` for
    the tick due at ``due`` (an ISO time; it makes the runs' idempotency
    keys, so a tick delivered twice launches once): one run, or one per host
    of the definition's "hosts" sharing a group id.

    Returns the runs, the runs an earlier delivery of this tick made, or an
    empty list when the tick is skipped because the schedule's overlap
    policy is "skip" and a scheduled run of the definition is still queued
    or running. A definition that was deleted, made inactive or no longer
    validates, or whose "hosts": "all" finds no live worker host, gives a
    failed run saying why (a deleted one also has its schedule disabled).
    """
    key = f"schedule:{definition_name}:{due}" if due else None
    with transaction.atomic():
        # One tick at a time per definition, so the overlap check and the launch go together.
        definition = PipelineDefinition.objects.select_for_update().filter(name=definition_name).first()
        earlier = PipelineRun.objects.filter(idempotency_key=key).first() if key else None
        if earlier is not None:
            _log_duplicate(definition_name, due, earlier)
            return [earlier]
        if definition is None:
            schedule_disable(definition_name=definition_name)
            return [_schedule_failed(definition_name, None, key, "it no longer exists; its schedule is disabled")]
        if not definition.is_active:
            return [_schedule_failed(definition_name, definition, key, "it is inactive")]
        messages = validate_definition(definition.config)
        if messages:
            return [_schedule_failed(definition_name, definition, key, "it is invalid: " + "; ".join(messages))]
        schedule = definition.config.get("schedule") or {}
        resolved = ResolvedDefinition(definition.config, "definition", definition.name, definition)
        request = LaunchRequest(
            resolved=resolved, payload=schedule.get("payload") or {}, source="auto",
            trigger=PipelineRun.Trigger.SCHEDULE,
        )
        try:
            targets = launch_targets(host=None, resolved=resolved, payload=request.payload, source="auto")
        except LaunchError as exc:
            return [_schedule_failed(definition_name, definition, key, str(exc).split("\n")[0])]
        if schedule.get("overlap", "skip") == "skip":
            # Per host: a run waiting for a host whose worker is down holds back only that host's ticks.
            active = {
                run.target_host: run for run in PipelineRun.objects.filter(
                    definition=definition, trigger=PipelineRun.Trigger.SCHEDULE, status__in=PipelineRun.ACTIVE
                ).only("pk", "status", "target_host", "trace_id")
            }
            for host in [host for host in targets.hosts if host in active]:
                run = active[host]
                logger.info(
                    "event=schedule.skipped definition=%s due=%s reason=overlap run_id=%s status=%s host=%s",
                    definition_name, due, run.pk, run.status, host or "-",
                    extra={"run_id": run.pk, "trace_id": run.trace_id},
                )
            targets.hosts = [host for host in targets.hosts if host not in active]
            if not targets.hosts:
                return []
        try:
            launch_check(request=request)
            dispatch.broker_ready()
        except LaunchError as exc:
            return [_schedule_failed(definition_name, definition, key, str(exc))]
        group_id = uuid.uuid4() if targets.fan_out else None
        runs = []
        for host in targets.hosts:
            # Each host's run of a tick has a key of its own.
            run_key = _host_key(key, host) if key and targets.fan_out else key
            try:
                run = launch_checked(
                    request=dataclasses.replace(request, idempotency_key=run_key, target_host=host, group_id=group_id)
                )
            except RunExists as exc:
                _log_duplicate(definition_name, due, exc.run)
                runs.append(exc.run)
                continue
            logger.info(
                "event=schedule.launched definition=%s due=%s run_id=%s trace_id=%s host=%s",
                definition_name, due, run.pk, run.trace_id, host or "-",
                extra={"run_id": run.pk, "trace_id": run.trace_id},
            )
            runs.append(run)
    return runs


def _log_duplicate(definition_name: str, due: str | None, run: PipelineRun) -> None:
    logger.info(
        "event=schedule.duplicate definition=%s due=%s run_id=%s", definition_name, due, run.pk,
        extra={"run_id": run.pk, "trace_id": run.trace_id},
    )


def _host_key(key: str, host: str) -> str:
    """``key`` made host ``host``'s own, within the 200 characters a key may hold."""
    keyed = f"{key}@{host}"
    return keyed if len(keyed) <= 200 else f"{key[:150]}@{hashlib.sha256(keyed.encode()).hexdigest()[:40]}"


def _schedule_failed(name: str, definition: PipelineDefinition | None, key: str | None, why: str) -> PipelineRun:
    """A failed scheduled run of ``name`` that says ``why`` it could not start."""
    error = printable(f"Scheduled definition '{name}' cannot run: {why}")
    logger.error("event=schedule.failed definition=%s error=%s", name, error)
    fields = dict(
        trace_id=str(uuid.uuid4()),
        trigger=PipelineRun.Trigger.SCHEDULE,
        idempotency_key=key,
        definition=definition,
        definition_name=name,
        origin=name,
        origin_kind="definition",
        config_snapshot=definition.config if definition is not None else {},
        source="auto",
        status=PipelineRun.Status.FAILED,
        error=error,
        finished_at=Now(),
        duration_ms=0,
    )
    try:
        with transaction.atomic():
            run = PipelineRun.objects.create(**fields)
            rollup.run_end_tally(run_id=run.pk)  # it ends as it is made
            return run
    except IntegrityError:
        existing = PipelineRun.objects.filter(idempotency_key=key).first() if key else None
        if existing is None:
            raise
        return existing  # an earlier delivery of this tick recorded it
