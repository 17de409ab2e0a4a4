"""Schedules end to end: a real beat and real workers on a real broker."""
from __future__ import annotations

import json
import re
import sys
import time
from itertools import combinations

import pytest

from apps.orchestration.models import PipelineRun
from tests.support import Gate, StderrLines, wait_for
from tests.workers.conftest import CollectedProcess, module_gate_fixtures

pytestmark = pytest.mark.subprocess

CHEAP = [{"id": "m", "type": "context", "config": {"include": ["memory"]}}]


# The module's worker may reach the gate; each test starts with it closed.
gated_env, gate_per_test = module_gate_fixtures()


def slow(seconds: float) -> list[dict]:
    return [{"id": "slow", "type": "context", "config": {"include": ["cpu"], "options": {"cpu": {"interval": seconds}}}}]


class Beat(CollectedProcess):
    """A real `celery -A workers beat` process."""

    def __init__(self, env: dict, schedule_file: str):
        # A short max interval: beat notices schedule changes within a second.
        super().__init__(
            [sys.executable, "-m", "celery", "-A", "workers", "beat", "-l", "info", "--max-interval", "1",
             "-s", schedule_file],
            env,
        )

    def count(self, text: str) -> int:
        return self.log().count(text)


@pytest.fixture
def beat(base_env, worker, tmp_path, transactional_db):
    # One per test: a beat reads its change marker from the database, which each test starts empty.
    started = Beat(base_env, str(tmp_path / "beat-schedule"))
    try:
        yield started
    finally:
        started.stop()


def load(cli, folder, name: str, config: dict) -> str:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"version": "1.0", **config}))
    result = cli("load_pipelines", "--dir", str(folder))
    assert result.exit_code == 0, result.stderr
    return result.stdout


def scheduled(name: str):
    return PipelineRun.objects.filter(definition_name=name, trigger="schedule")


def test_a_schedule_fires_until_it_is_dropped_from_the_file(cli, beat, worker, tmp_path):
    folder = tmp_path / "defs"
    assert "every2: schedule: every 1s" in load(cli, folder, "every2", {"nodes": CHEAP, "schedule": {"every": 1}})
    wait_for(lambda: scheduled("every2").filter(status="completed").count() >= 3, what="3 scheduled runs")
    assert all(run.idempotency_key.startswith("schedule:every2:") for run in scheduled("every2"))

    assert "every2: unscheduled" in load(cli, folder, "every2", {"nodes": CHEAP})
    # Beat fires the ticks itself and logs each: while the schedule is on (every second) a line comes
    # every second; it is off once five seconds pass without one.
    ticks = lambda: beat.count("definition=every2 ")  # noqa: E731
    quiet = {"count": ticks(), "since": time.monotonic()}

    def stopped() -> bool:
        if ticks() != quiet["count"]:
            quiet.update(count=ticks(), since=time.monotonic())
        return time.monotonic() - quiet["since"] >= 5

    wait_for(stopped, what="beat to stop firing the dropped schedule's ticks")
    # Every tick beat fired is a run or a tick skipped for overlap; then nothing more comes.
    launched = beat.count("event=schedule.launched definition=every2 ")
    skipped = beat.count("event=schedule.skipped definition=every2 ")
    assert launched and scheduled("every2").count() == launched
    assert launched + skipped == quiet["count"]
    wait_for(lambda: not scheduled("every2").exclude(status="completed").exists(), what="the last runs")


def test_a_slow_pipeline_scheduled_every_second_never_overlaps_itself(cli, beat, worker, tmp_path):
    load(cli, tmp_path / "defs", "slow3", {"nodes": slow(3), "schedule": {"every": 1}})
    wait_for(lambda: scheduled("slow3").filter(status="completed").count() >= 3, timeout=120, what="3 slow runs")
    load(cli, tmp_path / "defs", "slow3", {"nodes": slow(3)})
    wait_for(lambda: not scheduled("slow3").exclude(status__in=PipelineRun.TERMINAL).exists(), what="the last run")
    runs = list(scheduled("slow3").order_by("started_at"))
    for a, b in combinations(runs, 2):
        assert a.finished_at <= b.started_at or b.finished_at <= a.started_at, f"runs {a.pk} and {b.pk} overlap"
    assert beat.wait_for_log("event=schedule.skipped definition=slow3")


def test_a_tick_delivered_twice_makes_one_run(cli, worker, tmp_path):
    load(cli, tmp_path / "defs", "twice", {"nodes": CHEAP})
    due = "2026-11-29T08:00:00.000+00:00"
    send = (
        "from workers.tasks import run_scheduled\n"
        f"for _ in range(2): run_scheduled.delay(definition='twice', due='{due}')\n"
    )
    assert cli("shell", "-c", send).exit_code == 0
    assert worker.wait_for_log("event=schedule.duplicate definition=twice", timeout=60)
    assert list(PipelineRun.objects.filter(idempotency_key=f"schedule:twice:{due}").values_list("trigger", flat=True)) == [
        "schedule"
    ]


def test_max_concurrent_holds_under_twenty_concurrent_launches(cli, worker, start_worker, gate, tmp_path):
    workers = [worker, start_worker(concurrency=4, **gate.env)]  # the module's worker consumes the same queue
    # The first two runs wait at the gate, so both slots stay taken until the waiting CLI has said so.
    nodes = [gate.node("hold", "slow"), *slow(1)]
    load(cli, tmp_path / "defs", "limited", {"nodes": nodes, "defaults": Gate.DEFAULTS, "max_concurrent": 2})
    launch = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from django.db import connection\n"
        "from apps.orchestration import inputs, launch, launchrequest\n"
        "def one(_):\n"
        "    try:\n"
        "        launch.pipeline_run_launch(request=launchrequest.LaunchRequest(resolved=inputs.definition_resolve(name='limited'), payload={}))\n"
        "    finally:\n"
        "        connection.close()\n"
        "with ThreadPoolExecutor(20) as pool: list(pool.map(one, range(20)))\n"
    )
    assert cli("shell", "-c", launch).exit_code == 0
    runs = PipelineRun.objects.filter(definition_name="limited")
    # Once every run's first message has been taken (it started or was told to wait), only a
    # freed slot wakes a queued run, oldest first: the newest queued run is the last to start.
    # Before that, a late message can meet a slot just freed and start out of order.
    ids = list(runs.values_list("pk", flat=True))

    def every_first_message_taken() -> bool:
        logs = "".join(w.log() for w in workers)
        return all(re.search(rf"event=run\.(start|waiting) run_id={pk} ", logs) for pk in ids)

    wait_for(every_first_message_taken, timeout=120, what="every limited run's first message taken")
    last = runs.filter(status="queued").order_by("-pk").first()
    assert last is not None, "every run started before the wait could be watched"
    wait_for(lambda: gate.reached(2), what="two runs in their slots")
    assert not gate.reached(3)
    waited = StderrLines(cli.popen("show_run", str(last.pk), "--wait", "--timeout", "180", RUN_PICKUP_TIMEOUT_SECONDS="1"))
    try:
        waited.wait_for("waits for a free slot")
        gate.open()
        code, _, _ = waited.finish()
    finally:
        waited.stop()
    assert code == 0, waited.text()
    assert f"Run {last.pk} waits for a free slot: limited allows 2 runs at a time (max_concurrent)" in waited.text()
    wait_for(lambda: runs.filter(status="completed").count() == 20, timeout=180, what="20 limited runs")
    spans = sorted((run.started_at, run.finished_at) for run in runs)
    most = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
    assert most == 2, f"{most} runs were running at once"
