"""A notify node naming stored channels, run by the engine after a context node."""
from __future__ import annotations

import json

import pytest

from apps.notify.services import notification_channel_create
from apps.orchestration.models import PipelineRun, StageExecution
from apps.orchestration.rendering import render_result
from apps.orchestration.services import LaunchError, definition_resolve, pipeline_run_create, pipeline_run_execute
from apps.orchestration.validation import validate_definition

pytestmark = pytest.mark.django_db

TOKEN = "sl4ck-n0de-t0k3n"


def definition(notify_config: dict) -> dict:
    return {
        "version": "1.0",
        "nodes": [
            {"id": "metrics", "type": "context", "config": {"include": ["memory"]}, "next": "notify"},
            {"id": "notify", "type": "notify", "config": notify_config},
        ],
    }


def run_pipeline(tmp_path, notify_config: dict):
    """Write the definition to a file, create its run and execute it; returns the finished run."""
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(definition(notify_config)))
    resolved = definition_resolve(config_path=str(path))
    run = pipeline_run_create(resolved=resolved, payload={})
    return pipeline_run_execute(run_id=run.pk)


@pytest.fixture
def slack(http_server, monkeypatch):
    """A stored `ops-slack` channel posting to http_server; returns the server."""
    http_server.answer_raw(b"ok", 200, "text/plain")
    monkeypatch.setenv("OPS_SLACK_URL", http_server.url(f"/services/T0/B0/{TOKEN}"))
    notification_channel_create(name="ops-slack", driver="slack", config={"webhook_url_env": "OPS_SLACK_URL"})
    return http_server


def test_notify_node_sends_through_the_named_channel(tmp_path, slack):
    run = run_pipeline(tmp_path, {"channel": "ops-slack"})
    run.refresh_from_db()
    assert run.status == "completed", run.error
    [request] = slack.requests
    section = request["json"]["blocks"][1]["text"]["text"]
    assert "memory" in section and "Pipeline: " in section
    output = run.result["node_results"]["notify"]["output"]
    assert (output["channel"], output["driver"], output["succeeded"]) == ("ops-slack", "slack", 1)
    assert "  Channel: ops-slack\n  Driver: slack\n  Channels attempted: 1\n  Succeeded: 1\n" in render_result(run)
    stored = json.dumps([run.result, run.error, list(StageExecution.objects.values("output", "errors"))])
    assert TOKEN not in stored and str(slack.port) not in stored


def test_node_options_override_the_channel(tmp_path, slack):
    run = run_pipeline(tmp_path, {"channel": "ops-slack", "username": "night-watch"})
    assert run.status == "completed", run.error
    assert slack.last["json"]["username"] == "night-watch"


def test_unknown_channel_fails_the_node_clearly(tmp_path):
    run = run_pipeline(tmp_path, {"channel": "ops-slack"})
    assert run.status == "failed"
    assert run.error == "Node 'notify' failed: Notification channel not found: ops-slack"


def test_inactive_channel_fails_the_node_clearly(tmp_path, slack):
    from apps.notify.models import NotificationChannel

    NotificationChannel.objects.filter(name="ops-slack").update(is_active=False)
    run = run_pipeline(tmp_path, {"channel": "ops-slack"})
    assert run.status == "failed"
    assert run.error == "Node 'notify' failed: Notification channel is inactive: ops-slack"
    assert slack.requests == []


def test_channel_delivery_failure_fails_the_node(tmp_path, slack):
    slack.answer_raw(b"no_service", 404, "text/plain")
    run = run_pipeline(tmp_path, {"channel": "ops-slack"})
    assert run.status == "failed"
    assert run.error == "Node 'notify' failed: Notification failed (slack: HTTP 404 (no_service))"
    assert run.result["node_results"]["notify"]["output"]["failed"] == 1


def test_several_channels_are_notified_and_a_missing_one_fails_the_node(tmp_path, slack, monkeypatch):
    monkeypatch.setenv("OPS_HOOK_URL", slack.url("/hook"))
    notification_channel_create(name="ops-hook", driver="webhook", config={"url_env": "OPS_HOOK_URL"})
    run = run_pipeline(tmp_path, {"channels": ["ops-slack", "ops-hook"]})
    assert run.status == "completed", run.error
    assert [r["path"] for r in slack.requests] == [f"/services/T0/B0/{TOKEN}", "/hook"]
    assert "  Channels: ops-slack, ops-hook\n  Driver: slack, webhook\n  Channels attempted: 2\n" in render_result(run)

    run = run_pipeline(tmp_path, {"channels": ["ops-slack", "gone"]})
    assert run.status == "failed"
    assert run.error == "Node 'notify' failed: Notification failed (gone: Notification channel not found: gone)"
    assert len(slack.requests) == 3  # ops-slack was still notified


def test_inline_secret_next_to_a_channel_stops_the_launch(tmp_path):
    config = {"channel": "ops-slack", "webhook_url": "https://hooks.slack.com/services/s3cr3t"}
    assert validate_definition(definition(config)) == [
        "Node 'notify': webhook_url is a secret and must not be written in the definition: "
        "put it in an environment variable and name it with webhook_url_env"
    ]
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(definition(config)))
    with pytest.raises(LaunchError):
        pipeline_run_create(resolved=definition_resolve(config_path=str(path)), payload={})
    assert not PipelineRun.objects.exists()
