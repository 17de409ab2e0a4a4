"""The launcher: resolve a definition and a payload, validate, create the run, execute it.

Every function raises LaunchError (with the exit code the CLI should use)
for bad input, before anything is written.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import re
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.db import IntegrityError, transaction
from django.db.models.functions import Now
from django.utils import timezone

from apps import jsondata
from apps.hostnames import ALL, AUTO, HOST_NAME_RULE, host_name
from apps.alerts.parsers.base import PayloadError
from apps.alerts.services import alert_hosts, alert_sample
from apps.orchestration import dispatch, engine, events, lease
from apps.orchestration.builtin import BUILTIN_NAME, builtin_definition
from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from apps.orchestration.selectors import RUN_ID_MAX, pipeline_definition_get
from apps.orchestration.statements import row_insert
from apps.orchestration.validation import validate_definition
from apps.text import printable

logger = logging.getLogger("apps.orchestration.services")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_WAIT_GAVE_UP, EXIT_CANCELLED = 0, 1, 2, 3, 4


# Trace ids travel into logs, headers and other systems: printable ASCII, no spaces.
TRACE_ID = re.compile(r"[!-~]{1,64}")
# Labels stored with the run (PipelineRun.source / .environment hold 50 characters).
LABEL_MAX = 50
# PipelineRun.origin holds a config file's path.
CONFIG_PATH_MAX = 500
DEFINITION_NAME = re.compile(r"[-a-zA-Z0-9_]{1,100}")
# Idempotency keys come from scripts and schedulers: printable ASCII, no spaces.
IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,200}")


class LaunchError(Exception):
    """Bad input for a launch; ``exit_code`` follows the CLI's contract."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


class RunExists(Exception):
    """A run with the launch's idempotency key exists already: nothing was created."""

    def __init__(self, run: PipelineRun):
        super().__init__(f"Run {run.pk} already exists for idempotency key {run.idempotency_key}")
        self.run = run


@dataclass
class ResolvedDefinition:
    """A definition ready to run: its config and where it came from."""

    config: dict
    kind: str  # "definition", "config" or "builtin"
    origin: str  # definition name, config file path, or "builtin"
    definition: PipelineDefinition | None = None


def definition_resolve(
    *, name: str | None = None, config_path: str | None = None, notify_driver: str | None = None
) -> ResolvedDefinition:
    """Load the definition named ``name``, the JSON file ``config_path``, or the built-in one."""
    # An empty value given on purpose is an error, not "use the built-in pipeline".
    if name is not None and config_path is not None:
        raise LaunchError("Cannot specify both --definition and --config")
    if notify_driver is not None and (name is not None or config_path is not None):
        raise LaunchError("--notify-driver applies only to the built-in pipeline")
    if name is not None:
        # A name no definition can have is not looked up (some databases refuse such text).
        definition = pipeline_definition_get(name=name) if DEFINITION_NAME.fullmatch(name) else None
        if definition is None:
            raise LaunchError(f"Pipeline definition not found: {printable(name)}")
        if not definition.is_active:
            raise LaunchError(f"Pipeline definition is inactive: {name}")
        return ResolvedDefinition(definition.config, "definition", name, definition)
    if config_path is not None:
        if len(config_path) > CONFIG_PATH_MAX or printable(config_path) != config_path:
            raise LaunchError(
                f"Config path must be printable text of at most {CONFIG_PATH_MAX} characters: "
                f"{printable(config_path[:80])}{'…' if len(config_path) > 80 else ''}"
            )
        return ResolvedDefinition(_read_json_file(config_path), "config", config_path)
    return ResolvedDefinition(
        builtin_definition(notify_driver="console" if notify_driver is None else notify_driver), "builtin", BUILTIN_NAME
    )


def _read_json_file(path: str, what: str = "config file") -> object:
    """The JSON in the file at ``path``; LaunchError when it is missing,
    unreadable or not JSON within apps.jsondata's limits."""
    shown = printable(path)
    file = Path(path)
    try:
        if not file.is_file():
            raise LaunchError(f"{what.capitalize()} not found: {shown}")
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LaunchError(f"Cannot read {what}: {shown} ({reason})") from None
    try:
        return jsondata.loads(text)
    except jsondata.JsonInputError as exc:
        raise LaunchError(f"Invalid JSON in {what}: {exc}") from None


