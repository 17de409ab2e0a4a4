"""POST /api/v1/alerts/<source> through the real app and database: notifications that start
runs, repeats that start nothing, resolved notices, every source's own sample, and every
refusal (none of which stores a row); each answer checked against the OpenAPI document.
Alerts that Alertmanager itself delivers to a real gunicorn, and the broker being down, are
in tests/workers/test_alert_receiver.py."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest

from apps.alerts.models import Alert, Incident
from apps.alerts.services import alert_sample, alert_sources
from apps.orchestration.models import AlertDelivery, PipelineDefinition, PipelineRun
from tests.support import TINY_NODES

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]

PATH = "/api/v1/alerts/alertmanager"



@pytest.fixture
def sender(api_client):
    """A client with a key of scope alerts, as an alert source holds."""
    return api_client("alerts")


def define(name: str, *triggers: dict, **top) -> PipelineDefinition:
    """Store an active definition of TINY_NODES with these alert triggers."""
    config = {"version": "1.0", "nodes": TINY_NODES, "triggers": [{"alert": t} for t in triggers], **top}
    return PipelineDefinition.objects.create(name=name, config=config)


def am_alert(name: str = "HighCPU", instance: str = "web-01:9100", *, status: str = "firing",
             severity: str = "critical", **labels) -> dict:
    """One alert as Alertmanager's webhook sends it (fingerprint from its name and instance)."""
    return {
        "status": status,
        "labels": {"alertname": name, "instance": instance, "severity": severity, **labels},
        "annotations": {"summary": f"{name} on {instance}"},
        "startsAt": "2026-01-15T10:30:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-15T10:40:00Z",
        "fingerprint": hashlib.sha256(f"{name}-{instance}".encode()).hexdigest()[:16],
    }


def am_group(*alerts: dict, status: str = "firing", group: str = "HighCPU") -> dict:
    """An Alertmanager webhook notification (version 4) of ``alerts`` (default: one HighCPU)."""
    return {
        "version": "4", "receiver": "pipelines", "status": status, "truncatedAlerts": 0,
        "groupKey": f'{{}}:{{alertname="{group}"}}', "groupLabels": {"alertname": group},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts) or [am_alert()],
    }


def rows() -> dict:
    """How many rows a notification can write, by model."""
    return {
        "alerts": Alert.objects.count(), "incidents": Incident.objects.count(),
        "runs": PipelineRun.objects.count(), "deliveries": AlertDelivery.objects.count(),
    }


NO_ROWS = {"alerts": 0, "incidents": 0, "runs": 0, "deliveries": 0}


# --- runs started ----------------------------------------------------------------------------


def test_a_matching_group_is_202_with_its_run_stored_as_an_alert_run(sender):
    cpu = define("cpu", {"source": "alertmanager", "match": 'alert.severity == "critical"'})
    body = am_group()
    response = sender.post(PATH, body)
    assert response.status_code == 202, response.json()
    run = PipelineRun.objects.get()
    assert response.json() == {"runs": [run.pk], "deduplicated": [], "unmatched": 0}
    assert (run.status, run.trigger, run.source, run.target_host) == ("queued", "alert", "alertmanager", "web-01")
    assert run.payload == body and run.definition == cpu and run.config_snapshot == cpu.config
    alert = Alert.objects.get()
    assert (alert.fingerprint, alert.status, alert.source) == (body["alerts"][0]["fingerprint"], "firing", "alertmanager")
    assert Incident.objects.get().status == "open"
    assert AlertDelivery.objects.get().run_ids == [run.pk]


def test_alerts_no_trigger_matches_are_counted_and_recorded(sender):
    define("db", {"source": "alertmanager", "match": 'alert.labels["team"] == "db"'})
    body = am_group(
        am_alert("DiskFull", "db-01:9100", team="db"),
        am_alert("HighCPU", "web-01:9100", team="web"),
        am_alert("HighLoad", "web-02:9100"),
        group="mixed",
    )
    response = sender.post(PATH, body)
    assert response.status_code == 202
    run = PipelineRun.objects.get()
    assert response.json() == {"runs": [run.pk], "deduplicated": [], "unmatched": 2}
    assert run.target_host == "db-01"
    assert Alert.objects.count() == 3  # the unmatched ones are recorded all the same


