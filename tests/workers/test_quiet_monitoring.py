"""Quiet monitoring with a real beat, a real worker and a real webhook receiver: a
definition scheduled every 2 s whose disk check the test turns from ok to warning
and back (by rewriting its file and loading it) with ``notify_on: change``
delivers exactly the notices of that timeline: the problem, then its resolution."""
from __future__ import annotations

import pytest

from apps.orchestration.models import PipelineRun
from tests.orchestration.test_conditions import LIMITS
from tests.support import wait_for
from tests.workers.test_schedules import Beat, load, scheduled

pytestmark = pytest.mark.subprocess


def watch(status: str) -> dict:
    return {
        "schedule": {"every": 2, "overlap": "skip"},
        "nodes": [
            {"id": "metrics", "type": "context",
             "config": {"include": ["disk"], "thresholds": {"disk": LIMITS[status]}}, "next": "notify"},
            {"id": "notify", "type": "notify",
             "config": {"driver": "webhook", "url_env": "WATCH_HOOK", "notify_on": "change"}},
        ],
    }


def found(run: PipelineRun) -> str:
    """What the definition, as this run's snapshot had it, makes the disk check find."""
    limits = run.config_snapshot["nodes"][0]["config"]["thresholds"]["disk"]
    return next(status for status, values in LIMITS.items() if values == limits)


@pytest.fixture
def quiet_beat(base_env, tmp_path, transactional_db):
    started = Beat(base_env, str(tmp_path / "beat-schedule"))
    try:
        yield started
    finally:
        started.stop()


def test_ok_then_three_warnings_then_ok_delivers_two_notices(cli, http_server, start_worker, quiet_beat, tmp_path):
    start_worker(WATCH_HOOK=http_server.url("/hook"), OUTBOUND_ALLOW_HOSTS="127.0.0.1")
    folder = tmp_path / "defs"

    def completed(status: str, after: int = 0) -> int:
        runs = scheduled("watch").filter(status="completed", pk__gt=after)
        return sum(1 for run in runs if found(run) == status)

    load(cli, folder, "watch", watch("ok"))
    wait_for(lambda: completed("ok") >= 1, timeout=180, what="a scheduled run finding ok")
    load(cli, folder, "watch", watch("warning"))
    wait_for(lambda: completed("warning") >= 3, timeout=180, what="three scheduled runs finding warning")
    last_warning = scheduled("watch").order_by("-pk").first().pk
    load(cli, folder, "watch", watch("ok"))
    wait_for(lambda: completed("ok", after=last_warning) >= 1, timeout=180, what="a run finding ok again")

    failed = scheduled("watch").exclude(status__in=["completed", "queued", "running"])
    assert not failed.exists(), list(failed.values("pk", "status", "error"))
    notices = [(request["json"]["notice"], request["json"]["severity"]) for request in http_server.requests]
    assert notices == [("problem", "warning"), ("resolved", "ok")]

    states = cli("list_states", "--json", "--definition", "watch").json()
    first_ok = scheduled("watch").filter(pk__gt=last_warning, status="completed").order_by("pk")
    first_ok = next(run for run in first_ok if found(run) == "ok")
    assert [(s["severity"], s["host"] is not None) for s in states] == [("ok", True)]
    assert states[0]["since"] == first_ok.finished_at.isoformat()
    assert "Traceback" not in quiet_beat.log()
