"""Hostile input for POST /api/v1/alerts/<source>, in bodies, alert fields, headers, path
segments and query values: every answer is JSON and none is a 500, and a refused request
writes no row (Alert, Incident, PipelineRun, AlertDelivery)."""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from apps.alerts.models import Alert, Incident
from apps.alerts.services import alert_sample, alert_sources
from apps.orchestration.models import AlertDelivery, PipelineDefinition, PipelineRun
from tests.api.openapi import answered
from tests.hostile import HOSTILE_JSON, HOSTILE_TEXT
from tests.support import TINY_NODES

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]

PATH = "/api/v1/alerts/alertmanager"



@pytest.fixture
def key(make_key):
    return make_key("alerts")


@pytest.fixture(autouse=True)
def definitions(db):
    """A definition of every source that every alert starts, and one whose match reads labels,
    host and name: the hostile text reaches the trigger's expression too."""
    for source in alert_sources():
        PipelineDefinition.objects.create(name=f"{source}-all", config={
            "version": "1.0", "nodes": TINY_NODES, "triggers": [{"alert": {"source": source}}],
        })
    PipelineDefinition.objects.create(name="picky", config={
        "version": "1.0", "nodes": TINY_NODES, "triggers": [{"alert": {
            "source": "alertmanager", "on": ["firing", "resolved"],
            "match": 'alert.labels["team"] == "db" || alert.host.startsWith("web") || alert.name.contains("x")',
        }}],
    })


def _segment(text: str) -> str:
    return quote(text.encode("utf-8", "surrogateescape"), safe="")


def rows() -> tuple[int, int, int, int]:
    return (Alert.objects.count(), Incident.objects.count(), PipelineRun.objects.count(),
            AlertDelivery.objects.count())


def post(client, key, path, body, **headers):
    raw = body if isinstance(body, str) else json.dumps(body)  # a lone surrogate travels as \\udcff
    return client.post(path, raw, content_type="application/json",
                       headers={"Authorization": f"Bearer {key}", **headers})


def am_group(alert: dict, **top) -> dict:
    return {"version": "4", "receiver": "pipelines", "status": "firing", "groupKey": '{}:{alertname="X"}',
            "alerts": [alert], **top}


def am_alert(**fields) -> dict:
    labels = {"alertname": "HighCPU", "instance": "web-01:9100", "severity": "critical"}
    return {"status": "firing", "labels": labels, "annotations": {}, "fingerprint": "0123456789abcdef", **fields}


def check_accepted_or_refused(response, before, what):
    """An accepted notification stored its body as sent, each run an alert run; a refused
    one changed no row."""
    if response.status_code == 202:
        body = response.json()
        for run in PipelineRun.objects.filter(pk__in=body["runs"]):
            assert run.trigger == "alert" and run.status == "queued", what
            assert run.payload == json.loads(response.wsgi_request.body), what
    else:
        assert response.status_code == 400, (what, response.status_code, response.json())
        assert rows() == before, what


@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
def test_hostile_json_bodies_are_400_for_every_source_and_store_nothing(client, key, name):
    for source in alert_sources():
        response = answered(post(client, key, f"/api/v1/alerts/{source}", HOSTILE_JSON[name]))
        # "empty" is no body at all, so no Content-Type either (as Django's test client sends it).
        assert response.status_code in ((400, 415) if name == "empty" else (400,)), (source, name, response.json())
    assert rows() == (0, 0, 0, 0)


def test_hostile_text_in_every_alertmanager_field(client, key):
    for text in HOSTILE_TEXT:
        variants = {
            "alertname": am_group(am_alert(labels={"alertname": text, "instance": "web-01:9100"})),
            "instance": am_group(am_alert(labels={"alertname": "A", "instance": text})),
            "severity": am_group(am_alert(labels={"alertname": "A", "severity": text})),
            "label-key": am_group(am_alert(labels={"alertname": "A", text: "db", "team": text})),
            "status": am_group(am_alert(status=text)),
            "fingerprint": am_group(am_alert(fingerprint=text)),
            "annotation": am_group(am_alert(annotations={"summary": text, text: text})),
            "starts-at": am_group(am_alert(startsAt=text, endsAt=text)),
            "group-key": am_group(am_alert(), groupKey=text, status=text, version=text),
            "labels-not-a-map": am_group(am_alert(labels=text)),
        }
        for what, body in variants.items():
            before = rows()
            response = answered(post(client, key, PATH, body))
            check_accepted_or_refused(response, before, (what, text))


