"""Beat firing pipeline schedules itself: a real beat, real workers, a real broker.

The herd (many schedules due at the same moment) fires once each; a broker
down when a tick is due loses nothing (the run's row is written, and the
recovery sweep sends it once the broker is back); a second beat on the same
database fires nothing, says why, and takes over when the first one stops.
"""
from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db.models import Min
from django.db.models.functions import Now
from django.utils import timezone

from apps.orchestration.models import PipelineRun, RunTally, ScheduleState
from tests.support import wait_for
from tests.workers.test_schedules import CHEAP, Beat, load, scheduled

pytestmark = pytest.mark.subprocess

HERD = 40


@pytest.fixture
def beats(base_env, worker, tmp_path, transactional_db):
    """Start beats for one test (each with a schedule file of its own); all stopped at its end."""
    started: list[Beat] = []

    def _start() -> Beat:
        one = Beat(base_env, str(tmp_path / f"beat-schedule-{len(started)}"))
        started.append(one)
        return one

    try:
        yield _start
    finally:
        for one in started:
            one.stop()


def holder_of(beat: Beat) -> str:
    assert beat.wait_for_log("event=beat.lease_taken holder="), beat.log()
    return re.search(r'event=beat\.lease_taken holder=([^\s"]+)', beat.log()).group(1)


def test_a_herd_of_schedules_due_at_once_fires_each_once(cli, beats, tmp_path):
    beat = beats()
    folder = tmp_path / "defs"
    folder.mkdir()
    # The whole herd in one folder, loaded by one command (one load per file cost a child process each).
    for i in range(HERD):
        herd_member = {"version": "1.0", "nodes": CHEAP, "schedule": {"every": 3600, "overlap": "allow"}}
        (folder / f"herd-{i:02d}.json").write_text(json.dumps(herd_member))
    loaded = cli("load_pipelines", "--dir", str(folder))
    assert loaded.exit_code == 0, loaded.stderr
    wait_for(lambda: ScheduleState.objects.count() == HERD, what="beat to read every schedule")
    # One statement: every clock due at the same moment, two seconds from now.
    ScheduleState.objects.update(next_due_at=Now() + timedelta(seconds=2))
    wait_for(lambda: PipelineRun.objects.filter(trigger="schedule", status="completed").count() == HERD,
             timeout=180, what=f"{HERD} scheduled runs completed")
    runs = list(PipelineRun.objects.filter(trigger="schedule"))
    assert sorted(run.definition_name for run in runs) == [f"herd-{i:02d}" for i in range(HERD)]
    assert len({run.idempotency_key.rsplit(":", 3)[-3:][0] for run in runs}) == 1  # one due time for all
    assert f"event=beat.fired ticks={HERD} runs={HERD}" in beat.log()
    # Every clock moved on by its hour: nothing of the herd is due again.
    assert ScheduleState.objects.aggregate(first=Min("next_due_at"))["first"] > timezone.now() + timedelta(minutes=50)
    assert "Traceback" not in beat.log()


def test_a_tick_due_while_the_broker_is_down_is_run_once_it_is_back(cli, beats, broker, worker, tmp_path):
    if broker.kind != "embedded":
        pytest.skip("the shared Redis server is not stopped by a test; the embedded broker is a private redis-server")
    from apps.broker.embedded import EmbeddedBroker

    embedded = EmbeddedBroker(Path(broker.env["EMBEDDED_BROKER_DIR"]))
    beat = beats()
    load(cli, tmp_path / "defs", "outage", {"nodes": CHEAP, "schedule": {"every": 2, "overlap": "allow"}})
    wait_for(lambda: scheduled("outage").filter(status="completed").exists(), what="a first scheduled run")
    embedded.stop()
    try:
        stopped_at = timezone.now()
        wait_for(lambda: scheduled("outage").filter(created_at__gt=stopped_at).count() >= 2,
                 what="ticks fired while the broker is down")
        assert beat.wait_for_log("event=run.enqueue_failed")
        during = list(scheduled("outage").filter(created_at__gt=stopped_at).values_list("pk", flat=True))
    finally:
        embedded.ensure_running()
    try:
        wait_for(lambda: scheduled("outage").filter(pk__in=during, status="completed").count() == len(during),
                 timeout=150, what="the runs of the ticks fired during the outage, completed")
    except AssertionError as exc:
        # What the worker and the beat did since the broker came back is the diagnosis.
        raise AssertionError(f"{exc}\n-- worker --\n{worker.log()[-6000:]}\n-- beat --\n{beat.log()[-3000:]}") from None
    assert "Traceback" not in beat.log()
    keys = list(scheduled("outage").values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))


