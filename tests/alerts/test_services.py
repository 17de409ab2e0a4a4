"""Alert services: recording alerts by fingerprint and grouping them into incidents."""
from __future__ import annotations

import json

import pytest

from apps.alerts.models import Alert, Incident
from apps.alerts.parsers import PayloadError
from apps.alerts.services import alert_batch, alert_ingest, alert_recorded, alert_sample, alert_sources

pytestmark = pytest.mark.django_db


def generic(name="High CPU usage", host="web-01", status="firing", severity="critical"):
    return {"name": name, "host": host, "status": status, "severity": severity}


def test_sources_are_the_registered_parsers():
    assert alert_sources() == ["alertmanager", "datadog", "generic", "grafana", "pagerduty"]


@pytest.mark.parametrize("source", ["alertmanager", "datadog", "generic", "grafana", "pagerduty"])
def test_every_source_has_a_sample_that_ingests_as_that_source(source):
    result = alert_ingest(payload=alert_sample(source=source), source="auto")
    assert result["source"] == source
    assert result["incident"]["status"] == "open"


def test_cli_sample_is_the_generic_sample():
    assert alert_sample(source="cli") == alert_sample(source="generic")


def test_sample_of_unknown_source_lists_the_known_ones():
    with pytest.raises(PayloadError, match=r"Unknown alert source: nagios .*alertmanager, datadog, generic, grafana, pagerduty"):
        alert_sample(source="nagios")


def test_first_alert_is_created_and_opens_an_incident():
    result = alert_ingest(payload=generic(), source="cli")
    assert result["source"] == "generic"
    assert (result["created"], result["updated"], result["resolved"]) == (1, 0, 0)
    [item] = result["alerts"]
    assert item["created"] is True
    alert = Alert.objects.get(pk=item["id"])
    assert (alert.name, alert.host, alert.status, alert.occurrences) == (
        "High CPU usage", "web-01", "firing", 1,
    )
    assert result["incident"] == {
        "id": alert.incident_id,
        "title": "High CPU usage on web-01",
        "severity": "critical",
        "status": "open",
        "alert_count": 1,
    }
    json.dumps(result)  # the result goes into the run record as JSON


def test_same_alert_twice_is_one_alert_with_two_occurrences_and_one_incident():
    first = alert_ingest(payload=generic(), source="auto")
    second = alert_ingest(payload=generic(), source="auto")
    assert Alert.objects.count() == 1
    assert Alert.objects.get().occurrences == 2
    assert Incident.objects.count() == 1
    assert (second["created"], second["updated"]) == (0, 1)
    assert second["alerts"][0]["created"] is False
    assert second["incident"]["id"] == first["incident"]["id"]


def test_resolved_payload_resolves_alert_and_incident():
    alert_ingest(payload=generic(), source="generic")
    result = alert_ingest(payload=generic(status="resolved"), source="generic")
    alert = Alert.objects.get()
    incident = Incident.objects.get()
    assert alert.status == "resolved" and alert.resolved_at is not None
    assert incident.status == "resolved" and incident.resolved_at is not None
    assert result["resolved"] == 1
    assert result["incident"]["status"] == "resolved"


def test_alertmanager_resolution_matches_on_the_alerts_own_fingerprint():
    payload = alert_sample(source="alertmanager")
    alert_ingest(payload=payload, source="alertmanager")
    payload["status"] = payload["alerts"][0]["status"] = "resolved"
    result = alert_ingest(payload=payload, source="cli")
    assert result["source"] == "alertmanager"
    assert Alert.objects.get().fingerprint == "3f5c2a9d8e7b6a41"
    assert Incident.objects.get().status == "resolved"


def test_incident_stays_open_while_one_of_its_alerts_is_firing():
    payload = {"alerts": [generic(name="CPU"), generic(name="Memory", severity="warning")]}
    first = alert_ingest(payload=payload, source="cli")
    assert first["incident"]["alert_count"] == 2
    assert first["incident"]["severity"] == "critical"  # the worst of the two
    result = alert_ingest(payload=generic(name="CPU", status="resolved"), source="cli")
    assert result["incident"]["status"] == "open"
    result = alert_ingest(payload=generic(name="Memory", status="resolved"), source="cli")
    assert result["incident"]["status"] == "resolved"
    assert Incident.objects.count() == 1


def test_new_alert_sent_with_an_incidents_alert_joins_that_incident():
    first = alert_ingest(payload=generic(name="CPU"), source="cli")
    second = alert_ingest(
        payload={"alerts": [generic(name="Load", severity="warning"), generic(name="CPU")]},
        source="cli",
    )
    assert second["incident"]["id"] == first["incident"]["id"]
    assert second["incident"]["alert_count"] == 2
    assert Incident.objects.count() == 1


def test_incident_severity_rises_with_a_worse_alert():
    alert_ingest(payload=generic(name="CPU", severity="warning"), source="cli")
    result = alert_ingest(
        payload={"alerts": [generic(name="CPU", severity="warning"), generic(name="Disk")]},
        source="cli",
    )
    assert result["incident"]["severity"] == "critical"


def test_alert_firing_again_after_resolution_opens_a_new_incident():
    first = alert_ingest(payload=generic(), source="cli")
    alert_ingest(payload=generic(status="resolved"), source="cli")
    again = alert_ingest(payload=generic(), source="cli")
    assert again["incident"]["id"] != first["incident"]["id"]
    assert again["incident"]["status"] == "open"
    alert = Alert.objects.get()
    assert (alert.status, alert.resolved_at, alert.occurrences) == ("firing", None, 3)


