"""Reads of pipeline definitions, runs and schedules."""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from celery.utils.time import maybe_make_aware
from django.db import connection
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Substr
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.tzcrontab import TzAwareCrontab

from apps.broker.names import RUN_SCHEDULED_TASK
from apps.orchestration.models import PipelineDefinition, PipelineRun, RunLogLine, StageExecution
from apps.orchestration.schedules import TASK_PREFIX
from apps.orchestration.validation import DEFINITION_NAME

# Run ids are 64-bit; a larger number names no run (and some databases cannot even compare it).
RUN_ID_MAX = 2**63 - 1
# The most runs one listing returns: enough for any screen or script, and a bound on the read.
RUN_LIST_MAX = 1000
# The columns a run listing shows: never the result, snapshot or payload blobs.
RUN_LIST_FIELDS = (
    "id",
    "trace_id",
    "definition_name",
    "origin",
    "origin_kind",
    "target_host",
    "group_id",
    "trigger",
    "retry_of",
    "idempotency_key",
    "status",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "duration_ms",
)


def pipeline_definition_get(*, name: str) -> PipelineDefinition | None:
    return PipelineDefinition.objects.filter(name=name).first()


def _definitions_by_name(*, after: str | None = None, contains: str | None = None) -> QuerySet:
    """The stored definitions in name order: those named after ``after``, whose name holds
    ``contains`` (any case). Along the unique index of names (the filter scans the names)."""
    definitions = PipelineDefinition.objects.order_by("name")
    if after is not None:
        definitions = definitions.filter(name__gt=after)
    if contains:
        definitions = definitions.filter(name__icontains=contains)
    return definitions


def pipeline_definitions_list(
    *, after: str | None = None, contains: str | None = None, limit: int | None = None
) -> list[dict]:
    """Every stored definition by name, as dicts of name, description, is_active, updated_at and
    the two parts of its config a listing shows (``schedule``, ``triggers``); never the whole config.
    A page of them: those named after ``after``, whose name holds ``contains`` (any case), the
    first ``limit``. One query, along the unique index of names."""
    rows = _definitions_by_name(after=after, contains=contains).values(
        "name", "description", "is_active", "updated_at",
        schedule=KeyTransform("schedule", "config"), triggers=KeyTransform("triggers", "config"),
    )
    return [dict(row) for row in (rows if limit is None else rows[:limit])]


def pipeline_definition_names(*, contains: str | None = None, limit: int | None = None) -> list[str]:
    """The names of the stored definitions, in order (only those holding ``contains``, any case;
    the first ``limit``): one column of one query (a filter's choices)."""
    found = _definitions_by_name(contains=contains).values_list("name", flat=True)
    return list(found if limit is None else found[:limit])


def run_newest_retry_id(*, run_id: int) -> int | None:
    """The id of the newest retry of run ``run_id``; None when it has none. One probe of the
    index of the retry_of foreign key."""
    return PipelineRun.objects.filter(retry_of=run_id).order_by("-pk").values_list("pk", flat=True).first()


def pipeline_definitions_overview(
    *, name: str | None = None, after: str | None = None, contains: str | None = None, limit: int | None = None
) -> list[dict]:
    """Every stored definition by name (only ``name``'s, when given), as dicts of
    name, description, is_active, schedule_paused, ``schedule`` and ``triggers``
    (those parts of its config), ``nodes`` (its node list) and ``last_run``
    (run_id, status, created_at, of its newest run of any trigger; None when it
    never ran). A page of them: those named after ``after``, whose name holds
    ``contains`` (any case), the first ``limit``. Two queries: the newest run of
    each definition is one probe of the (definition_name, created_at, id) index.
    Reads only."""
    newest = PipelineRun.objects.filter(definition_name=OuterRef("name")).order_by("-created_at", "-pk")
    definitions = _definitions_by_name(after=after, contains=contains)
    if name is not None:
        if not DEFINITION_NAME.fullmatch(name):
            return []  # a name no definition can have is not looked up (PostgreSQL refuses a NUL in text)
        definitions = definitions.filter(name=name)
    if limit is not None:
        definitions = definitions[:limit]
    rows = [
        dict(row) for row in definitions.annotate(last_run_id=Subquery(newest.values("pk")[:1])).values(
            "name", "description", "is_active", "schedule_paused", "last_run_id",
            schedule=KeyTransform("schedule", "config"), triggers=KeyTransform("triggers", "config"),
            nodes=KeyTransform("nodes", "config"),
        )
    ]
    runs = {
        run["id"]: run
        for run in PipelineRun.objects.filter(pk__in=[r["last_run_id"] for r in rows if r["last_run_id"]]).values(
            "id", "status", "created_at"
        )
    }
    for row in rows:
        run = runs.get(row.pop("last_run_id"))
        row["last_run"] = (
            {"run_id": run["id"], "status": run["status"], "created_at": run["created_at"]} if run else None
        )
    return rows