def definition_check(*, resolved: ResolvedDefinition) -> None:
    """Raise LaunchError listing every validation message when the definition is invalid."""
    messages = validate_definition(resolved.config)
    if messages:
        # One line per message, whatever the definition's text holds.
        raise LaunchError("Pipeline definition invalid:\n" + "\n".join(f"  - {printable(m)}" for m in messages))


def payload_resolve(
    *, payload: str | None = None, payload_file: str | None = None, sample: bool = False, source: str = "cli"
) -> dict:
    """The run's payload from ``--payload``, ``--file`` or ``--sample`` (empty when none is given)."""
    given = [flag for flag, value in (("--payload", payload), ("--file", payload_file), ("--sample", sample)) if value]
    if len(given) > 1:
        raise LaunchError(f"Cannot specify more than one of {', '.join(given)}")
    if payload is not None:
        try:
            data = jsondata.loads(payload)
        except jsondata.JsonInputError as exc:
            raise LaunchError(f"Invalid JSON payload: {exc}") from None
    elif payload_file is not None:
        data = _read_json_file(payload_file, "payload file")
    elif sample:
        try:
            data = alert_sample(source=source)
        except PayloadError as exc:
            raise LaunchError(printable(str(exc))) from None
    else:
        data = {}
    if not isinstance(data, dict):
        raise LaunchError(f"Payload must be a JSON object, not {type(data).__name__}")
    return data


def launch_check(
    *, payload: dict, source: str, environment: str, trace_id: str | None, idempotency_key: str | None = None
) -> None:
    """Raise LaunchError when a run could not store these values as given
    (payload within apps.jsondata's limits; short printable labels; a trace id
    and an idempotency key of printable ASCII). The same rule holds on every
    database."""
    if not isinstance(payload, dict):
        raise LaunchError(f"Payload must be a JSON object, not {type(payload).__name__}")
    problems = jsondata.problems(payload, limit=1)
    if problems:
        raise LaunchError(f"Invalid payload: {problems[0]}")
    for flag, value in (("--source", source), ("--environment", environment)):
        if not (isinstance(value, str) and 0 < len(value) <= LABEL_MAX and value.isprintable()):
            raise LaunchError(f"{flag} must be 1 to {LABEL_MAX} printable characters")
    if trace_id is not None and not (isinstance(trace_id, str) and TRACE_ID.fullmatch(trace_id)):
        raise LaunchError("--trace-id must be 1 to 64 printable ASCII characters without spaces")
    if idempotency_key is not None and not (
        isinstance(idempotency_key, str) and IDEMPOTENCY_KEY.fullmatch(idempotency_key)
    ):
        raise LaunchError("--idempotency-key must be 1 to 200 printable ASCII characters without spaces")


def _broker_ready() -> None:
    """Start the embedded broker when it is the one in use and nobody has;
    LaunchError (exit 1) when it cannot be used."""
    from workers.embedded import EmbeddedBrokerError, ensure_broker

    try:
        ensure_broker()
    except EmbeddedBrokerError as exc:
        raise LaunchError(str(exc), exit_code=EXIT_FAILED) from exc


@dataclass
class Targets:
    """Where a launch's runs go: ``hosts`` names their hosts (an empty
    string: the shared queue); with ``fan_out`` each gets a run of its own,
    all sharing a group id. ``note`` says what the launcher decided for the
    user when it was not told (``auto`` found no host)."""

    hosts: list[str]
    fan_out: bool = False
    note: str | None = None
    live: bool = False  # the hosts are those live workers said they serve


