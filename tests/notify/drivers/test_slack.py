"""The slack driver against a real HTTP server standing in for Slack's incoming webhook."""
from __future__ import annotations

import pytest

from apps.notify.services import notification_send, notification_validate
from tests.notify.support import BODY, RESOLVED_LINE, assert_not_in, make_message, make_notice

TOKEN_PATH = "/services/T000/B000/sl4ck-t0k3n-s3cr3t"


@pytest.fixture
def slack(http_server, monkeypatch):
    """http_server answering like Slack, its URL in OPS_SLACK; returns the server."""
    http_server.answer_raw(b"ok", 200, "text/plain")
    monkeypatch.setenv("OPS_SLACK", http_server.url(TOKEN_PATH))
    return http_server


def send(message, **config) -> dict:
    return notification_send(driver="slack", config={"webhook_url_env": "OPS_SLACK", **config}, message=message)


def test_slack_posts_blocks_with_a_text_fallback(slack, message):
    result = send(message, channel="#ops", username="monitor")
    assert result == {
        "driver": "slack",
        "channels_attempted": 1,
        "succeeded": 1,
        "failed": 0,
        "deliveries": [{"channel": "slack", "ok": True, "detail": "HTTP 200"}],
    }
    [request] = slack.requests
    assert request["path"] == TOKEN_PATH
    assert request["headers"]["content-type"] == "application/json"
    escaped_body = BODY.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert request["json"] == {
        "text": "[CRITICAL] High CPU on web-01\n" + escaped_body,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": ":red_circle: [CRITICAL] High CPU on web-01", "emoji": True},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": escaped_body}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "*Severity:* critical | *Pipeline:* health-check | *Run:* 42 | "
                        "*Trace:* abc-123 | *Environment:* production",
                    }
                ],
            },
        ],
        "channel": "#ops",
        "username": "monitor",
    }
    assert "&lt;load &amp; steal&gt;" in request["json"]["blocks"][1]["text"]["text"]
    assert_not_in(result, "sl4ck-t0k3n-s3cr3t", "127.0.0.1", str(slack.port))


def test_slack_post_carries_the_message_key_as_idempotency_key(slack, message):
    send(make_message(key="42-notify"))
    send(message)
    first, unkeyed = slack.requests
    assert first["headers"]["idempotency-key"] == "42-notify"
    assert "idempotency-key" not in unkeyed["headers"]


def test_slack_url_defaults_to_slack_webhook_url(slack, monkeypatch, message):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.url("/default"))
    result = notification_send(driver="slack", config={}, message=message)
    assert result["succeeded"] == 1
    assert [r["path"] for r in slack.requests] == ["/default"]
    assert "channel" not in slack.last["json"] and "username" not in slack.last["json"]


def test_slack_long_text_is_cut_to_slacks_limits(slack):
    message = make_message(title="T" * 400, body="x" * 10_000 + "\n" + "&" * 5_000)
    assert send(message)["succeeded"] == 1
    payload = slack.last["json"]
    header = payload["blocks"][0]["text"]["text"]
    section = payload["blocks"][1]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")
    assert len(section) <= 3000 and section.endswith("…")
    assert len(payload["text"]) <= 3000 and payload["text"].endswith("…")


def test_slack_cut_never_splits_an_escaped_character(slack):
    message = make_message(body="&" * 5_000)
    send(message)
    section = slack.last["json"]["blocks"][1]["text"]["text"]
    assert section.endswith("&amp;…")
    assert section[:-1].replace("&amp;", "") == ""


def test_slack_error_answer_is_a_failed_delivery_with_slacks_code(slack, message):
    slack.answer_raw(b"no_service", 404, "text/plain")
    result = send(message)
    assert result["deliveries"] == [{"channel": "slack", "ok": False, "detail": "HTTP 404 (no_service)"}]
    assert_not_in(result, "sl4ck-t0k3n-s3cr3t", str(slack.port))


def test_slack_server_error_is_a_failed_delivery(slack, message):
    slack.answer_raw(b"<html>upstream error</html>", 500, "text/html")
    result = send(message)
    assert result["deliveries"] == [{"channel": "slack", "ok": False, "detail": "HTTP 500"}]