def pipeline_definition_runs(*, name: str, limit: int = 5) -> list[dict]:
    """The newest ``limit`` runs of the definition ``name`` (any trigger), as pipeline_runs_list gives them."""
    return pipeline_runs_list(definition=name, limit=limit)


def pipeline_run_get(*, run_id: int) -> PipelineRun | None:
    if not 0 < run_id <= RUN_ID_MAX:
        return None
    return PipelineRun.objects.filter(pk=run_id).first()


def node_attempt_latest(*, run_id: int, node_id: str) -> int | None:
    """The attempt of node ``node_id``'s newest stage row in run ``run_id`` (None before its
    first): one read along the (run, node_id, attempt) unique index. Reads only."""
    return (StageExecution.objects.filter(run_id=run_id, node_id=node_id)
            .order_by("-attempt").values_list("attempt", flat=True).first())


def run_log_lines_list(*, run_id: int, after_seq: int = 0, limit: int | None = None) -> list[RunLogLine]:
    """The log lines kept with run ``run_id`` whose seq is above ``after_seq``,
    in order, at most ``limit`` (all without one). One read along the
    (run, seq) index; an unknown run has none. Reads only."""
    if not 0 <= run_id <= RUN_ID_MAX:
        return []
    lines = RunLogLine.objects.filter(run_id=run_id, seq__gt=after_seq).order_by("seq")
    return list(lines if limit is None else lines[:limit])


def pipeline_runs_list(
    *,
    definition: str | None = None,
    status: str | None = None,
    trigger: str | None = None,
    since: datetime | None = None,
    host: str | None = None,
    before: tuple[datetime, int] | None = None,
    limit: int = 20,
) -> list[dict]:
    """The newest runs first (by creation, then id), at most ``limit`` of them,
    as dicts of RUN_LIST_FIELDS: runs of the definition named ``definition``,
    with ``status``, launched by ``trigger``, created at or after ``since``,
    targeting ``host``, and listed after the run whose (created_at, id) is
    ``before`` (the last of a previous page: keyset paging, no OFFSET).

    Raises ValueError when ``limit`` is not from 1 to RUN_LIST_MAX.
    """
    if not 1 <= limit <= RUN_LIST_MAX:
        raise ValueError(f"limit must be from 1 to {RUN_LIST_MAX}")
    runs = pipeline_runs_listed(
        definition=definition, status=status, trigger=trigger, since=since, host=host, before=before
    )
    return list(runs[:limit])


def pipeline_runs_listed(
    *,
    definition: str | None = None,
    status: str | None = None,
    trigger: str | None = None,
    since: datetime | None = None,
    host: str | None = None,
    before: tuple[datetime, int] | None = None,
) -> QuerySet:
    """The query behind pipeline_runs_list, unsliced (its plan can be examined)."""
    runs = PipelineRun.objects.all()
    if definition is not None:
        runs = runs.filter(definition_name=definition)
    if status is not None:
        runs = runs.filter(status=status)
    if trigger is not None:
        runs = runs.filter(trigger=trigger)
    if since is not None:
        runs = runs.filter(created_at__gte=since)
    if host is not None:
        runs = runs.filter(target_host=host)
    if before is not None:
        created_at, run_id = before
        # The bound on created_at alone lets its index start the scan at the cursor.
        runs = runs.filter(
            Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=run_id), created_at__lte=created_at
        )
    return runs.order_by("-created_at", "-pk").values(*RUN_LIST_FIELDS)


def trace_id_prefix(prefix: str) -> Q:
    """Runs whose trace id starts with ``prefix`` (case-sensitive), as a
    condition an index serves on either database: PostgreSQL's pattern index
    serves the LIKE; SQLite's LIKE ignores case and so no index serves it, but
    one does the range from ``prefix`` to the first text after every text that
    starts with it (SQLite compares text by code point)."""
    condition = Q(trace_id__startswith=prefix)
    if connection.vendor != "sqlite" or not prefix:
        return condition
    condition &= Q(trace_id__gte=prefix)
    stem = prefix.rstrip(chr(sys.maxunicode))
    if stem:
        after = ord(stem[-1]) + 1
        # The surrogates are not characters: the code point after U+D7FF is U+E000.
        condition &= Q(trace_id__lt=stem[:-1] + chr(0xE000 if 0xD800 <= after <= 0xDFFF else after))
    return condition


