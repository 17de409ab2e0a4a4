"""The alert intake: one notification from an alert source (an Alertmanager
group, a Grafana notification...) recorded as alerts, and the runs of the
definitions whose triggers match them, all in one transaction.

The runs go through the launcher (launch.launch_checked) with the checks
every trigger has, and are sent to the workers once the transaction has
committed. The broker need not be up: a run whose message cannot be sent
stays queued, and the recovery sweep sends it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.alerts.parsers import ParsedAlert, PayloadError
from apps.alerts.services import AlertBatch, alert_batch, alert_batch_record, alert_sources
from apps.expressions import ExpressionError, expression_evaluate
from apps.hostnames import ALL, AUTO, host_name
from apps.orchestration import dispatch
from apps.orchestration.inputs import definition_check, launch_check, payload_check, trace_id_check
from apps.orchestration.launch import launch_checked
from apps.orchestration.launchrequest import LaunchError, LaunchRequest, ResolvedDefinition
from apps.orchestration.models import AlertDelivery, PipelineDefinition, PipelineRun
from apps.orchestration.targeting import target_choice
from apps.orchestration.triggers import AlertTrigger, alert_triggers
from apps.text import printable

logger = logging.getLogger("apps.orchestration.intake")


@dataclass
class AlertIntake:
    """What one notification did: the runs it started, the runs an identical
    notification started before (within its triggers' dedup window), and how
    many of its alerts started or deduplicated nothing."""

    runs: list[PipelineRun]
    deduplicated: list[int]
    unmatched: int


@dataclass
class _Match:
    """The alerts of a notification that match one definition's triggers."""

    definition: PipelineDefinition
    alerts: list[ParsedAlert]
    dedup_seconds: int


def alerts_receive(*, source: str, body: dict, trace_id: str | None = None) -> AlertIntake:
    """Record the alerts of ``body`` (a notification of the alert source
    ``source``) and start the runs of the active definitions whose triggers
    match them: one run per matching definition and per host the matching
    alerts name (alerts without a host: the shared queue), sharing a group id
    when there are several; a definition that names its own host or hosts
    runs there. The runs have trigger "alert", ``source``, the body as their
    payload and ``trace_id`` (each a new one when None).

    The same notification (same group, alerts and statuses) received again
    within a trigger's ``dedup_seconds`` starts nothing for that definition
    and reports the runs it started before.

    Raises LaunchError (BAD_INPUT) for an unknown source, a body that cannot
    be read as alerts of ``source``, a body larger than RUN_MAX_PAYLOAD_BYTES
    as JSON, or a bad trace id; nothing is stored then.
    """
    batch = _read(source=source, body=body, trace_id=trace_id)
    try:
        dispatch.broker_ready()
    except LaunchError as exc:
        # Not a refusal: the runs are stored queued and the recovery sweep sends them.
        logger.warning("event=alerts.broker_unavailable source=%s error=%s", source, printable(str(exc)))
    runs: list[PipelineRun] = []
    deduplicated: list[int] = []
    used: set[int] = set()  # indexes of the alerts that started or deduplicated something
    with transaction.atomic():
        alert_batch_record(batch=batch)
        for match in _matches(batch):
            started, earlier = _launch(match, batch=batch, body=body, trace_id=trace_id)
            runs += started
            deduplicated += earlier
            used.update(id(alert) for alert in match.alerts)
    unmatched = sum(1 for alert in batch.alerts if id(alert) not in used)
    logger.info(
        "event=alerts.received source=%s alerts=%s runs=%s deduplicated=%s unmatched=%s",
        source, len(batch.alerts), ",".join(str(run.pk) for run in runs) or "-",
        ",".join(map(str, deduplicated)) or "-", unmatched,
    )
    return AlertIntake(runs=runs, deduplicated=deduplicated, unmatched=unmatched)


def _read(*, source: str, body: object, trace_id: str | None) -> AlertBatch:
    """The alerts of ``body``, read and checked before anything is stored. Raises LaunchError."""
    known = alert_sources()
    if not isinstance(source, str) or source not in known:
        raise LaunchError(f"Unknown alert source: {printable(str(source)[:50])} (known: {', '.join(known)})")
    # The body is every run's payload: one that a run could not store is refused whole, alerts and all.
    payload = payload_check(body, what="Alert payload")
    trace_id_check(trace_id)
    try:
        return alert_batch(payload=payload, source=source)
    except PayloadError as exc:
        raise LaunchError(printable(str(exc))) from None


def _alert_variables(alert: ParsedAlert, source: str) -> dict:
    """What a trigger's match sees of one alert (apps.orchestration.triggers.ALERT_FIELDS)."""
    return {"alert": {
        "name": alert.name, "severity": alert.severity, "status": alert.status, "host": alert.host,
        "labels": alert.labels, "source": source,
    }}


def _matches(batch: AlertBatch) -> list[_Match]:
    """The active definitions with a trigger of the batch's source, each with
    the alerts its triggers match (definitions that match none are left out)."""
    found = []
    variables = [_alert_variables(alert, batch.source) for alert in batch.alerts]
    # Only definitions with triggers are read; which source they name is in the JSON.
    candidates = PipelineDefinition.objects.filter(is_active=True, config__has_key="triggers").order_by("name")
    for definition in candidates:
        config = definition.config
        try:
            triggers = alert_triggers(config=config, source=batch.source) if isinstance(config, dict) else []
        except ExpressionError as exc:
            logger.error("event=trigger.invalid definition=%s error=%s", definition.name, exc)
            continue
        matched: dict[int, ParsedAlert] = {}
        dedup_seconds = 0
        for index, trigger in enumerate(triggers):
            hits = _trigger_hits(trigger, batch, variables, definition=definition.name, index=index)
            if hits:
                dedup_seconds = max(dedup_seconds, trigger.dedup_seconds)
                matched.update((id(alert), alert) for alert in hits)
        if matched:
            # Payload order, whichever trigger matched each alert.
            alerts = [alert for alert in batch.alerts if id(alert) in matched]
            found.append(_Match(definition=definition, alerts=alerts, dedup_seconds=dedup_seconds))
    return found


def _trigger_hits(
    trigger: AlertTrigger, batch: AlertBatch, variables: list[dict], *, definition: str, index: int
) -> list[ParsedAlert]:
    """The alerts of ``batch`` whose status is in the trigger's ``on`` and that
    its match accepts. An evaluation that fails counts as no match; the first
    failure is logged once for the notification."""
    hits, failures, reason = [], 0, ""
    for alert, seen in zip(batch.alerts, variables, strict=True):
        if alert.status not in trigger.on:
            continue
        if trigger.match is None:
            hits.append(alert)
            continue
        outcome = expression_evaluate(trigger.match, seen)
        if outcome.matched:
            hits.append(alert)
        elif outcome.error is not None:
            failures, reason = failures + 1, reason or outcome.error
    if failures:
        logger.warning(
            "event=trigger.match_failed definition=%s trigger=%s source=%s alerts=%s error=%s "
            "(counted as no match)",
            definition, index, batch.source, failures, reason,
        )
    return hits


def _dedup_key(match: _Match, batch: AlertBatch) -> str:
    """The identity of a notification for one definition: its group, and its
    matching alerts' fingerprints and statuses."""
    alerts = sorted({(alert.fingerprint, alert.status) for alert in match.alerts})
    raw = json.dumps([match.definition.name, batch.source, batch.group_key, alerts], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def _hosts(config: dict, alerts: list[ParsedAlert]) -> list[str]:
    """The hosts of a definition's runs: its own "host" or "hosts" list, else
    the hosts the alerts name, each once ("" for alerts that name none)."""
    choice = target_choice(host=None, config=config)
    if isinstance(choice, list):
        return choice
    if choice not in ("", AUTO, ALL):
        return [choice]
    # "auto", "all" and no choice: the alerts say where (asking live workers would hold the answer).
    return list(dict.fromkeys(host_name(alert.host) or "" for alert in alerts))


def _launch(
    match: _Match, *, batch: AlertBatch, body: dict, trace_id: str | None
) -> tuple[list[PipelineRun], list[int]]:
    """Start the runs of one matching definition, unless the same notification
    did within its dedup window: (runs started, run ids of the earlier ones)."""
    definition = match.definition
    key, now = _dedup_key(match, batch), timezone.now()
    earlier = AlertDelivery.objects.select_for_update().filter(key=key).first()
    if earlier is not None and earlier.expires_at > now:
        return [], list(earlier.run_ids)
    resolved = ResolvedDefinition(definition.config, "definition", definition.name, definition)
    request = LaunchRequest(
        resolved=resolved, payload=body, source=batch.source, trace_id=trace_id, trigger=PipelineRun.Trigger.ALERT,
    )
    try:
        definition_check(resolved=resolved)
        launch_check(request=request)
    except LaunchError as exc:
        # A stored definition edited past validation: it starts nothing, the other definitions still run.
        logger.error("event=trigger.refused definition=%s error=%s", definition.name, printable(str(exc)))
        return [], []
    hosts = _hosts(definition.config, match.alerts)
    group_id = uuid.uuid4() if len(hosts) > 1 else None
    expires = now + timedelta(seconds=match.dedup_seconds)
    try:
        # A savepoint: when an identical notification stored its record first, these runs go too.
        with transaction.atomic():
            runs = [
                launch_checked(request=dataclasses.replace(request, target_host=host, group_id=group_id))
                for host in hosts
            ]
            ids = [run.pk for run in runs]
            # An expired record is replaced; one the prune deleted meanwhile is written again.
            replaced = earlier is not None and AlertDelivery.objects.filter(pk=earlier.pk).update(
                run_ids=ids, created_at=now, expires_at=expires
            )
            if not replaced:
                AlertDelivery.objects.create(
                    key=key, definition_name=definition.name, run_ids=ids, created_at=now, expires_at=expires
                )
    except IntegrityError:
        other = AlertDelivery.objects.select_for_update().filter(key=key).first()
        if other is None:
            raise
        return [], list(other.run_ids)
    return runs, []
