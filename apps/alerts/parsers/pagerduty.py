"""PagerDuty webhooks (v3): one alert per PagerDuty incident, updated by each incident event."""
from __future__ import annotations

import re
from collections.abc import Iterable

from apps.alerts.parsers.base import ParsedAlert, Parser, PayloadError, parsers
from apps.alerts.parsers.common import (
    CRITICAL,
    FIRING,
    INFO,
    RESOLVED,
    WARNING,
    host_from_instance,
    normalise_severity,
    source_fingerprint,
    text,
    worst_severity,
)

# Incident custom fields that name the affected machine, most specific first.
HOST_FIELDS = ("host", "hostname", "server", "instance", "node")
# Urgency decides who gets woken up: high pages now, low waits for working hours.
URGENCY_SEVERITY = {"high": CRITICAL, "low": WARNING}


@parsers.register("pagerduty")
class PagerDutyParser(Parser):
    name = "pagerduty"

    def detect(self, payload: dict) -> bool:
        event = payload.get("event") if isinstance(payload, dict) else None
        return (
            isinstance(event, dict)
            and isinstance(event.get("event_type"), str)
            and "resource_type" in event
            and "data" in event
        )

    def parse(self, payload: dict) -> list[ParsedAlert]:
        """The incident of a v3 webhook event as one alert.

        Raises PayloadError for a payload that is not a PagerDuty event, and for
        events whose data is not an incident (notes, responders, services, pings),
        which say nothing about whether the incident is firing."""
        event = payload.get("event") if isinstance(payload, dict) else None
        if not isinstance(event, dict):
            raise PayloadError("Not a PagerDuty payload: no event object")
        event_type = text(event.get("event_type")) or "event"
        data = event.get("data")
        if not isinstance(data, dict) or data.get("type") != "incident":
            raise PayloadError(
                f"PagerDuty {event_type} events carry no incident to record "
                "(only events whose data is an incident are read)"
            )
        incident_id = text(data.get("id"))
        if not incident_id:
            raise PayloadError("PagerDuty incident has no id")

        status_word = text(data.get("status")).lower()
        # triggered and acknowledged both mean the problem is still there.
        resolved = event_type == "incident.resolved" or status_word == "resolved"
        number = text(data.get("number"))
        title = text(data.get("title")) or text(data.get("summary"))
        service = _summary(data.get("service"))
        urgency = text(data.get("urgency")).lower()
        priority = _summary(data.get("priority"))
        custom = _custom_fields(data.get("custom_fields"))
        host = next(
            (host_from_instance(custom[key]) for key in HOST_FIELDS if custom.get(key)), ""
        ) or service

        labels = {
            **custom,  # PagerDuty's own fields below win over custom fields of the same name
            "pagerduty_incident_id": incident_id,
            "incident_number": number,
            "incident_key": text(data.get("incident_key")),
            "service": service,
            "urgency": urgency,
            "priority": priority,
            "pagerduty_status": status_word,
            "event_type": event_type,
            "escalation_policy": _summary(data.get("escalation_policy")),
            "teams": ", ".join(_summaries(data.get("teams"))),
            "html_url": text(data.get("html_url")),
        }
        return [
            ParsedAlert(
                fingerprint=source_fingerprint(self.name, incident_id),
                name=title or f"PagerDuty incident {f'#{number}' if number else incident_id}",
                severity=_severity(urgency, priority),
                status=RESOLVED if resolved else FIRING,
                host=host,
                description=_description(event, data, number, status_word, service, urgency, priority),
                labels={key: value for key, value in labels.items() if value},
            )
        ]

    def sample(self) -> dict:
        return {
            "event": {
                "id": "01FE2K8ZQ3XW6T0B7Y5N9C4RJA",
                "event_type": "incident.triggered",
                "resource_type": "incident",
                "occurred_at": "2025-01-15T10:30:02.418Z",
                "agent": {
                    "html_url": "https://acme.pagerduty.com/services/PWEB01X",
                    "id": "PWEB01X",
                    "self": "https://api.pagerduty.com/services/PWEB01X",
                    "summary": "web-01",
                    "type": "service_reference",
                },
                "client": {"name": "Prometheus"},
                "data": {
                    "id": "Q2W3E4R5T6Y7U8",
                    "type": "incident",
                    "self": "https://api.pagerduty.com/incidents/Q2W3E4R5T6Y7U8",
                    "html_url": "https://acme.pagerduty.com/incidents/Q2W3E4R5T6Y7U8",
                    "number": 4211,
                    "status": "triggered",
                    "incident_key": "3f5c2a9d8e7b6a41",
                    "created_at": "2025-01-15T10:30:01Z",
                    "title": "High CPU usage on web-01",
                    "service": {
                        "html_url": "https://acme.pagerduty.com/services/PWEB01X",
                        "id": "PWEB01X",
                        "self": "https://api.pagerduty.com/services/PWEB01X",
                        "summary": "web-01",
                        "type": "service_reference",
                    },
                    "assignees": [
                        {
                            "html_url": "https://acme.pagerduty.com/users/PTUXL6G",
                            "id": "PTUXL6G",
                            "self": "https://api.pagerduty.com/users/PTUXL6G",
                            "summary": "Dana Ops",
                            "type": "user_reference",
                        }
                    ],
                    "escalation_policy": {
                        "html_url": "https://acme.pagerduty.com/escalation_policies/PUS0KTE",
                        "id": "PUS0KTE",
                        "self": "https://api.pagerduty.com/escalation_policies/PUS0KTE",
                        "summary": "Web on-call",
                        "type": "escalation_policy_reference",
                    },
                    "teams": [
                        {
                            "html_url": "https://acme.pagerduty.com/teams/PFCVPS0",
                            "id": "PFCVPS0",
                            "self": "https://api.pagerduty.com/teams/PFCVPS0",
                            "summary": "Operations",
                            "type": "team_reference",
                        }
                    ],
                    "priority": {
                        "html_url": "https://acme.pagerduty.com/account/incident_priorities",
                        "id": "PSO75BM",
                        "self": "https://api.pagerduty.com/priorities/PSO75BM",
                        "summary": "P1",
                        "type": "priority_reference",
                    },
                    "urgency": "high",
                    "conference_bridge": None,
                    "resolve_reason": None,
                },
            }
        }


