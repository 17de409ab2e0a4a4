"""Alert services: recognise alert payloads and record them as deduplicated
alerts grouped into incidents."""
from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.alerts.models import Alert, Incident
from apps.alerts.parsers import ParsedAlert, Parser, PayloadError, parsers
from apps.alerts.parsers.common import worst_severity
from apps.registry import UnknownPlugin

# Sources that mean "work out the format from the payload".
AUTODETECT = ("cli", "auto")


def alert_sources() -> list[str]:
    """Names of the registered alert parsers, sorted."""
    return parsers.keys()


def _parser(source: str) -> Parser:
    try:
        return parsers.get(source)()
    except UnknownPlugin:
        known = ", ".join(alert_sources())
        raise PayloadError(f"Unknown alert source: {source} (known: {known}, auto)") from None


def alert_source_detect(*, payload: dict) -> str:
    """The name of the first parser that recognises ``payload``; fallback
    parsers (generic) are tried last. Raises PayloadError when none does."""
    # Stable sort: alphabetical within each group, fallbacks at the end.
    ordered = sorted(parsers.items(), key=lambda item: bool(getattr(item[1], "fallback", False)))
    for name, parser_class in ordered:
        if parser_class().detect(payload):
            return name
    raise PayloadError("Could not recognise the alert payload format")


def alert_sample(*, source: str) -> dict:
    """A realistic example payload of ``source`` (the generic one for cli/auto).

    Raises PayloadError for an unknown source."""
    if not source or source in AUTODETECT:
        source = "generic"
    return _parser(source).sample()


def alert_hosts(*, payload: dict, source: str) -> list[str]:
    """The hosts the alerts of ``payload`` name, in payload order, each once
    (empty when none names one). Reads only; raises PayloadError as
    alert_ingest does for a payload that cannot be read as alerts."""
    if not isinstance(payload, dict) or not payload:
        raise PayloadError("No alerts found in payload")
    name = alert_source_detect(payload=payload) if not source or source in AUTODETECT else source
    return list(dict.fromkeys(item.host for item in _parser(name).parse(payload) if item.host))


@dataclass(frozen=True)
class AlertBatch:
    """The alerts of one payload as its source's parser read them, not stored:
    ``group_key`` is the source's identity of their group ("" when it has none)."""

    source: str
    alerts: list[ParsedAlert]
    group_key: str


def alert_batch(*, payload: dict, source: str) -> AlertBatch:
    """Read ``payload`` as alerts of ``source`` (a parser name, or "cli"/"auto"
    to detect the format). Reads only. Raises PayloadError for an unknown
    source or an unreadable or empty payload."""
    if not isinstance(payload, dict):
        raise PayloadError("Alert payload must be a JSON object")
    if not payload:
        raise PayloadError("No alerts found in payload")
    name = alert_source_detect(payload=payload) if not source or source in AUTODETECT else source
    parser = _parser(name)
    parsed = parser.parse(payload)
    if not parsed:
        raise PayloadError("No alerts found in payload")
    return AlertBatch(source=name, alerts=parsed, group_key=parser.group_key(payload))


def alert_ingest(*, payload: dict, source: str) -> dict:
    """Record the alerts of ``payload`` and group them into an incident.

    ``source`` names a parser, or is "cli"/"auto" to detect the format. In one
    transaction, alerts are created or updated by fingerprint (occurrences,
    status, resolved_at); the alerts join the open incident one of them already
    belongs to, or a new incident when any is firing; an incident whose alerts
    are all resolved is resolved. Returns a JSON-serialisable summary.
    Raises PayloadError for an unknown source or an unreadable or empty payload.
    """
    return alert_batch_record(batch=alert_batch(payload=payload, source=source))


