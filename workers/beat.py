"""Beat's scheduler: django-celery-beat's DatabaseScheduler, with each tick of
a pipeline schedule stamped with the time it was due.

The stamp travels in the task's kwargs (``due``) and makes the run's
idempotency key, so a tick whose message is delivered twice launches one run.
"""
from __future__ import annotations

from datetime import UTC, timedelta

from celery import schedules
from django_celery_beat.schedulers import DatabaseScheduler

from apps.broker.names import RUN_SCHEDULED_TASK


def due_time(entry, now):
    """When ``entry``, being sent at ``now``, was due (UTC): its last run plus
    the interval, or for a cron schedule the minute it fires in."""
    schedule = entry.schedule
    if isinstance(schedule, schedules.crontab):
        return now.astimezone(UTC).replace(second=0, microsecond=0)
    if isinstance(schedule, schedules.schedule) and entry.last_run_at is not None:
        last = entry.last_run_at
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        every: timedelta = schedule.run_every  # type: ignore[attr-defined]  # real, but missing from celery-types
        due = last + every
        # A tick sent long after it was due (beat was down) is stamped when it is sent.
        return (due if now - due < max(every, timedelta(seconds=60)) else now).astimezone(UTC)
    return now.astimezone(UTC)


class PipelineScheduler(DatabaseScheduler):
    """DatabaseScheduler that adds ``due`` to the kwargs of every pipeline tick."""

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if entry.task == RUN_SCHEDULED_TASK:
            now = self.app.now()
            if now.tzinfo is None:
                now = now.replace(tzinfo=UTC)
            # Set on the entry itself (entries are rebuilt from their rows at every sync anyway).
            entry.kwargs = {**entry.kwargs, "due": due_time(entry, now).isoformat(timespec="milliseconds")}
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