def test_a_second_beat_fires_nothing_and_takes_over_when_the_first_stops(cli, beats, tmp_path):
    first = beats()
    holder = holder_of(first)
    second = beats()
    assert second.wait_for_log(f"event=beat.standby holder={holder} "), second.log()
    load(cli, tmp_path / "defs", "pair", {"nodes": CHEAP, "schedule": {"every": 1, "overlap": "allow"}})
    wait_for(lambda: scheduled("pair").count() >= 5, what="5 scheduled runs")
    assert "event=schedule.launched" not in second.log() and "event=beat.fired" not in second.log()
    doctor = cli("doctor", "--only", "beat")
    assert f"warn  beat: two beats on this database: the lease is held by {holder} " in doctor.stdout, doctor.stdout
    # One beat's ticks: due times one second apart, never two runs for one.
    dues = sorted(key.split(":", 2)[2] for key in scheduled("pair").values_list("idempotency_key", flat=True))
    assert len(dues) == len(set(dues))
    first.stop()  # releases the lease: the standby takes it at once
    launched = first.count("event=schedule.launched definition=pair ")  # its whole log, now that it has ended
    holder_of(second)
    wait_for(lambda: second.count("event=schedule.launched definition=pair ") >= 2, what="the second beat firing")
    second.stop()  # its whole log too: a beat still firing would launch between the count and the log's read
    assert scheduled("pair").count() == launched + second.count("event=schedule.launched definition=pair ")


def test_metrics_show_the_live_workers_beats_last_tick_and_its_latest_lateness(cli, beats, start_worker, tmp_path,
                                                                               settings):
    from django.db.models import Max, Min
    from django.test import Client
    from prometheus_client.parser import text_string_to_metric_families

    from apps.hostnames import host_queue
    from apps.orchestration.dispatch import run_queue

    settings.METRICS_PUBLIC = True

    def gauges() -> dict:
        response = Client().get("/metrics")
        assert response.status_code == 200
        return {
            (sample.name, sample.labels.get("queue")): sample.value
            for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples
            if family.type == "gauge"
        }

    extra = start_worker(MONITOR_HOST="metrics-host", WORKER_PRESENCE_SECONDS="1", METRICS_ROLLUP_FOLD_SECONDS="1")
    beat = beats()
    holder_of(beat)
    load(cli, tmp_path / "defs", "gauged", {"nodes": CHEAP, "schedule": {"every": 1, "overlap": "allow"}})
    wait_for(lambda: scheduled("gauged").filter(status="completed").count() >= 2, what="2 scheduled runs completed")
    extra_queue = ("pipeline_workers_live", host_queue("metrics-host"))
    # The module's worker and this one (the module's renews within its 10 s: each test's flush empties the table).
    wait_for(lambda: gauges().get(("pipeline_workers_live", run_queue())) == 2, timeout=30,
             what="both workers counted on the run queue")
    now = gauges()
    assert now[extra_queue] == 1
    assert 0 <= now[("pipeline_beat_last_tick_age_seconds", None)] < 60
    beat.stop()
    fire = ScheduleState.objects.filter(last_fired_at=ScheduleState.objects.aggregate(last=Max("last_fired_at"))["last"])
    latest = fire.aggregate(fired=Max("last_fired_at"), due=Min("last_due_at"))
    assert gauges()[("pipeline_schedule_lateness_seconds", None)] == pytest.approx(
        (latest["fired"] - latest["due"]).total_seconds(), abs=1e-3)
    # A series spread over two writers' rows: a worker folds it into one, and it counts the same.
    for shard in (3, 5):
        RunTally.objects.create(definition="folded", trigger="cli", status="completed", shard=shard, count=2)
    wait_for(lambda: list(RunTally.objects.filter(definition="folded").values_list("shard", "count")) == [(0, 4)],
             timeout=30, what="a worker folding the rollup")
    assert 'pipeline_runs_total{definition="folded",status="completed",trigger="cli"} 4.0' in (
        Client().get("/metrics").content.decode())
    # A warm shutdown: the worker's queues show 0 at once, not after its presence expires.
    extra.stop()
    assert gauges()[extra_queue] == 0
    assert gauges()[("pipeline_workers_live", run_queue())] == 1
