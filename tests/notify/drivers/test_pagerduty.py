"""The pagerduty driver against a real HTTP server standing in for the Events API v2."""
from __future__ import annotations

import pytest

from apps.notify.services import notification_send, notification_validate
from tests.notify.support import BODY, INCIDENT, assert_not_in, make_message, make_notice

ROUTING_KEY = "R0UT1NGk3y0123456789abcdef012345"
ACCEPTED = {"status": "success", "message": "Event processed", "dedup_key": "incident-3"}


@pytest.fixture
def pagerduty(http_server, monkeypatch):
    """http_server answering like PagerDuty, the routing key in OPS_PD_KEY; returns the server."""
    http_server.answer_json(ACCEPTED, status=202)
    monkeypatch.setenv("OPS_PD_KEY", ROUTING_KEY)
    return http_server


def send(server, message, **config) -> dict:
    config = {"routing_key_env": "OPS_PD_KEY", "events_url": server.url("/v2/enqueue"), **config}
    return notification_send(driver="pagerduty", config=config, message=message)


def test_pagerduty_triggers_an_event_keyed_by_the_incident(pagerduty, message):
    result = send(pagerduty, message, component="web")
    assert result == {
        "driver": "pagerduty",
        "channels_attempted": 1,
        "succeeded": 1,
        "failed": 0,
        "deliveries": [{"channel": "pagerduty", "ok": True, "detail": "HTTP 202 (trigger incident-3)"}],
    }
    [request] = pagerduty.requests
    assert request["path"] == "/v2/enqueue"
    assert request["json"] == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "incident-3",
        "payload": {
            "summary": "[CRITICAL] High CPU on web-01",
            "source": "web-01",
            "severity": "critical",
            "component": "web",
            "custom_details": {
                "pipeline": "health-check",
                "run_id": 42,
                "trace_id": "abc-123",
                "environment": "production",
                "incident": {
                    "id": 3,
                    "title": "High CPU on web-01",
                    "severity": "critical",
                    "status": "open",
                    "alert_count": 1,
                },
                "hosts": ["web-01"],
                "checks": {"cpu": "[CRITICAL] CPU at 97%"},
                "analysis": {
                    "summary": "CPU saturated by one process",
                    "probable_cause": "A runaway worker",
                    "recommendations": ["Restart the worker"],
                },
                "message": BODY,
            },
        },
    }
    assert_not_in(result, ROUTING_KEY)


def test_pagerduty_dedup_key_is_stable_across_sends_of_the_same_incident(pagerduty):
    send(pagerduty, make_message())
    send(pagerduty, make_message(title="[WARNING] High CPU on web-01", severity="warning"))
    send(pagerduty, make_message(incident={**INCIDENT, "id": 4}))
    keys = [r["json"]["dedup_key"] for r in pagerduty.requests]
    assert keys == ["incident-3", "incident-3", "incident-4"]


def test_pagerduty_incident_without_id_is_keyed_by_a_hash_of_its_title(pagerduty):
    untracked = {k: v for k, v in INCIDENT.items() if k != "id"}
    send(pagerduty, make_message(incident=untracked))
    send(pagerduty, make_message(incident=untracked, severity="warning"))
    send(pagerduty, make_message(incident={**untracked, "title": "Disk full on db-01"}))
    first, second, other = (r["json"]["dedup_key"] for r in pagerduty.requests)
    assert first == second != other
    assert first.startswith("incident-") and len(first) <= 255


def test_pagerduty_resolved_incident_resolves_the_same_alert(pagerduty):
    send(pagerduty, make_message())
    send(pagerduty, make_message(incident={**INCIDENT, "status": "resolved"}, severity="ok", title="[RESOLVED] x"))
    trigger, resolve = (r["json"] for r in pagerduty.requests)
    assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": trigger["dedup_key"]}


