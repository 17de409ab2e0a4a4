"""Building the notification message from a run's findings."""
from __future__ import annotations

import json
import socket

import pytest

from apps.notify.message import channel_key, message_build, notification_key

RUN = {"pipeline": "health-check", "run_id": 42, "trace_id": "abc-123", "environment": "production"}


def check(name, status, message):
    return {"name": name, "status": status, "value": 1.0, "unit": "%", "message": message, "details": {}}


INCIDENT = {"id": 3, "title": "High CPU on web-01", "severity": "critical", "status": "open", "alert_count": 1}
ANALYSIS = {
    "summary": "CPU saturated by one process",
    "probable_cause": "A runaway worker",
    "recommendations": ["Restart the worker", "Add a CPU limit"],
    "severity": "critical",
    "provider": "local",
}


def test_incident_message_is_titled_with_severity_and_incident():
    msg = message_build(
        run_info=RUN, incident=INCIDENT, checks=[check("cpu", "critical", "CPU at 97%")], analysis=ANALYSIS
    )
    assert msg.title == "[CRITICAL] High CPU on web-01"
    assert msg.severity == "critical"
    for text in (
        "health-check", "run 42", "abc-123", "production", "Incident #3", "CPU at 97%",
        "CPU saturated by one process", "A runaway worker", "Restart the worker", "Add a CPU limit",
    ):
        assert text in msg.body
    assert msg.data["incident"] == INCIDENT
    json.dumps(msg.data)


def test_healthy_run_without_incident_is_ok_on_this_host():
    msg = message_build(
        run_info=RUN,
        incident=None,
        checks=[check("cpu", "ok", "CPU at 12%"), check("disk", "ok", "Disk at 40%")],
        analysis=None,
    )
    assert msg.title == f"[OK] health-check on {socket.gethostname()}"
    assert msg.severity == "ok"
    assert "CPU at 12%" in msg.body and "Disk at 40%" in msg.body


def test_worst_check_sets_the_severity():
    msg = message_build(
        run_info=RUN,
        incident=None,
        checks=[check("cpu", "ok", "fine"), check("memory", "warning", "Memory at 85%")],
        analysis=None,
    )
    assert msg.title.startswith("[WARNING] ")
    assert msg.severity == "warning"


def test_resolved_incident_is_titled_resolved():
    incident = {**INCIDENT, "status": "resolved"}
    msg = message_build(run_info=RUN, incident=incident, checks=[], analysis=None)
    assert msg.title == "[RESOLVED] High CPU on web-01"
    assert msg.severity == "ok"


def test_run_without_incident_is_titled_with_the_host_its_checks_measured():
    msg = message_build(run_info=RUN, incident=None, checks=[check("cpu", "ok", "fine")], analysis=None, host="web-07")
    assert msg.title == "[OK] health-check on web-07"
    assert msg.data["host"] == "web-07"


def test_message_carries_the_key_it_is_given():
    assert message_build(run_info=RUN, incident=None, checks=[], analysis=None, key="42-notify").key == "42-notify"
    assert message_build(run_info=RUN, incident=None, checks=[], analysis=None).key == ""


@pytest.mark.parametrize(
    "run_id, node_id, expected",
    [
        (42, "notify", "42-notify"),
        (42, "page_oncall-2", "42-page_oncall-2"),
        # Anything else is percent-encoded: the key must fit an HTTP header and a Message-ID.
        (42, "notify ops.é", "42-notify%20ops%2E%C3%A9"),
        (42, "50%", "42-50%25"),
        (None, "notify", ""),
        (0, "notify", ""),
        (42, "", ""),
    ],
)
def test_notification_key_is_run_id_and_node_id(run_id, node_id, expected):
    assert notification_key(run_id=run_id, node_id=node_id) == expected


def test_channel_keys_never_equal_another_nodes_key():
    assert channel_key("42-notify", "ops-slack") == "42-notify.ops-slack"
    assert channel_key("", "ops-slack") == ""
    # Node "a-b" through a driver and node "a" through channel "b" of the same run.
    assert notification_key(run_id=1, node_id="a-b") != channel_key(notification_key(run_id=1, node_id="a"), "b")
    assert notification_key(run_id=1, node_id="a.b") != channel_key(notification_key(run_id=1, node_id="a"), "b")