def test_a_group_that_matches_nothing_is_202_with_no_run(sender):
    define("db", {"source": "alertmanager", "match": 'alert.severity == "info"'})
    response = sender.post(PATH, am_group(am_alert(), am_alert("HighLoad")))
    assert response.status_code == 202
    assert response.json() == {"runs": [], "deduplicated": [], "unmatched": 2}
    assert rows() == {**NO_ROWS, "alerts": 2, "incidents": 1}


def test_a_group_spanning_hosts_fans_out_to_one_run_per_host_sharing_a_group(sender):
    define("cpu", {"source": "alertmanager"})
    response = sender.post(PATH, am_group(am_alert(instance="web-01:9100"), am_alert(instance="web-02:9100")))
    assert response.status_code == 202
    runs = list(PipelineRun.objects.order_by("pk"))
    assert response.json()["runs"] == [run.pk for run in runs]
    assert [run.target_host for run in runs] == ["web-01", "web-02"]
    assert runs[0].group_id is not None and runs[0].group_id == runs[1].group_id


def test_the_same_group_again_is_deduplicated_and_starts_nothing(sender):
    define("cpu", {"source": "alertmanager"})
    first = sender.post(PATH, am_group())
    [run_id] = first.json()["runs"]
    again = sender.post(PATH, am_group())
    assert again.status_code == 202
    assert again.json() == {"runs": [], "deduplicated": [run_id], "unmatched": 0}
    assert PipelineRun.objects.count() == 1
    assert Alert.objects.get().occurrences == 2  # the repeat is recorded, and starts nothing
    # Another alert in the group is a different notification: it starts a run.
    changed = sender.post(PATH, am_group(am_alert(), am_alert(instance="web-01:9200")))
    assert changed.status_code == 202 and len(changed.json()["runs"]) == 1
    assert changed.json()["deduplicated"] == [] and PipelineRun.objects.count() == 2


def test_a_resolved_notice_starts_runs_only_where_on_has_resolved(sender):
    define("firing-only", {"source": "alertmanager"})
    define("both", {"source": "alertmanager", "on": ["firing", "resolved"]})
    firing = sender.post(PATH, am_group())
    assert firing.status_code == 202 and len(firing.json()["runs"]) == 2
    resolved = sender.post(PATH, am_group(am_alert(status="resolved"), status="resolved"))
    assert resolved.status_code == 202
    [run_id] = resolved.json()["runs"]
    assert resolved.json() == {"runs": [run_id], "deduplicated": [], "unmatched": 0}
    run = PipelineRun.objects.get(pk=run_id)
    assert (run.definition.name, run.trigger, run.payload["status"]) == ("both", "alert", "resolved")
    assert Alert.objects.get().status == "resolved"
    assert Incident.objects.get().status == "resolved"


def test_a_resolved_notice_no_trigger_wants_is_unmatched(sender):
    define("firing-only", {"source": "alertmanager"})
    response = sender.post(PATH, am_group(am_alert(status="resolved"), status="resolved"))
    assert response.status_code == 202
    assert response.json() == {"runs": [], "deduplicated": [], "unmatched": 1}
    assert PipelineRun.objects.count() == 0


@pytest.mark.parametrize("source", ["grafana", "pagerduty", "datadog", "generic", "alertmanager"])
def test_each_sources_sample_starts_a_run_of_a_definition_matching_it(sender, source):
    define(f"{source}-cpu", {"source": source, "match": 'alert.host == "web-01" && alert.severity == "critical"'})
    # A trigger of every other source: the sample must not start those.
    for other in alert_sources():
        if other != source:
            define(f"{other}-any", {"source": other})
    body = alert_sample(source=source)
    response = sender.post(f"/api/v1/alerts/{source}", body)
    assert response.status_code == 202, response.json()
    run = PipelineRun.objects.get()
    assert response.json() == {"runs": [run.pk], "deduplicated": [], "unmatched": 0}
    assert (run.definition.name, run.trigger, run.source, run.target_host) == (f"{source}-cpu", "alert", source,
                                                                              "web-01")
    assert run.payload == body
    assert Alert.objects.get().source == source


def test_a_sample_posted_to_another_sources_route_is_read_as_that_source_or_refused(sender):
    # Datadog's body has no alerts list: Alertmanager's parser refuses it, and nothing is stored.
    response = sender.post(PATH, alert_sample(source="datadog"))
    assert response.status_code == 400
    assert rows() == NO_ROWS