def test_pagerduty_run_without_incident_is_keyed_by_pipeline_and_source(pagerduty):
    send(pagerduty, make_message(incident=None), source="web-01")
    send(pagerduty, make_message(incident=None, severity="ok", title="[OK] health-check on web-01"), source="web-01")
    send(pagerduty, make_message(incident=None), source="web-02")
    failing, healthy, elsewhere = (r["json"] for r in pagerduty.requests)
    assert failing["event_action"] == "trigger" and failing["payload"]["source"] == "web-01"
    # The healthy run closes what the failing one opened, and only that.
    assert healthy == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": failing["dedup_key"]}
    assert elsewhere["dedup_key"] != failing["dedup_key"]


def test_pagerduty_run_without_incident_is_sourced_from_the_host_its_checks_measured(pagerduty):
    # As after a takeover: the checks were measured on web-07, the node runs again on this host.
    send(pagerduty, make_message(incident=None, host="web-07", key="42-notify"))
    send(pagerduty, make_message(incident=None, host="web-07", key="42-notify"))
    send(pagerduty, make_message(incident=None), source="web-07")
    first, repeat, configured = (r["json"] for r in pagerduty.requests)
    assert first["payload"]["source"] == "web-07"
    assert first["dedup_key"] == repeat["dedup_key"] == configured["dedup_key"]


def test_pagerduty_repeats_of_an_incident_share_its_dedup_key(pagerduty):
    for key in ("42-notify", "42-notify", "43-notify"):
        send(pagerduty, make_message(key=key))
    assert [r["json"]["dedup_key"] for r in pagerduty.requests] == ["incident-3"] * 3


@pytest.mark.parametrize(
    "severity, expected", [("critical", "critical"), ("warning", "warning"), ("info", "info"), ("ok", "info")]
)
def test_pagerduty_severity_is_mapped(pagerduty, severity, expected):
    send(pagerduty, make_message(severity=severity))
    assert pagerduty.last["json"]["payload"]["severity"] == expected


def test_pagerduty_summary_is_cut_to_1024_characters(pagerduty):
    send(pagerduty, make_message(title="x" * 2000))
    summary = pagerduty.last["json"]["payload"]["summary"]
    assert len(summary) == 1024 and summary.endswith("…")


def test_pagerduty_server_error_is_a_failed_delivery(pagerduty, message):
    pagerduty.answer_raw(b"oops", 500)
    result = send(pagerduty, message)
    assert result["deliveries"] == [{"channel": "pagerduty", "ok": False, "detail": "HTTP 500"}]


def test_pagerduty_rejection_names_the_reason_but_never_the_key(pagerduty, message):
    pagerduty.answer_json({"status": "invalid event", "message": f"Invalid routing key {ROUTING_KEY}"}, status=400)
    result = send(pagerduty, message)
    assert result["deliveries"] == [
        {"channel": "pagerduty", "ok": False, "detail": "HTTP 400 (Invalid routing key [redacted])"}
    ]
    assert_not_in(result, ROUTING_KEY)


def test_pagerduty_slow_answer_times_out(pagerduty, message):
    pagerduty.slow = True
    result = send(pagerduty, message, timeout_seconds=0.3)
    assert result["deliveries"] == [
        {"channel": "pagerduty", "ok": False, "detail": "timeout after 0.3s (DeadlineExceeded)"}
    ]
    assert_not_in(result, ROUTING_KEY)


def test_pagerduty_routing_key_defaults_to_pagerduty_routing_key(pagerduty, monkeypatch, message):
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "d3fault-r0uting-key")
    config = {"events_url": pagerduty.url("/v2/enqueue")}
    result = notification_send(driver="pagerduty", config=config, message=message)
    assert result["succeeded"] == 1
    assert pagerduty.last["json"]["routing_key"] == "d3fault-r0uting-key"
    assert_not_in(result, "d3fault-r0uting-key")