def test_slack_answer_other_than_ok_is_a_failure_even_with_200(slack, message):
    slack.answer_raw(b"invalid_payload", 200, "text/plain")
    result = send(message)
    assert result["deliveries"] == [
        {"channel": "slack", "ok": False, "detail": "HTTP 200 but Slack answered 'invalid_payload'"}
    ]


def test_slack_slow_answer_times_out(slack, message):
    slack.slow = True
    result = send(message, timeout_seconds=0.3)
    assert result["deliveries"] == [{"channel": "slack", "ok": False, "detail": "timeout after 0.3s (DeadlineExceeded)"}]
    assert_not_in(result, "sl4ck-t0k3n-s3cr3t", str(slack.port))


def test_slack_without_url_is_a_failed_delivery_naming_the_variable(message):
    result = notification_send(driver="slack", config={}, message=message)
    assert result["deliveries"] == [
        {
            "channel": "slack",
            "ok": False,
            "detail": "No Slack webhook URL: set SLACK_WEBHOOK_URL (or the node's webhook_url_env) in the environment of the workers",
        }
    ]


def test_slack_valid_config_has_no_messages():
    assert notification_validate(config={"driver": "slack"}) == []
    config = {"driver": "slack", "webhook_url_env": "OPS_SLACK", "channel": "#ops", "username": "bot", "timeout_seconds": 3}
    assert notification_validate(config=config) == []


@pytest.mark.parametrize(
    "config, expected",
    [
        (
            {"webhook_url": "https://hooks.slack.com/services/s3cr3t"},
            "webhook_url is a secret and must not be written in the definition: "
            "put it in an environment variable and name it with webhook_url_env",
        ),
        ({"webhook_url_env": ""}, "webhook_url_env must name an environment variable"),
        ({"channel": ""}, "channel must be a Slack channel: #name, @user or a channel id"),
        ({"channel": "ops-slack"}, "channel must be a Slack channel: #name, @user or a channel id"),
        ({"username": 7}, "username must be a non-empty single-line string"),
        ({"timeout_seconds": -2}, "timeout_seconds must be a positive number"),
        ({"url_env": "X"}, "unknown option for driver slack: url_env"),
    ],
)
def test_slack_bad_config_is_reported(config, expected):
    assert notification_validate(config={"driver": "slack", **config}) == [expected]


# --- notices ------------------------------------------------------------------


def test_slack_resolved_notice_shows_resolved_with_a_green_check(slack):
    assert send(make_notice("resolved"))["succeeded"] == 1
    payload = slack.last["json"]
    header, section, context = payload["blocks"]
    assert header["text"]["text"] == ":white_check_mark: [RESOLVED] health-check on web-07"
    assert section["text"]["text"].startswith(RESOLVED_LINE + "\n")
    assert context["elements"][0]["text"].startswith("*Notice:* Resolved | *Severity:* ok | ")
    assert payload["text"].startswith(f"[RESOLVED] health-check on web-07\n{RESOLVED_LINE}")


def test_slack_reminder_says_reminder_in_its_header_and_text(slack):
    send(make_notice("reminder", status="warning"))
    payload = slack.last["json"]
    header, section, context = payload["blocks"]
    assert header["text"]["text"] == ":large_orange_circle: Reminder: [WARNING] health-check on web-07"
    assert section["text"]["text"].startswith("Still WARNING since 2026-12-07 10:00:00 UTC (reminder)\n")
    assert context["elements"][0]["text"].startswith("*Notice:* Reminder | *Severity:* warning | ")
    assert payload["text"].startswith("Reminder: [WARNING] health-check on web-07\n")


def test_slack_problem_notice_keeps_the_plain_header(slack):
    send(make_notice("problem", status="warning", previous={"severity": "ok", "since": None}))
    header, section, context = slack.last["json"]["blocks"]
    assert header["text"]["text"] == ":large_orange_circle: [WARNING] health-check on web-07"
    assert section["text"]["text"].startswith("Changed: OK → WARNING\n")
    assert context["elements"][0]["text"].startswith("*Notice:* Problem | ")
