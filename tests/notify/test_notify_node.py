"""A notify node naming stored channels, run by the engine after a context node."""
from __future__ import annotations

import json

import pytest

from apps.notify.services import notification_channel_create
from apps.orchestration.engine import run_execute
from apps.orchestration.inputs import definition_resolve
from apps.orchestration.launch import pipeline_run_create
from apps.orchestration.launchrequest import LaunchError, LaunchRequest
from apps.orchestration.models import PipelineRun, StageExecution
from apps.orchestration.nodes.base import NodeContext
from apps.orchestration.nodes.notify import NotifyNode
from apps.orchestration.rendering import render_result
from apps.orchestration.validation import validate_definition
from tests.httpserver import start_dribbling_server

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
    run = pipeline_run_create(request=LaunchRequest(resolved=resolved, payload={}))
    return run_execute(run_id=run.pk)


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
        pipeline_run_create(request=LaunchRequest(resolved=definition_resolve(config_path=str(path)), payload={}))
    assert not PipelineRun.objects.exists()


# --- keys receivers drop repeats by --------------------------------------------


def node_context(run_id, node_id, results=None) -> NodeContext:
    """What the engine gives node ``node_id`` of run ``run_id``."""
    return NodeContext(
        run_id=run_id,
        trace_id="abc-123",
        pipeline="health-check",
        source="cli",
        environment="test",
        payload={},
        results=results or {},
        node_id=node_id,
    )


def idempotency_keys(server) -> list:
    return [r["headers"].get("idempotency-key") for r in server.requests]


def test_repeats_of_a_node_in_a_run_carry_the_same_idempotency_key(http_server, monkeypatch):
    monkeypatch.setenv("OPS_HOOK_URL", http_server.url("/hook"))
    config = {"driver": "webhook", "url_env": "OPS_HOOK_URL"}
    node = NotifyNode()
    node.run(config, node_context(42, "notify"))
    node.run(config, node_context(42, "notify"))  # the node again, as after a takeover
    node.run(config, node_context(42, "page-oncall"))
    node.run(config, node_context(43, "notify"))
    assert idempotency_keys(http_server) == ["42-notify", "42-notify", "42-page-oncall", "43-notify"]


def test_a_node_run_without_its_id_sends_no_idempotency_key(http_server, monkeypatch):
    monkeypatch.setenv("OPS_HOOK_URL", http_server.url("/hook"))
    NotifyNode().run({"driver": "webhook", "url_env": "OPS_HOOK_URL"}, node_context(42, ""))
    assert idempotency_keys(http_server) == [None]


def test_each_of_several_channels_has_a_key_of_its_own(slack, monkeypatch):
    monkeypatch.setenv("OPS_HOOK_URL", slack.url("/hook"))
    notification_channel_create(name="ops-hook", driver="webhook", config={"url_env": "OPS_HOOK_URL"})
    node = NotifyNode()
    node.run({"channels": ["ops-slack", "ops-hook"]}, node_context(42, "notify"))
    node.run({"channels": ["ops-slack", "ops-hook"]}, node_context(42, "notify"))
    node.run({"channel": "ops-hook"}, node_context(42, "hook-only"))
    assert idempotency_keys(slack) == [
        "42-notify.ops-slack", "42-notify.ops-hook", "42-notify.ops-slack", "42-notify.ops-hook", "42-hook-only"
    ]


def test_repeated_pagerduty_event_keeps_its_dedup_key_and_the_measured_host(http_server, monkeypatch):
    http_server.answer_json({"status": "success"}, status=202)
    monkeypatch.setenv("OPS_PD_KEY", "R0UT1NGk3y0123456789abcdef012345")
    config = {"driver": "pagerduty", "routing_key_env": "OPS_PD_KEY", "events_url": http_server.url("/v2/enqueue")}
    checks = {"cpu": {"name": "cpu", "status": "critical", "value": 97.0, "unit": "%", "message": "CPU at 97%"}}
    # The context node ran on web-07; this process repeats the notify node, as a worker taking the run over would.
    results = {"metrics": {"type": "context", "output": {"host": "web-07", "checks": checks}}}
    for _ in range(2):
        NotifyNode().run(config, node_context(42, "page", results))
    first, repeat = (r["json"] for r in http_server.requests)
    assert first["dedup_key"] == repeat["dedup_key"]
    assert first["payload"]["source"] == "web-07"
    assert first["payload"]["summary"] == "[CRITICAL] health-check on web-07"


def test_each_notify_node_of_a_run_sends_run_id_and_node_id_as_its_key(tmp_path, http_server, monkeypatch):
    monkeypatch.setenv("OPS_HOOK_URL", http_server.url("/hook"))
    hook = {"driver": "webhook", "url_env": "OPS_HOOK_URL"}
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps({
        "version": "1.0",
        "nodes": [
            {"id": "first", "type": "notify", "config": hook, "next": "second"},
            {"id": "second", "type": "notify", "config": hook},
        ],
    }))
    run = pipeline_run_create(request=LaunchRequest(resolved=definition_resolve(config_path=str(path)), payload={}))
    run = run_execute(run_id=run.pk)
    assert run.status == "completed", run.error
    assert idempotency_keys(http_server) == [f"{run.pk}-first", f"{run.pk}-second"]


def test_a_webhook_url_with_a_malformed_port_fails_the_node_without_the_port_text(tmp_path, monkeypatch, apps_log):
    # The port field of a secret URL may hold the secret itself.
    monkeypatch.setenv("OPS_HOOK", "https://hooks.example:p0rt-s3cr3t/services/T0")
    run = run_pipeline(tmp_path, {"driver": "webhook", "url_env": "OPS_HOOK"})
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error == "Node 'notify' failed: Notification failed (webhook: the URL for host hooks.example has a malformed port)"
    stored = json.dumps([run.result, run.error, list(StageExecution.objects.values("output", "errors"))])
    for text in (stored, render_result(run), apps_log.text):
        assert "p0rt-s3cr3t" not in text
    assert all(r.exc_info is None for r in apps_log.records)


@pytest.mark.parametrize(
    "notify_config",
    [
        {"driver": "webhook", "url_env": "DRIBBLE_URL"},
        {"driver": "slack", "webhook_url_env": "DRIBBLE_URL"},
        {"driver": "pagerduty", "routing_key_env": "DRIBBLE_KEY", "events_url": "DRIBBLE_URL"},
    ],
    ids=["webhook", "slack", "pagerduty"],
)
def test_a_node_timeout_holds_against_a_server_sending_a_byte_a_second(tmp_path, monkeypatch, settings, notify_config):
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    server, stop = start_dribbling_server(phase="body", size=60, interval=1)
    try:
        monkeypatch.setenv("DRIBBLE_URL", server.url("/hook"))
        monkeypatch.setenv("DRIBBLE_KEY", "R0UT1NGk3y0123456789abcdef012345")
        config = {**notify_config, "timeout_seconds": 2}
        if config.get("events_url") == "DRIBBLE_URL":
            config["events_url"] = server.url("/v2/enqueue")
        # The node limit stays the default (60 s); the server would take 60 s to finish.
        run = run_pipeline(tmp_path, config)
        sent = server.sent
    finally:
        stop()
    assert run.status == "failed"
    assert "timeout after 2s (DeadlineExceeded)" in run.error, run.error
    assert server.requests == 1
    assert sent < server.size // 2, f"the node went on while the server sent {sent} of {server.size} bytes"
