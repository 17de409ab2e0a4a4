"""Beat's own state in the database: the lease on being the one beat, and the
clock of each pipeline schedule (when it is next due).

The lease works as a run's does: one conditional UPDATE on the database's
clock takes or renews it, and the firing of ticks is fenced by a renewal in
the same transaction, so two beats on one database never both fire. A beat
that finds the lease held records itself as refused (``doctor`` reports it).

A schedule's clock (ScheduleState) is kept in step with django-celery-beat's
PeriodicTask (its interval or crontab, enabled or not) by
``schedule_states_sync``; due times and time zones are Celery's.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Now

from apps.broker.names import RUN_SCHEDULED_TASK
from apps.orchestration.models import BeatLease, ScheduleState

logger = logging.getLogger("apps.orchestration.beatstate")

LEASE_NAME = "beat"
# A tick found this late (beat was down) is stamped with the time it is fired, and fires once.
LATE_MIN = timedelta(seconds=60)


def holder_name() -> str:
    """host:pid:token naming this beat process in the lease."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def lease_take(*, holder: str) -> bool:
    """Take or renew the beat lease for ``holder`` (one conditional UPDATE on
    the database's clock: it is free, expired, or ``holder``'s already);
    True when ``holder`` holds it now. When another beat holds it, records
    ``holder`` as refused and returns False. Raises DatabaseError."""
    seconds = timedelta(seconds=settings.BEAT_LEASE_SECONDS)
    lease = BeatLease.objects.filter(name=LEASE_NAME)
    renewed = lease.filter(holder=holder).update(renewed_at=Now(), expires_at=Now() + seconds)
    if renewed:
        return True
    free = Q(holder="") | Q(expires_at__isnull=True) | Q(expires_at__lt=Now())
    if lease.filter(free).update(holder=holder, acquired_at=Now(), renewed_at=Now(), expires_at=Now() + seconds):
        return True
    if not lease.exists():
        try:
            with transaction.atomic():
                BeatLease.objects.create(name=LEASE_NAME)
        except IntegrityError:
            pass  # another beat made it first: the UPDATE below decides between us
        return bool(
            lease.filter(free).update(holder=holder, acquired_at=Now(), renewed_at=Now(), expires_at=Now() + seconds)
        )
    lease.update(refused_by=holder, refused_at=Now())
    return False


def lease_renew(*, holder: str) -> bool:
    """Renew the lease only while ``holder`` holds it (the fence of a firing
    transaction: on PostgreSQL the row stays locked until it commits); False
    when it was lost. Raises DatabaseError."""
    seconds = timedelta(seconds=settings.BEAT_LEASE_SECONDS)
    return bool(
        BeatLease.objects.filter(name=LEASE_NAME, holder=holder, expires_at__gt=Now())
        .update(renewed_at=Now(), expires_at=Now() + seconds)
    )


def lease_release(*, holder: str) -> None:
    """Give the lease up (a beat shutting down), so a waiting beat takes over at once."""
    BeatLease.objects.filter(name=LEASE_NAME, holder=holder).update(holder="", expires_at=None)


@dataclass(frozen=True)
class LeaseStatus:
    holder: str
    renewed_age: float | None  # seconds since the holder's last renewal
    expired: bool
    refused_by: str
    refused_age: float | None  # seconds since another beat was last refused


def lease_status() -> LeaseStatus | None:
    """The lease as stored, with ages on the database's clock; None when no beat ever took it."""
    row = (
        BeatLease.objects.filter(name=LEASE_NAME).annotate(db_now=Now())
        .values("holder", "renewed_at", "expires_at", "refused_by", "refused_at", "db_now").first()
    )
    if row is None:
        return None
    now = row["db_now"]

    def age(when):
        return None if when is None else max(0.0, (now - when).total_seconds())

    return LeaseStatus(
        holder=row["holder"],
        renewed_age=age(row["renewed_at"]),
        expired=not row["holder"] or row["expires_at"] is None or row["expires_at"] <= now,
        refused_by=row["refused_by"],
        refused_age=age(row["refused_at"]),
    )


# -- schedules' clocks ------------------------------------------------------------------


def schedule_text(task) -> str | None:
    """The PeriodicTask's schedule as text (what its clock was computed from);
    None for a kind pipeline schedules do not use (solar, clocked)."""
    if task.interval_id is not None:
        return f"every {task.interval.every} {task.interval.period}"
    if task.crontab_id is not None:
        c = task.crontab
        return f"cron {c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week} {c.timezone}"
    return None


def next_after(task, when: datetime) -> datetime:
    """The first due time of ``task``'s schedule after ``when`` (UTC)."""
    if task.interval_id is not None:
        every: timedelta = task.interval.schedule.run_every
        return when + every
    schedule = task.crontab.schedule
    start, delta, _ = schedule.remaining_delta(when.astimezone(schedule.tz), tz=schedule.tz)
    return (start + delta).astimezone(UTC)


def tick_due(task, *, next_due: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The due time a tick fired at ``now`` is stamped with (its ``next_due``,
    or ``now`` when it is later than one interval and a minute: beat was
    down, and an overdue schedule fires once), and the schedule's next due
    time after it (never in the past)."""
    late = LATE_MIN
    if task.interval_id is not None:
        late = max(late, task.interval.schedule.run_every)
    due = next_due if now - next_due < late else now
    following = next_after(task, due)
    if following <= now:
        following = next_after(task, now)
    return due, following


def _definition_of(task) -> str | None:
    try:
        kwargs = json.loads(task.kwargs or "{}")
    except ValueError:
        return None
    name = kwargs.get("definition") if isinstance(kwargs, dict) else None
    return name if isinstance(name, str) and name else None


def schedule_states_sync(*, now: datetime) -> int:
    """Make the clocks match the enabled pipeline PeriodicTasks: a new or
    changed schedule gets its next due time (after its last run, else after
    ``now``), a disabled or removed one loses its clock. Two queries when
    nothing changed. Returns how many clocks were written or removed."""
    from django_celery_beat.models import PeriodicTask

    tasks = PeriodicTask.objects.filter(enabled=True, task=RUN_SCHEDULED_TASK).select_related("interval", "crontab")
    states = {state.task_id: state for state in ScheduleState.objects.all()}
    changed = 0
    for task in tasks:
        text, name = schedule_text(task), _definition_of(task)
        state = states.pop(task.pk, None)
        if text is None or name is None:
            logger.warning("event=schedule.unusable task=%s reason=%s", task.name,
                           "not an interval or crontab" if text is None else "kwargs name no definition")
            if state is not None:
                state.delete()
                changed += 1
            continue
        if state is not None and state.schedule == text and state.definition_name == name:
            continue
        base = task.last_run_at or now
        fields = {"definition_name": name, "schedule": text, "next_due_at": next_after(task, base)}
        if state is None:
            ScheduleState.objects.create(task=task, **fields)
        else:
            ScheduleState.objects.filter(pk=state.pk).update(**fields)
        changed += 1
    if states:
        ScheduleState.objects.filter(pk__in=[state.pk for state in states.values()]).delete()
        changed += len(states)
    return changed
