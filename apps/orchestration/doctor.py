"""`manage.py doctor`: is this deployment able to run pipelines, seen from here?

Each check returns one Finding (ok / warn / FAIL and one line of detail,
with further lines under it where one line cannot say it).
Every check is bounded in time (connection and reply timeouts), reads only,
and names environment variables without ever showing their values.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from apps.text import printable

OK, WARN, FAIL = "ok", "warn", "FAIL"
# A broker or a worker that has not answered in this long counts as absent.
BROKER_TIMEOUT_SECONDS = 3
WORKER_REPLY_SECONDS = 2.0
# libpq's own connect timeout, so an unreachable PostgreSQL cannot hold the command.
DATABASE_CONNECT_TIMEOUT_SECONDS = 5
# Beat is alive when it ticked within this many recovery intervals (it ticks recover-runs every interval).
BEAT_STALE_INTERVALS = 4
BEAT_STALE_MIN_SECONDS = 60.0
# Same rule as apps.outbound: a host name is letters, digits, - and _ in dot-separated labels.
_HOST_NAME = re.compile(
    r"(?=.{1,254}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
)


@dataclass(frozen=True)
class Finding:
    name: str
    status: str
    detail: str
    # Further lines of detail (one item each), shown indented under the finding's line.
    notes: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        return "\n".join([f"{self.status:<6}{self.name}: {self.detail}", *(f"        {note}" for note in self.notes)])


# -- database -------------------------------------------------------------------


def database_check() -> Finding:
    """Connects to the default database and compares its applied migrations with the code's."""
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        connection.ensure_connection()
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # noqa: BLE001 - every driver has its own error classes; the class is enough to act on
        return Finding("database", FAIL, f"cannot connect ({type(exc).__name__})")
    if plan:
        apps = sorted({migration.app_label for migration, _ in plan})
        return Finding(
            "database", FAIL, f"{len(plan)} migrations not applied ({', '.join(apps)}): run manage.py migrate"
        )
    return Finding("database", OK, "reachable, migrations applied")


# -- broker and workers ---------------------------------------------------------------


def broker_check() -> Finding:
    """Asks the broker for a connection (the embedded one: whether it runs and answers).
    Never starts the embedded broker."""
    if settings.CELERY_BROKER_IS_EMBEDDED:
        from apps.broker.embedded import embedded_broker

        broker = embedded_broker()
        pid = broker.pid()
        if pid is None:
            return Finding(
                "broker", FAIL,
                f"embedded broker not running at {broker.socket_path} (start a worker or manage.py broker start)",
            )
        if not broker.answers(timeout=BROKER_TIMEOUT_SECONDS):
            return Finding("broker", FAIL, f"embedded broker (pid {pid}) does not answer at {broker.socket_path}")
        return Finding("broker", OK, f"embedded broker answering at {broker.socket_path} (pid {pid})")

    from apps.broker.app import app

    connection = app.connection_for_write(
        connect_timeout=BROKER_TIMEOUT_SECONDS,
        transport_options={
            "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
            "socket_timeout": BROKER_TIMEOUT_SECONDS,
        },
    )
    # Host and port only: the URL may hold a password.
    where = f"{connection.transport_cls} at {connection.hostname}:{connection.port or 'default port'}"
    try:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=BROKER_TIMEOUT_SECONDS
        )
    except Exception as exc:  # noqa: BLE001 - kombu raises several kinds for an unreachable broker
        return Finding("broker", FAIL, f"cannot connect to {where} ({type(exc).__name__})")
    finally:
        connection.release()
    return Finding("broker", OK, f"reachable: {where}")


def workers_check(*, broker_ok: bool) -> Finding:
    """Asks the live workers (Celery remote control) which queues they consume;
    FAIL when none consumes the run queue."""
    from apps.broker.app import app

    queue = app.conf.task_default_queue
    if not broker_ok:
        return Finding("workers", FAIL, "not asked: the broker cannot be reached")
    try:
        replies = app.control.inspect(timeout=WORKER_REPLY_SECONDS).active_queues() or {}
    except Exception as exc:  # noqa: BLE001 - kombu raises several kinds for a broker that went away
        return Finding("workers", FAIL, f"cannot ask the workers ({type(exc).__name__})")
    served = {name: sorted(q.get("name", "?") for q in queues or ()) for name, queues in sorted(replies.items())}
    listing = "; ".join(f"{name} ({', '.join(queues)})" for name, queues in served.items())
    consumers = [name for name, queues in served.items() if queue in queues]
    if not served:
        return Finding("workers", FAIL, f"no live worker answered within {WORKER_REPLY_SECONDS:g}s")
    if not consumers:
        return Finding("workers", FAIL, f"no live worker consumes the run queue {queue}: {listing}")
    stranded = _stranded_hosts({q for queues in served.values() for q in queues})
    if stranded:
        return Finding(
            "workers", WARN,
            f"queued runs wait for hosts no live worker serves: {stranded} "
            f"(start one there with MONITOR_HOST=<host>); {len(served)} live: {listing}",
        )
    return Finding("workers", OK, f"{len(served)} live, {len(consumers)} on the run queue {queue}: {listing}")