def alert_batch_record(*, batch: AlertBatch) -> dict:
    """Record the alerts of ``batch`` as alert_ingest does, and return its summary."""
    name, parsed = batch.source, batch.alerts
    now = timezone.now()
    fingerprints = sorted({item.fingerprint for item in parsed})
    with transaction.atomic():
        rows = _lock(fingerprints)
        if len(rows) == len(fingerprints):  # a repeat: nothing to create
            results, incident = _record(parsed, rows, source=name, now=now, bulk=False)
        else:
            try:
                # The alerts not on record are written in one INSERT; in a savepoint, since
                # another ingest may write one of them first (its unique fingerprint).
                with transaction.atomic():
                    results, incident = _record(parsed, rows, source=name, now=now, bulk=True)
            except IntegrityError:
                results, incident = _record(parsed, _lock(fingerprints), source=name, now=now, bulk=False)

    created_count = sum(1 for _, _, created in results if created)
    return {
        "source": name,
        "alerts": [
            {**item.to_dict(), "id": alert.pk, "created": created}
            for item, alert, created in results
        ],
        "created": created_count,
        "updated": len(results) - created_count,
        "resolved": sum(1 for item in parsed if item.status == Alert.Status.RESOLVED),
        "incident": _incident_dict(incident) if incident is not None else None,
    }


def alert_recorded(*, payload: dict, source: str) -> dict | None:
    """The summary of ``payload``'s alerts as they are on record, for a run
    whose alerts were recorded when they were received (alert_ingest's shape:
    every alert with its id and ``created`` false, nothing counted as new or
    updated, ``recorded`` true). Reads only; None when an alert of the
    payload is not on record (pruned since). Raises PayloadError as
    alert_ingest does."""
    batch = alert_batch(payload=payload, source=source)
    fingerprints = list(dict.fromkeys(item.fingerprint for item in batch.alerts))
    rows = {
        alert.fingerprint: alert
        for alert in Alert.objects.filter(fingerprint__in=fingerprints).select_related("incident")
    }
    if len(rows) != len(fingerprints):
        return None
    incidents = [incident for fp in fingerprints if (incident := rows[fp].incident) is not None]
    # The incident the alerts joined: an open one first, as alert_ingest chose it.
    incident = next((i for i in incidents if i.status == Incident.Status.OPEN), incidents[0] if incidents else None)
    return {
        "source": batch.source,
        "alerts": [
            {**item.to_dict(), "id": rows[item.fingerprint].pk, "created": False} for item in batch.alerts
        ],
        "created": 0,
        "updated": 0,
        "resolved": sum(1 for item in batch.alerts if item.status == Alert.Status.RESOLVED),
        "incident": _incident_dict(incident) if incident is not None else None,
        "recorded": True,
    }


def _first_of(parsed: list[ParsedAlert], index: int) -> bool:
    """Whether parsed[index] is the first alert with its fingerprint in the payload."""
    fingerprint = parsed[index].fingerprint
    return all(p.fingerprint != fingerprint for p in parsed[:index])


def _lock(fingerprints: list[str]) -> dict[str, Alert]:
    """The alerts on record with these fingerprints, locked, by fingerprint. Locking in
    fingerprint order keeps two concurrent ingests from deadlocking."""
    locked = Alert.objects.select_for_update().filter(fingerprint__in=fingerprints).order_by("fingerprint")
    return {alert.fingerprint: alert for alert in locked}


def _record(
    parsed: list[ParsedAlert], rows: dict[str, Alert], *, source: str, now, bulk: bool
) -> tuple[list[tuple[ParsedAlert, Alert, bool]], Incident | None]:
    """With ``rows`` the alerts of ``parsed`` on record (locked): write the missing ones
    (all in one INSERT with ``bulk``, else one by one, finding those another ingest wrote
    meanwhile), apply each occurrence, and group them into an incident. Returns (item, alert, created) for
    each parsed alert, and the incident. Raises IntegrityError with ``bulk`` when another
    ingest wrote one of the missing alerts first."""
    first: dict[str, ParsedAlert] = {}
    for item in parsed:
        first.setdefault(item.fingerprint, item)
    new: dict[str, Alert] = {}
    for fingerprint in sorted(set(first) - set(rows)):
        fields = _new_fields(first[fingerprint], source=source, now=now)
        if bulk:
            new[fingerprint] = Alert(fingerprint=fingerprint, **fields)
            continue
        alert, created = Alert.objects.select_for_update().get_or_create(fingerprint=fingerprint, defaults=fields)
        (new if created else rows)[fingerprint] = alert
    every = {**rows, **new}
    results = []
    for index, item in enumerate(parsed):
        alert = every[item.fingerprint]
        created = item.fingerprint in new and _first_of(parsed, index)
        if not created:
            _apply(alert, item, source=source, now=now)
        results.append((item, alert, created))
    # Payload order, so the incident is titled after the first alert sent.
    alerts = [every[fp] for fp in dict.fromkeys(item.fingerprint for item in parsed)]
    incident = _group(alerts, now=now)
    unsaved = [alert for alert in alerts if alert.pk is None]
    if unsaved:
        Alert.objects.bulk_create(unsaved)
        if any(alert.pk is None for alert in unsaved):  # a database that returns no ids from a bulk insert
            written = Alert.objects.filter(fingerprint__in=[alert.fingerprint for alert in unsaved])
            ids = dict(written.values_list("fingerprint", "pk"))
            for alert in unsaved:
                alert.pk = ids[alert.fingerprint]
    inserted = {id(alert) for alert in unsaved}
    for alert in alerts:
        if id(alert) not in inserted:
            alert.save()
    if incident is not None:
        incident = _settle(incident, alerts, now=now)
    return results, incident


