"""Secrets given to a worker never reach its log, the CLI's output or the run's rows;
text from outside cannot drive a terminal through the worker log."""
import json

import pytest
from django.core import serializers

from apps.orchestration.models import PipelineRun, StageExecution
from tests.httpserver import start_server

pytestmark = pytest.mark.subprocess

SLACK_TOKEN = "xoxb-w0rker-s3cr3t-t0ken"
OPENAI_KEY = "sk-w0rker-s3cr3t-0123456789"
DEFINITION = {
    "version": "1.0",
    "nodes": [
        {"id": "metrics", "type": "context", "config": {"include": ["memory"]}, "next": "analyze"},
        {"id": "analyze", "type": "intelligence", "config": {"provider": "openai"}, "next": "notify"},
        {"id": "notify", "type": "notify", "config": {"driver": "slack"}},
    ],
}


@pytest.fixture
def stand_in():
    server, stop = start_server()
    try:
        yield server
    finally:
        stop()


@pytest.mark.parametrize("slack_status", [200, 500])
def test_no_secret_in_worker_log_json_output_or_rows(cli, start_worker, stand_in, tmp_path, slack_status):
    # One stand-in plays both services; the analysis answer echoes the key to try to leak it.
    content = json.dumps({"summary": f"key was {OPENAI_KEY}", "probable_cause": "-", "recommendations": [], "severity": "ok"})
    stand_in.queue_json({"choices": [{"message": {"content": content}}]})
    stand_in.queue_raw(b"ok" if slack_status == 200 else b"internal error", status=slack_status)
    secrets_env = {
        "OUTBOUND_ALLOW_HOSTS": "127.0.0.1",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": stand_in.url("/v1"),
        "SLACK_WEBHOOK_URL": stand_in.url(f"/services/T0/B0/{SLACK_TOKEN}"),
        "LOG_FORMAT": "json",
    }
    worker = start_worker(**secrets_env)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(DEFINITION))
    result = cli("run_pipeline", "--config", str(path), "--wait", "--json", **secrets_env)
    data = json.loads(result.stdout)
    expected = ("completed", 0) if slack_status == 200 else ("failed", 1)
    assert (data["status"], result.exit_code) == expected, result.stderr
    assert data["node_results"]["analyze"]["output"]["provider"] == "openai"
    assert worker.wait_for_log(f'"run_id": {data["run_id"]}, "trace_id": "{data["trace_id"]}"')
    assert worker.wait_for_log('"event": "run.end"')
    assert len(stand_in.requests) == 2  # both stand-ins were really called
    rows = serializers.serialize("json", [*PipelineRun.objects.all(), *StageExecution.objects.all()])
    for text in (worker.log(), result.stdout, result.stderr, rows):
        assert OPENAI_KEY not in text
        assert SLACK_TOKEN not in text


# A secret URL leaks through its parts: urllib quotes a non-numeric port in its
# error, and an endpoint may echo the token segment of its path.
PORT_TEXT = "p0rtS3cret99"
ECHO_TOKEN = "S3cr3tT0kenEcho42"
NOTIFY_DEFINITION = {
    "version": "1.0",
    "nodes": [
        {"id": "metrics", "type": "context", "config": {"include": ["memory"]}, "next": "notify"},
        {"id": "notify", "type": "notify", "config": {"driver": "slack"}},
    ],
}


def _run_end_marker(log_format: str, run_id: int) -> str:
    return f"event=run.end run_id={run_id} " if log_format == "text" else f'"event": "run.end", "run_id": {run_id},'


def _run_failing_notify(cli, worker, tmp_path, env: dict) -> list[str]:
    """Runs the definition twice (--wait, then --wait --json), both failing at
    notify; returns every sink: the outputs, the rows and the worker log."""
    path = tmp_path / "notify.json"
    path.write_text(json.dumps(NOTIFY_DEFINITION))
    text = cli("run_pipeline", "--config", str(path), "--wait", **env)
    assert text.exit_code == 1, text.stdout + text.stderr
    assert "--- notify (notify) ---" in text.stdout and "Status: FAILED" in text.stdout
    as_json = cli("run_pipeline", "--config", str(path), "--wait", "--json", **env)
    assert as_json.exit_code == 1, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["node_results"]["notify"]["status"] == "failed"
    for run in PipelineRun.objects.all():
        assert worker.wait_for_log(_run_end_marker(env["LOG_FORMAT"], run.pk)), worker.log()
    rows = serializers.serialize("json", [*PipelineRun.objects.all(), *StageExecution.objects.all()])
    assert PipelineRun.objects.count() == 2 and "notify" in rows
    return [text.stdout, text.stderr, as_json.stdout, as_json.stderr, rows, worker.log()]


def _assert_nowhere(sinks: list[str], *fragments: str) -> None:
    for sink in sinks:
        for fragment in fragments:
            assert fragment not in sink, f"{fragment!r} leaked into:\n{sink}"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secret_port_text_of_a_webhook_url_stays_out_of_every_sink(cli, start_worker, tmp_path, log_format):
    url = f"http://127.0.0.1:{PORT_TEXT}/services/T0/B0/tok"
    env = {"SLACK_WEBHOOK_URL": url, "OUTBOUND_ALLOW_HOSTS": "127.0.0.1", "LOG_FORMAT": log_format}
    worker = start_worker(**env)
    sinks = _run_failing_notify(cli, worker, tmp_path, env)
    _assert_nowhere(sinks, url, PORT_TEXT)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_endpoint_echoing_its_token_segment_stays_out_of_every_sink(cli, start_worker, stand_in, tmp_path, log_format):
    stand_in.answer_raw(f"invalid_token {ECHO_TOKEN}".encode(), status=403)
    url = stand_in.url(f"/services/T0/B0/{ECHO_TOKEN}")
    env = {"SLACK_WEBHOOK_URL": url, "OUTBOUND_ALLOW_HOSTS": "127.0.0.1", "LOG_FORMAT": log_format}
    worker = start_worker(**env)
    sinks = _run_failing_notify(cli, worker, tmp_path, env)
    assert [request["path"] for request in stand_in.requests] == [f"/services/T0/B0/{ECHO_TOKEN}"] * 2
    # The endpoint's answer is shown (so the test sees it pass through), with the token redacted.
    assert "invalid_token [redacted]" in sinks[0]
    _assert_nowhere(sinks, url, ECHO_TOKEN)


def test_text_worker_log_escapes_control_characters_from_alerts(cli, start_worker, tmp_path):
    worker = start_worker(LOG_FORMAT="text")
    path = tmp_path / "console.json"
    path.write_text(json.dumps({
        "version": "1.0",
        "nodes": [
            {"id": "ingest", "type": "ingest", "config": {}, "next": "notify"},
            {"id": "notify", "type": "notify", "config": {"driver": "console"}},
        ],
    }))
    # The console driver logs the alert's title: an escape sequence and a forged log line ride in it.
    title = "disk full\x1b[2J\x1b]0;owned\x07\n2026-01-01 00:00:00,000 INFO FORGED"
    payload = json.dumps({"title": title, "severity": "critical"})
    result = cli("run_pipeline", "--config", str(path), "--payload", payload, "--wait", "--json")
    data = json.loads(result.stdout)
    assert (data["status"], result.exit_code) == ("completed", 0), result.stderr
    assert worker.wait_for_log(_run_end_marker("text", data["run_id"]))
    log = worker.log()
    assert "apps.notify.console" in log
    assert "\x1b" not in log and "\x07" not in log
    assert not [line for line in log.splitlines() if line.startswith("2026-01-01")]
