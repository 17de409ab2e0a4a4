"""Datadog monitor webhooks (apps/alerts/parsers/datadog.py): reading the default and
extended templates and following one monitor group from triggered to recovered."""
from __future__ import annotations

import copy

import pytest

from apps.alerts.models import Alert, Incident
from apps.alerts.parsers import PayloadError, parsers
from apps.alerts.services import alert_ingest, alert_source_detect

DATADOG = parsers.get("datadog")()

# A webhook whose payload adds the usual $ALERT_* variables to the default template.
MEMORY_TRIGGERED = {
    "id": "7301840281174829162",
    "last_updated": "1738567200000",
    "event_type": "metric_alert_monitor",
    "title": "[P2] [Triggered on {host:api-03,env:production}] Memory usage high",
    "date": "1738567200000",
    "org": {"id": "412345", "name": "Example Corp"},
    "body": "%%%\nMemory on api-03 is above 90% (current: 93.1%).\n\n@slack-ops @webhook-pipeline\n\n"
    "- - -\n\n[[Monitor Status](https://app.datadoghq.com/monitors/555)]\n%%%",
    "alert_id": "555",
    "alert_transition": "Triggered",
    "alert_type": "error",
    "alert_priority": "P2",
    "alert_metric": "system.mem.pct_usable",
    "alert_status": "system.mem.pct_usable over env:production,host:api-03 was < 0.1 on average during the last 5m.",
    "alert_scope": "env:production,host:api-03",
    "hostname": "api-03",
    "tags": "env:production, host:api-03,role:api,role:worker,canary,url:http://api-03:8080/health",
    "aggregate": "f0e1d2c3b4a5968778695a4b3c2d1e0f",
    "priority": "normal",
}

# Only the fields of Datadog's default webhook template.
DEFAULT_TEMPLATE = {
    "body": "%%%\nDisk usage on db-01 is above 85%.\n%%%",
    "last_updated": "1738567260000",
    "event_type": "query_alert_monitor",
    "title": "[Warn on {device:/dev/sda1,host:db-01}] Disk space low",
    "date": "1738567260000",
    "org": {"id": "412345", "name": "Example Corp"},
    "id": "7301840281174829999",
}


def recovered(payload: dict) -> dict:
    """``payload`` as Datadog sends it when the monitor group recovers."""
    payload = copy.deepcopy(payload)
    payload["title"] = payload["title"].replace("[Triggered", "[Recovered").replace("[Warn", "[Recovered")
    if "alert_transition" in payload:
        payload.update(alert_transition="Recovered", alert_type="success")
    payload["body"] = "%%%\nRecovered.\n%%%"
    return payload


def test_extended_template_is_read_field_by_field():
    assert alert_source_detect(payload=MEMORY_TRIGGERED) == "datadog"
    [alert] = DATADOG.parse(MEMORY_TRIGGERED)
    assert alert.fingerprint == "datadog:f0e1d2c3b4a5968778695a4b3c2d1e0f"
    assert alert.name == "Memory usage high"  # the [P2] [Triggered on ...] prefix goes
    assert (alert.status, alert.severity, alert.host) == ("firing", "critical", "api-03")
    assert alert.description == "Memory on api-03 is above 90% (current: 93.1%)."


def test_tags_become_labels_next_to_the_monitor_fields():
    [alert] = DATADOG.parse(MEMORY_TRIGGERED)
    assert alert.labels == {
        "env": "production",
        "host": "api-03",
        "role": "api,worker",  # a repeated key keeps every value
        "canary": "",  # a bare tag
        "url": "http://api-03:8080/health",  # split on the first colon only
        "alert_id": "555",
        "alert_metric": "system.mem.pct_usable",
        "alert_priority": "P2",
        "alert_scope": "env:production,host:api-03",
        "event_type": "metric_alert_monitor",
        "alert_transition": "Triggered",
    }


def test_tags_may_be_a_list_and_must_not_be_anything_else():
    payload = {**MEMORY_TRIGGERED, "tags": ["env:staging", "role:api"]}
    [alert] = DATADOG.parse(payload)
    assert (alert.labels["env"], alert.labels["role"]) == ("staging", "api")
    with pytest.raises(PayloadError, match="Datadog tags must be a comma-separated string or a list"):
        DATADOG.parse({**MEMORY_TRIGGERED, "tags": {"env": "prod"}})


