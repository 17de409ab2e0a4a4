"""A schedule's tick: the runs one due time of a schedule launches, once
however often it is fired or delivered.

Beat fires the pipeline schedules itself (``schedules_fire``): one indexed
query over the schedules' clocks finds what is due, and the runs of every
due tick are written with multi-row INSERTs in one transaction, fenced by
beat's lease, then sent once it has committed. A tick sent as a message
(``orchestration.run_scheduled``) goes through ``pipeline_run_schedule``.
Both keep the same rules: overlap, hosts, keys, failed runs saying why."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Now

from apps.hostnames import ALL
from apps.orchestration import beatstate, dispatch, rollup
from apps.orchestration.inputs import launch_check
from apps.orchestration.launch import launch_checked, run_row, runs_store_keyed
from apps.orchestration.launchrequest import LaunchError, LaunchRequest, Refusal, ResolvedDefinition, RunExists, Targets
from apps.orchestration.models import PipelineDefinition, PipelineRun, ScheduleState
from apps.orchestration.schedules import SCHEDULE_KEY_PREFIX, schedule_disable
from apps.orchestration.targeting import checked_targets, target_choice
from apps.orchestration.validation import validate_definition
from apps.text import printable

logger = logging.getLogger("apps.orchestration.ticks")


def pipeline_run_schedule(*, definition_name: str, due: str | None = None) -> list[PipelineRun]:
    """Launch the scheduled runs of the definition ``definition_name`` for
    the tick due at ``due`` (an ISO time; it makes the runs' idempotency
    keys, so a tick delivered twice launches once): one run, or one per host
    of the definition's "hosts" sharing a group id. This is the path of a
    tick sent as a message (``orchestration.run_scheduled``); beat itself
    fires ticks with ``schedules_fire``.

    Returns the runs, the runs an earlier delivery of this tick made, or an
    empty list when the tick is skipped because the schedule's overlap
    policy is "skip" and a scheduled run of the definition is still queued
    or running. A definition that was deleted, made inactive or no longer
    validates, or whose "hosts": "all" finds no live worker host, gives a
    failed run saying why (a deleted one also has its schedule disabled).
    """
    key = f"{SCHEDULE_KEY_PREFIX}{definition_name}:{due}" if due else None
    with transaction.atomic():
        # One tick at a time per definition, so the overlap check and the launch go together.
        definition = PipelineDefinition.objects.select_for_update().filter(name=definition_name).first()
        earlier = PipelineRun.objects.filter(idempotency_key=key).first() if key else None
        if earlier is not None:
            _log_duplicate(definition_name, due, earlier)
            return [earlier]
        active = _active_scheduled([definition.pk] if definition is not None and _skips(definition) else [])
        plan = _tick_plan(definition_name, definition, key, due, active, _launch_targets)
        if isinstance(plan, str):
            return [_schedule_failed(definition_name, definition, key, plan)]
        try:
            dispatch.broker_ready()
        except LaunchError as exc:
            return [_schedule_failed(definition_name, definition, key, str(exc))]
        runs = []
        for request in plan:
            try:
                run = launch_checked(request=request)
            except RunExists as exc:
                _log_duplicate(definition_name, due, exc.run)
                runs.append(exc.run)
                continue
            _log_launched(definition_name, due, run)
            runs.append(run)
    return runs


def _launch_targets(resolved: ResolvedDefinition, payload: dict) -> Targets:
    # _tick_plan has validated the definition already.
    return checked_targets(host=None, resolved=resolved, payload=payload, source="auto")


def _skips(definition: PipelineDefinition) -> bool:
    schedule = (definition.config or {}).get("schedule") if isinstance(definition.config, dict) else None
    return (schedule or {}).get("overlap", "skip") == "skip" if isinstance(schedule, dict) else True


def _active_scheduled(definition_ids: list[int]) -> dict[tuple[int | None, str], PipelineRun]:
    """The queued or running scheduled runs of those definitions, by (definition id, host)."""
    if not definition_ids:
        return {}
    return {
        (run.definition_id, run.target_host): run for run in PipelineRun.objects.filter(
            definition_id__in=definition_ids, trigger=PipelineRun.Trigger.SCHEDULE, status__in=PipelineRun.ACTIVE
        ).only("pk", "status", "target_host", "trace_id", "definition_id")
    }


def _tick_plan(
    name: str, definition: PipelineDefinition | None, key: str | None, due: str | None,
    active: dict[tuple[int | None, str], PipelineRun], targets_of: Callable[[ResolvedDefinition, dict], Targets],
) -> list[LaunchRequest] | str:
    """The launch requests of one tick of ``name`` (one per host, each keyed;
    none when ``overlap: skip`` finds every host's previous run ``active``),
    or why the tick cannot run. A deleted definition has its schedule disabled."""
    if definition is None:
        schedule_disable(definition_name=name)
        return "it no longer exists; its schedule is disabled"
    if not definition.is_active:
        return "it is inactive"
    messages = _validation(definition)
    if messages:
        return "it is invalid: " + "; ".join(messages)
    schedule = definition.config.get("schedule") or {}
    resolved = ResolvedDefinition(definition.config, "definition", definition.name, definition)
    request = LaunchRequest(
        resolved=resolved, payload=schedule.get("payload") or {}, source="auto",
        trigger=PipelineRun.Trigger.SCHEDULE,
    )
    try:
        targets = targets_of(resolved, request.payload)
    except LaunchError as exc:
        return str(exc).split("\n")[0]
    if schedule.get("overlap", "skip") == "skip":
        # Per host: a run waiting for a host whose worker is down holds back only that host's ticks.
        for host in [host for host in targets.hosts if (definition.pk, host) in active]:
            run = active[(definition.pk, host)]
            logger.info(
                "event=schedule.skipped definition=%s due=%s reason=overlap run_id=%s status=%s host=%s",
                name, due, run.pk, run.status, host or "-",
                extra={"run_id": run.pk, "trace_id": run.trace_id},
            )
        targets.hosts = [host for host in targets.hosts if (definition.pk, host) not in active]
        if not targets.hosts:
            return []
    try:
        launch_check(request=request)
    except LaunchError as exc:
        return str(exc)
    group_id = uuid.uuid4() if targets.fan_out else None
    # Each host's run of a tick has a key of its own.
    return [
        dataclasses.replace(
            request, target_host=host, group_id=group_id,
            idempotency_key=_host_key(key, host) if key and targets.fan_out else key,
        )
        for host in targets.hosts
    ]


# Validation messages per (definition id, its config as canonical JSON): beat fires the same definitions
# every minute, and validating one (CEL compiles included) costs more than the rest of its tick.
_VALIDATED: dict[tuple[int, str], list[str]] = {}
_VALIDATED_MAX = 10_000


def _validation(definition: PipelineDefinition) -> list[str]:
    key = (definition.pk, json.dumps(definition.config, sort_keys=True, default=str))
    messages = _VALIDATED.get(key)
    if messages is None:
        messages = validate_definition(definition.config)
        if len(_VALIDATED) >= _VALIDATED_MAX:
            _VALIDATED.clear()
        _VALIDATED[key] = messages
    return messages


def _log_launched(name: str, due: str | None, run: PipelineRun) -> None:
    logger.info(
        "event=schedule.launched definition=%s due=%s run_id=%s trace_id=%s host=%s",
        name, due, run.pk, run.trace_id, run.target_host or "-",
        extra={"run_id": run.pk, "trace_id": run.trace_id},
    )


def _log_duplicate(definition_name: str, due: str | None, run: PipelineRun) -> None:
    logger.info(
        "event=schedule.duplicate definition=%s due=%s run_id=%s", definition_name, due, run.pk,
        extra={"run_id": run.pk, "trace_id": run.trace_id},
    )


def _host_key(key: str, host: str) -> str:
    """``key`` made host ``host``'s own, within the 200 characters a key may hold."""
    keyed = f"{key}@{host}"
    return keyed if len(keyed) <= 200 else f"{key[:150]}@{hashlib.sha256(keyed.encode()).hexdigest()[:40]}"


def _failed_row(name: str, definition: PipelineDefinition | None, key: str | None, why: str,
                finished_at=None) -> PipelineRun:
    """The unsaved failed scheduled run of ``name`` that says ``why`` it could not start."""
    error = printable(f"Scheduled definition '{name}' cannot run: {why}")
    logger.error("event=schedule.failed definition=%s error=%s", name, error)
    return PipelineRun(
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
        finished_at=finished_at if finished_at is not None else Now(),
        duration_ms=0,
    )


def _schedule_failed(name: str, definition: PipelineDefinition | None, key: str | None, why: str) -> PipelineRun:
    """A failed scheduled run of ``name`` that says ``why`` it could not start."""
    run = _failed_row(name, definition, key, why)
    try:
        with transaction.atomic():
            run.save(force_insert=True)
            rollup.run_end_tally(run_id=run.pk)  # it ends as it is made
            return run
    except IntegrityError:
        existing = PipelineRun.objects.filter(idempotency_key=key).first() if key else None
        if existing is None:
            raise
        return existing  # an earlier delivery of this tick recorded it


# Ticks fired per transaction: a larger herd is fired in several, one after the other.
FIRE_BATCH = 1000


@dataclass
class Fired:
    """What one call of schedules_fire did."""

    ticks: int = 0  # due ticks fired (each: runs, a failed run, or skipped)
    runs: list[PipelineRun] = field(default_factory=list)  # runs stored, queued or failed
    lease_lost: bool = False  # this beat no longer holds the lease: nothing was fired


def schedules_fire(*, holder: str, batch: int = FIRE_BATCH) -> Fired:
    """Fire the pipeline schedules that are due on the database's clock, the
    most overdue first, at most ``batch`` of them: in one transaction fenced
    by beat's lease (``holder`` must hold it, or nothing is fired), store
    every due tick's runs with multi-row INSERTs (keys as for a tick sent as
    a message, so a tick is never launched twice), advance each schedule's
    clock and its PeriodicTask's last run, and once committed send the
    queued runs' messages (in batches, through one producer connection).

    The row is the truth: a broker that refuses the messages leaves the runs
    queued for the recovery sweep, and this raises nothing for it. Raises
    DatabaseError (nothing is fired; the next call tries again)."""
    from django_celery_beat.models import PeriodicTask

    with transaction.atomic():
        if not beatstate.lease_renew(holder=holder):
            return Fired(lease_lost=True)
        states = list(
            ScheduleState.objects.filter(next_due_at__lte=Now()).annotate(db_now=Now()).order_by("next_due_at")
            .values("pk", "task_id", "task__interval_id", "task__crontab_id", "definition_name", "next_due_at",
                    "db_now")[:batch]
        )
        if not states:
            return Fired()
        now = states[0]["db_now"]
        definitions = PipelineDefinition.objects.in_bulk(
            list({state["definition_name"] for state in states}), field_name="name"
        )
        active = _active_scheduled([d.pk for d in definitions.values() if _skips(d)])
        clocks = _clocks(states, now)
        hosts = _LiveHosts()
        rows: list[PipelineRun] = []
        gone: list[int] = []
        moved: dict[tuple, list[int]] = {}  # (due, next due): the clocks a herd moves on together
        for state in states:
            due, following, due_text = clocks[_clock_key(state)]
            name, definition = state["definition_name"], definitions.get(state["definition_name"])
            key = f"{SCHEDULE_KEY_PREFIX}{name}:{due_text}"
            plan = _tick_plan(name, definition, key, due_text, active, hosts.targets)
            if isinstance(plan, str):
                rows.append(_failed_row(name, definition, key, plan, finished_at=now))
            else:
                rows += [run_row(request) for request in plan]
            if definition is None:
                gone.append(state["pk"])
            moved.setdefault((due, following), []).append(state["pk"])
        stored = runs_store_keyed(runs=rows)
        _log_stored(rows, stored)
        # One UPDATE per (due, next due): a herd due at one moment moves on in one statement.
        for (due, following), ids in moved.items():
            ScheduleState.objects.filter(pk__in=ids).update(next_due_at=following, last_due_at=due, last_fired_at=now)
        if gone:
            ScheduleState.objects.filter(pk__in=gone).delete()
        # An UPDATE, not save(): django-celery-beat's change marker stays put, so beat reloads nothing.
        PeriodicTask.objects.filter(pk__in=[state["task_id"] for state in states]).update(
            last_run_at=now, total_run_count=F("total_run_count") + 1
        )
    return Fired(ticks=len(states), runs=stored)


def _clock_key(state: dict) -> tuple:
    return state["task__interval_id"], state["task__crontab_id"], state["next_due_at"]


def _clocks(states: list[dict], now) -> dict[tuple, tuple]:
    """Per (interval, crontab, next due time) of the due clocks ``states``:
    the due time their tick is stamped with, their next due time, and the
    due time as the key writes it. Computed once for each: a herd shares its
    schedule (django-celery-beat keeps one row per distinct interval or
    crontab) and its due time, and a crontab's next time is costly."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    keys = {_clock_key(state) for state in states}
    intervals = IntervalSchedule.objects.in_bulk([key[0] for key in keys if key[0] is not None])
    crontabs = CrontabSchedule.objects.in_bulk([key[1] for key in keys if key[1] is not None])
    clocks = {}
    for key in keys:
        interval_id, crontab_id, next_due = key
        task = PeriodicTask(interval=intervals.get(interval_id), crontab=crontabs.get(crontab_id))
        due, following = beatstate.tick_due(task, next_due=next_due, now=now)
        clocks[key] = due, following, due.astimezone(UTC).isoformat(timespec="milliseconds")
    return clocks


def schedules_next_due_in() -> float | None:
    """Seconds until the earliest next due time of any pipeline schedule, on
    the database's clock (one index lookup; 0 or less: due now); None when
    nothing is scheduled."""
    row = ScheduleState.objects.order_by("next_due_at").annotate(db_now=Now()).values("next_due_at", "db_now").first()
    return None if row is None else (row["next_due_at"] - row["db_now"]).total_seconds()


class _LiveHosts:
    """launch_targets for a batch of ticks, asking the workers which hosts
    they serve (a broadcast that waits for replies) at most once."""

    def __init__(self):
        self._asked = False
        self._hosts: list[str] | None = None

    def targets(self, resolved: ResolvedDefinition, payload: dict) -> Targets:
        if target_choice(host=None, config=resolved.config) != ALL:
            return _launch_targets(resolved, payload)
        if not self._asked:
            self._asked = True
            try:
                dispatch.broker_ready()
                self._hosts = dispatch.live_hosts()
            except LaunchError:
                self._hosts = None
        if self._hosts is None:
            raise LaunchError(
                "Cannot ask the workers which hosts they serve: the broker did not answer", Refusal.UNAVAILABLE
            )
        if not self._hosts:
            raise LaunchError(
                "No live worker serves a host, so there is no host to run on (--host all).", Refusal.NO_TARGET
            )
        return Targets(hosts=list(self._hosts), fan_out=True, live=True)


def _log_stored(rows: list[PipelineRun], stored: list[PipelineRun]) -> None:
    done = {id(run) for run in stored}
    for run in rows:
        due = run.idempotency_key.split(":", 2)[2].split("@")[0] if run.idempotency_key else None
        if id(run) not in done:
            logger.info("event=schedule.duplicate definition=%s due=%s key=%s", run.origin, due, run.idempotency_key)
        elif run.status == PipelineRun.Status.QUEUED:
            _log_launched(run.origin, due, run)
