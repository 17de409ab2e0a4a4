"""Building the notification message from a run's findings."""
from __future__ import annotations

import json
import socket

from apps.notify.message import message_build

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