def target_choice(*, host: str | None, config: dict) -> str | list[str]:
    """What a launch targets before anyone is asked: ``host`` (``--host``)
    when given, else the definition's "host" or "hosts": a host name, "" (the
    shared queue), AUTO, ALL, or a list of host names. Raises LaunchError
    (exit 2) for a ``host`` that is none of these."""
    if host is not None:
        choice = host.lower() if isinstance(host, str) else host
        if choice not in (AUTO, ALL) and host_name(choice) is None:
            shown = printable(str(host)[:80])
            raise LaunchError(f"--host must be a host name ({HOST_NAME_RULE}), {AUTO} or {ALL}: {shown}")
        return choice
    # Read as validate_definition allows; anything else counts as no choice.
    hosts = config.get("hosts")
    if hosts == ALL:
        return ALL
    if isinstance(hosts, list) and hosts:
        return [name for name in map(host_name, hosts) if name]
    choice = config.get("host") or ""
    return choice if choice == AUTO else host_name(choice) or ""


def launch_targets(
    *, host: str | None, resolved: ResolvedDefinition, payload: dict, source: str, live_timeout: float = 2.0
) -> Targets:
    """The hosts the runs of a launch target: ``host`` (``--host``) when
    given, else the definition's "host" or "hosts", else the shared queue.

    A host name targets that host; ``auto`` the host the payload's first
    alert names (read as the definition's ingest node would read it), or the
    shared queue when it names none; ``all`` (or a definition's "hosts": "all")
    one run for each host a live worker serves, asked over the broker (this
    takes ``live_timeout`` seconds); a definition's list of hosts one run for
    each. Raises LaunchError: exit 2 for an invalid definition or a value
    that is not a host name, exit 3 when ``all`` finds no live worker host,
    exit 1 when the broker cannot be asked."""
    definition_check(resolved=resolved)
    config = resolved.config
    choice = target_choice(host=host, config=config)
    if isinstance(choice, list):
        return Targets(hosts=choice, fan_out=True)
    if choice == ALL:
        _broker_ready()
        from apps.orchestration import dispatch

        hosts = dispatch.live_hosts(timeout=live_timeout)
        if hosts is None:
            raise LaunchError("Cannot ask the workers which hosts they serve: the broker did not answer", EXIT_FAILED)
        if not hosts:
            raise LaunchError(
                "No live worker serves a host, so there is no host to run on (--host all).\n"
                "Start one on each host with:  MONITOR_HOST=<host> celery -A workers worker -l info",
                EXIT_WAIT_GAVE_UP,
            )
        return Targets(hosts=hosts, fan_out=True, live=True)
    if choice == AUTO:
        return alert_target(config=config, payload=payload, source=source)
    return Targets(hosts=[choice])


def alert_target(*, config: dict, payload: dict, source: str) -> Targets:
    """The target of ``auto``: the host of the payload's first alert that names one."""
    ingest = next((n for n in engine.node_path(config.get("nodes") or []) if n.get("type") == "ingest"), None)
    source = ((ingest or {}).get("config") or {}).get("source") or source
    try:
        named = alert_hosts(payload=payload, source=source)
    except PayloadError:
        named = []
    if not named:
        return Targets(hosts=[""], note="The alert names no host: the run goes to the shared queue.")
    host = host_name(named[0])
    if host is None:
        return Targets(
            hosts=[""],
            note=f"The alert's host is not a host name ({printable(named[0][:80])}): the run goes to the shared queue.",
        )
    return Targets(hosts=[host])


def pipeline_runs_launch(*, targets: Targets, **launch) -> list[PipelineRun]:
    """Launch the runs ``targets`` (from launch_targets, which checked the
    definition) stand for, as pipeline_run_launch does (``launch`` holds its
    other arguments): one run, or with ``fan_out`` one per host sharing a
    new group id. Raises as pipeline_run_launch does, and LaunchError for
    an idempotency key given to several runs; runs launched before a
    failure stay launched."""
    launch_check(
        payload=launch["payload"], source=launch.get("source", "cli"),
        environment=launch.get("environment", "development"), trace_id=launch.get("trace_id"),
        idempotency_key=launch.get("idempotency_key"),
    )
    if targets.fan_out and launch.get("idempotency_key") is not None:
        raise LaunchError("--idempotency-key names one run: it cannot be used with --host all or a definition's hosts")
    _broker_ready()
    group_id = uuid.uuid4() if targets.fan_out else None
    return [_launch_checked(target_host=host, group_id=group_id, **launch) for host in targets.hosts]


