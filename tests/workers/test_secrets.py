"""Secrets given to a worker never reach its log, the CLI's output or the run's rows."""
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
