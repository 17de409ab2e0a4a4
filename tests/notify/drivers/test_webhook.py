"""The webhook driver against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import pytest

from apps.notify.base import DeliveryError, drivers
from apps.notify.services import notification_send, notification_validate
from tests.notify.support import RESOLVED_LINE, WARNING_SINCE, assert_not_in, make_message, make_notice

# A path shaped like a Slack webhook: the token in it is a secret.
SECRET_PATH = "/services/T000/B000/s3cr3t-t0k3n"


def hook(http_server, monkeypatch, path: str = SECRET_PATH, variable: str = "OPS_HOOK") -> dict:
    """A config whose URL (http_server at ``path``) comes from ``variable``."""
    monkeypatch.setenv(variable, http_server.url(path))
    return {"url_env": variable}


def assert_no_url_in(result: dict, port: int) -> None:
    assert_not_in(result, "s3cr3t", "127.0.0.1", str(port))


# --- delivery ----------------------------------------------------------------


def test_webhook_posts_the_message_as_json(http_server, monkeypatch, message):
    monkeypatch.setenv("OPS_HOOK_AUTH", "Bearer hdr-s3cr3t-value")
    config = {
        **hook(http_server, monkeypatch),
        "headers": {"X-Team": "ops"},
        "headers_env": {"Authorization": "OPS_HOOK_AUTH"},
    }
    result = notification_send(driver="webhook", config=config, message=message)
    assert result == {
        "driver": "webhook",
        "channels_attempted": 1,
        "succeeded": 1,
        "failed": 0,
        "deliveries": [{"channel": "webhook", "ok": True, "detail": "HTTP 200"}],
    }
    [request] = http_server.requests
    assert request["method"] == "POST"
    assert request["path"] == SECRET_PATH
    assert request["headers"]["x-team"] == "ops"
    assert request["headers"]["authorization"] == "Bearer hdr-s3cr3t-value"
    assert request["headers"]["content-type"] == "application/json"
    assert request["json"] == {
        "title": message.title,
        "body": message.body,
        "severity": "critical",
        "data": message.data,
    }
    assert_no_url_in(result, http_server.port)


def test_webhook_sends_the_message_key_as_idempotency_key(http_server, monkeypatch):
    config = {**hook(http_server, monkeypatch), "headers": {"X-Team": "ops"}}
    for key in ("42-notify", "42-notify", "42-page"):
        assert notification_send(driver="webhook", config=config, message=make_message(key=key))["succeeded"] == 1
    assert [r["headers"]["idempotency-key"] for r in http_server.requests] == ["42-notify", "42-notify", "42-page"]
    assert http_server.last["headers"]["x-team"] == "ops"


def test_webhook_without_a_key_sends_no_idempotency_key(http_server, monkeypatch, message):
    assert notification_send(driver="webhook", config=hook(http_server, monkeypatch), message=message)["succeeded"] == 1
    assert "idempotency-key" not in http_server.last["headers"]


def test_webhook_idempotency_key_in_the_config_is_not_sent(http_server, monkeypatch):
    monkeypatch.setenv("FIXED_KEY", "always-the-same")
    config = {**hook(http_server, monkeypatch), "headers_env": {"Idempotency-Key": "FIXED_KEY"}}
    result = notification_send(driver="webhook", config=config, message=make_message(key="42-notify"))
    assert result["deliveries"] == [
        {
            "channel": "webhook",
            "ok": False,
            "detail": "invalid config: header Idempotency-Key is set by the driver (<run id>-<node id>) "
            "and cannot be set in headers_env",
        }
    ]
    assert http_server.requests == []


def test_webhook_url_defaults_to_notify_webhook_url(http_server, monkeypatch, message):
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", http_server.url("/default"))
    result = notification_send(driver="webhook", config={}, message=message)
    assert result["succeeded"] == 1
    assert [r["path"] for r in http_server.requests] == ["/default"]


def test_webhook_server_error_is_a_failed_delivery(http_server, monkeypatch, message):
    http_server.answer_json({"error": "boom"}, status=500)
    result = notification_send(driver="webhook", config=hook(http_server, monkeypatch), message=message)
    assert (result["succeeded"], result["failed"]) == (0, 1)
    assert result["deliveries"] == [{"channel": "webhook", "ok": False, "detail": "HTTP 500"}]
    assert len(http_server.requests) == 1
    assert_no_url_in(result, http_server.port)


def test_webhook_slow_server_times_out_without_naming_the_url(http_server, monkeypatch, message):
    http_server.slow = True
    config = {**hook(http_server, monkeypatch), "timeout_seconds": 0.3}
    result = notification_send(driver="webhook", config=config, message=message)
    assert result["deliveries"] == [
        {"channel": "webhook", "ok": False, "detail": "timeout after 0.3s (DeadlineExceeded)"}
    ]
    assert len(http_server.requests) == 1  # it did reach the server
    assert_no_url_in(result, http_server.port)


def test_webhook_connection_refused_is_a_failed_delivery(closed_port, settings, monkeypatch, message):
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    monkeypatch.setenv("OPS_HOOK", f"http://127.0.0.1:{closed_port}{SECRET_PATH}")
    result = notification_send(driver="webhook", config={"url_env": "OPS_HOOK"}, message=message)
    assert result["deliveries"] == [
        {"channel": "webhook", "ok": False, "detail": "connection failed (ConnectError)"}
    ]
    assert_no_url_in(result, closed_port)


def test_webhook_to_an_internal_address_is_refused_naming_only_the_host(http_server, settings, monkeypatch, message):
    settings.OUTBOUND_ALLOW_HOSTS = []
    result = notification_send(driver="webhook", config=hook(http_server, monkeypatch), message=message)
    assert result["deliveries"] == [
        {
            "channel": "webhook",
            "ok": False,
            "detail": "address 127.0.0.1 is not a public address; "
            "allow it with OUTBOUND_ALLOW_HOSTS",
        }
    ]
    assert http_server.requests == []
    assert_not_in(result, "s3cr3t", str(http_server.port))


def test_webhook_answer_larger_than_the_limit_is_a_failed_delivery(http_server, monkeypatch, message):
    http_server.answer_raw(b"x" * (2 * 1024 * 1024))
    result = notification_send(driver="webhook", config=hook(http_server, monkeypatch), message=message)
    assert result["deliveries"] == [
        {"channel": "webhook", "ok": False, "detail": "the answer from 127.0.0.1 is larger than 1048576 bytes"}
    ]
    assert_not_in(result, "s3cr3t", str(http_server.port))


def test_webhook_url_with_a_malformed_port_names_only_the_host(monkeypatch, message):
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "https://hooks.example:s3cr3t/services/T0")
    result = notification_send(driver="webhook", config={}, message=message)
    assert result["deliveries"][0]["detail"] == "the URL for host hooks.example has a malformed port"


def test_webhook_url_from_environment_must_be_http(monkeypatch, message):
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "ftp://files.example.com/s3cr3t")
    result = notification_send(driver="webhook", config={}, message=message)
    assert result["deliveries"][0]["detail"] == "only http:// and https:// URLs with a host can be called"
    assert_not_in(result, "s3cr3t", "files.example.com")


def test_webhook_without_any_url_raises_delivery_error(message):
    with pytest.raises(DeliveryError, match=r"^No webhook URL: set NOTIFY_WEBHOOK_URL \(or the node's url_env\) in the environment of the workers$"):
        drivers.get("webhook")().send(message=message, config={})


def test_webhook_without_url_is_one_failed_delivery_from_the_service(message):
    result = notification_send(driver="webhook", config={}, message=message)
    assert result["deliveries"] == [
        {
            "channel": "webhook",
            "ok": False,
            "detail": "No webhook URL: set NOTIFY_WEBHOOK_URL (or the node's url_env) in the environment of the workers",
        }
    ]


def test_webhook_named_variable_unset_does_not_fall_back_to_the_default(http_server, monkeypatch, message):
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", http_server.url("/default"))
    monkeypatch.delenv("OPS_HOOK", raising=False)
    result = notification_send(driver="webhook", config={"url_env": "OPS_HOOK"}, message=message)
    assert result["deliveries"][0]["detail"] == "No webhook URL: set OPS_HOOK (named by the node's url_env) in the environment of the workers"
    assert http_server.requests == []


def test_webhook_header_variable_unset_is_a_failed_delivery(http_server, monkeypatch, message):
    monkeypatch.delenv("OPS_HOOK_AUTH", raising=False)
    config = {**hook(http_server, monkeypatch), "headers_env": {"Authorization": "OPS_HOOK_AUTH"}}
    result = notification_send(driver="webhook", config=config, message=message)
    assert result["deliveries"][0]["detail"] == (
        "No value for header Authorization: set OPS_HOOK_AUTH (named by the node's headers_env) in the environment of the workers"
    )
    assert http_server.requests == []


# --- config validation -------------------------------------------------------


def test_webhook_valid_config_has_no_messages():
    config = {
        "driver": "webhook",
        "required": False,
        "url_env": "OPS_HOOK",
        "timeout_seconds": 2.5,
        "headers": {"X-Team": "ops"},
        "headers_env": {"Authorization": "OPS_HOOK_AUTH"},
    }
    assert notification_validate(config=config) == []
    assert notification_validate(config={"driver": "webhook"}) == []


def test_webhook_inline_url_is_refused_without_echoing_it():
    messages = notification_validate(config={"driver": "webhook", "url": "https://hooks.example.com/s3cr3t"})
    assert messages == [
        "url is a secret and must not be written in the definition: "
        "put it in an environment variable and name it with url_env"
    ]


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"url_env": ""}, "url_env must name an environment variable"),
        ({"url_env": 3}, "url_env must name an environment variable"),
        ({"timeout_seconds": 0}, "timeout_seconds must be a positive number"),
        ({"timeout_seconds": "5"}, "timeout_seconds must be a positive number"),
        ({"timeout_seconds": True}, "timeout_seconds must be a positive number"),
        ({"headers": {"X": 1}}, "headers must be an object of strings"),
        (
            {"headers": {"Authorization": "Bearer t"}},
            "header Authorization looks like a credential and must not be written in the definition: "
            "put it in an environment variable and name it in headers_env",
        ),
        (
            {"headers": {"X-Api-Key": "k"}},
            "header X-Api-Key looks like a credential and must not be written in the definition: "
            "put it in an environment variable and name it in headers_env",
        ),
        ({"headers_env": {"Authorization": "not a name"}}, "headers_env must be an object of header name -> environment variable name"),
        (
            {"headers": {"Idempotency-Key": "fixed"}},
            "header Idempotency-Key is set by the driver (<run id>-<node id>) and cannot be set in headers",
        ),
        (
            {"headers_env": {"idempotency-key": "FIXED_KEY"}},
            "header idempotency-key is set by the driver (<run id>-<node id>) and cannot be set in headers_env",
        ),
        ({"colour": "red"}, "unknown option for driver webhook: colour"),
    ],
)
def test_webhook_bad_config_is_reported(config, expected):
    assert notification_validate(config={"driver": "webhook", **config}) == [expected]


def test_invalid_config_is_not_sent(http_server, monkeypatch, message):
    config = {**hook(http_server, monkeypatch), "timeout_seconds": -1}
    result = notification_send(driver="webhook", config=config, message=message)
    assert result["deliveries"] == [
        {"channel": "webhook", "ok": False, "detail": "invalid config: timeout_seconds must be a positive number"}
    ]
    assert http_server.requests == []


# --- notices ------------------------------------------------------------------


def test_webhook_resolved_notice_adds_notice_and_previous_to_the_plain_body(http_server, monkeypatch):
    message = make_notice("resolved", key="42-notify")
    assert notification_send(driver="webhook", config=hook(http_server, monkeypatch), message=message)["succeeded"] == 1
    body = http_server.last["json"]
    assert body == {
        "title": "[RESOLVED] health-check on web-07",
        "body": message.body,
        "severity": "ok",
        "data": message.data,
        "notice": "resolved",
        "previous": WARNING_SINCE,
    }
    assert body["body"].startswith(RESOLVED_LINE + "\n")
    assert body["data"]["notice"] == "resolved" and body["data"]["previous"] == WARNING_SINCE
    assert http_server.last["headers"]["idempotency-key"] == "42-notify"


def test_webhook_plain_notification_has_no_notice_keys(http_server, monkeypatch, message):
    notification_send(driver="webhook", config=hook(http_server, monkeypatch), message=message)
    assert set(http_server.last["json"]) == {"title", "body", "severity", "data"}