def _stranded_hosts(queues: set[str]) -> str:
    """The hosts that queued runs target and no queue in ``queues`` serves,
    with how many runs wait for each ("gamma (2), db-9 (1)"); empty when none."""
    from django.db.models import Count

    from apps.hostnames import host_queue
    from apps.orchestration.models import PipelineRun

    waiting = (
        PipelineRun.objects.filter(status=PipelineRun.Status.QUEUED).exclude(target_host="")
        .values("target_host").annotate(n=Count("pk")).order_by("target_host")
    )
    return ", ".join(
        f"{row['target_host']} ({row['n']})" for row in waiting if host_queue(row["target_host"]) not in queues
    )


# -- beat ----------------------------------------------------------------------------


def beat_check() -> Finding:
    """Beat's last tick: the newest last_run_at of the enabled periodic tasks
    (beat writes it on every tick, CELERY_BEAT_SYNC_EVERY=1), and who holds
    the beat lease; warn when another beat was refused it lately (two beats).

    Stale or absent is FAIL when a definition has an enabled schedule (those
    runs are not launched without beat), warn otherwise: the workers run the
    recovery sweep themselves, so a deployment without beat still runs."""
    from django.db.models import Max
    from django_celery_beat.models import PeriodicTask

    from apps.orchestration.beatstate import lease_status
    from apps.orchestration.schedules import TASK_PREFIX

    try:
        enabled = PeriodicTask.objects.filter(enabled=True)
        last_tick = enabled.aggregate(last=Max("last_run_at"))["last"]
        schedules = enabled.filter(name__startswith=TASK_PREFIX).count()
    except Exception as exc:  # noqa: BLE001 - the database check reports the cause
        return Finding("beat", FAIL, f"cannot read the schedules ({type(exc).__name__})")
    limit = max(BEAT_STALE_INTERVALS * settings.RUN_RECOVERY_INTERVAL_SECONDS, BEAT_STALE_MIN_SECONDS)
    status = FAIL if schedules else WARN
    consequence = (
        f"{schedules} pipeline schedules are not launched" if schedules
        else "no pipeline is scheduled; workers still sweep for lost runs"
    )
    try:
        lease = lease_status()
    except Exception as exc:  # noqa: BLE001 - the database check reports the cause
        return Finding("beat", FAIL, f"cannot read the beat lease ({type(exc).__name__})")
    if last_tick is None:
        return Finding("beat", status, f"has never ticked (is celery beat running?): {consequence}")
    age = (timezone.now() - last_tick).total_seconds()
    if age > limit:
        return Finding(
            "beat", status, f"last tick {_ago(age)} ago, over {limit:g}s (is celery beat running?): {consequence}"
        )
    if lease is None or lease.expired:
        return Finding("beat", OK, f"last tick {_ago(age)} ago")
    held = f"held by {lease.holder} (renewed {_ago(lease.renewed_age or 0)} ago)"
    # A refused beat retries every few seconds: one refused within two leases is still running.
    if lease.refused_by and lease.refused_age is not None and lease.refused_age <= 2 * settings.BEAT_LEASE_SECONDS:
        return Finding(
            "beat", WARN,
            f"two beats on this database: the lease is {held}; {lease.refused_by} was refused it "
            f"{_ago(lease.refused_age)} ago and fires nothing (stop one of them)",
        )
    return Finding("beat", OK, f"last tick {_ago(age)} ago; the lease is {held}")