def pipeline_run_create(
    *,
    resolved: ResolvedDefinition,
    payload: dict,
    source: str = "cli",
    environment: str = "development",
    trace_id: str | None = None,
    trigger: str = PipelineRun.Trigger.CLI,
    idempotency_key: str | None = None,
    retry_of: PipelineRun | None = None,
    reused_results: dict | None = None,
    target_host: str = "",
    group_id: uuid.UUID | None = None,
) -> PipelineRun:
    """Validate ``resolved`` and the launch values, then store a queued run
    holding a snapshot of the definition and the payload (and, for a retry,
    the run it retries and the node results it reuses; for a targeted run,
    its host and the group of runs launched with it).

    Raises RunExists (creating nothing) when a run has ``idempotency_key``
    already, even when another launch stores it at the same moment."""
    definition_check(resolved=resolved)
    launch_check(
        payload=payload, source=source, environment=environment, trace_id=trace_id, idempotency_key=idempotency_key
    )
    _target_check(target_host)
    return _run_create(
        resolved=resolved, payload=payload, source=source, environment=environment, trace_id=trace_id,
        trigger=trigger, idempotency_key=idempotency_key, retry_of=retry_of, reused_results=reused_results,
        target_host=target_host, group_id=group_id,
    )


def _target_check(target_host: str) -> None:
    if target_host and host_name(target_host) != target_host:
        raise LaunchError(f"--host must be a host name ({HOST_NAME_RULE}), {AUTO} or {ALL}")


def _run_create(
    *, resolved, payload, source, environment, trace_id, trigger, idempotency_key, retry_of, reused_results,
    target_host, group_id,
) -> PipelineRun:
    """pipeline_run_create once its checks have passed."""
    if idempotency_key is not None:
        existing = PipelineRun.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            raise RunExists(existing)
    # One INSERT needs no transaction of its own; inside an enclosing one, a savepoint
    # lets a refused idempotency key leave that transaction usable.
    guarded = idempotency_key is not None and transaction.get_connection().in_atomic_block
    try:
        with transaction.atomic() if guarded else nullcontext():
            return _run_store(
                resolved=resolved, payload=payload, source=source, environment=environment, trace_id=trace_id,
                trigger=trigger, idempotency_key=idempotency_key, retry_of=retry_of,
                reused_results=reused_results or {}, target_host=target_host, group_id=group_id,
            )
    except IntegrityError:
        existing = PipelineRun.objects.filter(idempotency_key=idempotency_key).first() if idempotency_key else None
        if existing is None:
            raise
        raise RunExists(existing) from None


def _run_store(
    *, resolved, payload, source, environment, trace_id, trigger, idempotency_key, retry_of, reused_results,
    target_host, group_id,
) -> PipelineRun:
    run = PipelineRun(
        trace_id=trace_id or str(uuid.uuid4()),
        target_host=target_host,
        group_id=group_id,
        trigger=trigger,
        idempotency_key=idempotency_key,
        retry_of=retry_of,
        reused_results=reused_results,
        definition=resolved.definition,
        definition_name=resolved.origin if resolved.kind != "config" else "",
        origin=resolved.origin,
        origin_kind=resolved.kind,
        config_snapshot=resolved.config,
        source=source,
        environment=environment,
        payload=payload,
    )
    # published_at: counted from here, a run whose message never reaches the broker is re-sent by the sweep.
    row_insert(run, db_time=("published_at",))
    return run


def pipeline_run_execute(*, run_id: int) -> PipelineRun | None:
    """Execute the run in this process; returns it in its terminal state."""
    return engine.run_execute(run_id=run_id)


