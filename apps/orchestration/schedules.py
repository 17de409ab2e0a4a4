"""A definition's ``schedule`` <-> django-celery-beat's PeriodicTask.

A definition may carry ``{"every": 300}`` or ``{"cron": "*/5 * * * *",
"timezone": "Europe/Berlin"}``, with ``overlap`` ("skip", the default, or
"allow") and the ``payload`` each scheduled run gets. ``load_pipelines``
keeps one PeriodicTask per scheduled definition (named ``pipeline:<name>``)
in step with it; beat, with django-celery-beat's database scheduler, fires
them; each tick calls the task ``orchestration.run_scheduled``, which goes
through the launcher like any other trigger.

Cron parsing, due times and time zones are Celery's and django-celery-beat's.
"""
from __future__ import annotations

import json
import zoneinfo

from celery.schedules import crontab

from apps.broker.names import RUN_SCHEDULED_TASK
from apps.options import is_number

TASK_PREFIX = "pipeline:"
# A scheduled run's idempotency key: this, the definition's name and the tick's due time
# (ticks.py), so a tick delivered twice launches once. No other launch may take such a key.
SCHEDULE_KEY_PREFIX = "schedule:"
SCHEDULE_FIELDS = {"every", "cron", "timezone", "overlap", "payload"}
OVERLAP_POLICIES = ("skip", "allow")
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
# The longest interval: a leap year (longer ones are cron schedules).
EVERY_MAX_SECONDS = 366 * 24 * 3600
# IANA zone names are at most about 30 characters; beat's CrontabSchedule.timezone holds 63.
TIMEZONE_MAX = 63


def task_name(definition_name: str) -> str:
    """The PeriodicTask name of a definition's schedule."""
    return f"{TASK_PREFIX}{definition_name}"


def cron_schedule(expression: str, timezone: str = "UTC") -> crontab:
    """Celery's crontab for a 5-field expression; raises ValueError naming what is wrong."""
    fields = expression.split()
    if len(fields) != len(CRON_FIELDS):
        raise ValueError(f"it has {len(fields)} fields, not 5 (minute hour day-of-month month day-of-week)")
    return crontab(**dict(zip(CRON_FIELDS, fields, strict=True)))


def schedule_messages(schedule) -> list[str]:
    """What is wrong with a definition's ``schedule`` value (empty when it is
    fine). Pure: touches nothing and never raises."""
    if schedule is None:
        return []
    if not isinstance(schedule, dict):
        return ["'schedule' must be an object"]
    messages = [f"unknown field in schedule: {key}" for key in sorted(set(schedule) - SCHEDULE_FIELDS, key=str)]
    has_every, has_cron = "every" in schedule, "cron" in schedule
    if has_every == has_cron:
        messages.append("schedule needs exactly one of 'every' (seconds) or 'cron' (5 fields)")
    if has_every and not (is_number(schedule["every"]) and 1 <= schedule["every"] <= EVERY_MAX_SECONDS):
        messages.append(f"schedule.every must be a number of seconds from 1 to {EVERY_MAX_SECONDS}")
    if has_cron:
        expression = schedule["cron"]
        if not isinstance(expression, str):
            messages.append("schedule.cron must be a string of 5 fields, like '*/5 * * * *'")
        else:
            try:
                cron_schedule(expression)
            except ValueError as exc:
                messages.append(f"schedule.cron is not a valid cron expression: {exc}")
    if "timezone" in schedule:
        zone = schedule["timezone"]
        if not _known_zone(zone):
            shown = str(zone) if len(str(zone)) <= TIMEZONE_MAX else str(zone)[: TIMEZONE_MAX - 1] + "…"
            messages.append(f"schedule.timezone is not a known IANA time zone: {shown}")
        elif has_every:
            messages.append("schedule.timezone applies only to 'cron' schedules")
    if "overlap" in schedule and schedule["overlap"] not in OVERLAP_POLICIES:
        messages.append("schedule.overlap must be 'skip' or 'allow'")
    if "payload" in schedule and not isinstance(schedule["payload"], dict):
        messages.append("schedule.payload must be an object")
    return messages


def _known_zone(name) -> bool:
    """Whether ``name`` is a time zone zoneinfo knows. Never raises: the name
    becomes a file path there, so a long one (ENAMETOOLONG) or a folder of
    zones ("Europe") fails as an OSError."""
    if not isinstance(name, str) or not name or len(name) > TIMEZONE_MAX or name != name.strip():
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def schedule_describe(schedule: dict) -> str:
    """``every 300s`` or ``cron */5 * * * * (Europe/Berlin)``, with ``, overlap allowed`` when it is."""
    if "every" in schedule:
        text = f"every {schedule['every']:g}s"
    else:
        text = f"cron {' '.join(schedule['cron'].split())} ({schedule.get('timezone', 'UTC')})"
    return text + (", overlap allowed" if schedule.get("overlap") == "allow" else "")


def _wanted(definition) -> dict | None:
    """The PeriodicTask fields a definition's schedule asks for (None: unscheduled)."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule

    schedule = (definition.config or {}).get("schedule") if definition.is_active else None
    if not schedule:
        return None
    if "every" in schedule:
        every = schedule["every"]
        if float(every).is_integer():
            interval, _ = IntervalSchedule.objects.get_or_create(every=int(every), period=IntervalSchedule.SECONDS)
        else:
            micro = round(every * 1_000_000)
            interval, _ = IntervalSchedule.objects.get_or_create(every=micro, period=IntervalSchedule.MICROSECONDS)
        return {"interval": interval, "crontab": None}
    # Validation made it 5 fields; a row changed behind validation's back is read as before, not refused here.
    fields = dict(zip(CRON_FIELDS, schedule["cron"].split(), strict=False))
    zone = schedule.get("timezone", "UTC")
    cron = CrontabSchedule.objects.filter(**fields, timezone=zone).first()
    if cron is None:
        cron = CrontabSchedule.objects.create(**fields, timezone=zone)
    return {"interval": None, "crontab": cron}


def schedule_sync(*, definition) -> str | None:
    """Make the definition's PeriodicTask match its ``schedule``: create or
    update it (enabled, unless the definition's schedule is paused), or disable it when the definition has no schedule
    any more (or is inactive). Returns what changed ("schedule: every 300s",
    "unscheduled") or None when nothing did."""
    from django_celery_beat.models import PeriodicTask

    name = task_name(definition.name)
    existing = PeriodicTask.objects.filter(name=name).first()
    wanted = _wanted(definition)
    if wanted is None:
        if existing is None or not existing.enabled:
            return None
        existing.enabled = False
        existing.save(update_fields=["enabled"])
        return "unscheduled"
    fields = {
        **wanted,
        "task": RUN_SCHEDULED_TASK,
        "kwargs": json.dumps({"definition": definition.name}),
        "enabled": not definition.schedule_paused,
        "description": (
            f"Runs the pipeline definition '{definition.name}' ({schedule_describe(definition.config['schedule'])})."
        ),
    }
    if existing is not None and all(getattr(existing, key) == value for key, value in fields.items()):
        return None
    if existing is None:
        PeriodicTask.objects.create(name=name, **fields)
    else:
        for key, value in fields.items():
            setattr(existing, key, value)
        existing.save()
    return f"schedule: {schedule_describe(definition.config['schedule'])}"


def schedule_disable(*, definition_name: str) -> bool:
    """Disable the schedule of a definition that is gone; True when one was enabled."""
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.filter(name=task_name(definition_name), enabled=True).first()
    if task is None:
        return False
    task.enabled = False
    task.save(update_fields=["enabled"])
    return True