@dataclass
class ScheduleListing:
    """One pipeline schedule as beat sees it, with its definition's latest scheduled run."""

    definition: str
    task: str
    kind: str  # "interval", "cron", or the name of another django-celery-beat schedule type
    schedule: str  # in words
    every_seconds: float | None
    cron: str | None
    timezone: str | None
    overlap: str | None  # None: the definition is gone
    enabled: bool
    paused: bool  # by pause_schedule (kept on the definition): not enabled until resume_schedule
    last_run: dict | None  # run_id, status, created_at
    next_due_at: datetime | None  # None when disabled


def pipeline_schedules_list(
    *, now: datetime | None = None, definition: str | None = None, after: str | None = None,
    contains: str | None = None, limit: int | None = None,
) -> list[ScheduleListing]:
    """Every pipeline schedule in django-celery-beat's table (PeriodicTasks of
    the task ``orchestration.run_scheduled`` named ``pipeline:<definition>``),
    by name, enabled or not, each with its definition's newest run launched by
    a schedule and, when enabled, when beat will next send it as of ``now``
    (default: the current time) — computed by the schedule objects beat uses.
    Only the schedule of the definition ``definition``, when given; a page of
    them with ``after`` (definitions named after it), ``contains`` (a part of
    the definition's name, any case) and ``limit``. Reads only."""
    now = now or timezone.now()
    newest = PipelineRun.objects.filter(
        definition_name=OuterRef("definition_name"), trigger=PipelineRun.Trigger.SCHEDULE
    ).order_by("-created_at", "-pk")
    # One query, with one probe of the (definition_name, trigger, created_at, id) index per schedule; plain
    # rows, not model instances (thousands of them). The schedule rows are read once each below.
    periodic = PeriodicTask.objects.filter(task=RUN_SCHEDULED_TASK, name__startswith=TASK_PREFIX)
    if definition is not None:
        periodic = periodic.filter(name=f"{TASK_PREFIX}{definition}")
    if after is not None:
        periodic = periodic.filter(name__gt=f"{TASK_PREFIX}{after}")
    periodic = periodic.annotate(definition_name=Substr("name", len(TASK_PREFIX) + 1))
    if contains:
        periodic = periodic.filter(definition_name__icontains=contains)  # not the prefix: "line" is in every name
    chosen_tasks = (
        periodic
        .annotate(last_run_id=Subquery(newest.values("pk")[:1]))
        .order_by("name")
        .values(
            "pk", "name", "definition_name", "enabled", "last_run_at", "date_changed", "start_time", "last_run_id",
            *SCHEDULE_KINDS,
        )
    )
    tasks = list(chosen_tasks if limit is None else chosen_tasks[:limit])
    last_runs = {
        row["id"]: row
        for row in PipelineRun.objects.filter(pk__in=[t["last_run_id"] for t in tasks if t["last_run_id"]]).values(
            "id", "status", "created_at"
        )
    }
    # Only the one key of each definition's config that is shown (configs can be large).
    definitions = {
        name: (overlap, paused)
        for name, overlap, paused in PipelineDefinition.objects.filter(
            name__in=[t["definition_name"] for t in tasks]
        ).values_list("name", "config__schedule__overlap", "schedule_paused")
    }
    # Schedules share their interval and crontab rows, whose words and schedule objects are costly
    # to build (cron parsing, cron_descriptor's translations): each is built once per listing,
    # from one task on that row.
    rows = {_schedule_row(task): task["pk"] for task in tasks}
    chosen = PeriodicTask.objects.select_related(*SCHEDULE_KINDS).in_bulk(list(rows.values()))
    shared = {row: (_schedule_fields(chosen[pk]), _schedule_object(chosen[pk])) for row, pk in rows.items()}
    listings = []
    for task in tasks:
        last = last_runs.get(task["last_run_id"])
        name = task["definition_name"]
        fields, schedule = shared[_schedule_row(task)]
        listings.append(
            ScheduleListing(
                definition=name,
                task=task["name"],
                **fields,
                overlap=(definitions[name][0] or "skip") if name in definitions else None,
                enabled=task["enabled"],
                paused=name in definitions and definitions[name][1],
                last_run={"run_id": last["id"], "status": last["status"], "created_at": last["created_at"]}
                if last
                else None,
                next_due_at=_next_due(task, schedule, now) if task["enabled"] else None,
            )
        )
    return listings