def pipeline_run_launch(
    *,
    resolved: ResolvedDefinition,
    payload: dict,
    source: str = "cli",
    environment: str = "development",
    trace_id: str | None = None,
    trigger: str = PipelineRun.Trigger.CLI,
    idempotency_key: str | None = None,
    retry_of: PipelineRun | None = None,
    reused_results: dict | None = None,
    target_host: str = "",
    group_id: uuid.UUID | None = None,
) -> PipelineRun:
    """Validate, store the run as queued, and enqueue it for a worker once
    committed: for the workers serving ``target_host``, or any worker.

    Raises RunExists when a run has ``idempotency_key`` already (nothing is
    stored or sent), LaunchError for an invalid definition (nothing stored) and, with
    exit code 1, when the broker cannot take the run (the run is then marked
    failed, so nothing runs later by surprise). Inside an enclosing
    transaction the message is sent when that transaction commits; if the
    broker refuses it then, the failure is logged and the run stays queued
    for the recovery sweep to send.
    """
    definition_check(resolved=resolved)
    launch_check(
        payload=payload, source=source, environment=environment, trace_id=trace_id, idempotency_key=idempotency_key
    )
    _target_check(target_host)
    _broker_ready()
    return _launch_checked(
        resolved=resolved, payload=payload, source=source, environment=environment, trace_id=trace_id,
        trigger=trigger, idempotency_key=idempotency_key, retry_of=retry_of, reused_results=reused_results,
        target_host=target_host, group_id=group_id,
    )


def _launch_checked(
    *, resolved, payload, source="cli", environment="development", trace_id=None, trigger=PipelineRun.Trigger.CLI,
    idempotency_key=None, retry_of=None, reused_results=None, target_host="", group_id=None,
) -> PipelineRun:
    """pipeline_run_launch once its checks have passed and the broker is ready."""
    # Inside an enclosing transaction the send happens after this returns: only the log can tell.
    outcome = {"nested": transaction.get_connection().in_atomic_block}
    run = _run_create(
        resolved=resolved, payload=payload, source=source, environment=environment, trace_id=trace_id,
        trigger=trigger, idempotency_key=idempotency_key, retry_of=retry_of, reused_results=reused_results,
        target_host=target_host, group_id=group_id,
    )
    # Sent now (the run's INSERT has committed), or when the enclosing transaction commits.
    transaction.on_commit(functools.partial(_enqueue, run, outcome))
    if "error" in outcome and not outcome["nested"]:
        message = f"Could not enqueue run {run.pk}: the broker did not take it ({outcome['error']})"
        run_mark_failed(run_id=run.pk, error=message)
        raise LaunchError(message, exit_code=EXIT_FAILED)
    return run


def _enqueue(run: PipelineRun, outcome: dict) -> None:
    """Send the run's message; a refusal is noted in ``outcome``, and logged
    when the launcher has already returned."""
    try:
        dispatch.run_publish(run_id=run.pk, definition=run.origin, trace_id=run.trace_id, host=run.target_host)
    except Exception as exc:  # kombu raises several kinds for an unreachable broker
        outcome["error"] = f"{type(exc).__name__}: {exc}"
        if outcome["nested"]:
            logger.error(
                "event=run.enqueue_failed run_id=%s trace_id=%s error=%s (the recovery sweep sends it when it can)",
                run.pk, run.trace_id, outcome["error"],
                extra={"run_id": run.pk, "trace_id": run.trace_id},
            )


def retry_launch(*, run_id: int, from_failed: bool = False) -> dict:
    """The launch arguments of a retry of run ``run_id``: its snapshot,
    payload, origin, source and environment, a new trace id, ``trigger``
    retry and the link to it; with ``from_failed``, the node results of the
    nodes that succeeded before its first failed node, to be reused. Reads
    only; raises LaunchError (exit 2) for an unknown run, a run still queued
    or running, and ``from_failed`` for a run with no failed node."""
    original = PipelineRun.objects.filter(pk=run_id).first() if 0 < run_id <= RUN_ID_MAX else None
    if original is None:
        raise LaunchError(f"Pipeline run not found: {run_id}")
    if not original.is_terminal:
        raise LaunchError(f"Run {run_id} is still {original.status}: retry it once it has finished")
    reused = {}
    if from_failed:
        reused = _reused_before_failure(original)
        if reused is None:
            raise LaunchError(
                f"Run {run_id} did not fail at a node ({original.status}, no failed node): "
                "there is nothing to retry from; retry it without --from-failed"
            )
    resolved = ResolvedDefinition(
        original.config_snapshot, original.origin_kind, original.origin, original.definition
    )
    return dict(
        resolved=resolved, payload=original.payload, source=original.source, environment=original.environment,
        trigger=PipelineRun.Trigger.RETRY, retry_of=original, reused_results=reused, target_host=original.target_host,
    )