def test_pagerduty_without_routing_key_is_a_failed_delivery(pagerduty, message):
    config = {"events_url": pagerduty.url("/v2/enqueue")}
    result = notification_send(driver="pagerduty", config=config, message=message)
    assert result["deliveries"][0]["detail"] == (
        "No PagerDuty routing key: set PAGERDUTY_ROUTING_KEY (or the node's routing_key_env) in the environment of the workers"
    )
    assert pagerduty.requests == []


def test_pagerduty_valid_config_has_no_messages():
    assert notification_validate(config={"driver": "pagerduty"}) == []
    config = {
        "driver": "pagerduty",
        "routing_key_env": "OPS_PD_KEY",
        "events_url": "https://events.eu.pagerduty.com/v2/enqueue",
        "source": "web-01",
        "component": "nginx",
        "group": "frontend",
        "timeout_seconds": 5,
    }
    assert notification_validate(config=config) == []


@pytest.mark.parametrize(
    "config, expected",
    [
        (
            {"routing_key": ROUTING_KEY},
            "routing_key is a secret and must not be written in the definition: "
            "put it in an environment variable and name it with routing_key_env",
        ),
        ({"routing_key_env": "A=B"}, "routing_key_env must name an environment variable"),
        ({"events_url": "events.pagerduty.com"}, "events_url must be a string starting with http:// or https://"),
        ({"component": ""}, "component must be a non-empty single-line string"),
        ({"severity": "high"}, "unknown option for driver pagerduty: severity"),
    ],
)
def test_pagerduty_bad_config_is_reported(config, expected):
    assert notification_validate(config={"driver": "pagerduty", **config}) == [expected]


# --- notices ------------------------------------------------------------------


def test_pagerduty_resolved_notice_resolves_with_the_key_its_problem_triggered(pagerduty):
    send(pagerduty, make_notice("problem", status="warning", previous={"severity": "ok", "since": None}))
    send(pagerduty, make_notice("reminder", status="warning"))
    send(pagerduty, make_notice("resolved"))
    trigger, reminder, resolve = (r["json"] for r in pagerduty.requests)
    assert trigger["event_action"] == reminder["event_action"] == "trigger"
    assert trigger["payload"]["source"] == "web-07"
    assert trigger["payload"]["custom_details"]["notice"] == "problem"
    assert reminder["dedup_key"] == trigger["dedup_key"]
    # Events API v2: a resolve carries the routing key, the action and the dedup key, no payload.
    assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": trigger["dedup_key"]}
    # The same key a plain notification of the pipeline on that host is triggered with.
    send(pagerduty, make_message(incident=None, host="web-07"))
    assert pagerduty.last["json"]["dedup_key"] == trigger["dedup_key"]


def test_pagerduty_notices_are_keyed_by_pipeline_and_host_even_with_an_incident(pagerduty):
    # The problem came with an alert's incident; the run that found it over has none (or another).
    send(pagerduty, make_notice("problem", status="warning", incident=INCIDENT, host="web-01"))
    send(pagerduty, make_notice("resolved", host="web-01"))
    send(pagerduty, make_notice("resolved", incident={**INCIDENT, "id": 9}, host="web-01"))
    send(pagerduty, make_notice("resolved", host="web-02"))
    trigger, resolve, resolve_other_incident, elsewhere = (r["json"] for r in pagerduty.requests)
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"].startswith("pipeline-")
    assert resolve["event_action"] == resolve_other_incident["event_action"] == "resolve"
    assert resolve["dedup_key"] == resolve_other_incident["dedup_key"] == trigger["dedup_key"]
    assert elsewhere["dedup_key"] != trigger["dedup_key"]


def test_pagerduty_problem_notice_triggers_whatever_the_incident_status(pagerduty):
    send(pagerduty, make_notice("problem", status="critical", incident={**INCIDENT, "status": "resolved"}))
    assert pagerduty.last["json"]["event_action"] == "trigger"
    assert pagerduty.last["json"]["payload"]["severity"] == "critical"