# The foreign keys of a PeriodicTask to its schedule, one of which is set.
SCHEDULE_KINDS = ("interval", "crontab", "solar", "clocked")


def _schedule_row(task: dict) -> tuple[str, int]:
    """The schedule row a PeriodicTask's values (``task``) run on: ("interval", its id), ("crontab", its id)...;
    ("task", the task's id) for one with no schedule row."""
    for kind in SCHEDULE_KINDS:
        if task[kind] is not None:
            return (kind, task[kind])
    return ("task", task["pk"])


def _schedule_object(task: PeriodicTask):
    """Celery's schedule object of ``task`` (as beat builds it), or None when it has no schedule."""
    return task.schedule if task.scheduler is not None else None


def _schedule_fields(task: PeriodicTask) -> dict:
    """kind, schedule (in words), every_seconds, cron and timezone of a PeriodicTask."""
    fields = {"every_seconds": None, "cron": None, "timezone": None}
    if task.interval is not None:
        seconds = task.interval.schedule.run_every.total_seconds()
        return {**fields, "kind": "interval", "schedule": f"every {seconds:g}s", "every_seconds": seconds}
    if task.crontab is not None:
        cron = task.crontab
        zone = str(cron.timezone)
        expression = " ".join([cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week])
        return {**fields, "kind": "cron", "schedule": _cron_words(expression, zone), "cron": expression,
                "timezone": zone}
    scheduler = task.scheduler
    kind = type(scheduler).__name__.lower().removesuffix("schedule") if scheduler is not None else "none"
    return {**fields, "kind": kind, "schedule": str(scheduler) if scheduler is not None else "no schedule"}


@functools.lru_cache(maxsize=4096)
def _cron_words(expression: str, zone: str) -> str:
    """A cron expression (minute hour day-of-month month day-of-week) in words, as
    django-celery-beat says it, without the zone it appends (which has a field of its own here).
    Kept per process: the translation (cron_descriptor) is the costly part of a schedules
    listing, and each load of a page of schedules asks for the same few expressions again."""
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split(" ")
    cron = CrontabSchedule(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                           day_of_week=day_of_week, timezone=zone)
    return cron.human_readable.removesuffix(f" {zone}")


def _next_due(task: dict, schedule, now: datetime) -> datetime | None:
    """When beat next sends the PeriodicTask whose values (last_run_at,
    date_changed, start_time) are ``task`` and whose Celery schedule object is
    ``schedule`` (shared by the tasks of one schedule row), as of ``now``: the
    time that object gives from the last send (possibly before ``now``: the
    task is overdue, and beat sends it at its next tick). None without a
    schedule. Sets the object's ``nowfun``."""
    if schedule is None:
        return None
    # django-celery-beat's crontab computes in its own zone, as its is_due does.
    zone = schedule.tz if isinstance(schedule, TzAwareCrontab) else None
    schedule.nowfun = lambda: now.astimezone(zone or UTC)
    # What beat's ModelEntry counts from: the last send, or the row's last change before the first one.
    last = maybe_make_aware(task["last_run_at"] or task["date_changed"])
    if zone is not None:
        last = last.astimezone(zone)
    due = now + schedule.remaining_estimate(last)
    # Beat sends nothing before a row's start_time.
    return max(due, task["start_time"]) if task["start_time"] else due


# Most rows list_states shows at once (the board holds one per definition and host).
STATE_LIST_MAX = 10_000


def monitor_states_list(*, definition: str | None = None, severity: str | None = None, limit: int = 500) -> list:
    """The monitoring state board (MonitorState rows), worst first, then the
    longest-lasting: ``definition`` and ``severity`` filter it exactly."""
    from django.db.models import Case, IntegerField, Value, When

    from apps.orchestration.models import MonitorState
    from apps.orchestration.monitoring import RANK

    rows = MonitorState.objects.all()
    if definition is not None:
        rows = rows.filter(definition=definition)
    if severity is not None:
        rows = rows.filter(severity=severity)
    rank = Case(*(When(severity=name, then=Value(-value)) for name, value in RANK.items()),
                default=Value(0), output_field=IntegerField())
    return list(rows.annotate(rank=rank).order_by("rank", "since", "definition", "host")[:limit])