def _new_fields(item: ParsedAlert, *, source: str, now) -> dict:
    """The fields of an alert seen for the first time (besides its fingerprint)."""
    return {
        "source": source,
        "name": item.name[:300],
        "severity": item.severity,
        "status": item.status,
        "host": item.host[:255],
        "description": item.description,
        "labels": item.labels,
        "resolved_at": now if item.status == Alert.Status.RESOLVED else None,
    }


def _apply(alert: Alert, item: ParsedAlert, *, source: str, now) -> None:
    """Update an alert already on record with a new occurrence of it (not saved)."""
    was_resolved = alert.status == Alert.Status.RESOLVED
    alert.occurrences += 1
    alert.source = source
    alert.name = item.name[:300]
    alert.severity = item.severity
    alert.status = item.status
    alert.labels = item.labels
    # Resolution notices often carry less detail; keep what the firing one said.
    if item.host:
        alert.host = item.host[:255]
    if item.description:
        alert.description = item.description
    if item.status == Alert.Status.RESOLVED:
        if not (was_resolved and alert.resolved_at):
            alert.resolved_at = now
    else:
        alert.resolved_at = None


def _group(alerts: list[Alert], *, now) -> Incident | None:
    """Choose the incident of these alerts and attach them to it (not saved).

    Returns the open incident one of them belongs to, else a new incident when
    any is firing, else the closed incident they belonged to (or None)."""
    incident_ids = [a.incident_id for a in alerts if a.incident_id]
    open_incidents = {
        i.pk: i
        for i in Incident.objects.select_for_update().filter(
            pk__in=incident_ids, status=Incident.Status.OPEN
        )
    }
    incident = next((open_incidents[i] for i in incident_ids if i in open_incidents), None)
    firing = [a for a in alerts if a.status == Alert.Status.FIRING]
    if incident is None:
        if not firing:
            # Nothing to open: report the (closed) incident these alerts belonged to.
            return Incident.objects.filter(pk__in=incident_ids[:1]).first()
        first = firing[0]
        title = f"{first.name} on {first.host}" if first.host else first.name
        incident = Incident.objects.create(
            title=title[:300], severity=worst_severity([a.severity for a in firing])
        )
    for alert in alerts:
        # An alert still in another open incident stays there; the rest join this one.
        if alert.incident_id not in open_incidents:
            alert.incident = incident
    return incident


def _settle(incident: Incident, alerts: list[Alert], *, now) -> Incident:
    """Raise the incident's severity to the worst firing alert, and resolve every
    open incident of these alerts that has no firing alert left."""
    touched = {a.incident_id for a in alerts if a.incident_id} | {incident.pk}
    for other in Incident.objects.select_for_update().filter(
        pk__in=touched, status=Incident.Status.OPEN
    ):
        firing = list(
            other.alerts.filter(status=Alert.Status.FIRING).values_list("severity", flat=True)
        )
        if firing:
            other.severity = worst_severity([other.severity, *firing])
        else:
            other.status = Incident.Status.RESOLVED
            other.resolved_at = now
        other.save()
        if other.pk == incident.pk:
            incident = other
    return incident


def _incident_dict(incident: Incident) -> dict:
    return {
        "id": incident.pk,
        "title": incident.title,
        "severity": incident.severity,
        "status": incident.status,
        "alert_count": incident.alerts.count(),
    }
