"""Building the notification message from a run's findings."""
from __future__ import annotations

import json
import socket

import pytest

from apps.notify.message import channel_key, format_since, message_build, notification_key

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


# --- notices ------------------------------------------------------------------

WARNING_SINCE = {"severity": "warning", "since": "2026-12-07T10:00:00+00:00"}


def warning_checks():
    return [check("memory", "warning", "Memory at 85%")]


def test_resolved_notice_is_ok_titled_resolved_and_says_what_is_over():
    msg = message_build(
        run_info=RUN, incident=None, checks=[check("memory", "ok", "Memory at 40%")], analysis=None,
        host="web-07", notice="resolved", previous=WARNING_SINCE,
    )
    assert msg.title == "[RESOLVED] health-check on web-07"
    assert msg.severity == "ok"
    assert msg.notice == "resolved"
    lines = msg.body.splitlines()
    assert lines[0] == "Resolved: WARNING since 2026-12-07 10:00:00 UTC is over; now OK."
    assert lines[1].startswith("Pipeline: health-check (run 42")
    assert msg.data["notice"] == "resolved"
    assert msg.data["previous"] == WARNING_SINCE
    json.dumps(msg.data)


def test_resolved_notice_of_a_run_with_an_incident_keeps_the_incident_title():
    msg = message_build(
        run_info=RUN, incident=INCIDENT, checks=[], analysis=None, notice="resolved",
        previous={"severity": "critical", "since": None},
    )
    assert msg.title == "[RESOLVED] High CPU on web-01"
    assert msg.severity == "ok"
    assert msg.body.splitlines()[0] == "Resolved: CRITICAL is over; now OK."


def test_reminder_is_titled_as_the_problem_and_says_since_when():
    msg = message_build(
        run_info=RUN, incident=None, checks=warning_checks(), analysis=None, host="web-07",
        notice="reminder", previous={"severity": "warning", "since": "2026-12-07T12:00:05+02:00"},
    )
    assert msg.title == "[WARNING] health-check on web-07"
    assert msg.severity == "warning"
    assert msg.body.splitlines()[0] == "Still WARNING since 2026-12-07 12:00:05 +02:00 (reminder)"
    assert msg.data["notice"] == "reminder"


def test_problem_after_another_severity_says_what_changed():
    msg = message_build(
        run_info=RUN, incident=None, checks=warning_checks(), analysis=None, host="web-07",
        notice="problem", previous={"severity": "ok", "since": "2026-12-07T09:00:00Z"},
    )
    assert msg.title == "[WARNING] health-check on web-07"
    assert msg.body.splitlines()[0] == "Changed: OK → WARNING"
    assert msg.data["previous"] == {"severity": "ok", "since": "2026-12-07T09:00:00Z"}


def test_problem_without_previous_is_new():
    msg = message_build(run_info=RUN, incident=None, checks=warning_checks(), analysis=None, notice="problem")
    assert msg.body.splitlines()[0] == "New: WARNING"
    assert msg.data["notice"] == "problem" and msg.data["previous"] is None


def test_plain_notification_has_no_notice_line_or_notice_data():
    plain = message_build(run_info=RUN, incident=INCIDENT, checks=warning_checks(), analysis=ANALYSIS, key="42-n")
    assert plain.notice == ""
    assert plain.body.splitlines()[0].startswith("Pipeline: ")
    assert set(plain.data) == {"run", "host", "incident", "checks", "analysis"}
    # The notice adds one first line and two keys; everything else is the plain message's.
    problem = message_build(
        run_info=RUN, incident=INCIDENT, checks=warning_checks(), analysis=ANALYSIS, key="42-n", notice="problem"
    )
    assert problem.title == plain.title and problem.severity == plain.severity and problem.key == plain.key
    assert problem.body.split("\n", 1)[1] == plain.body


def test_unknown_notice_is_refused():
    with pytest.raises(ValueError, match="unknown notice: 'cleared'"):
        message_build(run_info=RUN, incident=None, checks=[], analysis=None, notice="cleared")


@pytest.mark.parametrize(
    "since, expected",
    [
        ("2026-12-07T10:00:00+00:00", "2026-12-07 10:00:00 UTC"),
        ("2026-12-07T10:00:00.123456Z", "2026-12-07 10:00:00 UTC"),
        ("2026-12-07T10:00:00-05:30", "2026-12-07 10:00:00 -05:30"),
        ("2026-12-07T10:00:00", "2026-12-07 10:00:00"),
        ("yesterday", "yesterday"),
    ],
)
def test_since_is_shown_with_seconds_and_its_zone(since, expected):
    assert format_since(since) == expected
