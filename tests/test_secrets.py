"""Scrubbing secrets and their identifying parts; log lines that keep them out
and cannot drive a terminal (apps/secrets.py, apps/logs.py, settings.LOGGING)."""
import json
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from celery import Celery
from django.conf import settings

from apps.secrets import REDACTED, SecretMissing, is_identifying, scrub, secret_fragments, secret_get
from tests.support import ROOT

PORT_TEXT = "p0rtS3cret99"
PORT_URL = f"http://127.0.0.1:{PORT_TEXT}/services/T0/B0/tok"
SLACK_TOKEN = "XXXXyyyyZZZZ1234abcd"
SLACK_URL = f"https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/{SLACK_TOKEN}"


@pytest.fixture(autouse=True)
def no_secrets_from_outside(monkeypatch):
    """Each test sets the secrets it means; none leak in from the environment."""
    for name in settings.SECRET_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def test_an_api_key_is_scrubbed_whole_and_only_whole(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc/def1234567")
    assert scrub("key sk-abc/def1234567 refused") == f"key {REDACTED} refused"
    # Not a URL: its parts are not fragments, however identifying they look.
    assert scrub("def1234567") == "def1234567"


def test_userinfo_of_a_url_secret_is_scrubbed(monkeypatch):
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "https://alice2024:pa55w0rdX@hooks.example.com/hook")
    text = "login failed for alice2024 (password pa55w0rdX) at hooks.example.com"
    assert scrub(text) == f"login failed for {REDACTED} (password {REDACTED}) at hooks.example.com"
    assert scrub("alice2024:pa55w0rdX") == REDACTED


def test_path_token_of_a_url_secret_is_scrubbed(monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", SLACK_URL)
    assert scrub(f"HTTP 404 (invalid_token {SLACK_TOKEN})") == f"HTTP 404 (invalid_token {REDACTED})"
    assert scrub("team T01ABCDEF channel B02GHIJKL") == f"team {REDACTED} channel {REDACTED}"


def test_query_token_of_a_url_secret_is_scrubbed(monkeypatch):
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "https://example.com/hook?mode=fast&token=abc123def456")
    assert scrub("rejected token abc123def456") == f"rejected token {REDACTED}"
    assert scrub("query was mode=fast&token=abc123def456") == f"query was {REDACTED}"
    assert scrub("mode fast") == "mode fast"


def test_percent_decoded_parts_are_scrubbed_too(monkeypatch):
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "https://example.com/my%20hook?key=ab%2Bcd1234")
    assert scrub("key ab+cd1234 and ab%2Bcd1234") == f"key {REDACTED} and {REDACTED}"
    assert scrub("POST https://example.com/my hook?key=ab+cd1234 failed") == f"POST {REDACTED} failed"