def _reused_before_failure(run: PipelineRun) -> dict | None:
    """``run``'s node_results entries of the nodes that succeeded before its
    first failed node along the snapshot's path; None when no node failed."""
    node_results = (run.result or {}).get("node_results") or {}
    reused = {}
    for node in engine.node_path(run.config_snapshot.get("nodes") or []):
        entry = node_results.get(node["id"])
        if entry is None:
            return None  # reached a node that never ran: the run stopped before any failure
        if entry.get("status") == StageExecution.Status.FAILED:
            return reused
        if entry.get("status") == StageExecution.Status.SUCCEEDED:
            reused[node["id"]] = {key: value for key, value in entry.items() if key != "reused"}
    return None


def pipeline_run_retry(*, run_id: int, from_failed: bool = False) -> PipelineRun:
    """Launch a new run retrying run ``run_id`` (see retry_launch), through
    pipeline_run_launch: stored as queued and enqueued for a worker once
    committed. With ``from_failed`` the nodes before the original's first
    failed node are not executed again: the engine reuses their recorded
    outputs. Raises LaunchError (exit 2, nothing stored) for a run that
    cannot be retried, and as pipeline_run_launch does."""
    return pipeline_run_launch(**retry_launch(run_id=run_id, from_failed=from_failed))


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
            logger.info(
                "event=schedule.duplicate definition=%s due=%s run_id=%s", definition_name, due, earlier.pk,
                extra={"run_id": earlier.pk, "trace_id": earlier.trace_id},
            )
            return [earlier]
        if definition is None:
            from apps.orchestration.schedules import schedule_disable

            schedule_disable(definition_name=definition_name)
            return [_schedule_failed(definition_name, None, key, "it no longer exists; its schedule is disabled")]
        if not definition.is_active:
            return [_schedule_failed(definition_name, definition, key, "it is inactive")]
        messages = validate_definition(definition.config)
        if messages:
            return [_schedule_failed(definition_name, definition, key, "it is invalid: " + "; ".join(messages))]
        schedule = definition.config.get("schedule") or {}
        resolved = ResolvedDefinition(definition.config, "definition", definition.name, definition)
        payload = schedule.get("payload") or {}
        try:
            targets = launch_targets(host=None, resolved=resolved, payload=payload, source="auto")
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
            launch_check(payload=payload, source="auto", environment="development", trace_id=None)
            _broker_ready()
        except LaunchError as exc:
            return [_schedule_failed(definition_name, definition, key, str(exc))]
        group_id = uuid.uuid4() if targets.fan_out else None
        runs = []
        for host in targets.hosts:
            # Each host's run of a tick has a key of its own.
            run_key = _host_key(key, host) if key and targets.fan_out else key
            try:
                run = _launch_checked(
                    resolved=resolved, payload=payload, source="auto", trigger=PipelineRun.Trigger.SCHEDULE,
                    idempotency_key=run_key, target_host=host, group_id=group_id,
                )
            except RunExists as exc:
                logger.info(
                    "event=schedule.duplicate definition=%s due=%s run_id=%s", definition_name, due, exc.run.pk,
                    extra={"run_id": exc.run.pk, "trace_id": exc.run.trace_id},
                )
                runs.append(exc.run)
                continue
            logger.info(
                "event=schedule.launched definition=%s due=%s run_id=%s trace_id=%s host=%s",
                definition_name, due, run.pk, run.trace_id, host or "-",
                extra={"run_id": run.pk, "trace_id": run.trace_id},
            )
            runs.append(run)
    return runs


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
            return PipelineRun.objects.create(**fields)
    except IntegrityError:
        existing = PipelineRun.objects.filter(idempotency_key=key).first() if key else None
        if existing is None:
            raise
        return existing  # an earlier delivery of this tick recorded it