def test_resolved_alert_never_seen_firing_opens_no_incident():
    result = alert_ingest(payload=generic(status="resolved"), source="cli")
    assert result["incident"] is None
    assert Incident.objects.count() == 0
    assert Alert.objects.get().resolved_at is not None


def test_duplicate_alert_within_one_payload_counts_two_occurrences():
    result = alert_ingest(payload={"alerts": [generic(), generic()]}, source="cli")
    assert [a["created"] for a in result["alerts"]] == [True, False]
    assert Alert.objects.get().occurrences == 2


@pytest.mark.parametrize("payload", [{}, {"version": "4", "receiver": "r", "groupKey": "k", "alerts": []}])
def test_payload_without_alerts_is_rejected(payload):
    with pytest.raises(PayloadError, match="No alerts found in payload"):
        alert_ingest(payload=payload, source="auto")
    assert Alert.objects.count() == 0


def test_unknown_source_is_rejected_with_the_known_ones():
    with pytest.raises(PayloadError, match=r"Unknown alert source: zabbix \(known: alertmanager, datadog, generic, grafana, pagerduty, auto\)"):
        alert_ingest(payload=generic(), source="zabbix")


def test_payload_of_another_format_is_rejected_by_an_explicit_source():
    with pytest.raises(PayloadError, match="Not an Alertmanager payload"):
        alert_ingest(payload=generic(), source="alertmanager")


def test_a_bad_alert_stores_nothing_from_the_payload():
    with pytest.raises(PayloadError):
        alert_ingest(payload={"alerts": [generic(), {"name": "x", "status": "??"}]}, source="cli")
    assert Alert.objects.count() == 0 and Incident.objects.count() == 0


def resolved_sample(source: str) -> dict:
    """The sample of ``source`` as that source reports the alert over."""
    payload = alert_sample(source=source)
    if source in ("alertmanager", "grafana"):
        payload["status"] = "resolved"
        for alert in payload["alerts"]:
            alert["status"] = "resolved"
    elif source == "generic":
        payload["status"] = "resolved"
    elif source == "pagerduty":
        payload["event"]["event_type"] = "incident.resolved"
        payload["event"]["data"]["status"] = "resolved"
    elif source == "datadog":
        payload.update(
            alert_transition="Recovered",
            alert_type="success",
            title=payload["title"].replace("[Triggered", "[Recovered"),
        )
    return payload


@pytest.mark.parametrize("source", ["alertmanager", "datadog", "generic", "grafana", "pagerduty"])
def test_resolved_payload_of_each_source_closes_its_alert_and_incident(source):
    opened = alert_ingest(payload=alert_sample(source=source), source="auto")
    closed = alert_ingest(payload=resolved_sample(source), source="auto")
    assert closed["source"] == source
    assert closed["alerts"][0]["id"] == opened["alerts"][0]["id"]
    alert = Alert.objects.get()
    assert (alert.source, alert.status, alert.occurrences) == (source, "resolved", 2)
    assert alert.resolved_at is not None
    incident = Incident.objects.get()
    assert incident.pk == opened["incident"]["id"]
    assert incident.status == "resolved" and incident.resolved_at is not None


@pytest.mark.parametrize("source", ["alertmanager", "grafana"])
def test_grouped_alerts_of_a_source_resolve_the_incident_only_when_all_are_resolved(source):
    payload = alert_sample(source=source)
    second = json.loads(json.dumps(payload["alerts"][0]))
    second["labels"] = {**second["labels"], "instance": "web-02:9100"}
    second["fingerprint"] = "0f0e0d0c0b0a0908"
    payload["alerts"].append(second)
    opened = alert_ingest(payload=payload, source="auto")
    assert opened["incident"]["alert_count"] == 2

    one = resolved_sample(source)  # resolves only the first alert
    assert alert_ingest(payload=one, source="auto")["incident"]["status"] == "open"
    both = resolved_sample(source)
    both["alerts"].append({**second, "status": "resolved"})
    result = alert_ingest(payload=both, source="auto")
    assert result["incident"]["status"] == "resolved"
    assert result["incident"]["id"] == opened["incident"]["id"]
    assert set(Alert.objects.values_list("status", flat=True)) == {"resolved"}


def test_recorded_alerts_are_reported_without_counting_them_again():
    payload = {"alerts": [generic(), generic(name="Disk full", host="db-01", status="resolved")]}
    ingested = alert_ingest(payload=payload, source="generic")
    recorded = alert_recorded(payload=payload, source="generic")
    assert [a["id"] for a in recorded["alerts"]] == [a["id"] for a in ingested["alerts"]]
    assert all(a["created"] is False for a in recorded["alerts"])
    assert (recorded["created"], recorded["updated"], recorded["resolved"], recorded["recorded"]) == (0, 0, 1, True)
    assert recorded["incident"] == ingested["incident"]
    assert list(Alert.objects.order_by("pk").values_list("occurrences", flat=True)) == [1, 1]


def test_recorded_is_none_when_an_alert_is_not_on_record():
    alert_ingest(payload=generic(), source="generic")
    assert alert_recorded(payload={"alerts": [generic(), generic(name="New one")]}, source="generic") is None


def test_group_key_is_the_alertmanager_and_grafana_group():
    assert alert_batch(payload=alert_sample(source="alertmanager"), source="alertmanager").group_key == (
        '{}:{alertname="HighCPUUsage"}'
    )
    assert alert_batch(payload=alert_sample(source="grafana"), source="grafana").group_key.startswith("{}:")
    assert alert_batch(payload=generic(), source="generic").group_key == ""