def test_non_numeric_port_text_is_scrubbed(monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", PORT_URL)
    with pytest.raises(ValueError) as raised:
        _ = urlsplit(PORT_URL).port
    assert PORT_TEXT in str(raised.value)  # the leak: urllib quotes the port text
    assert scrub(str(raised.value)) == f"Port could not be cast to integer value as '{REDACTED}'"
    assert scrub(f"connect to 127.0.0.1:{PORT_TEXT}") == f"connect to 127.0.0.1:{REDACTED}"


def test_port_of_an_ipv6_url_is_found_after_the_brackets(monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://[2001:db8::1]:{PORT_TEXT}/hook/T0k3nValue9")
    text = f"host 2001:db8::1 port {PORT_TEXT} token T0k3nValue9"
    assert scrub(text) == f"host 2001:db8::1 port {REDACTED} token {REDACTED}"
    # Without a port, the address's own colons give no port fragment.
    assert secret_fragments("http://[2001:db8:abcd:12::1]/hook") == {"http://[2001:db8:abcd:12::1]/hook"}


def test_a_malformed_ipv6_url_still_has_its_port_scrubbed(monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://[::1:{PORT_TEXT}/hook")
    assert scrub(f"bad port {PORT_TEXT}") == f"bad port {REDACTED}"


def test_short_or_common_fragments_are_not_redacted(monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", PORT_URL)
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "https://hooks.example.com:8443/api/v1/services/send?mode=fast")
    text = "services hooks api v1 send T0 B0 tok fast 8443 127.0.0.1 hooks.example.com"
    assert scrub(text) == text


@pytest.mark.parametrize(
    ("fragment", "identifying"),
    [
        ("p0rt99", True),  # 6 characters, letters and digits
        ("T0KEN", False),  # too short
        ("services", False),  # a word
        ("12345678", False),  # a number
        ("abcdefghijkl", True),  # 12 characters of anything
        ("123456789012", True),
    ],
)
def test_fragment_rule(fragment, identifying):
    assert is_identifying(fragment) is identifying


def test_the_whole_secret_is_replaced_by_one_marker(monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", SLACK_URL)
    assert scrub(f"posting to {SLACK_URL} failed") == f"posting to {REDACTED} failed"


def test_overlapping_secrets_leave_no_piece(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-aaaa1111bbbb")
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "1111bbbbcccc2222")
    assert scrub("x sk-aaaa1111bbbbcccc2222 y") == f"x {REDACTED} y"


def test_scrub_is_deep(monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", SLACK_URL)
    data = {"deliveries": [{"detail": f"echo {SLACK_TOKEN}"}], SLACK_TOKEN: 1, "n": 2}
    assert scrub(data) == {"deliveries": [{"detail": f"echo {REDACTED}"}], REDACTED: 1, "n": 2}


# --- log records ---------------------------------------------------------------------------


def _port_error():
    try:
        _ = urlsplit(PORT_URL).port
    except ValueError as exc:
        raise RuntimeError("delivery failed") from exc


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_traceback_holding_a_secret_is_scrubbed(monkeypatch, log_to, fmt):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", PORT_URL)
    logger, out = log_to(fmt)
    try:
        _port_error()
    except RuntimeError:
        logger.exception("node %s of run %s raised", "notify", 7)
    text = out.getvalue()
    assert "node notify of run 7 raised" in text
    assert "ValueError: Port could not be cast to integer value as '[redacted]'" in (
        text if fmt == "text" else json.loads(text)["exc_info"]
    )
    assert PORT_TEXT not in text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_stack_info_and_message_arguments_are_scrubbed(monkeypatch, log_to, fmt):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", SLACK_URL)
    logger, out = log_to(fmt)
    logger.warning("answer was %s", f"invalid_token {SLACK_TOKEN}", stack_info=True)
    text = out.getvalue()
    assert "answer was invalid_token [redacted]" in text
    assert "Stack (most recent call last)" in text
    assert SLACK_TOKEN not in text


def test_extra_fields_are_scrubbed_deep_in_json_logs(monkeypatch, log_to):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", SLACK_URL)
    logger, out = log_to("json")
    logger.info(
        "event=node.end",
        extra={
            "error": f"HTTP 404 (invalid_token {SLACK_TOKEN})",
            "output": {"deliveries": [{"detail": f"echo {SLACK_TOKEN}"}], "attempts": ("T01ABCDEF", 2)},
            "cause": ValueError(f"bad {SLACK_URL}"),
            "node": "notify",
            "attempt": 1,
        },
    )
    line = json.loads(out.getvalue())
    assert line["error"] == "HTTP 404 (invalid_token [redacted])"
    assert line["output"] == {"deliveries": [{"detail": "echo [redacted]"}], "attempts": ["[redacted]", 2]}
    assert line["cause"] == "bad [redacted]"
    assert (line["node"], line["attempt"]) == ("notify", 1)
    assert SLACK_TOKEN not in out.getvalue()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_celery_task_failure_lines_are_scrubbed(monkeypatch, log_to, fmt):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", PORT_URL)
    _, out = log_to(fmt, name="celery.app.trace")
    app = Celery("secrets-test", set_as_current=False)

    @app.task(name="tests.port_of")
    def port_of(url):
        return urlsplit(url).port

    # Celery's own tracer logs the failure: message, traceback and its `data` extra.
    assert port_of.apply(args=(PORT_URL,)).state == "FAILURE"
    text = out.getvalue()
    assert "raised unexpected: ValueError" in text
    assert PORT_TEXT not in text
    if fmt == "json":
        exc = json.loads(text)["data"]["exc"]  # Celery's structured copy of the failure
        assert exc == "ValueError(\"Port could not be cast to integer value as '[redacted]'\")"


def test_every_logger_of_a_worker_writes_through_the_scrub_filter():
    # Celery's logging set-up (as a worker runs it) adds raw handlers to loggers that have none.
    script = """
import logging, os
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
import django
django.setup()
from workers.celery import app
app.log.setup_logging_subsystem(loglevel="INFO")
for name in ["", "celery", "celery.task", "celery.app.trace", "celery.redirected", "multiprocessing", "apps",
             "workers", "kombu", "django", "django.request", "httpx"]:
    logger = logging.getLogger(name)
    while logger:
        for handler in logger.handlers:
            if not isinstance(handler, logging.NullHandler):
                print(name or "root", type(handler).__name__, [type(f).__name__ for f in handler.filters])
        logger = logger.parent if logger.propagate else None
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) >= 12
    assert [line for line in lines if "ScrubFilter" not in line] == []


# --- terminal safety -------------------------------------------------------------------------

HOSTILE = "abc\x1b[2J\x1b]0;owned\x07\r\n2026-01-01 00:00:00 INFO forged line\u202e\x7f"


def test_text_log_lines_show_control_characters_escaped(log_to):
    logger, out = log_to("text")
    logger.info("event=run.start trace_id=%s node=%s", HOSTILE, "n\x1b[31m")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, however many newlines came in
    assert text[:-1].isprintable()
    assert "trace_id=abc\\x1b[2J\\x1b]0;owned\\x07\\r\\n2026-01-01 00:00:00 INFO forged line\\u202e\\x7f" in text
    assert "node=n\\x1b[31m" in text


def test_text_log_tracebacks_keep_their_lines_and_escape_the_rest(log_to):
    logger, out = log_to("text")
    try:
        raise ValueError(f"bad id {HOSTILE}")
    except ValueError:
        logger.exception("node raised")
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
    assert "Traceback (most recent call last):\n" in text
    assert "ValueError: bad id abc\\x1b[2J" in text


def test_json_log_lines_are_printable_ascii_and_keep_the_text(log_to):
    logger, out = log_to("json")
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        logger.exception("trace_id=%s", HOSTILE, extra={"node": HOSTILE})
    line = out.getvalue()
    assert line.count("\n") == 1
    assert all(" " <= char <= "~" for char in line[:-1])
    data = json.loads(line)
    assert data["message"] == f"trace_id={HOSTILE}"
    assert data["node"] == HOSTILE
    assert data["exc_info"].endswith(f"ValueError: {HOSTILE}")


@pytest.mark.parametrize(
    "config, default_env, expected",
    [
        (
            {},
            "SLACK_WEBHOOK_URL",
            "No Slack webhook URL: set SLACK_WEBHOOK_URL (or the node's webhook_url_env) "
            "in the environment of the workers",
        ),
        (
            {"webhook_url_env": "OPS_SLACK_URL"},
            "SLACK_WEBHOOK_URL",
            "No Slack webhook URL: set OPS_SLACK_URL (named by the node's webhook_url_env) "
            "in the environment of the workers",
        ),
        (
            {},
            None,
            "No Slack webhook URL: name a variable with the node's webhook_url_env "
            "and set it in the environment of the workers",
        ),
    ],
)
def test_missing_secret_says_to_set_it_in_the_workers_environment(monkeypatch, config, default_env, expected):
    monkeypatch.delenv("OPS_SLACK_URL", raising=False)
    with pytest.raises(SecretMissing) as caught:
        secret_get(config, "webhook_url", default_env=default_env, what="Slack webhook URL")
    assert str(caught.value) == expected
    assert "\n" not in str(caught.value)


def test_a_set_secret_is_read_from_the_variable_the_node_names(monkeypatch):
    monkeypatch.setenv("OPS_SLACK_URL", SLACK_URL)
    assert secret_get({"webhook_url_env": "OPS_SLACK_URL"}, "webhook_url", default_env="SLACK_WEBHOOK_URL",
                      what="Slack webhook URL") == SLACK_URL


def test_a_changed_or_removed_secret_variable_is_noticed_at_once(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-first-1234567")
    assert scrub("sk-first-1234567 sk-second-7654321") == f"{REDACTED} sk-second-7654321"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-second-7654321")
    assert scrub("sk-first-1234567 sk-second-7654321") == f"sk-first-1234567 {REDACTED}"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert scrub("sk-first-1234567 sk-second-7654321") == "sk-first-1234567 sk-second-7654321"
    monkeypatch.setenv("SECRETS_TEST_NODE_KEY", "read-by-a-node-42")
    assert secret_get({"key_env": "SECRETS_TEST_NODE_KEY"}, "key", default_env=None, what="key") == "read-by-a-node-42"
    assert scrub("got read-by-a-node-42") == f"got {REDACTED}"