def run_mark_failed(*, run_id: int, error: str) -> None:
    """Mark a run that never started as failed with ``error``."""
    now = timezone.now()
    PipelineRun.objects.filter(pk=run_id, status=PipelineRun.Status.QUEUED).update(
        status=PipelineRun.Status.FAILED, error=error, finished_at=now, duration_ms=0
    )


def pipeline_run_cancel(*, run_id: int) -> PipelineRun:
    """Cancel run ``run_id``.

    A queued run is cancelled at once (a worker that receives it later
    leaves it alone), and so is a running run whose holder is gone (its lease
    ran out). A live run is asked to stop: the request is published to its
    worker at once and also read at every node boundary, so the node being
    executed finishes and no later node starts. Raises LaunchError for an
    unknown or finished run.
    """
    cancelled = {
        "status": PipelineRun.Status.CANCELLED,
        "finished_at": Now(),
        "current_node": "",
        "cancel_requested_at": Now(),
    }
    if not 0 < run_id <= RUN_ID_MAX:
        raise LaunchError(f"Pipeline run not found: {run_id}")
    runs = PipelineRun.objects.filter(pk=run_id)
    if runs.filter(status=PipelineRun.Status.QUEUED).update(
        error="Cancelled on request before it started", duration_ms=0, **cancelled
    ):
        events.run_event_publish(run_id=run_id, status=PipelineRun.Status.CANCELLED)
    elif _cancel_abandoned(run_id, cancelled):
        events.run_event_publish(run_id=run_id, status=PipelineRun.Status.CANCELLED)
    elif runs.filter(status=PipelineRun.Status.RUNNING, cancel_requested_at__isnull=True).update(
        cancel_requested_at=Now()
    ):
        events.run_event_publish(run_id=run_id, status=lease.CANCEL_EVENT)
    run = runs.first()
    if run is None:
        raise LaunchError(f"Pipeline run not found: {run_id}")
    if run.is_terminal and run.status != PipelineRun.Status.CANCELLED:
        raise LaunchError(f"Run {run_id} has already finished ({run.status})")
    return run


def _cancel_abandoned(run_id: int, cancelled: dict) -> bool:
    """End a running run whose holder is gone as cancelled, with the node it
    was executing recorded as interrupted; False when it has a live holder."""
    with transaction.atomic():
        run = (
            PipelineRun.objects.select_for_update()
            .filter(lease.lease_expired(), pk=run_id, status=PipelineRun.Status.RUNNING)
            .first()
        )
        if run is None:
            return False
        node = run.current_node
        lease.stages_interrupted(run=run, holder=run.claimed_by)
        PipelineRun.objects.filter(pk=run_id).update(
            error=f"Cancelled on request; its worker was gone (at node '{node}')" if node else "Cancelled on request",
            **cancelled,
        )
    return True


def exit_code_for(run: PipelineRun) -> int:
    """The CLI exit code a run in this state stands for."""
    return {
        PipelineRun.Status.COMPLETED: EXIT_OK,
        PipelineRun.Status.FAILED: EXIT_FAILED,
        PipelineRun.Status.CANCELLED: EXIT_CANCELLED,
    }.get(run.status, EXIT_WAIT_GAVE_UP)


# The exit code of a group of runs is its worst member's, worst first.
_WORST_FIRST = (EXIT_FAILED, EXIT_WAIT_GAVE_UP, EXIT_CANCELLED, EXIT_OK)


def exit_code_worst(codes) -> int:
    """The exit code a group of runs with these codes stands for: failed
    over gave up over cancelled over completed."""
    present = set(codes)
    return next((code for code in _WORST_FIRST if code in present), EXIT_OK)


@dataclass
class LoadReport:
    loaded: list  # (name, "created" | "updated" | "unchanged")
    refused: list  # (path, [messages])
    schedules: list  # (name, "schedule: every 300s" | "unscheduled"), only where it changed


