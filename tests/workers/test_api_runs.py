"""/api/v1/runs served by a real gunicorn, with runs executed by a real worker on the
module's broker: ?wait answers with the finished run, or at its deadline with the run
still queued; and the refusals that need a real broker (no live host for ``all``: 409;
a broker that cannot be reached: 503)."""
from __future__ import annotations

import time

import pytest

from apps.orchestration.models import PipelineDefinition, PipelineRun
from tests.support import TINY_NODES
from tests.workers.conftest import WebServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def web(base_env):
    server = WebServer(base_env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def key(transactional_db):
    from apps.api.keys import api_key_create

    return api_key_create(name="worker-tests", scopes=["runs:read", "runs:write"])[1]


@pytest.fixture
def tiny(transactional_db):
    return PipelineDefinition.objects.create(name="tiny", config={"version": "1.0", "nodes": TINY_NODES})


def test_wait_answers_with_the_run_once_the_worker_has_finished_it(web, start_worker, key, tiny):
    start_worker()
    status, launched = web.call("POST", "/api/v1/runs", key, {"definition": "tiny", "payload": {"x": 4}})
    assert status == 201, launched
    started = time.monotonic()
    status, run = web.call("GET", f"/api/v1/runs/{launched['run_id']}?wait=60", key)
    assert status == 200
    assert time.monotonic() - started < 55
    assert run["status"] == "completed" and run["exit_code"] == 0 and run["trigger"] == "api"
    assert run["node_results"]["shape"]["output"] == {"x": 4}


def test_wait_answers_at_its_deadline_with_a_run_no_worker_takes(web, start_worker, key, tiny):
    start_worker()  # serving this machine's host and the shared queue, not the run's host
    status, launched = web.call("POST", "/api/v1/runs", key, {"definition": "tiny", "host": "nobody-serves-this"})
    assert status == 201, launched
    started = time.monotonic()
    status, run = web.call("GET", f"/api/v1/runs/{launched['run_id']}?wait=2", key)
    took = time.monotonic() - started
    assert status == 200
    assert run["status"] == "queued" and run["target_host"] == "nobody-serves-this" and run["exit_code"] == 3
    assert 2 <= took < 20


def test_host_all_with_no_live_worker_is_409_and_stores_nothing(web, key, tiny):
    status, body = web.call("POST", "/api/v1/runs", key, {"definition": "tiny", "host": "all"})
    assert status == 409, body
    assert body["error"] == "No live worker serves a host, so there is no host to run on (--host all)."
    assert PipelineRun.objects.count() == 0


def test_a_broker_that_cannot_be_reached_is_503(base_env, key, tiny):
    server = WebServer({**base_env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    try:
        status, body = server.call("POST", "/api/v1/runs", key, {"definition": "tiny"})
    finally:
        server.stop()
    assert status == 503, body
    run = PipelineRun.objects.get()
    assert body["error"].startswith(f"Could not enqueue run {run.pk}: the broker did not take it (")
    # As for run_pipeline: the run that could not be sent is failed, so nothing runs later by surprise.
    assert run.status == "failed"
