"""PagerDuty v3 webhooks (apps/alerts/parsers/pagerduty.py): reading incident events
and following one incident from triggered to resolved in the database."""
from __future__ import annotations

import copy

import pytest

from apps.alerts.models import Alert, Incident
from apps.alerts.parsers import PayloadError, parsers
from apps.alerts.services import alert_ingest, alert_source_detect

PAGERDUTY = parsers.get("pagerduty")()

# A low-urgency incident from an Events API integration, as PagerDuty delivers it.
DISK_INCIDENT = {
    "event": {
        "id": "01DVCVXH4S8H9UZ0QAXQ4AJV8U",
        "event_type": "incident.triggered",
        "resource_type": "incident",
        "occurred_at": "2025-02-03T07:12:44.031Z",
        "agent": {
            "html_url": "https://acme.pagerduty.com/services/PDB0STG",
            "id": "PDB0STG",
            "self": "https://api.pagerduty.com/services/PDB0STG",
            "summary": "Database storage",
            "type": "service_reference",
        },
        "client": {"name": "Prometheus"},
        "data": {
            "id": "PT4KHLK",
            "type": "incident",
            "self": "https://api.pagerduty.com/incidents/PT4KHLK",
            "html_url": "https://acme.pagerduty.com/incidents/PT4KHLK",
            "number": 1234,
            "status": "triggered",
            "incident_key": "baf7cf21b1da41b4b0221008339ff357",
            "created_at": "2025-02-03T07:12:43Z",
            "title": "Disk /var/lib/postgresql 91% full",
            "service": {
                "html_url": "https://acme.pagerduty.com/service-directory/PDB0STG",
                "id": "PDB0STG",
                "self": "https://api.pagerduty.com/services/PDB0STG",
                "summary": "Database storage",
                "type": "service_reference",
            },
            "assignees": [
                {"id": "PXPGF42", "summary": "Earline Greenholt", "type": "user_reference"}
            ],
            "escalation_policy": {"id": "PUS0KTE", "summary": "DBA", "type": "escalation_policy_reference"},
            "teams": [
                {"id": "PFCVPS0", "summary": "Data", "type": "team_reference"},
                {"id": "PFCVPS1", "summary": "Storage", "type": "team_reference"},
            ],
            "priority": {"id": "PSO75BN", "summary": "P3", "type": "priority_reference"},
            "urgency": "low",
            "custom_fields": [
                {"id": "PICFVXX", "name": "host", "type": "field_value", "value": "db-02.example.com",
                 "data_type": "string", "field_type": "single_value"},
                {"id": "PF3UUI7", "name": "region", "type": "field_value", "value": ["eu-west-1", "eu-west-2"],
                 "data_type": "string", "field_type": "multi_value_fixed"},
            ],
            "conference_bridge": None,
            "resolve_reason": None,
        },
    }
}


def event(payload: dict, event_type: str, status: str, agent: str | None = None) -> dict:
    """``payload`` as PagerDuty sends it after the incident moved to ``status``."""
    payload = copy.deepcopy(payload)
    payload["event"]["event_type"] = event_type
    payload["event"]["data"]["status"] = status
    if agent:
        payload["event"]["agent"] = {"id": "PLH1HKV", "summary": agent, "type": "user_reference"}
    return payload


def test_triggered_incident_is_one_firing_alert_keyed_by_the_incident_id():
    [alert] = PAGERDUTY.parse(DISK_INCIDENT)
    assert alert.fingerprint == "pagerduty:PT4KHLK"
    assert alert.name == "Disk /var/lib/postgresql 91% full"
    assert alert.status == "firing"
    assert alert.severity == "warning"  # low urgency, P3
    assert alert.host == "db-02.example.com"  # the host custom field beats the service name
    assert alert.description == (
        "PagerDuty incident #1234 triggered on service Database storage (low urgency, priority P3), "
        "assigned to Earline Greenholt: https://acme.pagerduty.com/incidents/PT4KHLK"
    )
    assert alert.labels == {
        "host": "db-02.example.com",
        "region": "eu-west-1,eu-west-2",
        "pagerduty_incident_id": "PT4KHLK",
        "incident_number": "1234",
        "incident_key": "baf7cf21b1da41b4b0221008339ff357",
        "service": "Database storage",
        "urgency": "low",
        "priority": "P3",
        "pagerduty_status": "triggered",
        "event_type": "incident.triggered",
        "escalation_policy": "DBA",
        "teams": "Data, Storage",
        "html_url": "https://acme.pagerduty.com/incidents/PT4KHLK",
    }


def test_host_is_the_service_name_without_a_host_custom_field():
    payload = copy.deepcopy(DISK_INCIDENT)
    del payload["event"]["data"]["custom_fields"]
    [alert] = PAGERDUTY.parse(payload)
    assert alert.host == "Database storage"


def test_host_custom_field_may_be_an_object_and_an_instance_with_a_port():
    payload = copy.deepcopy(DISK_INCIDENT)
    payload["event"]["data"]["custom_fields"] = {"Instance": "db-03:9100"}
    [alert] = PAGERDUTY.parse(payload)
    assert alert.host == "db-03"