def _ago(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return str(timedelta(seconds=seconds)) if seconds >= 60 else f"{seconds}s"


# -- environment ---------------------------------------------------------------------


def environment_check(*, broker_ok: bool | None = None) -> Finding:
    """Asks the live workers (their env_missing remote-control command) which of
    the variables the active definitions' nodes need (``*_env`` options, and the
    conventional variables of the drivers, channels and providers they use) they
    lack; FAIL when a worker that would run a node lacks one. Workers that do not
    answer are listed. ``broker_ok`` False: not asked (the broker check failed).
    Names variables, never values."""
    from apps.orchestration.models import PipelineDefinition
    from apps.orchestration.targeting import target_choice
    from apps.orchestration.workerenv import definition_env_needs, workers_env_report

    try:
        definitions = list(PipelineDefinition.objects.filter(is_active=True).order_by("name"))
        needs, problems = [], []
        for definition in definitions:
            config = definition.config if isinstance(definition.config, dict) else {}
            found, trouble = definition_env_needs(
                config=config, target=target_choice(host=None, config=config), prefix=f"{definition.name}."
            )
            needs += found
            problems += trouble
    except Exception as exc:  # noqa: BLE001 - the database check reports the cause
        return Finding("environment", FAIL, f"cannot read the definitions ({type(exc).__name__})")
    names = sorted({name for need in needs for name in need.names})
    if not names:
        if problems:
            return Finding("environment", WARN, problems[0], tuple(problems[1:]))
        return Finding("environment", OK, f"the {len(definitions)} active definitions name no variable")
    if broker_ok is False:
        return Finding(
            "environment", WARN,
            f"no worker was asked about {printable(', '.join(names))}: the broker cannot be reached",
            tuple(problems),
        )
    report = workers_env_report(needs=needs, timeout=WORKER_REPLY_SECONDS)
    if report.unasked:
        return Finding("environment", WARN, report.unasked, tuple(problems))
    notes = tuple(report.gaps + report.unchecked + problems)
    if report.gaps:
        return Finding(
            "environment", FAIL,
            "variables the active definitions need are not set where their runs execute:", notes,
        )
    answered = len(report.answered)
    workers = f"{answered} live worker{'' if answered == 1 else 's'}"
    summary = f"{printable(', '.join(names))} set on the {workers} that answered"
    return Finding("environment", WARN if notes else OK, summary + (";" if notes else ""), notes)


# -- outbound ------------------------------------------------------------------------


def outbound_check() -> Finding:
    """Each OUTBOUND_ALLOW_HOSTS entry is a host name or a network; warns for
    entries that allow every address and for unparseable ones."""
    entries = [str(entry).strip() for entry in settings.OUTBOUND_ALLOW_HOSTS if str(entry).strip()]
    if not entries:
        return Finding("outbound", OK, "OUTBOUND_ALLOW_HOSTS is empty: outbound calls reach public addresses only")
    warnings = []
    for entry in entries:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOST_NAME.fullmatch(entry.lower()):
                warnings.append(f"{entry!r} is neither a host name nor a network")
            continue
        if network.prefixlen == 0:
            warnings.append(f"{entry} allows every address (internal services and cloud metadata included)")
    if warnings:
        return Finding("outbound", WARN, "OUTBOUND_ALLOW_HOSTS: " + "; ".join(warnings))
    return Finding("outbound", OK, f"OUTBOUND_ALLOW_HOSTS allows {', '.join(entries)}")


# -- all of them ----------------------------------------------------------------------

CHECKS = ("database", "broker", "workers", "beat", "environment", "outbound")


def doctor_run(*, only: list[str] | None = None, skip: list[str] | None = None) -> list[Finding]:
    """The findings of the chosen checks (all by default), in CHECKS order.
    Sets PGCONNECT_TIMEOUT in this process when it is unset (bounds a PostgreSQL connect)."""
    os.environ.setdefault("PGCONNECT_TIMEOUT", str(DATABASE_CONNECT_TIMEOUT_SECONDS))
    chosen = [name for name in CHECKS if (not only or name in only) and name not in (skip or [])]
    findings: list[Finding] = []
    broker: Finding | None = None
    for name in chosen:
        if name in ("workers", "environment"):
            # Asking workers through a broker that cannot be reached would only wait.
            broker = broker or broker_check()
            if name == "workers":
                finding = workers_check(broker_ok=broker.status == OK)
            else:
                finding = environment_check(broker_ok=broker.status == OK)
        elif name == "broker":
            broker = finding = broker_check()
        else:
            finding = {
                "database": database_check,
                "beat": beat_check,
                "outbound": outbound_check,
            }[name]()
        findings.append(finding)
    return findings