def test_recovered_resolves_the_same_alert():
    [firing] = DATADOG.parse(MEMORY_TRIGGERED)
    [done] = DATADOG.parse(recovered(MEMORY_TRIGGERED))
    assert done.status == "resolved"
    assert done.fingerprint == firing.fingerprint
    assert done.severity == "critical"  # the recovery notice says success; the monitor's P2 remains


@pytest.mark.parametrize(
    "changes, status, severity",
    [
        ({"alert_transition": "Warn", "alert_type": "warning"}, "firing", "warning"),
        ({"alert_transition": "Re-Triggered", "alert_type": ""}, "firing", "critical"),
        ({"alert_transition": "No Data", "alert_type": ""}, "firing", "warning"),
        ({"alert_transition": "Renotify", "alert_type": "info"}, "firing", "info"),
        ({"alert_transition": "Recovered", "alert_type": ""}, "resolved", "critical"),
        ({"alert_transition": "", "alert_type": "success"}, "resolved", "critical"),
        ({"alert_transition": "Recovered", "alert_type": "", "alert_priority": ""}, "resolved", "warning"),
    ],
)
def test_transition_and_alert_type_decide_status_and_severity(changes, status, severity):
    [alert] = DATADOG.parse({**MEMORY_TRIGGERED, **changes})
    assert (alert.status, alert.severity) == (status, severity)


def test_without_an_aggregation_key_each_host_of_a_monitor_is_its_own_alert():
    base = {k: v for k, v in MEMORY_TRIGGERED.items() if k != "aggregate"}
    [api3] = DATADOG.parse(base)
    [api4] = DATADOG.parse({**base, "hostname": "api-04", "alert_scope": "env:production,host:api-04"})
    [api3_done] = DATADOG.parse(recovered(base))
    assert api3.fingerprint == api3_done.fingerprint != api4.fingerprint


def test_default_template_alone_is_enough():
    assert alert_source_detect(payload=DEFAULT_TEMPLATE) == "datadog"
    [alert] = DATADOG.parse(DEFAULT_TEMPLATE)
    assert alert.name == "Disk space low"
    assert alert.host == "db-01"  # from the {device:...,host:db-01} scope in the title
    assert (alert.status, alert.severity) == ("firing", "warning")  # [Warn ...]
    assert alert.description == "Disk usage on db-01 is above 85%."
    assert alert.labels == {"event_type": "query_alert_monitor", "alert_transition": "Warn"}
    [done] = DATADOG.parse(recovered(DEFAULT_TEMPLATE))
    assert done.status == "resolved"
    assert done.fingerprint == alert.fingerprint


def test_alert_status_describes_an_alert_without_a_body():
    payload = {k: v for k, v in MEMORY_TRIGGERED.items() if k != "body"}
    [alert] = DATADOG.parse(payload)
    assert alert.description.startswith("system.mem.pct_usable over env:production,host:api-03")


def test_a_payload_naming_no_alert_is_refused():
    with pytest.raises(PayloadError, match="Datadog payload has no title or alert_id"):
        DATADOG.parse({"alert_transition": "Triggered", "org": {"id": "1"}})


def test_a_monitor_id_alone_names_the_alert():
    [alert] = DATADOG.parse({"alert_transition": "Triggered", "alert_id": "555", "hostname": "api-03"})
    assert alert.name == "Datadog monitor 555"


@pytest.mark.django_db
def test_triggered_then_recovered_resolves_alert_and_incident_in_the_database():
    first = alert_ingest(payload=MEMORY_TRIGGERED, source="cli")
    assert first["source"] == "datadog"
    assert first["incident"]["title"] == "Memory usage high on api-03"
    assert first["incident"]["severity"] == "critical"
    done = alert_ingest(payload=recovered(MEMORY_TRIGGERED), source="auto")
    alert = Alert.objects.get()
    assert (alert.source, alert.status, alert.occurrences) == ("datadog", "resolved", 2)
    assert alert.resolved_at is not None
    assert alert.description == "Recovered."
    incident = Incident.objects.get()
    assert incident.status == "resolved" and incident.resolved_at is not None
    assert done["incident"]["status"] == "resolved"


@pytest.mark.django_db
def test_warn_then_triggered_raises_the_incident_to_critical():
    warn = {**MEMORY_TRIGGERED, "alert_transition": "Warn", "alert_type": "warning"}
    assert alert_ingest(payload=warn, source="datadog")["incident"]["severity"] == "warning"
    result = alert_ingest(payload=MEMORY_TRIGGERED, source="datadog")
    assert result["incident"]["severity"] == "critical"
    assert Incident.objects.count() == 1
