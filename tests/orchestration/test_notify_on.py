"""notify_on through the engine and a real webhook receiver: a notify node speaks
when the severity changes, reminds while a problem lasts, and says when it is
resolved; the run's end leaves the state board current."""
from datetime import timedelta

import pytest

from apps.orchestration import engine
from apps.orchestration.models import MonitorNotice, MonitorState, PipelineDefinition
from apps.orchestration.rendering import render_result
from tests.orchestration.test_conditions import LIMITS
from tests.support import make_run

pytestmark = pytest.mark.django_db


def watch(status: str, *, notify_on: str = "change", **notify) -> list[dict]:
    return [
        {"id": "metrics", "type": "context", "config": {"include": ["disk"], "thresholds": {"disk": LIMITS[status]}},
         "next": "notify"},
        {"id": "notify", "type": "notify",
         "config": {"driver": "webhook", "url_env": "WATCH_HOOK", "notify_on": notify_on, **notify}},
    ]


@pytest.fixture
def hook(http_server, monkeypatch):
    monkeypatch.setenv("WATCH_HOOK", http_server.url("/hook"))
    return http_server


def run_with(status: str, **notify):
    """A run of the definition `watch` whose disk check finds ``status``."""
    PipelineDefinition.objects.update_or_create(
        name="watch", defaults={"config": {"version": "1.0", "nodes": watch(status, **notify)}}
    )
    return engine.run_execute(run_id=make_run(name="watch").pk)


def test_ok_warning_warning_ok_sends_two_notices_the_problem_and_its_resolution(hook):
    runs = [run_with(status) for status in ("ok", "warning", "warning", "warning", "ok")]
    assert [run.status for run in runs] == ["completed"] * 5
    bodies = [request["json"] for request in hook.requests]
    assert [body["notice"] for body in bodies] == ["problem", "resolved"]
    assert bodies[0]["title"].startswith("[WARNING] watch on ")
    assert bodies[1]["title"].startswith("[RESOLVED] watch on ")
    assert bodies[1]["previous"]["severity"] == "warning"
    assert hook.requests[0]["headers"]["idempotency-key"] == f"{runs[1].pk}-notify"
    quiet = runs[2].result["node_results"]["notify"]["output"]
    assert quiet == {"notify_on": "change", "notice": None, "quiet": "still warning, as notified at "
                     + quiet["quiet"].split("as notified at ")[1]}
    assert "  Quiet: still warning, as notified at " in render_result(runs[2])
    assert "  Notice: resolved (warning → ok)" in render_result(runs[4])
    state = MonitorState.objects.get(definition="watch")
    assert state.severity == "ok" and state.last_run_id == runs[4].pk
    assert state.since == runs[4].finished_at and state.last_notified_at == runs[4].finished_at


def test_a_first_run_that_finds_everything_ok_is_quiet_and_a_first_problem_is_not(hook):
    run_with("ok")
    assert hook.requests == []
    run_with("critical")
    assert [r["json"]["notice"] for r in hook.requests] == ["problem"]


def test_problem_mode_speaks_on_every_problem_run_and_on_its_end(hook):
    for status in ("ok", "warning", "warning", "ok", "ok"):
        run_with(status, notify_on="problem")
    assert [r["json"]["notice"] for r in hook.requests] == ["problem", "reminder", "resolved"]


def test_renotify_after_reminds_once_enough_time_has_passed(hook):
    run_with("warning", renotify_after=3600)
    run_with("warning", renotify_after=3600)
    assert len(hook.requests) == 1
    # As if an hour had gone by since the notice.
    MonitorNotice.objects.update(notified_at=MonitorNotice.objects.get().notified_at - timedelta(hours=1))
    run_with("warning", renotify_after=3600)
    assert [r["json"]["notice"] for r in hook.requests] == ["problem", "reminder"]


def test_a_notice_that_could_not_be_sent_is_sent_by_the_next_run(hook):
    hook.queue_json({"error": "down"}, status=503)
    failed = run_with("warning")
    assert failed.status == "failed"
    assert not MonitorNotice.objects.exists()
    again = run_with("warning")
    assert again.status == "completed"
    assert [r["json"]["notice"] for r in hook.requests] == ["problem", "problem"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"notify_on": "sometimes"}, "notify_on must be one of: always, problem, change"),
        ({"notify_on": "change", "renotify_after": 5}, "renotify_after must be a number of seconds from 60 to 2592000"),
        ({"renotify_after": 600}, 'renotify_after applies only with notify_on "problem" or "change"'),
    ],
)
def test_notify_on_and_renotify_after_are_validated(config, message):
    from apps.orchestration.validation import validate_definition

    definition = {"version": "1.0", "nodes": [{"id": "n", "type": "notify", "config": {"driver": "console", **config}}]}
    assert validate_definition(definition) == [f"Node 'n': {message}"]