@pytest.mark.parametrize(
    "urgency, priority, severity",
    [
        ("high", None, "critical"),
        ("low", None, "warning"),
        ("low", "P1", "critical"),
        ("low", "SEV-2", "critical"),
        ("high", "P5", "critical"),
        ("low", "P5", "warning"),  # never below warning: someone was paged
        (None, "P3", "warning"),
        (None, None, "warning"),
    ],
)
def test_severity_is_the_worse_of_urgency_and_priority(urgency, priority, severity):
    payload = copy.deepcopy(DISK_INCIDENT)
    data = payload["event"]["data"]
    data["urgency"] = urgency
    data["priority"] = {"summary": priority, "type": "priority_reference"} if priority else None
    [alert] = PAGERDUTY.parse(payload)
    assert alert.severity == severity


def test_acknowledged_is_still_firing_and_resolved_resolves_the_same_alert():
    acknowledged = event(DISK_INCIDENT, "incident.acknowledged", "acknowledged", agent="Tenex Engineer")
    resolved = event(DISK_INCIDENT, "incident.resolved", "resolved", agent="Tenex Engineer")
    [firing] = PAGERDUTY.parse(DISK_INCIDENT)
    [acked] = PAGERDUTY.parse(acknowledged)
    [done] = PAGERDUTY.parse(resolved)
    assert (acked.status, done.status) == ("firing", "resolved")
    assert firing.fingerprint == acked.fingerprint == done.fingerprint
    assert acked.description.startswith("PagerDuty incident #1234 acknowledged by Tenex Engineer on service")
    assert done.labels["pagerduty_status"] == "resolved"


def test_a_resolved_status_resolves_whatever_the_event_type():
    [alert] = PAGERDUTY.parse(event(DISK_INCIDENT, "incident.priority_updated", "resolved"))
    assert alert.status == "resolved"


@pytest.mark.parametrize(
    "event_type, data",
    [
        ("incident.annotated", {"type": "incident_note", "content": "Looking into it",
                                "incident": {"id": "PT4KHLK", "type": "incident_reference"}}),
        ("pagey.ping", {"type": "ping", "message": "Hello from your friend Pagey!"}),
        ("service.updated", {"type": "service", "id": "PDB0STG", "summary": "Database storage"}),
    ],
)
def test_events_without_incident_data_are_recognised_but_refused(event_type, data):
    payload = {"event": {"id": "01X", "event_type": event_type, "resource_type": event_type.split(".")[0],
                         "occurred_at": "2025-02-03T07:12:44Z", "agent": None, "client": None, "data": data}}
    assert alert_source_detect(payload=payload) == "pagerduty"
    with pytest.raises(PayloadError) as excinfo:
        PAGERDUTY.parse(payload)
    assert str(excinfo.value) == (
        f"PagerDuty {event_type} events carry no incident to record "
        "(only events whose data is an incident are read)"
    )


def test_an_incident_without_an_id_is_refused():
    payload = copy.deepcopy(DISK_INCIDENT)
    del payload["event"]["data"]["id"]
    with pytest.raises(PayloadError, match="PagerDuty incident has no id"):
        PAGERDUTY.parse(payload)


def test_a_payload_without_an_event_is_not_pagerduty():
    assert not PAGERDUTY.detect({"messages": [{"event": "incident.trigger"}]})
    with pytest.raises(PayloadError, match="Not a PagerDuty payload: no event object"):
        PAGERDUTY.parse({"incident": {}})


@pytest.mark.django_db
def test_incident_lifecycle_triggered_acknowledged_resolved_in_the_database():
    first = alert_ingest(payload=DISK_INCIDENT, source="cli")
    assert first["source"] == "pagerduty"
    assert first["incident"]["status"] == "open"
    assert first["incident"]["title"] == "Disk /var/lib/postgresql 91% full on db-02.example.com"

    acked = alert_ingest(payload=event(DISK_INCIDENT, "incident.acknowledged", "acknowledged"), source="auto")
    assert acked["incident"]["id"] == first["incident"]["id"]
    assert acked["incident"]["status"] == "open"

    done = alert_ingest(payload=event(DISK_INCIDENT, "incident.resolved", "resolved"), source="pagerduty")
    alert = Alert.objects.get()
    assert (alert.fingerprint, alert.source, alert.status, alert.occurrences) == (
        "pagerduty:PT4KHLK", "pagerduty", "resolved", 3,
    )
    assert alert.resolved_at is not None
    incident = Incident.objects.get()
    assert (incident.status, incident.severity) == ("resolved", "warning")
    assert incident.resolved_at is not None
    assert done["resolved"] == 1 and done["incident"]["status"] == "resolved"


@pytest.mark.django_db
def test_a_reopened_incident_fires_again_in_a_new_incident():
    alert_ingest(payload=DISK_INCIDENT, source="pagerduty")
    alert_ingest(payload=event(DISK_INCIDENT, "incident.resolved", "resolved"), source="pagerduty")
    again = alert_ingest(payload=event(DISK_INCIDENT, "incident.reopened", "triggered"), source="pagerduty")
    assert again["incident"]["status"] == "open"
    assert Incident.objects.count() == 2
    assert Alert.objects.get().status == "firing"


@pytest.mark.django_db
def test_two_pagerduty_incidents_are_two_alerts():
    other = copy.deepcopy(DISK_INCIDENT)
    other["event"]["data"]["id"] = "PQ7Z3NB"
    alert_ingest(payload=DISK_INCIDENT, source="pagerduty")
    alert_ingest(payload=other, source="pagerduty")
    assert sorted(Alert.objects.values_list("fingerprint", flat=True)) == [
        "pagerduty:PQ7Z3NB", "pagerduty:PT4KHLK",
    ]