def _summary(reference: object) -> str:
    """The ``summary`` of a PagerDuty reference object ('' when absent)."""
    return text(reference.get("summary")) if isinstance(reference, dict) else ""


def _summaries(references: object) -> list[str]:
    if not isinstance(references, list):
        return []
    return [s for s in (_summary(r) for r in references) if s]


def _custom_fields(fields: object) -> dict:
    """Incident custom fields as name -> string, from PagerDuty's list of field
    values (``[{"name", "value"}]``) or a plain object; lists are comma-joined."""
    pairs: Iterable[tuple[object, object]]
    if isinstance(fields, dict):
        pairs = fields.items()
    elif isinstance(fields, list):
        pairs = [
            (f.get("name") or f.get("display_name"), f.get("value"))
            for f in fields
            if isinstance(f, dict)
        ]
    else:
        return {}
    values = {}
    for name, value in pairs:
        if isinstance(value, list):
            value = ",".join(text(v) for v in value if text(v))
        name, value = text(name).lower(), text(value)
        if name and value:
            values[name] = value
    return values


def _severity(urgency: str, priority: str) -> str:
    """critical / warning from the incident's urgency and priority, the worse of
    the two; a PagerDuty incident is never merely informational."""
    levels = []
    if urgency in URGENCY_SEVERITY:
        levels.append(URGENCY_SEVERITY[urgency])
    # Priorities are named per account: P1, "SEV-1", "Critical"...
    level = normalise_severity(re.sub(r"[\s_-]", "", priority.lower()), default="")
    if level:
        levels.append(WARNING if level == INFO else level)
    return worst_severity(levels) if levels else WARNING


def _description(
    event: dict, data: dict, number: str, status: str, service: str, urgency: str, priority: str
) -> str:
    """One sentence on the incident: its state, who moved it, where and how urgent."""
    what = f"PagerDuty incident #{number}" if number else "PagerDuty incident"
    if status:
        what += f" {status}"
    agent = _summary(event.get("agent"))
    if agent and status and status != "triggered":
        what += f" by {agent}"
    if service:
        what += f" on service {service}"
    qualities = [f"{urgency} urgency"] if urgency else []
    if priority:
        qualities.append(f"priority {priority}")
    if qualities:
        what += f" ({', '.join(qualities)})"
    assignees = _summaries(data.get("assignees"))
    if assignees:
        what += f", assigned to {', '.join(assignees)}"
    url = text(data.get("html_url"))
    return f"{what}: {url}" if url else what