def definitions_load(*, folder: Path) -> LoadReport:
    """Store each valid ``*.json`` definition in ``folder`` under its file name.

    Valid files are created or updated (unchanged ones are left alone), and
    each one's schedule is synced to beat's table (apps.orchestration.schedules);
    invalid ones are refused with their messages and change nothing.
    """
    from apps.orchestration.schedules import schedule_sync

    try:
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else None
    except OSError as exc:
        raise LaunchError(f"Cannot read the pipelines folder: {printable(str(folder))} ({exc.strerror})") from None
    if paths is None:
        raise LaunchError(f"Pipelines folder not found: {printable(str(folder))}")
    report = LoadReport(loaded=[], refused=[], schedules=[])
    for path in paths:
        if not DEFINITION_NAME.fullmatch(path.stem):
            report.refused.append(
                (str(path), ["the file name must be a definition name: letters, digits, '-' and '_', at most 100"])
            )
            continue
        try:
            config = _read_json_file(str(path))
        except LaunchError as exc:
            report.refused.append((str(path), [str(exc)]))
            continue
        messages = validate_definition(config)
        if messages:
            report.refused.append((str(path), messages))
            continue
        fields = {
            "description": str(config.get("description", "")),
            "version": str(config["version"]),
            "tags": config.get("tags", []) if isinstance(config.get("tags"), list) else [],
            "config": config,
            "is_active": True,
        }
        name = path.stem
        with transaction.atomic():
            existing = PipelineDefinition.objects.filter(name=name).first()
            if existing is None:
                existing = PipelineDefinition.objects.create(name=name, **fields)
                report.loaded.append((name, "created"))
            elif all(getattr(existing, key) == value for key, value in fields.items()):
                report.loaded.append((name, "unchanged"))
            else:
                for key, value in fields.items():
                    setattr(existing, key, value)
                existing.save()
                report.loaded.append((name, "updated"))
            change = schedule_sync(definition=existing)
        if change:
            report.schedules.append((name, change))
    return report


PRUNE_RUNS_TASK = "orchestration.prune_runs"
# Runs deleted per statement (each in its own transaction): short locks, bounded memory.
PRUNE_BATCH_SIZE = 500


@dataclass
class PruneCounts:
    runs: int
    stages: int
    cutoff: datetime  # runs created before this were candidates


def pipeline_runs_prune(
    *, older_than: timedelta, statuses=None, dry_run: bool = False, batch_size: int = PRUNE_BATCH_SIZE
) -> PruneCounts:
    """Delete finished runs created more than ``older_than`` ago, with their
    StageExecution rows (the cascade), optionally only those whose status is
    one of ``statuses``; queued and running runs are never deleted.

    Deletes ``batch_size`` runs per transaction, so no lock is held on the
    whole table and a concurrent writer waits at most one batch. With
    ``dry_run`` nothing is deleted and the counts are what would be. Returns
    the counts of rows deleted (or that would be). Raises ValueError for an
    age that is not positive, a status that is not terminal, or a batch size
    below 1.
    """
    if older_than <= timedelta(0):
        raise ValueError("the age must be above 0")
    terminal = [str(status) for status in PipelineRun.TERMINAL]
    chosen = terminal if statuses is None else list(statuses)
    if not chosen or set(chosen) - set(terminal):
        raise ValueError(f"statuses must be among {', '.join(terminal)}")
    if batch_size < 1:
        raise ValueError("the batch size must be at least 1")
    # created_at is stamped by the creating process's clock; at a scale of days the skew does not matter.
    cutoff = timezone.now() - older_than
    candidates = PipelineRun.objects.filter(created_at__lt=cutoff, status__in=chosen)
    if dry_run:
        stages = StageExecution.objects.filter(run__in=candidates.values("pk")).count()
        return PruneCounts(runs=candidates.count(), stages=stages, cutoff=cutoff)
    counts = PruneCounts(runs=0, stages=0, cutoff=cutoff)
    while True:
        with transaction.atomic():
            ids = list(candidates.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            # The filter is repeated so a row that changed since it was read is left alone; only ids are loaded.
            _, deleted = candidates.filter(pk__in=ids).only("pk").delete()
        counts.runs += deleted.get(PipelineRun._meta.label, 0)
        counts.stages += deleted.get(StageExecution._meta.label, 0)
    logger.info(
        "event=runs.pruned runs=%s stages=%s cutoff=%s statuses=%s",
        counts.runs, counts.stages, cutoff.isoformat(), ",".join(chosen),
    )
    return counts