def test_hostile_text_in_every_generic_field(client, key):
    for text in HOSTILE_TEXT:
        for field in ("name", "severity", "status", "host", "description", "fingerprint"):
            body = {**alert_sample(source="generic"), field: text}
            before = rows()
            response = answered(post(client, key, "/api/v1/alerts/generic", body))
            check_accepted_or_refused(response, before, (field, text))
            if response.status_code == 202 and field == "host":
                # A host that is no host name starts a run on the shared queue, never an odd queue.
                targets = {run.target_host for run in PipelineRun.objects.filter(pk__in=response.json()["runs"])}
                assert targets <= {"", text.strip().lower()}, (text, targets)


def test_hostile_text_in_the_other_sources_samples(client, key):
    fields = {
        "grafana": ("title", "state", "status", "groupKey", "orgId"),
        "pagerduty": ("event",),
        "datadog": ("title", "hostname", "alert_transition", "alert_type", "tags", "alert_scope", "aggregate", "id"),
    }
    for source, names in fields.items():
        for text in HOSTILE_TEXT:
            for field in names:
                body = {**alert_sample(source=source), field: text}
                before = rows()
                response = answered(post(client, key, f"/api/v1/alerts/{source}", body))
                check_accepted_or_refused(response, before, (source, field, text))


def test_hostile_source_path_segments_are_404_and_store_nothing(client, key):
    for text in [*HOSTILE_TEXT, "..", "%2e%2e", "alertmanager/..", "alertmanager%00", "ALERTMANAGER",
                 "alertmanager ", "generic;x", "１"]:
        response = answered(post(client, key, f"/api/v1/alerts/{_segment(text)}", alert_sample(source="generic")))
        assert response.status_code in (404, 405), (text, response.status_code)
    assert rows() == (0, 0, 0, 0)


def test_hostile_query_values_change_nothing_the_route_reads(client, key):
    body = am_group(am_alert())
    first = answered(post(client, key, PATH, body))
    assert first.status_code == 202 and first.json()["runs"]
    runs = PipelineRun.objects.count()
    for text in HOSTILE_TEXT:
        for param in ("source", "trace_id", "host", "dedup", _segment(text)):
            response = answered(post(client, key, f"{PATH}?{param}={_segment(text)}", body))
            # The same notification: a repeat, whatever the query says.
            assert response.status_code == 202, (param, text)
            assert response.json()["runs"] == [] and response.json()["deduplicated"] == first.json()["runs"]
    assert PipelineRun.objects.count() == runs


def test_hostile_headers(client, key):
    # Not checked against the document (routed=False): its checker cannot hold a header with a line break.
    body = json.dumps(am_group(am_alert()))
    for text in HOSTILE_TEXT:
        for authorization in (text, f"Bearer {text}", f"Bearer {key}{text}", f"{text} {key}"):
            if authorization.strip() in (key, f"Bearer {key}"):
                continue  # the key itself, with spaces around it
            response = answered(client.post(PATH, body, content_type="application/json",
                                            headers={"Authorization": authorization}), routed=False)
            assert response.status_code == 401, (authorization, response.json())
        response = answered(client.post(PATH, body, content_type=text or "text/plain",
                                        headers={"Authorization": f"Bearer {key}"}), routed=False)
        assert response.status_code in (400, 415), (text, response.json())
        assert rows() == (0, 0, 0, 0), text
    # Headers the receiver does not read change nothing but are no trouble either.
    for text in HOSTILE_TEXT:
        response = answered(client.post(PATH, body, content_type="application/json", headers={
            "Authorization": f"Bearer {key}", "X-Forwarded-For": text, "Accept": text, "Idempotency-Key": text,
            "X-Trace-Id": text, "User-Agent": text,
        }), routed=False)
        assert response.status_code == 202, (text, response.json())
    assert PipelineRun.objects.count() == 2  # alertmanager-all and picky, once; the rest were repeats