# --- refusals --------------------------------------------------------------------------------


def test_an_unknown_source_is_404_and_stores_nothing(sender):
    define("any", {"source": "alertmanager"})
    for source in ("nagios", "Alertmanager", "auto", "cli", "alertmanager2"):
        response = sender.post(f"/api/v1/alerts/{source}", am_group())
        assert response.status_code == 404, source
        assert response.json() == {
            "error": "Unknown alert source (known: alertmanager, datadog, generic, grafana, pagerduty)"}
    assert rows() == NO_ROWS


@pytest.mark.parametrize(("body", "message"), [
    ({"hello": "world"}, "Not an Alertmanager payload: no alerts list"),
    ({}, "No alerts found in payload"),
    ({"version": "4", "alerts": []}, "No alerts found in payload"),
    ([am_group()], "The alert notification must be a JSON object"),
    ("firing", "The alert notification must be a JSON object"),
    (7, "The alert notification must be a JSON object"),
    (None, "The alert notification must be a JSON object"),
])
def test_a_body_that_is_not_alerts_is_400_and_stores_nothing(sender, body, message):
    define("any", {"source": "alertmanager"})
    response = sender.post(PATH, json.dumps(body))
    assert response.status_code == 400, response.json()
    assert response.json()["error"] == message
    assert rows() == NO_ROWS


def test_alerts_of_the_wrong_shape_are_400_and_store_nothing(sender):
    define("any", {"source": "alertmanager"})
    for alerts in ([1, 2], ["text"], [{"status": "firing", "labels": "not-a-map"}], {"a": 1}):
        body = {**am_group(), "alerts": alerts}
        response = sender.post(PATH, body)
        assert response.status_code == 400, (alerts, response.json())
        assert response.json()["error"]
    assert rows() == NO_ROWS


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer not-a-key", "Basic dXNlcjpwYXNz"])
def test_no_key_or_a_wrong_key_is_401_and_stores_nothing(client, sender, authorization):
    from tests.api.openapi import ApiClient

    define("any", {"source": "alertmanager"})
    anonymous = ApiClient(client)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = anonymous.post(PATH, am_group(), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]
    # A real key with one character changed is wrong too.
    forged = sender.key[:-1] + ("A" if sender.key[-1] != "A" else "B")
    assert anonymous.post(PATH, am_group(), headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert rows() == NO_ROWS


def test_a_key_without_the_alerts_scope_is_403_and_stores_nothing(api_client):
    define("any", {"source": "alertmanager"})
    response = api_client("runs:read", "runs:write", "metrics").post(PATH, am_group())
    assert response.status_code == 403
    assert response.json() == {"error": "This API key does not have the scope 'alerts'"}
    assert rows() == NO_ROWS


def test_a_body_over_api_max_body_bytes_is_413_and_stores_nothing(sender, settings):
    define("any", {"source": "alertmanager"})
    body = am_group(*(am_alert(instance=f"web-{i:02}:9100") for i in range(40)))
    size = len(json.dumps(body).encode())
    settings.API_MAX_BODY_BYTES = size - 1
    response = sender.post(PATH, json.dumps(body))
    assert response.status_code == 413
    assert response.json() == {"error": f"The request body is larger than {size - 1} bytes (API_MAX_BODY_BYTES)"}
    assert rows() == NO_ROWS
    settings.API_MAX_BODY_BYTES = size  # exactly at the limit is accepted
    assert sender.post(PATH, json.dumps(body)).status_code == 202


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "application/xml", "application/json; charset=latin-1",
])
def test_a_body_that_is_not_json_is_415_and_stores_nothing(sender, content_type):
    define("any", {"source": "alertmanager"})
    response = sender.post(PATH, json.dumps(am_group()), content_type=content_type)
    assert response.status_code == 415, response.json()
    assert response.json()["error"]
    assert rows() == NO_ROWS


def test_the_payload_stored_is_the_body_as_sent_not_as_parsed(sender):
    define("any", {"source": "alertmanager"})
    body = am_group()
    body["commonAnnotations"] = {"note": "ünïcødé \u2603", "nested": {"list": [1, 2.5, None, True]}}
    sent = copy.deepcopy(body)
    response = sender.post(PATH, body)
    assert response.status_code == 202
    assert PipelineRun.objects.get().payload == sent
