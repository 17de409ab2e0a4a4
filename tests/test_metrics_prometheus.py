"""/metrics as Prometheus reads it: promtool's lint of a real scrape, and a real Prometheus
server scraping the endpoint served by gunicorn with a key of scope metrics."""
from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from django.test import Client

from apps.orchestration import engine
from apps.orchestration.run_actions import pipeline_run_cancel
from tests.prometheus import start_prometheus, tool
from tests.support import ROOT, free_port, make_run, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

NODES = [
    {"id": "first", "type": "context", "config": {"include": ["memory"]}, "next": "second"},
    {"id": "second", "type": "transform", "config": {"mapping": {"m": "first.checks.memory.value"}}},
]


@pytest.fixture
def metrics_key() -> str:
    from apps.api.keys import api_key_create

    return api_key_create(name="prometheus", scopes=["metrics"])[1]


@pytest.fixture
def ended():
    """Two completed runs of alpha, one cancelled run of beta, one queued run."""
    for _ in range(2):
        assert engine.run_execute(run_id=make_run(NODES, name="alpha").pk).status == "completed"
    pipeline_run_cancel(run_id=make_run(NODES, name="beta").pk)
    make_run(NODES, name="beta")


@pytest.fixture
def gauges():
    """A live worker, a beat holding its lease (as their own code records them) and a fired tick."""
    from django.db.models.functions import Now
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from apps.orchestration.beatstate import holder_name, lease_take
    from apps.orchestration.models import ScheduleState
    from apps.orchestration.presence import worker_presence_renew

    worker_presence_renew(worker="celery@w1", queues=["runs", "host.w1"], interval=10)
    assert lease_take(holder=holder_name())
    every = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(name="tick", task="orchestration.run_scheduled", interval=every)
    ScheduleState.objects.create(task=task, definition_name="alpha", schedule="every 60 seconds", next_due_at=Now(),
                                 last_due_at=Now(), last_fired_at=Now())


@pytest.mark.parametrize("with_gauges", [False, True], ids=["no-worker-no-beat", "worker-and-beat"])
def test_promtool_finds_nothing_to_lint_in_a_real_scrape(metrics_key, ended, request, with_gauges):
    promtool = tool("promtool")
    if with_gauges:
        request.getfixturevalue("gauges")
    response = Client(headers={"Authorization": f"Bearer {metrics_key}"}).get("/metrics")
    assert response.status_code == 200
    body = response.content.decode()
    for name in ("pipeline_workers_live", "pipeline_beat_last_tick_age_seconds", "pipeline_schedule_lateness_seconds"):
        assert f"# TYPE {name} gauge" in body
    if with_gauges:
        assert 'pipeline_workers_live{queue="host.w1"} 1.0' in body
        assert "\npipeline_beat_last_tick_age_seconds " in body and "\npipeline_schedule_lateness_seconds " in body
    checked = subprocess.run([promtool, "check", "metrics"], input=response.content, capture_output=True,
                             timeout=60)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b"")


@pytest.fixture
def served(subprocess_env, tmp_path):
    """gunicorn serving the project (config.wsgi) on a free port of 127.0.0.1."""
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--no-control-socket",
         "--graceful-timeout", "5", "config.wsgi:application"],
        cwd=ROOT, env={**subprocess_env, "API_RATE_LIMIT": "off"}, stdout=subprocess.DEVNULL, stderr=log,
    )

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(up, what="gunicorn to answer /healthz", interval=0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_a_real_prometheus_scrapes_the_endpoint_with_a_metrics_key(metrics_key, ended, served):
    prometheus = start_prometheus(target=f"127.0.0.1:{served}", key=metrics_key)
    try:
        def target_up():
            targets = prometheus.api("/api/v1/targets")["data"]["activeTargets"]  # empty until discovered
            return next((target for target in targets if target["health"] == "up"), None)

        target = wait_for(target_up, what="the scrape target to be up", interval=0.25)
        assert target["lastError"] == ""

        def value(query: str):
            result = prometheus.api("/api/v1/query", query=query)["data"]["result"]
            return result or None

        [alpha] = wait_for(lambda: value('pipeline_runs_total{definition="alpha"}'), what="pipeline_runs_total")
        assert alpha["metric"]["status"] == "completed" and alpha["metric"]["trigger"] == "cli"
        assert alpha["value"][1] == "2"
        [beta] = value('pipeline_runs_total{definition="beta"}')
        assert (beta["metric"]["status"], beta["value"][1]) == ("cancelled", "1")
        assert value("pipeline_runs_queued")[0]["value"][1] == "1"
    finally:
        prometheus.stop()
