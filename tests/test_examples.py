"""Every definition in pipelines/examples/ runs end to end through the CLI,
against stand-in servers on 127.0.0.1 started by the test."""
import json

import pytest
from django.core import serializers

from apps.orchestration.models import PipelineRun, StageExecution
from tests.support import ROOT

pytestmark = pytest.mark.subprocess

EXAMPLES = ROOT / "pipelines" / "examples"
OPENAI_KEY = "sk-test-example-0123456789"
SLACK_PATH = "/services/T0EXAMPLE/B0EXAMPLE/xoxb-s3cr3t-slack-token"
WEBHOOK_PATH = "/hooks/s3cr3t-webhook-token"
ROUTING_KEY = "R0UT1NGKEYEXAMPLE0123456789"
SECRETS = (OPENAI_KEY, SLACK_PATH.rsplit("/", 1)[1], WEBHOOK_PATH.rsplit("/", 1)[1], ROUTING_KEY)


def run_example(manage, name: str, *extra: str, env: dict | None = None) -> dict:
    result = manage(
        "run_pipeline", "--config", str(EXAMPLES / f"{name}.json"), "--inline", "--json", *extra,
        env={"OUTBOUND_ALLOW_HOSTS": "127.0.0.1", **(env or {})},
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    for secret in SECRETS:
        assert secret not in result.stdout and secret not in result.stderr
    rows = serializers.serialize("json", [*PipelineRun.objects.all(), *StageExecution.objects.all()])
    for secret in SECRETS:
        assert secret not in rows
    return result.json()


def test_every_example_has_a_test():
    tested = {name.removeprefix("test_example_") for name in globals() if name.startswith("test_example_")}
    tested.discard("openai_analysis_falls_back_when_the_server_fails")
    shipped = {path.stem.replace("-", "_") for path in EXAMPLES.glob("*.json")}
    assert shipped == tested


def test_example_openai_analysis(manage, http_server):
    answer = {"summary": "Host is healthy", "probable_cause": "None", "recommendations": ["Nothing to do"], "severity": "ok"}
    http_server.answer_json({"choices": [{"message": {"role": "assistant", "content": json.dumps(answer)}}]})
    data = run_example(manage, "openai-analysis", env={
        "OPENAI_BASE_URL": http_server.url("/v1"), "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_MODEL": "test-model"})
    analysis = data["node_results"]["analyze"]["output"]
    assert analysis["provider"] == "openai" and analysis["fallback_used"] is False
    assert analysis["summary"] == "Host is healthy"
    request = http_server.last
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert request["json"]["model"] == "test-model"


def test_example_openai_analysis_falls_back_when_the_server_fails(manage, http_server):
    http_server.answer_raw(b"upstream exploded", status=500)
    result = manage(
        "run_pipeline", "--config", str(EXAMPLES / "openai-analysis.json"), "--inline",
        env={"OUTBOUND_ALLOW_HOSTS": "127.0.0.1", "OPENAI_BASE_URL": http_server.url("/v1"), "OPENAI_API_KEY": OPENAI_KEY},
    )
    assert result.exit_code == 0, result.stderr
    assert "\n  Provider: local\n  Fallback: openai unavailable (HTTP 500); local analysis used\n" in result.stdout


def test_example_slack_notify(manage, http_server):
    http_server.answer_raw(b"ok")
    data = run_example(manage, "slack-notify", env={"SLACK_WEBHOOK_URL": http_server.url(SLACK_PATH)})
    assert data["node_results"]["notify"]["output"]["succeeded"] == 1
    request = http_server.last
    assert request["path"] == SLACK_PATH
    assert request["json"]["username"] == "pipelines"
    assert "memory" in request["json"]["text"]


def test_example_webhook_notify(manage, http_server):
    data = run_example(manage, "webhook-notify", env={"NOTIFY_WEBHOOK_URL": http_server.url(WEBHOOK_PATH)})
    assert data["node_results"]["notify"]["output"]["succeeded"] == 1
    assert http_server.last["path"] == WEBHOOK_PATH
    assert set(http_server.last["json"]) == {"title", "body", "severity", "data"}


def test_example_pagerduty_notify(manage, http_server):
    http_server.answer_json({"status": "success", "message": "Event processed"}, status=202)
    env = {"PAGERDUTY_EVENTS_URL": http_server.url("/v2/enqueue"), "PAGERDUTY_ROUTING_KEY": ROUTING_KEY}
    data = run_example(manage, "pagerduty-notify", "--sample", "--source", "alertmanager", env=env)
    incident = data["node_results"]["ingest"]["output"]["incident"]
    event = http_server.last["json"]
    assert event["routing_key"] == ROUTING_KEY and event["event_action"] == "trigger"
    assert event["dedup_key"] == f"incident-{incident['id']}"
    # The same alert again: same incident, same dedup key, so PagerDuty does not page twice.
    run_example(manage, "pagerduty-notify", "--sample", "--source", "alertmanager", env=env)
    assert http_server.requests[-1]["json"]["dedup_key"] == event["dedup_key"]


def test_example_email_notify(manage):
    from aiosmtpd.controller import Controller

    from tests.notify.support import SmtpServer, free_port

    smtp = SmtpServer(port=free_port())
    controller = Controller(smtp, hostname="127.0.0.1", port=smtp.port)
    controller.start()
    try:
        data = run_example(manage, "email-notify", env={
            "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(smtp.port), "NOTIFY_EMAIL_TO": "oncall@example.com"})
    finally:
        controller.stop()
    assert data["node_results"]["notify"]["output"]["succeeded"] == 1
    [mail] = smtp.messages
    assert mail["rcpt_tos"] == ["oncall@example.com"]
    assert b"Checks:" in mail["content"]


def _ingest_example(manage, source):
    data = run_example(manage, f"ingest-{source}", "--sample", "--source", source)
    ingest = data["node_results"]["ingest"]["output"]
    assert ingest["source"] == source and ingest["incident"]["status"] == "open"
    assert data["executed_nodes"] == ["ingest", "context", "analyze", "notify"]


def test_example_ingest_alertmanager(manage):
    _ingest_example(manage, "alertmanager")


def test_example_ingest_grafana(manage):
    _ingest_example(manage, "grafana")


def test_example_ingest_pagerduty(manage):
    _ingest_example(manage, "pagerduty")


def test_example_ingest_datadog(manage):
    _ingest_example(manage, "datadog")


def test_example_ingest_generic(manage):
    _ingest_example(manage, "generic")


def test_example_system_context(manage):
    data = run_example(manage, "system-context")
    checks = data["node_results"]["metrics"]["output"]["checks"]
    assert set(checks) == {"cpu", "memory", "swap", "disk", "load", "network", "processes"}


def test_example_scheduled_health_check(manage, tmp_path):
    from django_celery_beat.models import PeriodicTask

    data = run_example(manage, "scheduled-health-check")
    assert data["status"] == "completed" and data["trigger"] == "cli"
    assert data["executed_nodes"] == ["metrics", "analyze", "notify"]
    dry = manage("run_pipeline", "--config", str(EXAMPLES / "scheduled-health-check.json"), "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "\nSchedule: every 300s\n" in dry.stdout
    # Loaded, it becomes one enabled beat schedule of 300 s that launches it by name.
    (tmp_path / "scheduled-health-check.json").write_bytes((EXAMPLES / "scheduled-health-check.json").read_bytes())
    loaded = manage("load_pipelines", "--dir", str(tmp_path))
    assert loaded.exit_code == 0, loaded.stderr
    assert "scheduled-health-check: schedule: every 300s\n" in loaded.stdout
    task = PeriodicTask.objects.get(name="pipeline:scheduled-health-check")
    assert task.enabled and task.task == "orchestration.run_scheduled"
    assert (task.interval.every, task.interval.period) == (300, "seconds")
    assert json.loads(task.kwargs) == {"definition": "scheduled-health-check"}


def test_example_host_watch(manage, tmp_path):
    data = run_example(manage, "host-watch")
    assert data["status"] == "completed"
    severity = data["node_results"]["analyze"]["output"]["severity"]
    notify = data["node_results"]["notify"]["output"]
    assert notify["notify_on"] == "change"
    # Nothing was heard before the first run: a problem is told, an ok host stays quiet.
    if severity in ("warning", "critical"):
        assert notify["notice"] == "problem" and notify["succeeded"] == 1
    else:
        assert notify["notice"] is None and notify["quiet"] == f"{severity}, nothing to tell"
    states = manage("list_states", "--json", "--definition", "config:host-watch.json")
    assert states.exit_code == 0, states.stderr
    assert [(s["severity"], s["last_run_id"]) for s in states.json()] == [(severity, data["run_id"])]
    (tmp_path / "host-watch.json").write_bytes((EXAMPLES / "host-watch.json").read_bytes())
    loaded = manage("load_pipelines", "--dir", str(tmp_path))
    assert loaded.exit_code == 0, loaded.stderr
    assert "host-watch: schedule: every 60s\n" in loaded.stdout
