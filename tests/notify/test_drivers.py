"""Notify drivers: the console driver's log line, and the webhook driver against
a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import json
import logging
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.notify.base import DeliveryError, Message, drivers
from apps.notify.services import notification_send, notification_validate

# A path shaped like a Slack webhook: the token in it is a secret.
SECRET_PATH = "/services/T000/B000/s3cr3t-t0k3n"


def message() -> Message:
    return Message(
        title="[CRITICAL] High CPU on web-01",
        body="Incident #1: High CPU on web-01",
        severity="critical",
        data={"incident": {"id": 1}},
    )


@dataclass
class WebhookServer:
    """What the test server received, and how it should answer."""

    port: int
    status: int = 200
    slow: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    requests: list = field(default_factory=list)

    def url(self, path: str = SECRET_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def webhook_server():
    """A real HTTP server on a random local port that records every POST."""
    state = WebhookServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            state.requests.append(
                {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "json": json.loads(self.rfile.read(length) or b"null"),
                }
            )
            if state.slow:
                # Held until the test ends (or 10s), so the client's timeout fires first.
                state.release.wait(timeout=10)
            try:
                self.send_response(state.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout test)

        def log_message(self, format, *args):
            pass  # keep the test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def no_default_webhook(monkeypatch):
    monkeypatch.delenv("NOTIFY_WEBHOOK_URL", raising=False)


def assert_no_url_in(result: dict, port: int) -> None:
    text = json.dumps(result)
    assert "s3cr3t" not in text
    assert "127.0.0.1" not in text
    assert str(port) not in text


# --- console ---------------------------------------------------------------


@pytest.fixture
def console_log(caplog):
    """caplog, attached to the console driver's logger: the settings stop "apps"
    loggers from propagating to the root logger caplog normally listens on."""
    logger = logging.getLogger("apps.notify.console")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="apps.notify.console"):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def test_console_driver_logs_title_and_body(console_log):
    caplog = console_log
    result = notification_send(driver="console", config={}, message=message())
    records = [r for r in caplog.records if r.name == "apps.notify.console"]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    assert "[CRITICAL] High CPU on web-01" in records[0].getMessage()
    assert "Incident #1: High CPU on web-01" in records[0].getMessage()
    assert result == {
        "driver": "console",
        "channels_attempted": 1,
        "succeeded": 1,
        "failed": 0,
        "deliveries": [{"channel": "console", "ok": True, "detail": "written to log"}],
    }


def test_console_driver_rejects_options():
    assert notification_validate(config={"driver": "console", "channel": "#ops"}) == [
        "unknown option for driver console: channel"
    ]


# --- webhook: delivery -------------------------------------------------------


def test_webhook_posts_the_message_as_json(webhook_server):
    result = notification_send(
        driver="webhook",
        config={"url": webhook_server.url(), "headers": {"X-Token": "abc"}},
        message=message(),
    )
    assert result["succeeded"] == 1 and result["failed"] == 0
    assert result["deliveries"] == [{"channel": "webhook", "ok": True, "detail": "HTTP 200"}]
    [request] = webhook_server.requests
    assert request["path"] == SECRET_PATH
    assert request["headers"]["x-token"] == "abc"
    assert request["headers"]["content-type"] == "application/json"
    assert request["json"] == {
        "title": "[CRITICAL] High CPU on web-01",
        "body": "Incident #1: High CPU on web-01",
        "severity": "critical",
        "data": {"incident": {"id": 1}},
    }
    assert_no_url_in(result, webhook_server.port)


def test_webhook_server_error_is_a_failed_delivery(webhook_server):
    webhook_server.status = 500
    result = notification_send(driver="webhook", config={"url": webhook_server.url()}, message=message())
    assert result["failed"] == 1 and result["succeeded"] == 0
    assert result["deliveries"] == [{"channel": "webhook", "ok": False, "detail": "HTTP 500"}]
    assert len(webhook_server.requests) == 1
    assert_no_url_in(result, webhook_server.port)


def test_webhook_slow_server_times_out_without_naming_the_url(webhook_server):
    webhook_server.slow = True
    result = notification_send(
        driver="webhook",
        config={"url": webhook_server.url(), "timeout_seconds": 0.3},
        message=message(),
    )
    [delivery] = result["deliveries"]
    assert delivery["ok"] is False
    assert delivery["detail"] == "timeout after 0.3s (ReadTimeout)"
    assert len(webhook_server.requests) == 1  # it did reach the server
    assert_no_url_in(result, webhook_server.port)


def test_webhook_connection_refused_is_a_failed_delivery(closed_port):
    url = f"http://127.0.0.1:{closed_port}{SECRET_PATH}"
    result = notification_send(driver="webhook", config={"url": url}, message=message())
    [delivery] = result["deliveries"]
    assert delivery["ok"] is False
    assert delivery["detail"] == "connection failed (ConnectError)"
    assert_no_url_in(result, closed_port)


def test_webhook_url_comes_from_the_named_environment_variable(webhook_server, monkeypatch):
    monkeypatch.setenv("OPS_HOOK", webhook_server.url("/from-env"))
    result = notification_send(driver="webhook", config={"url_env": "OPS_HOOK"}, message=message())
    assert result["succeeded"] == 1
    assert [r["path"] for r in webhook_server.requests] == ["/from-env"]


def test_webhook_url_defaults_to_notify_webhook_url(webhook_server, monkeypatch):
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", webhook_server.url("/default"))
    result = notification_send(driver="webhook", config={}, message=message())
    assert result["succeeded"] == 1
    assert [r["path"] for r in webhook_server.requests] == ["/default"]


def test_webhook_without_any_url_raises_delivery_error():
    with pytest.raises(DeliveryError, match="No webhook URL: set NOTIFY_WEBHOOK_URL or the node's url/url_env"):
        drivers.get("webhook")().send(message=message(), config={})


def test_webhook_without_url_is_one_failed_delivery_from_the_service():
    result = notification_send(driver="webhook", config={}, message=message())
    assert result["deliveries"] == [
        {
            "channel": "webhook",
            "ok": False,
            "detail": "No webhook URL: set NOTIFY_WEBHOOK_URL or the node's url/url_env",
        }
    ]


def test_webhook_named_variable_unset_does_not_fall_back_to_the_default(webhook_server, monkeypatch):
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", webhook_server.url("/default"))
    monkeypatch.delenv("OPS_HOOK", raising=False)
    result = notification_send(driver="webhook", config={"url_env": "OPS_HOOK"}, message=message())
    assert result["deliveries"][0]["detail"] == "No webhook URL: environment variable OPS_HOOK is not set"
    assert webhook_server.requests == []


def test_webhook_url_from_environment_must_be_http(monkeypatch):
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "ftp://files.example.com/s3cr3t")
    result = notification_send(driver="webhook", config={}, message=message())
    detail = result["deliveries"][0]["detail"]
    assert "http://" in detail and "s3cr3t" not in detail


# --- webhook: config validation ---------------------------------------------


def test_webhook_valid_config_has_no_messages():
    config = {
        "driver": "webhook",
        "required": False,
        "url": "https://hooks.example.com/x",
        "timeout_seconds": 2.5,
        "headers": {"Authorization": "Bearer t"},
    }
    assert notification_validate(config=config) == []
    assert notification_validate(config={"driver": "webhook", "url_env": "OPS_HOOK"}) == []


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"url": "ftp://x"}, "url must be a string starting with http:// or https://"),
        ({"url": 42}, "url must be a string starting with http:// or https://"),
        ({"url_env": ""}, "url_env must be a non-empty string"),
        ({"timeout_seconds": 0}, "timeout_seconds must be a positive number"),
        ({"timeout_seconds": "5"}, "timeout_seconds must be a positive number"),
        ({"timeout_seconds": True}, "timeout_seconds must be a positive number"),
        ({"headers": {"X": 1}}, "headers must be an object of strings"),
        ({"channel": "#ops"}, "unknown option for driver webhook: channel"),
    ],
)
def test_webhook_bad_config_is_reported(config, expected):
    assert notification_validate(config={"driver": "webhook", **config}) == [expected]


def test_webhook_bad_config_message_does_not_echo_the_url():
    [msg] = notification_validate(config={"driver": "webhook", "url": "hxxp://s3cr3t"})
    assert "s3cr3t" not in msg


def test_invalid_config_is_not_sent(webhook_server):
    result = notification_send(
        driver="webhook", config={"url": webhook_server.url(), "timeout_seconds": -1}, message=message()
    )
    assert result["failed"] == 1
    assert webhook_server.requests == []
